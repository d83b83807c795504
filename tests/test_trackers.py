"""report_to (trackers.py): a 2-step tiny run mirrors metrics.parquet's rows to TensorBoard (always
exercised: tensorboard is in requirements.txt), to wandb offline and to trackio (each when
installed); unknown names are rejected by Config, and a missing package is a clear error that names
the pip package before any data or model loads."""
import importlib.util
import sqlite3

import pytest

from igrpo_core import records, trackers
from igrpo_core import trainer as T
from igrpo_core.config import Config, parse_overrides
from tests.conftest import small_config

OPTIONAL = [n for n in ("wandb", "trackio") if importlib.util.find_spec(n) is not None]


@pytest.fixture(scope="module")
def run(tmp_path_factory, monkeypatch_module):
    """One 2-step GRPO run reporting to TensorBoard and to every optional tracker installed."""
    tmp = tmp_path_factory.mktemp("trackers")
    monkeypatch_module.delenv("WANDB_MODE", raising=False)    # our default: offline
    monkeypatch_module.delenv("TRACKIO_DIR", raising=False)   # our default: inside the run directory
    cfg = small_config(tmp, algo="grpo", max_steps=2, report_to=["tensorboard", *OPTIONAL])
    return T.train(cfg)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def numeric_columns(metrics) -> dict[str, list[float]]:
    return {c: metrics[c].to_list() for c in metrics.columns
            if c != "step" and metrics[c].dtype.is_numeric() and metrics[c].null_count() == 0}


def test_tensorboard_scalars_equal_metrics_parquet(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    metrics = records.read_metrics(run)
    expected = numeric_columns(metrics)
    assert len(expected) > 10 and {"loss", "reward_mean", "grad_norm", "lr"} <= set(expected)
    assert set(acc.Tags()["scalars"]) == {f"train/{c}" for c in expected}
    for col, values in expected.items():
        events = acc.Scalars(f"train/{col}")
        assert [e.step for e in events] == metrics["step"].to_list() == [1, 2], col
        assert [e.value for e in events] == pytest.approx(values, rel=1e-6, abs=1e-30), col  # float32 in TB


@pytest.mark.skipif("wandb" not in OPTIONAL, reason="wandb not installed (pip install wandb)")
def test_wandb_offline_run_directory_holds_the_metrics(run):
    runs = list((run / "wandb").glob("offline-run-*-t"))
    assert len(runs) == 1, list((run / "wandb").iterdir())
    # The .wandb file is wandb's own record log (no reader ships with wandb 0.31): the metric names
    # and their JSON values are stored verbatim in it.
    data = (runs[0] / "run-t.wandb").read_bytes()
    last = records.read_metrics(run).row(-1, named=True)
    assert b"train/reward_mean" in data and b"train/grad_norm" in data
    assert repr(float(last["grad_norm"])).encode() in data


@pytest.mark.skipif("trackio" not in OPTIONAL, reason="trackio not installed (pip install trackio)")
def test_trackio_database_holds_the_metrics(run):
    dbs = list((run / "trackio").glob("*.db"))
    assert dbs, list((run / "trackio").rglob("*"))
    with sqlite3.connect(dbs[0]) as con:
        rows = con.execute("select step, metrics from metrics where run_name = 't' order by step").fetchall()
    import json
    assert [s for s, _ in rows] == [1, 2]
    got = [json.loads(m)["train/loss"] for _, m in rows]
    assert got == pytest.approx(records.read_metrics(run)["loss"].to_list(), rel=1e-9)


def test_report_to_accepts_trl_forms_and_rejects_unknown_names():
    assert Config(report_to="none").report_to == "none"
    assert trackers.report_to_names("none") == [] and trackers.report_to_names(None) == []
    assert trackers.report_to_names("tensorboard") == ["tensorboard"]
    assert trackers.report_to_names(["wandb", "tensorboard", "wandb"]) == ["wandb", "tensorboard"]
    assert parse_overrides(["--report_to=tensorboard,wandb"]) == {"report_to": ["tensorboard", "wandb"]}
    for bad in ("mlflow", ["tensorboard", "comet_ml"]):
        with pytest.raises(ValueError, match="report_to"):
            Config(report_to=bad)


def test_missing_tracker_package_is_a_clear_error_before_anything_loads(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))

    def must_not_load(*a, **k):
        raise AssertionError("data or model loaded before the tracker check")
    monkeypatch.setattr(T, "load_dataset", must_not_load)
    monkeypatch.setattr(T, "load_model", must_not_load)
    with pytest.raises(RuntimeError, match=r"report_to=\['wandb'\] needs .*pip install wandb"):
        T.Trainer(small_config(tmp_path, report_to=["tensorboard", "wandb"]))
    assert not (tmp_path / "runs").exists()


def test_only_the_main_process_reports(tmp_path):
    t = trackers.Trackers("tensorboard", tmp_path / "run", {}, main=False)
    t.log({"step": 1, "loss": 0.5})
    t.close()
    assert not (tmp_path / "run").exists()
    assert trackers.scalars({"step": 3, "loss": 1, "kl": None, "ok": True, "name": "x"}) == {"train/loss": 1.0}
