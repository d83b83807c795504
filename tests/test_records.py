"""Run and evaluation records (igrpo_core.records): atomic writes, the config guard between
attempts, truncation on resume, the metric vocabulary, and finding evaluations in any state."""
import polars as pl
import pytest

from igrpo_core import records
from igrpo_core.options import METRIC_COLUMNS


def test_atomic_write_leaves_no_temporary_and_replaces_whole_files(tmp_path):
    p = tmp_path / "x.json"
    records.write_json(p, {"a": 1})
    records.write_json(p, {"a": 2})
    assert records.read_json(p) == {"a": 2} and [f.name for f in tmp_path.iterdir()] == ["x.json"]


def test_a_different_config_in_the_same_run_dir_is_an_error_naming_the_keys(tmp_path):
    run = tmp_path / "r"
    records.init_run_dir(run, {"beta": 0.0, "max_steps": 10, "seed": 1})
    records.init_run_dir(run, {"beta": 0.0, "max_steps": 20, "seed": 1})   # run control may change
    assert records.read_json(run / "config.json")["max_steps"] == 20
    with pytest.raises(ValueError, match=r"\['beta', 'seed'\]") as err:
        records.init_run_dir(run, {"beta": 0.1, "max_steps": 20, "seed": 2})
    assert "beta: run 0.0, now 0.1; seed: run 1, now 2" in str(err.value)   # what to pass to resume it


def test_a_run_from_before_a_setting_existed_resumes_with_the_value_that_computes_as_it_did(tmp_path):
    """A run started before micro_batch_tokens existed (now "auto" by default) is refused under the new
    default with the value to pass, and resumes with it (config.ABSENT_MEANS); a key with no such value
    is named as added since."""
    from igrpo_core.config import ABSENT_MEANS
    run = tmp_path / "r"
    records.init_run_dir(run, {"beta": 0.0})
    with pytest.raises(ValueError) as err:
        records.init_run_dir(run, {"beta": 0.0, "micro_batch_tokens": "auto"}, absent_means=ABSENT_MEANS)
    assert 'micro_batch_tokens: run (added since; 0 computes as the run did), now "auto"' in str(err.value)
    records.init_run_dir(run, {"beta": 0.0, "micro_batch_tokens": 0}, absent_means=ABSENT_MEANS)
    assert records.read_json(run / "config.json") == {"beta": 0.0, "micro_batch_tokens": 0}
    with pytest.raises(ValueError, match=r"new_knob: run \(not in its config: added since\), now 3"):
        records.init_run_dir(run, {"beta": 0.0, "micro_batch_tokens": 0, "new_knob": 3}, absent_means=ABSENT_MEANS)
    with pytest.raises(ValueError, match=r"beta: run 0.0, now \(no longer a setting\)"):   # a removed setting
        records.init_run_dir(run, {"micro_batch_tokens": 0}, absent_means=ABSENT_MEANS)


def test_metrics_follow_the_vocabulary_and_truncate_on_resume(tmp_path):
    run = tmp_path / "r"
    records.init_run_dir(run, {})
    for step in (1, 2, 3):
        records.append_metrics(run, {"step": step, "loss": 0.5 * step, "kl": None})
        records.write_rollouts(run, step, [{"step": step, "stage": "grpo", "reward": 1.0}])
    m = records.read_metrics(run)
    assert m.columns == list(METRIC_COLUMNS) and m["loss"].to_list() == [0.5, 1.0, 1.5]
    with pytest.raises(ValueError, match="not in options.METRIC_COLUMNS"):
        records.append_metrics(run, {"step": 4, "my_new_metric": 1.0})
    (run / "rollouts" / "step_000004.parquet.tmp").write_text("half")          # a crash mid-write
    (run / "rollouts" / "notes.parquet").write_text("foreign")
    records.truncate_after(run, 2)
    assert records.read_metrics(run)["step"].to_list() == [1, 2]
    assert list(records.rollout_parts(run)) == [1, 2]
    assert not (run / "rollouts" / "step_000004.parquet.tmp").exists()
    assert records.read_rollouts(run)["step"].to_list() == [1, 2]


def test_only_complete_checkpoints_count_and_pruning_keeps_the_newest(tmp_path):
    run = tmp_path / "r"
    for step, complete in [(10, True), (20, True), (30, True), (40, False)]:
        d = run / "checkpoints" / f"step_{step:06d}"
        d.mkdir(parents=True)
        if complete:
            records.write_json(d / "trainer_state.json", {"step": step})
    assert [p.name for p in records.checkpoint_dirs(run)] == ["step_000010", "step_000020", "step_000030"]
    records.prune_checkpoints(run, keep=2)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000020", "step_000030"]


def test_eval_dirs_find_finished_and_running_evaluations(tmp_path):
    run = tmp_path / "r"
    done, running = records.eval_dir(run, "final"), records.eval_dir(run, "benchmark-paper-1234abcd")
    done.mkdir(parents=True)
    records.write_json(done / "summary.json", {"metrics": {"macro_avg": {"avg@k": 0.5}}})
    (running / "parts").mkdir(parents=True)
    row = {k: None for k in records.SAMPLE_SCHEMA} | {"dataset": "tiny", "problem_id": "p", "correct": True}
    pl.DataFrame([row], schema=records.SAMPLE_SCHEMA).write_parquet(running / "parts" / "00-tiny-00000.parquet")
    assert records.eval_dirs(run / "eval") == [running, done]
    assert records.read_eval_summary(done)["metrics"]["macro_avg"]["avg@k"] == 0.5
    assert records.read_eval_summary(running) == {}
    assert records.read_eval_samples(running)["problem_id"].to_list() == ["p"]
    assert records.read_eval_samples(tmp_path).schema == pl.Schema(records.SAMPLE_SCHEMA)
    assert records.eval_dirs(tmp_path / "missing") == []
