"""Provenance (igrpo_core.provenance): what a run records to be reproduced, and that a config diff
shows two runs that differ only in code, weights or data."""
import shutil
import subprocess

import pytest
import torch

from igrpo_core import analysis, provenance, records
from igrpo_core.data import load_dataset
from tests.conftest import small_config


def test_versions_and_git_state_are_the_real_ones(tmp_path):
    versions = provenance.package_versions(["torch", "no-such-dist-xyz"])
    assert versions["no-such-dist-xyz"] is None
    assert torch.__version__.split("+")[0] == versions["torch"].split("+")[0]
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)
    assert provenance.git_state(repo) == {"commit": None, "dirty": None}         # not a checkout
    git("init", "-q")
    (repo / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "x")
    head = git("rev-parse", "HEAD").stdout.strip()
    assert provenance.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "f.txt").write_text("b")
    assert provenance.git_state(repo) == {"commit": head, "dirty": True}


def test_model_digest_changes_with_the_weights_and_says_how_it_was_taken(tmp_path, tiny_model_path, monkeypatch):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_path, copy)
    a = provenance.model_digest(str(copy))
    assert a["kind"] == "full_sha256" and a["digest"] == provenance.model_digest(tiny_model_path)["digest"]
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1                                                                # one bit of one weight
    weights.write_bytes(bytes(data))
    assert provenance.model_digest(str(copy))["digest"] != a["digest"]
    monkeypatch.setattr(provenance, "FULL_HASH_LIMIT", 10)
    assert provenance.model_digest(str(copy))["kind"] == "fingerprint"
    assert provenance.model_digest("some-org/some-model")["kind"] == "hub_id"
    assert provenance.model_digest(str(tmp_path))["kind"] == "missing"


def test_rows_digest_depends_on_content_and_order():
    rows = [{"id": "a", "answer": "1"}, {"id": "b", "answer": "2"}]
    assert provenance.rows_digest(rows) == provenance.rows_digest([dict(r) for r in rows])
    assert provenance.rows_digest(rows) != provenance.rows_digest(rows[::-1])
    assert provenance.rows_digest(rows) != provenance.rows_digest([rows[0], {"id": "b", "answer": "3"}])


@pytest.mark.slow
def test_a_run_records_provenance_per_attempt_and_the_diff_shows_it(tmp_path):
    from igrpo_core.trainer import train
    cfg = small_config(tmp_path, max_steps=1, algo="grpo")
    run = train(cfg)
    train(cfg.replace(max_steps=2))                                              # a second attempt
    entries = records.read_json(run / "provenance.json")
    assert len(entries) == 2 and entries[0]["model"]["kind"] == "full_sha256"
    rows = load_dataset("tiny:train", tiny_num_problems=cfg.tiny_num_problems)
    assert entries[0]["datasets"]["tiny:train"] == {"rows": len(rows), "sha256": provenance.rows_digest(rows)}
    settings = records.read_settings(run)
    assert settings["provenance.attempts"] == 2 and settings["provenance.packages.torch"]
    other = dict(settings, **{"provenance.git.commit": "0" * 40})
    diff = analysis.config_diff({"a": settings, "b": other})
    assert diff["key"].to_list() == ["provenance.git.commit"]
