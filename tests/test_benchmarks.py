"""The benchmark protocol's model resolution (igrpo_core.benchmarks); the notebook runs in
test_notebooks.py."""
from igrpo_core import benchmarks


def test_models_resolve_run_dirs_checkpoints_and_plain_paths(tmp_path, tiny_model_path):
    run = tmp_path / "runs" / "r1"
    (run / "checkpoints" / "step_000002" / "model").mkdir(parents=True)
    (run / "checkpoints" / "step_000002" / "trainer_state.json").write_text("{}")
    (run / "status.json").write_text("{}")
    got = benchmarks.resolve_models([str(run), str(run / "checkpoints" / "step_000002" / "model"), tiny_model_path,
                             tiny_model_path], tmp_path / "runs")
    assert list(got) == ["r1", "r1@step_000002", "tiny-arith", "tiny-arith (2)"]
    assert got["r1"] == (str(run / "checkpoints" / "step_000002" / "model"), run / "eval")
    assert got["r1@step_000002"][1] == run / "eval"
    assert got["tiny-arith"][1] == tmp_path / "runs" / "eval-tiny-arith"
