"""Dashboard tests: every page of dashboards/app.py under Streamlit's AppTest, against real run directories.

The session fixture trains one iGRPO and one GRPO run on the tiny model (two steps each), one iGRPO run
without rollout records, evaluates the iGRPO run on 8 problems, then appends an extra rollout step in
which the chosen draft of group 0 is an HTML/script payload and a refinement of it is right (a "fix"),
so the pages have a near miss to show and an untrusted text to show literally.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboards" / "app.py"
SCRIPT = "<script>alert('x')</script><b>bold</b>"
PAGES = ["Runs", "Arms", "Curves", "Rollouts", "Near misses", "Evaluation"]

_BUILT: dict[str, Path] = {}


def _append_script_step(run_dir: Path) -> int:
    """Copy the last real step as a new step whose group-0 chosen draft is SCRIPT and refinement #0 a fix."""
    from igrpo_core import records
    rows = records.read_rollouts(run_dir)
    last = int(rows["step"].max())
    new = rows.filter(pl.col("step") == last).with_columns(pl.lit(last + 1, pl.Int64).alias("step"))
    chosen = (pl.col("group_index") == 0) & (pl.col("stage") == "draft") & pl.col("is_chosen_draft")
    fixed = (pl.col("group_index") == 0) & (pl.col("stage") == "refine") & (pl.col("sample_index") == 0)
    new = new.with_columns(
        pl.when(chosen).then(pl.lit(SCRIPT)).when(fixed).then(pl.lit("<think>ok</think><answer>") + pl.col("gold")
                                                               + pl.lit("</answer>"))
        .otherwise(pl.col("completion")).alias("completion"),
        pl.when(chosen).then(0.0).when(fixed).then(1.0).otherwise(pl.col("reward_accuracy")).alias("reward_accuracy"),
        pl.when(fixed).then(pl.col("gold")).otherwise(pl.col("extracted")).alias("extracted"),
    ).with_columns(pl.when(fixed).then(2.0).otherwise(pl.col("reward")).alias("reward"))
    records.write_rollouts(run_dir, last + 1, new.to_dicts())
    return last + 1


def build_dashboard_runs(tmp_path_factory) -> Path:
    """Build once per session (the browser tests import this too) and return the runs directory."""
    if "root" in _BUILT:
        return _BUILT["root"]
    from conftest import small_config
    from igrpo_core import evaluate as E
    from igrpo_core.experiments import final_model
    from igrpo_core.trainer import train

    base = tmp_path_factory.mktemp("dashboard")
    igrpo = train(small_config(base, run_name="igrpo-a", algo="igrpo", save_steps=10))
    train(small_config(base, run_name="grpo-a", algo="grpo", save_steps=10))
    train(small_config(base, run_name="igrpo-nolog", algo="igrpo", max_steps=1, save_steps=10,
                       log_completions=False))
    cfg = small_config(base, run_name="igrpo-a", algo="igrpo", eval_limit=8)
    E.evaluate_model(cfg, str(final_model(igrpo)), igrpo / "eval" / "tiny_heldout", progress=False)
    samples_path = igrpo / "eval" / "tiny_heldout" / "samples.parquet"
    samples = pl.read_parquet(samples_path)
    samples.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(SCRIPT)).otherwise(pl.col("completion"))
                         .alias("completion")).write_parquet(samples_path)
    _BUILT["extra_step"] = _append_script_step(igrpo)
    _BUILT["root"] = igrpo.parent
    return _BUILT["root"]


def payload_near_miss_label(runs: Path) -> str:
    """The near-miss picker's label for the injected fix (real near misses of a trained model precede it)."""
    from igrpo_core import records
    step = _BUILT["extra_step"]
    ro = records.read_rollouts(runs / "igrpo-a", steps=[step])
    pid = ro.filter(pl.col("group_index") == 0)["prompt_id"][0]
    return f"step {step} · group 0 · refinement #0 · fix · {pid}"


def _pick_payload_near_miss(at, runs: Path) -> None:
    label = payload_near_miss_label(runs)
    box = at.selectbox(key="nm_pick")
    box.select_index(list(box.options).index(label)).run()  # AppTest holds the formatted labels


@pytest.fixture(scope="session")
def dash_runs(tmp_path_factory) -> Path:
    return build_dashboard_runs(tmp_path_factory)


def _app(runs: Path, monkeypatch, page: str = "Runs") -> AppTest:
    monkeypatch.setenv("IGRPO_RUNS", str(runs))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if page != "Runs":
        at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _codes(at: AppTest) -> list[str]:
    return [c.value for c in at.code]


def _frames(at: AppTest):
    return [d.value for d in at.dataframe]


def test_overview_lists_runs_and_compares(dash_runs, monkeypatch):
    at = _app(dash_runs, monkeypatch)
    table = _frames(at)[0]
    assert {"igrpo-a", "grpo-a", "igrpo-nolog"} <= set(table["run"])
    assert set(table["state"]) == {"finished"}
    assert set(table["algo"]) == {"igrpo", "grpo"}
    diff = next(f for f in _frames(at) if "key" in f.columns)
    assert "algo" in set(diff["key"])
    final = next(f for f in _frames(at) if "metric" in f.columns)
    assert {"igrpo-a", "grpo-a"} <= set(final.columns) and "reward_mean" in set(final["metric"])


def test_every_page_renders_without_exceptions(dash_runs, monkeypatch):
    at = _app(dash_runs, monkeypatch)
    for page in PAGES:
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])


def test_curves_overlay_runs_in_plotly(dash_runs, monkeypatch):
    at = _app(dash_runs, monkeypatch, "Curves")
    charts = at.get("plotly_chart")
    assert len(charts) >= 8
    specs = " ".join(c.proto.spec for c in charts)
    for name in ("igrpo-a", "grpo-a", "refinements", "best draft", "group (GRPO)"):
        assert name in specs
    assert "Refinement gain over best draft" in specs and "Zero-std groups" in specs
    at.slider(key="curve_steps").set_value((2, 2)).run()
    assert not at.exception and len(at.get("plotly_chart")) >= 8


def test_rollout_browser_shows_problem_chosen_draft_and_refinements(dash_runs, monkeypatch):
    from igrpo_core import records
    at = _app(dash_runs, monkeypatch, "Rollouts")
    at.selectbox(key="rb_run").set_value("igrpo-a").run()
    at.select_slider(key="rb_step_igrpo-a").set_value(1).run()
    assert not at.exception
    r = records.read_rollouts(dash_runs / "igrpo-a", steps=[1])
    g0 = r.filter(pl.col("group_index") == 0)
    chosen = g0.filter(pl.col("is_chosen_draft").fill_null(False))["completion"][0]
    question = g0.filter(pl.col("stage") == "draft")["prompt"][0]
    codes = _codes(at)
    assert (chosen or "(empty)") in codes and question in codes
    drafts, refines = (f for f in _frames(at) if "completion" in f.columns)
    assert len(drafts) == 2 and drafts["is_chosen_draft"].sum() == 1
    assert len(refines) == 2 and "advantage" in refines.columns and "finish_reason" in refines.columns
    assert at.selectbox(key="rb_refine_pick") is not None  # the draft-vs-refinement diff picker


def test_script_completion_is_shown_literally(dash_runs, monkeypatch):
    at = _app(dash_runs, monkeypatch, "Rollouts")
    at.selectbox(key="rb_run").set_value("igrpo-a").run()  # the default step is the newest: the payload step
    assert SCRIPT in _codes(at)
    assert not any(SCRIPT in m.value for m in at.markdown)
    at.sidebar.radio(key="page").set_value("Near misses").run()
    _pick_payload_near_miss(at, dash_runs)
    assert SCRIPT in _codes(at)
    at.sidebar.radio(key="page").set_value("Evaluation").run()
    assert SCRIPT in _codes(at)


def test_grpo_run_on_rollout_page_gets_a_message(dash_runs, monkeypatch):
    at = _app(dash_runs, monkeypatch, "Rollouts")
    at.selectbox(key="rb_run").set_value("grpo-a").run()
    assert not at.exception
    assert any("GRPO run" in i.value for i in at.info)
    assert len(at.code) >= 4  # the problem and the group's completions


def test_run_without_rollouts_gets_a_message(dash_runs, monkeypatch):
    at = _app(dash_runs, monkeypatch, "Rollouts")
    at.selectbox(key="rb_run").set_value("igrpo-nolog").run()
    assert not at.exception and any("log_completions" in i.value for i in at.info)
    at.sidebar.radio(key="page").set_value("Near misses").run()
    at.selectbox(key="nm_run").set_value("igrpo-nolog").run()
    assert not at.exception and any("log_completions" in i.value for i in at.info)


def test_near_miss_page_counts_and_lists_the_fix(dash_runs, monkeypatch):
    at = _app(dash_runs, monkeypatch, "Near misses")
    at.selectbox(key="nm_run").set_value("igrpo-a").run()
    metrics = {m.label: int(m.value) for m in at.metric}
    assert metrics["Fixes"] >= 1 and metrics["Refinements"] == 4 * 2 * (_BUILT["extra_step"])
    assert at.get("plotly_chart")
    listing = next(f for f in _frames(at) if "direction" in f.columns)
    assert ((listing["step"] == _BUILT["extra_step"]) & (listing["direction"] == "fix")).any()


def test_near_miss_page_on_grpo_only_runs(dash_runs, tmp_path, monkeypatch):
    shutil.copytree(dash_runs / "grpo-a", tmp_path / "grpo-a", ignore=shutil.ignore_patterns("checkpoints"))
    at = _app(tmp_path, monkeypatch, "Near misses")
    assert any("iGRPO run" in i.value for i in at.info)


def test_eval_page_table_and_drill_down(dash_runs, monkeypatch):
    at = _app(dash_runs, monkeypatch, "Evaluation")
    table = next(f for f in _frames(at) if "avg@k" in f.columns)
    assert "tiny:heldout" in set(table["dataset"]) and "igrpo-a/tiny_heldout" in set(table["eval"])
    assert {"pass@1", "maj@k"} <= set(table.columns)
    problems = next(f for f in _frames(at) if "problem_id" in f.columns)
    assert len(problems) == 8
    samples = next(f for f in _frames(at) if "correct" in f.columns and "completion" in f.columns)
    assert {"extracted", "correct"} <= set(samples.columns)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_runs_dir_shows_how_to_create_a_run(tmp_path, monkeypatch, make):
    runs = tmp_path / "runs"
    if make == "empty":
        runs.mkdir()
    for page in PAGES:
        at = _app(runs, monkeypatch, page)
        assert any("igrpo train" in i.value for i in at.info), page


def test_live_refresh_rereads_new_steps(dash_runs, tmp_path, monkeypatch):
    from igrpo_core import records
    run = tmp_path / "igrpo-a"
    shutil.copytree(dash_runs / "igrpo-a", run, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    at = _app(tmp_path, monkeypatch, "Rollouts")
    at.sidebar.toggle(key="live").set_value(True).run()
    before = at.select_slider(key="rb_step_igrpo-a").options
    rows = records.read_rollouts(run, steps=[1]).with_columns(pl.lit(99, pl.Int64).alias("step"))
    records.write_rollouts(run, 99, rows.to_dicts())
    at.run()
    after = at.select_slider(key="rb_step_igrpo-a").options
    assert "99" not in before and "99" in after


def test_runs_dir_resolution(monkeypatch):
    from dashboards.common import default_runs_dir
    monkeypatch.delenv("IGRPO_RUNS", raising=False)
    assert default_runs_dir([]) == "runs"
    monkeypatch.setenv("IGRPO_RUNS", "/x/env")
    assert default_runs_dir([]) == "/x/env"
    assert default_runs_dir(["--runs", "/x/argv"]) == "/x/argv"


def test_streamlit_config_binds_localhost():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1" and cfg["server"]["headless"] is True
    assert cfg["browser"]["gatherUsageStats"] is False


def test_dashboard_never_renders_html():
    """Model text must never reach an HTML sink: the only one is common.show_html, which renders nothing but
    textdiff.inline_diff's escaped output (tests/test_textdiff.py); no other sink exists in the code."""
    for path in (ROOT / "dashboards").glob("*.py"):
        src = path.read_text()
        for sink in ("unsafe_allow_html=True", "components.html", "components.v1", "unsafe_allow_javascript"):
            assert sink not in src, f"{path.name} uses {sink}"
        allowed = 1 if path.name == "common.py" else 0
        assert src.count("st.html(") == allowed, f"{path.name}: st.html outside common.show_html"
    common = (ROOT / "dashboards" / "common.py").read_text()
    body = common[common.index("def show_html("):]
    body = body[:body.index("\ndef ", 1)]
    assert "isinstance(body, SafeHtml)" in body and "st.html(body)" in body


def test_app_does_not_import_torch(dash_runs):
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout=120).run()
for page in {PAGES!r}:
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, [e.value for e in at.exception]
at.sidebar.radio(key="page").set_value("Rollouts").run()
at.selectbox(key="rb_run").set_value("igrpo-a").run()
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    env = {**os.environ, "IGRPO_RUNS": str(dash_runs), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_word_diff_marks_changes():
    from dashboards.textdiff import line_table, word_diff
    a, b, ratio = word_diff("x = 3 + 4 = 8", "x = 3 + 4 = 7")
    assert a == "x = 3 + 4 = [-8-]" and b == "x = 3 + 4 = {+7+}" and 0 < ratio < 1
    assert [r["op"] for r in line_table("a\nb", "a\nc")] == ["equal", "replace"]


def test_analysis_eval_tables():
    from igrpo_core import analysis
    summary = {"metrics": {"gsm8k": {"problems": 2, "samples_per_problem": 2, "avg@k": 0.5, "pass@1": 0.5,
                                     "pass@2": 0.75, "maj@k": 0.5}, "macro_avg": {"avg@k": 0.5}},
               "protocol": {"temperature": 0.6, "greedy": False, "refine_rounds": 0}}
    t = analysis.eval_results({"m": json.loads(json.dumps(summary))})
    assert t.columns[:7] == ["eval", "dataset", "problems", "samples_per_problem", "avg@k", "pass@1", "pass@2"]
    assert t.height == 2
    s = pl.DataFrame({"dataset": ["d"] * 3, "problem_id": ["p", "p", "q"], "correct": [True, False, False],
                      "extracted": ["1", "2", None], "gold": ["1", "1", "5"], "status": ["ok", "ok", "no_answer"]})
    p = analysis.eval_problem_table(s)
    assert p["correct"].to_list() == [1, 0] and p["answers"].to_list() == ["1 | 2", ""]
