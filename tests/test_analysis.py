"""Multi-run analysis tables (igrpo_core.analysis) on hand-made frames."""
import polars as pl

from igrpo_core import analysis


def test_entropy_drops_reports_first_step_below_fraction():
    m = pl.DataFrame({"run": ["a"] * 4 + ["b"] * 4, "step": [1, 2, 3, 4] * 2,
                      "entropy": [2.0, 1.9, 1.4, 0.9, 2.0, 2.0, 1.95, 1.9]})
    d = analysis.entropy_drops(m, fractions=(0.9, 0.5))
    assert d.row(0, named=True)["first_step_below_0.9x"] == 3 and d.row(0, named=True)["first_step_below_0.5x"] == 4
    assert d.row(1, named=True)["first_step_below_0.9x"] is None   # never collapsed


def test_near_miss_examples_print_as_clipped_text():
    nm = pl.DataFrame({"run": ["r"], "step": [3], "group_index": [0], "sample_index": [1], "direction": ["fix"],
                       "gold": ["7"], "extracted": ["7"], "draft_accuracy": [0.0], "reward_accuracy": [1.0],
                       "advantage": [0.5], "draft": ["<script>alert(1)</script> 3+4=8"], "completion": ["x" * 50]})
    text = analysis.format_near_misses(nm, n=2, max_chars=20)
    assert "step 3" in text and "fix" in text and "<script>alert(1)</sc" in text   # verbatim text, not HTML
    assert "[30 more chars]" in text
    assert analysis.format_near_misses(nm.head(0)) == "(no near misses in these runs)"
