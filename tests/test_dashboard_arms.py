"""Issue 11 item 9: arms side by side, draft selection on the rollout page, the inline refinement diff, and
entropy drop marks on the curves page. Pure functions on hand-made values; pages under AppTest over the
synthetic study folder of tests/arm_runs.py (two arms x two seeds, written with records' writers)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from arm_runs import DIFF_PAYLOAD, EXPECTED, build_arm_runs
from igrpo_core import analysis

APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"


# --- pure functions -----------------------------------------------------------------------------------

def test_arm_labels_group_runs_that_differ_only_in_seed_and_bookkeeping():
    cfg = {"algo": "igrpo", "lr": 1e-5, "draft_selection": "best"}
    configs = {"a0": {**cfg, "seed": 0, "run_name": "a0", "output_dir": "/x", "save_steps": 5},
               "a1": {**cfg, "seed": 1, "run_name": "a1", "output_dir": "/y", "resume": True},
               "b0": {**cfg, "seed": 0, "draft_selection": "worst"},
               "c0": {**cfg, "seed": 0, "algo": "grpo", "draft_selection": "worst"}}
    labels = analysis.arm_labels(configs)
    assert labels["a0"] == labels["a1"] == "algo=igrpo · draft_selection=best"
    assert labels["b0"] == "algo=igrpo · draft_selection=worst"
    assert labels["c0"] == "algo=grpo · draft_selection=worst"
    assert set(analysis.arm_labels({"x": {"seed": 0, "a": 1}, "y": {"seed": 1, "a": 1}}).values()) == {"all runs"}
    # a key only some configs have is a difference; max_steps changes what is trained, so it counts
    assert analysis.arm_labels({"x": {"a": 1}, "y": {"a": 1, "max_steps": 9}}) == {"x": "max_steps=–",
                                                                                    "y": "max_steps=9"}


def test_heldout_accuracy_prefers_the_final_evaluation():
    def s(v):
        return {"metrics": {"macro_avg": {"avg@k": v}}}
    assert analysis.heldout_accuracy({"eval-abc": s(0.2), "final": s(0.5), "zzz": s(0.9)}) == (0.5, "final")
    assert analysis.heldout_accuracy({"eval-abc": s(0.2), "eval-def": s(0.3)}) == (0.3, "eval-def")
    assert analysis.heldout_accuracy({"final": {}, "x": s(0.4)}) == (0.4, "x")   # final still running
    assert analysis.heldout_accuracy({"final": {"metrics": {"macro_avg": {"avg@k": "0.9"}}}}) == (None, None)
    assert analysis.heldout_accuracy({}) == (None, None)


def test_arm_table_mean_sd_and_counts():
    rows = pl.DataFrame({"arm": ["A", "A", "B"], "seed": [0, 1, 0], "heldout_accuracy": [0.5, 0.7, 0.4],
                         "fixes": [2, None, 1]})
    t = analysis.arm_table(rows).sort("arm")
    a, b = t.row(0, named=True), t.row(1, named=True)
    assert a["runs"] == 2 and a["seeds"] == "0,1" and math.isclose(a["heldout_accuracy_mean"], 0.6)
    assert math.isclose(a["heldout_accuracy_sd"], math.sqrt(0.02))      # sample sd of 0.5, 0.7
    assert a["fixes_n"] == 1 and a["fixes_sd"] is None                    # one value: no spread
    assert b["heldout_accuracy_sd"] is None and b["runs"] == 1


def test_arm_run_row_from_records_frames():
    m = pl.DataFrame({"step": [1, 2, 3], "frac_zero_std": [0.2, float("nan"), 0.6], "step_time_s": [1.0, 2.0, 3.0]})
    counts = pl.DataFrame({"step": [1, 2], "refinements": [4, 4], "fix": [1, 0], "break": [2, 1]})
    row = analysis.arm_run_row("r", {"algo": "igrpo", "seed": 3}, m,
                               {"final": {"metrics": {"macro_avg": {"avg@k": 0.25}}}}, counts)
    assert row["heldout_accuracy"] == 0.25 and row["eval"] == "final" and row["seed"] == 3
    assert math.isclose(row["zero_std_share"], 0.4)                       # the NaN step is left out
    assert (row["fixes"], row["breaks"], row["refinements"]) == (1, 3, 8) and row["break_rate"] == 3 / 8
    grpo = analysis.arm_run_row("g", {"algo": "grpo"}, m, {}, pl.DataFrame())
    assert grpo["fixes"] is None and grpo["fix_rate"] is None and grpo["heldout_accuracy"] is None


def test_entropy_first_below_fractions():
    d = analysis.entropy_first_below([1, 2, 3, 4], [2.0, 1.9, 1.4, 0.9], (0.9, 0.75, 0.5, 0.1))
    assert d[0.9] == (3, 1.4) and d[0.75] == (3, 1.4) and d[0.5] == (4, 0.9)
    assert d[0.1] is None and d["start"] == 2.0 and d["final"] == 0.9     # never fell that far


def test_entropy_first_below_skips_nan_and_handles_degenerate_runs():
    nan = float("nan")
    d = analysis.entropy_first_below([1, 2, 3, 4], [nan, 2.0, nan, 0.5], (0.5, 0.2))
    assert d["start"] == 2.0 and d["steps"] == 2 and d[0.5] == (4, 0.5) and d[0.2] is None
    assert analysis.entropy_first_below([1, 2], [nan, None], (0.5,)) == {"start": None, "final": None, "steps": 0,
                                                                         0.5: None}
    assert analysis.entropy_first_below([1, 2], [0.0, -1.0], (0.5,))[0.5] is None   # start <= 0: no fraction
    assert analysis.entropy_first_below([], [], (0.5,))[0.5] is None
    drops = analysis.entropy_drops(pl.DataFrame({"run": ["a"] * 3, "step": [1, 2, 3], "entropy": [nan, 1.0, 0.4]}))
    assert drops.row(0, named=True)["first_step_below_0.5x"] == 3


def test_draft_choice_reports_rule_reason_and_rank():
    drafts = pl.DataFrame({"sample_index": [1, 0, 2], "reward": [0.5, 2.0, 1.0], "reward_accuracy": [0.0, 1.0, 0.0],
                           "is_chosen_draft": [True, False, False],
                           "selection_reason": ["worst: lowest reward", None, None]})
    c = analysis.draft_choice(drafts, "worst")
    assert c["chosen"] == 1 and c["reason"] == "worst: lowest reward" and c["rank"] == 3
    assert c["mix"] == "1 right, 2 wrong" and [r["sample_index"] for r in c["rows"]] == [0, 1, 2]
    old = analysis.draft_choice(drafts.drop("selection_reason"), None)   # a run from before the column
    assert old["rule"] == "best" and "no reason recorded" in old["reason"]
    none = analysis.draft_choice(drafts.with_columns(pl.lit(False).alias("is_chosen_draft")))
    assert none["chosen"] is None and none["rank"] is None


def test_parse_fractions():
    from dashboards.views_runs import parse_fractions
    assert parse_fractions("0.9, 0.75 0.5") == ([0.9, 0.75, 0.5], [])
    assert parse_fractions("0.5,0.5, 2, x, 0, nan") == ([0.5], ["2", "x", "0", "nan"])
    assert parse_fractions("") == ([], [])


# --- pages over the synthetic study ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return build_arm_runs(tmp_path_factory.mktemp("arms"))


def _app(root: Path, monkeypatch, page: str) -> AppTest:
    monkeypatch.setenv("IGRPO_RUNS", str(root))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _frame(at: AppTest, column: str):
    """The first dataframe on the page with this column (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_arms_page_groups_seeds_and_shows_mean_and_spread(study, monkeypatch):
    at = _app(study, monkeypatch, "Arms")
    table = _frame(at, "held-out accuracy")
    assert list(table["arm"]) == list(EXPECTED) and list(table["runs"]) == [2, 2]
    by_arm = table.set_index("arm")
    assert by_arm.loc["algo=grpo · draft_selection=best", "held-out accuracy"] == "0.550 ± 0.071 (n=2)"
    assert by_arm.loc["algo=grpo · draft_selection=best", "zero-variance share"].startswith("0.300 ± ")
    igrpo = by_arm.loc["algo=igrpo · draft_selection=worst"]
    assert igrpo["held-out accuracy"].startswith("0.420 ± 0.028") and igrpo["zero-variance share"].startswith("0.650")
    assert igrpo["fixes"] == "2.0 ± 0.0 (n=2)" and igrpo["breaks"] == "1.0 ± 0.0 (n=2)"
    assert by_arm.loc["algo=grpo · draft_selection=best", "fixes"] == "–"
    specs = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "Fixes vs breaks" in specs and "held-out accuracy" in specs and "error_y" in specs
    per_run = _frame(at, "eval")
    assert len(per_run) == 4 and set(per_run["eval"]) == {"final"}


def test_arms_page_only_selected_runs(study, monkeypatch):
    at = _app(study, monkeypatch, "Arms")
    at.sidebar.multiselect(key="selected_runs").set_value(["grpo-s0", "grpo-s1"]).run()
    at.toggle(key="arms_only_selected").set_value(True).run()
    table = _frame(at, "held-out accuracy")
    assert list(table["arm"]) == ["all runs"] and list(table["runs"]) == [2]
    assert any("No fixes or breaks" in i.value for i in at.info)


def test_rollout_page_shows_which_draft_was_chosen_and_why(study, monkeypatch):
    at = _app(study, monkeypatch, "Rollouts")
    at.selectbox(key="rb_run").set_value("igrpo-s0").run()          # newest step: draft #1 chosen by `worst`
    assert not at.exception
    assert at.metric[0].label == "Chosen draft" and at.metric[0].value == "#1"
    assert any("worst: lowest reward" == t.value for t in at.text)
    assert any("`worst`" in c.value for c in at.caption) and any("reward rank 2 of 2" in c.value for c in at.caption)
    # decoded: plotly escapes non-ASCII ("·") or not depending on whether orjson is installed
    spec = json.dumps(json.loads(at.get("plotly_chart")[0].proto.spec), ensure_ascii=False)
    assert "Draft rewards" in spec and "chosen · wrong" in spec and "#ff7f0e" in spec
    drafts = next(f.value for f in at.dataframe if "selection_reason" in f.value.columns)
    assert list(drafts["selection_reason"].fillna("")) == ["", "worst: lowest reward"]


def test_rollout_page_inline_diff_escapes_the_refinement(study, monkeypatch):
    at = _app(study, monkeypatch, "Rollouts")
    at.selectbox(key="rb_run").set_value("igrpo-s0").run()
    bodies = [h.proto.body for h in at.get("html")]
    assert len(bodies) == 1                                        # refinement #0 against the chosen draft
    body = bodies[0]
    assert "<ins" in body and "&lt;script&gt;alert(&#x27;diff&#x27;)&lt;/script&gt;" in body
    for raw in ("<script", "<img", "<b>"):
        assert raw not in body
    at.selectbox(key="rb_refine_pick").set_value(1).run()          # #1 copies the draft: nothing marked
    body = at.get("html")[0].proto.body
    assert "<ins" not in body and "<del" not in body
    at.sidebar.radio(key="page").set_value("Near misses").run()    # the near-miss page uses the same view
    box = at.selectbox(key="nm_pick")
    box.select_index(next(i for i, o in enumerate(box.options) if "· fix ·" in o)).run()
    assert any("&lt;img src=x" in h.proto.body for h in at.get("html"))
    assert not any(DIFF_PAYLOAD in m.value for m in at.markdown)


def test_curves_page_marks_entropy_drops(study, monkeypatch):
    at = _app(study, monkeypatch, "Curves")
    at.sidebar.multiselect(key="selected_runs").set_value(["grpo-s0", "grpo-s1", "igrpo-s1"]).run()
    t = _frame(at, "entropy at start").set_index("run")
    assert t.loc["grpo-s0", "first step < 0.9× start"] == "3"
    assert t.loc["grpo-s0", "first step < 0.5× start"] == "never"
    assert t.loc["grpo-s1", "first step < 0.5× start"] == "3"      # its NaN step 2 is skipped
    assert t.loc["igrpo-s1", "first step < 0.75× start"] == "2"
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if '"text":"Entropy"' in c.proto.spec)
    marks = [t for t in spec["data"] if t.get("mode") == "markers+text"]
    # grpo-s0: 0.9 at 3; grpo-s1: all three at 3 (one marker); igrpo-s1: 0.9 and 0.75 at 2, 0.5 at 3
    assert sorted((t["x"][0], t["text"][0]) for t in marks) == [(2, "0.9× 0.75×"), (3, "0.5×"), (3, "0.9×"),
                                                                (3, "0.9× 0.75× 0.5×")]
    assert all("first step under" in t["hovertemplate"] for t in marks)
    at.text_input(key="curve_fractions").set_value("0.95, banana, 1.5").run()
    assert not at.exception
    t = _frame(at, "entropy at start")
    assert [c for c in t.columns if c.startswith("first")] == ["first step < 0.95× start"]
    assert any("`banana`" in c.value and "`1.5`" in c.value for c in at.caption)
