"""Every notebook runs through papermill with tiny parameters; notebook parameters resolve like the CLI.

The notebook tests need the Jupyter kernel "igrpo" (scripts/setup.sh installs it) and take about a
minute together on 2 CPU cores; the unit tests take milliseconds.
"""
import json

import nbformat
import polars as pl
import pytest

from igrpo_core import notebooks as nb
from igrpo_core.config import parse_literal

# A few seconds per run: 1 step, 2 questions x 4 rollouts, 32-token completions, 4 eval problems.
SMALL = dict(max_steps=1, prompts_per_step=2, num_generations=4, num_drafts=2, eval_limit=4,
             overrides={"max_completion_length": 32, "tiny_num_problems": 200, "generation_batch_size": 64})


# --- notebook helpers --------------------------------------------------------------------------

def test_notebook_parameters_none_keeps_preset_and_overrides_win():
    cfg = nb.config_from_parameters("paper", None, {"beta": 1e-3}, max_steps=None, prompts_per_step=8, beta=0.5)
    assert cfg.max_steps == 117 and cfg.prompts_per_step == 8 and cfg.beta == 1e-3
    with pytest.raises(ValueError, match="did you mean max_steps"):
        nb.config_from_parameters("tiny", None, None, max_step=3)


def test_cli_values_parse_like_papermill():
    assert [parse_literal(v) for v in ("2", "1e-4", "None", "true", "grpo", "[0, 1]", "{beta: 0.1}")] == \
        [2, 1e-4, None, True, "grpo", [0, 1], {"beta": 0.1}]


def test_missing_kernel_is_a_clear_error():
    with pytest.raises(RuntimeError, match="scripts/setup.sh"):
        nb.check_kernel("igrpo-no-such-kernel")


# --- notebooks through papermill ---------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel():
    try:
        nb.check_kernel("igrpo")
    except RuntimeError as exc:
        pytest.fail(str(exc))


def outputs(path):
    """(all stream text, error outputs, plotly figure count) of an executed notebook."""
    book = nbformat.read(path, as_version=4)
    outs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    errors = [f"{o.ename}: {o.evalue}" for o in outs if o.output_type == "error"]
    figs = sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outs)
    return text, errors, figs


def run(name, params, **kw):
    path = nb.execute(name, params, **kw)
    text, errors, figs = outputs(path)
    assert not errors, f"{name}: {errors}"
    return path, text, figs


@pytest.fixture(scope="module")
def quickstart(kernel, tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    runs = root / "runs"
    path, text, figs = run("quickstart", {**SMALL, "output_dir": str(runs), "tag": "qs"},
                           output=root / "quickstart.ipynb")
    return runs, path, text, figs


def test_quickstart_trains_both_and_keeps_the_notebook_with_the_runs(quickstart):
    runs, path, text, figs = quickstart
    for algo in ("grpo", "igrpo"):
        run_dir = runs / f"qs-{algo}-s0"
        assert pl.read_parquet(run_dir / "metrics.parquet")["step"].to_list() == [1]
        assert json.loads((run_dir / "eval" / "final" / "summary.json").read_text())["metrics"]["macro_avg"]["avg@k"] >= 0
        assert (run_dir / "notebooks" / "quickstart.ipynb").read_bytes() == path.read_bytes()
    assert "base model" in text and "igrpo seed 0" in text and figs == 4


def test_train_notebook_writes_into_its_run_dir(kernel, tmp_path):
    runs = tmp_path / "runs"
    path, text, figs = run("train", {**SMALL, "algo": "grpo", "output_dir": str(runs), "run_name": "tr", "eval_base": True,
                                     "overrides": {**SMALL["overrides"], "beta": 0.001}},
                           run_dir=runs / "tr")
    assert path == runs / "tr" / "notebooks" / "train.ipynb"
    assert json.loads((runs / "tr" / "config.json").read_text())["beta"] == 0.001
    assert (runs / "tr" / "metrics.parquet").exists()
    assert (runs / "tr" / "eval" / "step_000001" / "summary.json").exists()
    assert (runs / "tr" / "eval" / "base" / "summary.json").exists()   # before/after on the same problems
    assert f"run directory: {runs / 'tr'}" in text and figs == 3   # no draft plot for GRPO


def test_benchmark_notebook_paper_protocol_per_set_k(quickstart, tiny_model_path):
    runs = quickstart[0]
    path, text, figs = run("benchmark", {"models": [tiny_model_path, str(runs / "qs-igrpo-s0")],
                                         "sets": ["tiny:heldout", "aime24"], "eval_limit": 2,
                                         "max_completion_length": 16, "output_dir": str(runs)},
                           output=quickstart[1].parent / "benchmark.ipynb")
    summaries = sorted((runs / "qs-igrpo-s0" / "eval").glob("benchmark-paper-*/summary.json"))
    assert len(summaries) == 1 and (runs / "eval-tiny-arith").is_dir()
    protocol = json.loads(summaries[0].read_text())["protocol"]
    assert protocol["num_samples"] == {"tiny:heldout": 8, "aime24": 64} and protocol["temperature"] == 0.6
    assert (summaries[0].parent / "notebooks" / "benchmark.ipynb").exists()
    assert "macro_avg" in text and "pass@k" in text and figs == 1


def test_ablations_notebook_runs_arms_and_seeds(kernel, tmp_path):
    runs = tmp_path / "runs"
    path, text, figs = run("ablations", {**SMALL, "families": ["split", "reward"], "seeds": [0, 1],
                                         "output_dir": str(runs), "tag": "ab"},
                           output=tmp_path / "ablations.ipynb")
    out = runs / "ablation-ab"
    results, summary = pl.read_parquet(out / "results.parquet"), pl.read_parquet(out / "summary.parquet")
    # split at total 4: grpo G4, igrpo N1+G3, igrpo N2+G2; reward: rule (the judge arm is skipped)
    assert results.height == 4 * 2 and summary["seeds"].to_list() == [2] * 4
    assert "skipped reward/judge" in text
    # "reward/rule" is the base config, identical to "split/igrpo N2+G2": trained once, shared
    rule = results.filter(pl.col("arm") == "rule")["run_dir"].to_list()
    assert rule == results.filter(pl.col("arm") == "igrpo N2+G2")["run_dir"].to_list()
    assert len(set(results["run_dir"])) == 3 * 2
    for d in set(results["run_dir"]):
        assert (runs / d.split("/")[-1] / "metrics.parquet").exists()
    assert (out / "notebooks" / "ablations.ipynb").exists() and figs == 3


def test_study_notebook_runs_a_cell_and_prints_the_table(kernel, tmp_path):
    runs = tmp_path / "runs"
    path, text, figs = run("study", {**SMALL, "levels": ["tiny-hard"], "arms": ["igrpo"], "seeds": [0],
                                     "n_boot": 100, "output_dir": str(runs), "tag": "st"},
                           output=tmp_path / "study.ipynb")
    out = runs / "study-st"
    table = pl.read_parquet(out / "table.parquet")
    assert table.select("level", "arm", "seeds").rows() == [("tiny-hard", "igrpo", 1)]
    assert table["ci_low"][0] <= table["acc_mean"][0] <= table["ci_high"][0]
    assert (runs / "st-tiny-hard-igrpo-s0" / "eval" / "final" / "samples.parquet").exists()
    assert "| tiny-hard | igrpo | 1 |" in text and (out / "notebooks" / "study.ipynb").exists() and figs == 1


def test_analysis_notebook_reads_runs(quickstart):
    runs, qs_path = quickstart[0], quickstart[1]
    path, text, figs = run("analysis", {"run_dirs": [], "newest": 2, "output_dir": str(runs)},
                           output=qs_path.parent / "analysis.ipynb")
    assert "first_step_below_0.5x" in text and "qs-igrpo-s0" in text and "qs-grpo-s0" in text
    assert "near misses" in text or "--- " in text
    assert figs >= 4


def test_analysis_notebook_over_a_hostile_runs_folder(kernel, tmp_path):
    """Corrupt, missing, wrong-shaped and out-of-folder files are skipped with a warning naming each one."""
    from hostile_runs import SECRET, build_hostile_runs
    hr = build_hostile_runs(tmp_path)
    path, text, figs = run("analysis", {"run_dirs": [], "newest": 50, "output_dir": str(hr.root)},
                           output=tmp_path / "analysis.ipynb")
    for rel in hr.bad:
        if not rel.startswith("eval-broken"):  # an evaluation outside any run: the dashboard's, not this notebook's
            assert f"warning: skipped {hr.root / rel}: " in text, rel
    assert SECRET not in text and figs >= 3
    assert "more chars]" in text  # the 10 MB near miss is printed clipped
