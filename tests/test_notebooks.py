"""Every notebook runs through papermill with tiny parameters; the ablation grids and summaries are right.

The notebook tests need the Jupyter kernel "igrpo" (scripts/setup.sh installs it) and take about a
minute together on 2 CPU cores; the unit tests take milliseconds.
"""
import json

import nbformat
import polars as pl
import pytest

from igrpo_core import ablations as abl
from igrpo_core import notebooks as nb
from igrpo_core.config import Config

# A few seconds per run: 1 step, 2 questions x 4 rollouts, 32-token completions, 4 eval problems.
SMALL = dict(max_steps=1, prompts_per_step=2, num_generations=4, num_drafts=2, eval_limit=4,
             overrides={"max_completion_length": 32, "tiny_num_problems": 200, "generation_batch_size": 64})


# --- ablation grids and summary -----------------------------------------------------------------

def _arms(family, **base):
    arms, notes = abl.plan(Config(**base), [family])
    return {arm: cfg for _, arm, cfg in arms}, notes


def test_split_family_keeps_the_total_budget_fixed():
    arms, _ = _arms("split")
    assert list(arms) == ["grpo G8", "igrpo N2+G6", "igrpo N4+G4", "igrpo N6+G2"]
    for name, cfg in arms.items():
        assert cfg.num_generations == 8
        if cfg.algo == "igrpo":
            assert cfg.num_drafts + cfg.num_refinements == cfg.num_generations
    assert [arms[a].num_drafts for a in ("igrpo N2+G6", "igrpo N4+G4", "igrpo N6+G2")] == [2, 4, 6]
    small, _ = _arms("split", num_generations=4, num_drafts=2)
    assert all(c.num_refinements >= 2 for c in small.values()) and "igrpo N1+G3" in small


def test_budget_family_matches_grpo_and_igrpo_at_each_total():
    arms, _ = _arms("budget")
    for total in abl.TOTALS:
        grpo, igrpo = arms[f"grpo {total}"], arms[f"igrpo {total // 2}+{total // 2}"]
        assert grpo.algo == "grpo" and grpo.num_refinements == total
        assert igrpo.algo == "igrpo" and igrpo.num_drafts + igrpo.num_refinements == total == igrpo.num_generations


def test_beta_and_base_algo_families():
    betas, _ = _arms("beta")
    assert [c.beta for c in betas.values()] == [0.0, 1e-4, 1e-3, 1e-2]
    algos, _ = _arms("base_algo")
    assert list(algos) == ["grpo", "igrpo(grpo)", "dapo", "igrpo(dapo)", "gspo", "igrpo(gspo)"]
    for name in ("dapo", "igrpo(dapo)"):
        c = algos[name]
        assert (c.loss_type, c.epsilon, c.epsilon_high, c.importance_sampling_level) == ("dapo", 0.2, 0.28, "token")
    for name in ("gspo", "igrpo(gspo)"):
        c = algos[name]
        assert (c.importance_sampling_level, c.epsilon, c.epsilon_high) == ("sequence", 3e-4, 4e-4)
    for plain in ("grpo", "dapo", "gspo"):   # each base algorithm vs iGRPO around it, same budget
        assert algos[plain].algo == "grpo" and algos[f"igrpo({plain})"].algo == "igrpo"
        assert algos[plain].num_generations == algos[f"igrpo({plain})"].num_generations


def test_judge_arm_is_skipped_with_a_note_without_judge_model():
    arms, notes = _arms("reward")
    assert list(arms) == ["rule"] and len(notes) == 1 and "judge_model" in notes[0]
    arms, notes = _arms("reward", judge_model="http://localhost:8000/v1")
    assert arms["judge"].reward_funcs == ["judge"] and not notes


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown ablation families"):
        abl.plan(Config(), ["split", "lr"])


def test_summarize_over_seeds():
    df = pl.DataFrame({"family": ["beta"] * 4 + ["split"] * 2, "arm": ["b0", "b0", "b1", "b1", "s", "s"],
                       "seed": [0, 1, 0, 1, 0, 1], "eval_avg@k": [0.2, 0.4, 0.5, 0.5, 0.1, 0.3],
                       "final_reward": [1.0, 3.0, 2.0, 2.0, 0.0, 4.0]})
    s = abl.summarize(df)
    assert s["arm"].to_list() == ["b0", "b1", "s"] and s["seeds"].to_list() == [2, 2, 2]
    assert s["eval_avg@k_mean"].to_list() == pytest.approx([0.3, 0.5, 0.2])
    assert s["eval_avg@k_std"].to_list() == pytest.approx([0.1414214, 0.0, 0.1414214])   # sample std (ddof 1)
    assert s["final_reward_min"].to_list() == [1.0, 2.0, 0.0] and s["final_reward_max"].to_list() == [3.0, 2.0, 4.0]


# --- notebook helpers --------------------------------------------------------------------------

def test_notebook_parameters_none_keeps_preset_and_overrides_win():
    cfg = nb.config_from_parameters("paper", None, {"beta": 1e-3}, max_steps=None, prompts_per_step=8, beta=0.5)
    assert cfg.max_steps == 117 and cfg.prompts_per_step == 8 and cfg.beta == 1e-3
    with pytest.raises(ValueError, match="did you mean max_steps"):
        nb.config_from_parameters("tiny", None, None, max_step=3)


def test_entropy_drops_reports_first_step_below_fraction():
    m = pl.DataFrame({"run": ["a"] * 4 + ["b"] * 4, "step": [1, 2, 3, 4] * 2,
                      "entropy": [2.0, 1.9, 1.4, 0.9, 2.0, 2.0, 1.95, 1.9]})
    d = nb.entropy_drops(m, fractions=(0.9, 0.5))
    assert d.row(0, named=True)["first_step_below_0.9x"] == 3 and d.row(0, named=True)["first_step_below_0.5x"] == 4
    assert d.row(1, named=True)["first_step_below_0.9x"] is None   # never collapsed


def test_cli_values_parse_like_papermill():
    assert [nb._parse_value(v) for v in ("2", "1e-4", "None", "true", "grpo", "[0, 1]", "{beta: 0.1}")] == \
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
        assert json.loads((run_dir / "eval" / "summary.json").read_text())["metrics"]["macro_avg"]["avg@k"] >= 0
        assert (run_dir / "notebooks" / "quickstart.ipynb").read_bytes() == path.read_bytes()
    assert "base model" in text and "igrpo seed 0" in text and figs == 4


def test_train_notebook_writes_into_its_run_dir(kernel, tmp_path):
    runs = tmp_path / "runs"
    path, text, figs = run("train", {**SMALL, "algo": "grpo", "output_dir": str(runs), "run_name": "tr",
                                     "overrides": {**SMALL["overrides"], "beta": 0.001}},
                           run_dir=runs / "tr")
    assert path == runs / "tr" / "notebooks" / "train.ipynb"
    assert json.loads((runs / "tr" / "config.json").read_text())["beta"] == 0.001
    assert (runs / "tr" / "metrics.parquet").exists()
    assert (runs / "tr" / "eval" / "step_000001" / "summary.json").exists()
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


def test_analysis_notebook_reads_runs(quickstart):
    runs, qs_path = quickstart[0], quickstart[1]
    path, text, figs = run("analysis", {"run_dirs": [], "newest": 2, "output_dir": str(runs)},
                           output=qs_path.parent / "analysis.ipynb")
    assert "first_step_below_0.5x" in text and "qs-igrpo-s0" in text and "qs-grpo-s0" in text
    assert "near misses" in text or "--- " in text
    assert figs >= 4


def test_near_miss_examples_print_as_clipped_text():
    nm = pl.DataFrame({"run": ["r"], "step": [3], "group_index": [0], "sample_index": [1], "direction": ["fix"],
                       "gold": ["7"], "extracted": ["7"], "draft_accuracy": [0.0], "reward_accuracy": [1.0],
                       "advantage": [0.5], "draft": ["<script>alert(1)</script> 3+4=8"], "completion": ["x" * 50]})
    text = nb.format_near_misses(nm, n=2, max_chars=20)
    assert "step 3" in text and "fix" in text and "<script>alert(1)</sc" in text   # verbatim text, not HTML
    assert "[30 more chars]" in text
    assert nb.format_near_misses(nm.head(0)) == "(no near misses in these runs)"


def test_models_resolve_run_dirs_checkpoints_and_plain_paths(tmp_path, tiny_model_path):
    run = tmp_path / "runs" / "r1"
    (run / "checkpoints" / "step_000002" / "model").mkdir(parents=True)
    (run / "checkpoints" / "step_000002" / "trainer_state.json").write_text("{}")
    (run / "status.json").write_text("{}")
    got = nb.resolve_models([str(run), str(run / "checkpoints" / "step_000002" / "model"), tiny_model_path,
                             tiny_model_path], tmp_path / "runs")
    assert list(got) == ["r1", "r1@step_000002", "tiny-arith", "tiny-arith (2)"]
    assert got["r1"] == (str(run / "checkpoints" / "step_000002" / "model"), run / "eval")
    assert got["r1@step_000002"][1] == run / "eval"
    assert got["tiny-arith"][1] == tmp_path / "runs" / "eval-tiny-arith"


def test_base_algo_gspo_and_dapo_arms_are_off_policy():
    """Bug: GSPO and DAPO arms ran at num_iterations=1, where the ratio is 1, neither clip range acts
    and GSPO equals GRPO. They now take 2 updates per rollout batch (TRL's GSPO recipe), and the
    notebook says so."""
    algos, _ = _arms("base_algo")
    for name in ("dapo", "igrpo(dapo)", "gspo", "igrpo(gspo)"):
        assert algos[name].num_iterations == 2, name
    from pathlib import Path
    book = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "ablations.ipynb").read_text())
    md = "".join("".join(c["source"]) for c in book["cells"] if c["cell_type"] == "markdown")
    assert "num_iterations = 2" in md
