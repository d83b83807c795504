"""Evaluation harness: the per-set k rule and real runs of the shipped tiny model (sampling, resume
after interruption, skipped over-long prompts, refinement). Metric estimators: test_metrics.py."""
import json

import polars as pl
import pytest
import torch

from igrpo_core import evaluate as E, records
from igrpo_core.data import load_dataset
from igrpo_core.config import Config
from igrpo_core.engine import TransformersEngine
from igrpo_core.models import load_model

# --------------------------------------------------------------------------- the per-set k rule


@pytest.mark.parametrize("name, num_samples, greedy, k", [
    ("aime24", 0, False, 64), ("aime25:test", 0, False, 64), ("data/my/aime24.jsonl", 0, False, 64),
    ("math500", 0, False, 8), ("gsm8k:test", 0, False, 8), ("tiny:heldout", 0, False, 8),
    ("aime24", 3, False, 3), ("math500", 3, False, 3),         # an explicit k applies to every set
    ("aime24", 0, True, 1), ("math500", 5, True, 1),           # greedy: one sample
])
def test_per_set_k_rule(name, num_samples, greedy, k):
    assert E.resolve_num_samples(name, num_samples, greedy) == k


def test_config_accepts_zero_as_paper_default_and_rejects_negative_k():
    assert Config(eval_num_samples=0).eval_num_samples == 0
    with pytest.raises(ValueError, match="eval_num_samples"):
        Config(eval_num_samples=-1)
    with pytest.raises(ValueError, match="num_samples"):
        E.resolve_num_samples("math500", -1, False)


# --------------------------------------------------------------------------- real runs of the tiny model


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_path, tiny_tokenizer):
    torch.set_num_threads(1)
    model = load_model(tiny_model_path, tiny_tokenizer, device=torch.device("cpu"), dtype=torch.float32)
    return TransformersEngine(model, tiny_tokenizer, batch_size=64)


@pytest.fixture(scope="module")
def heldout():
    return load_dataset("tiny:heldout", tiny_num_problems=200, limit=16)


def run(engine, tok, datasets, out, **kw):
    args = dict(num_samples=2, max_new_tokens=40, chunk_size=8, workers=2, progress=False,
                max_model_len=E.model_context_length(engine), model_name="tiny")
    return E.evaluate(engine, tok, datasets, out, **{**args, **kw})


def test_real_evaluation_writes_samples_and_metrics(tmp_path, tiny_engine, tiny_tokenizer, heldout):
    s = run(tiny_engine, tiny_tokenizer, {"tiny:heldout": heldout}, tmp_path)
    samples = pl.read_parquet(tmp_path / "samples.parquet")
    assert dict(samples.schema) == records.SAMPLE_SCHEMA
    assert samples.height == 16 * 2
    assert samples["problem_id"].to_list() == [str(e["id"]) for e in heldout for _ in range(2)]  # ordered
    assert samples["sample_index"].to_list() == [0, 1] * 16
    assert set(samples["protocol"]) == {"single_shot"} and samples["draft"].null_count() == 32
    assert set(samples["finish_reason"]) <= {"stop", "length"} and (samples["completion_tokens"] > 0).all()
    assert set(samples["status"]) <= {"ok", "no_answer", "timeout", "error"}
    m = s["metrics"]["tiny:heldout"]
    assert m["problems"] == 16 and m["samples_per_problem"] == 2 and m["coverage"] == 1.0
    assert m["avg@k"] == pytest.approx(samples["correct"].mean())
    assert 0 <= m["avg@k"] <= m["pass@2"] <= 1 and 0 <= m["maj@k"] <= 1
    assert s["metrics"]["macro_avg"]["avg@k"] == pytest.approx(m["avg@k"])
    assert s["problems_per_s"] > 0 and s["protocol"]["label"] == "single_shot"
    assert not s["protocol"]["paper_protocol"]  # k=2 is not the paper's 8
    assert records.read_eval_summary(tmp_path)["metrics"] == s["metrics"]
    assert "tiny:heldout" in E.format_table({"tiny": s})


def test_interrupted_evaluation_resumes_to_the_uninterrupted_result(tmp_path, tiny_engine, tiny_tokenizer, heldout):
    sets = {"tiny:heldout": heldout, "tiny:other": heldout[:5]}
    straight = run(tiny_engine, tiny_tokenizer, sets, tmp_path / "a")

    def interrupt(info):
        if info["chunk"] == 0:
            raise KeyboardInterrupt("simulated interruption after the first chunk")

    with pytest.raises(KeyboardInterrupt):
        run(tiny_engine, tiny_tokenizer, sets, tmp_path / "b", on_chunk=interrupt)
    assert len(list((tmp_path / "b" / "parts").glob("*.parquet"))) == 1
    assert not (tmp_path / "b" / "summary.json").exists()
    resumed = run(tiny_engine, tiny_tokenizer, sets, tmp_path / "b")
    assert resumed["problems_evaluated_now"] == 16 - 8 + 5
    assert resumed["metrics"] == straight["metrics"]
    a, b = pl.read_parquet(tmp_path / "a" / "samples.parquet"), pl.read_parquet(tmp_path / "b" / "samples.parquet")
    assert a.equals(b)
    # A finished evaluation re-run is a no-op with the same metrics.
    again = run(tiny_engine, tiny_tokenizer, sets, tmp_path / "b")
    assert again["problems_evaluated_now"] == 0 and again["metrics"] == straight["metrics"]


def test_resume_refuses_other_settings_and_fresh_start_replaces(tmp_path, tiny_engine, tiny_tokenizer, heldout):
    sets = {"tiny:heldout": heldout[:4]}
    run(tiny_engine, tiny_tokenizer, sets, tmp_path, num_samples=1)
    with pytest.raises(ValueError, match="different settings"):
        run(tiny_engine, tiny_tokenizer, sets, tmp_path, num_samples=2)
    s = run(tiny_engine, tiny_tokenizer, sets, tmp_path, num_samples=2, resume=False)
    assert s["metrics"]["tiny:heldout"]["samples_per_problem"] == 2


def test_prompts_beyond_the_model_context_are_skipped_and_counted(tmp_path, tiny_engine, tiny_tokenizer, heldout):
    """Regression: a GSM8K question for the 512-position tiny model must be a recorded skip, not a torch error."""
    long = dict(heldout[0], id="long", problem="Compute " + "1+" * 300 + "1.")
    sets = {"mixed": [heldout[0], long, heldout[1]], "all_long": [dict(long, id="long2")]}
    s = run(tiny_engine, tiny_tokenizer, sets, tmp_path, num_samples=1)
    assert s["skipped"] == {"mixed": 1, "all_long": 1}
    assert s["metrics"]["mixed"]["problems"] == 2 and s["metrics"]["mixed"]["coverage"] == pytest.approx(2 / 3)
    assert s["metrics"]["all_long"]["avg@k"] is None and s["metrics"]["macro_avg"]["sets"] == 1
    skipped = pl.read_parquet(tmp_path / "skipped.parquet")
    assert skipped["problem_id"].to_list() == ["long", "long2"] and "model context 512" in skipped["reason"][0]
    assert "long" not in pl.read_parquet(tmp_path / "samples.parquet")["problem_id"].to_list()
    assert "-" in E.format_table({"tiny": s}) and "skipped" in E.describe(s)


def test_refine_rounds_rows_are_labelled_not_paper_protocol(tmp_path, tiny_engine, tiny_tokenizer, heldout):
    s = run(tiny_engine, tiny_tokenizer, {"tiny:heldout": heldout[:4]}, tmp_path, refine_rounds=1,
            draft_template="{question}\nDraft: {draft}\nImprove:", max_prompt_length=192)
    samples = pl.read_parquet(tmp_path / "samples.parquet")
    assert set(samples["protocol"]) == {"test_time_refine_r1 (not paper protocol)"}
    assert samples["draft"].null_count() == 0 and samples["draft_correct"].null_count() == 0
    assert (samples["prompt_tokens"] > 0).all()
    assert s["protocol"]["refine_rounds"] == 1 and s["protocol"]["paper_protocol"] is False
    assert "draft_avg@k" in s["metrics"]["tiny:heldout"]
    assert "not paper protocol" in E.describe(s)


def test_cli_eval_runs_and_reports(tmp_path, capsys):
    from igrpo_core.cli import main
    rc = main(["eval", "--eval_dataset", "tiny:heldout,gsm8k:test", "--eval_limit", "3", "--eval_num_samples", "1",
               "--max_completion_length", "16", "--tiny_num_problems", "50", "--out", str(tmp_path),
               "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "problems/s" in out and "gsm8k:test" in out and "tiny:heldout" in out
    assert (tmp_path / "samples.parquet").exists() and (tmp_path / "summary.json").exists()


def test_sigkill_of_igrpo_eval_then_rerun_gives_the_uninterrupted_result(tmp_path):
    """A real kill -9 of the CLI after its first chunk is on disk; rerunning the command resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def cmd(out):
        return [sys.executable, "-m", "igrpo_core", "eval", "--eval_dataset", "tiny:heldout", "--eval_limit", "128",
                "--eval_num_samples", "4", "--tiny_num_problems", "300", "--out", str(out), "--workers", "1"]

    env = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run(cmd(tmp_path / "a"), check=True, capture_output=True, env=env, timeout=600)
    proc = subprocess.Popen(cmd(tmp_path / "b"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not list((tmp_path / "b" / "parts").glob("*.parquet")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "summary.json").exists()  # killed mid-evaluation, not after it
    subprocess.run(cmd(tmp_path / "b"), check=True, capture_output=True, env=env, timeout=600)
    sa = json.loads((tmp_path / "a" / "summary.json").read_text())
    sb = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert sa["metrics"] == sb["metrics"]
    assert pl.read_parquet(tmp_path / "a" / "samples.parquet").equals(pl.read_parquet(tmp_path / "b" / "samples.parquet"))
