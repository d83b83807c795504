"""Page: compare arms side by side. An arm is the runs whose configs agree except for seed and
bookkeeping (analysis.ARM_IGNORE), so a study's runs folder groups into its arms by itself.

Per arm: held-out accuracy (the run's eval/final summary, else its newest evaluation), the share of
zero-variance groups (frac_zero_std: GRPO's groups, iGRPO's trained refinement groups; iGRPO's draft
groups apart), and fixes vs breaks of iGRPO's refinements (analysis.near_miss_counts), each as mean
± sd over the arm's seeds, with a plotly bar chart. Arm labels come from config values, which are
untrusted: they go through md / plot_text like run names.
"""
from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from dashboards import loaders
from dashboards.common import Ctx, clip_frame, md, plot_text
from igrpo_core import analysis

# (column prefix in analysis.arm_table, label, digits)
SHOWN = [("heldout_accuracy", "held-out accuracy", 3), ("zero_std_share", "zero-variance share", 3),
         ("draft_zero_std_share", "draft zero-variance share", 3), ("fixes", "fixes", 1), ("breaks", "breaks", 1),
         ("fix_rate", "fix rate", 3), ("break_rate", "break rate", 3), ("step_time_s", "step time (s)", 2)]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def mean_sd(mean, sd, n, digits: int) -> str:
    """'0.512 ± 0.013 (n=3)'; '0.512 (n=1)' without a spread; '–' without a value."""
    if mean is None or not n:
        return "–"
    spread = "" if sd is None else f" ± {sd:.{digits}f}"
    return f"{mean:.{digits}f}{spread} (n={n})"


def display_table(arms: pl.DataFrame) -> pl.DataFrame:
    """One row per arm, one text column per figure ('mean ± sd (n)')."""
    rows = []
    for r in arms.iter_rows(named=True):
        row = {"arm": r["arm"], "runs": r["runs"], "seeds": r["seeds"]}
        for col, label, digits in SHOWN:
            if f"{col}_mean" in r:
                row[label] = mean_sd(r[f"{col}_mean"], r[f"{col}_sd"], r[f"{col}_n"], digits)
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def _bars(arms: pl.DataFrame, metrics: list[tuple[str, str]], title: str, ytitle: str, yrange=None,
          fmt: str = ".3f") -> go.Figure:
    """Grouped bars: x = figure, one bar per arm (arms without any of the figures left out, so a GRPO
    arm draws no fix bars), error bars = sd over seeds; the value is written inside the bar."""
    fig = go.Figure()
    for i, r in enumerate(arms.iter_rows(named=True)):
        if not any(r.get(f"{c}_n") for c, _ in metrics):
            continue
        fig.add_trace(go.Bar(
            x=[label for _, label in metrics], y=[r.get(f"{c}_mean") for c, _ in metrics],
            error_y=dict(type="data", array=[r.get(f"{c}_sd") or 0.0 for c, _ in metrics], visible=True,
                         color="#333", thickness=1.5, width=6),
            name=plot_text(r["arm"]), marker_color=COLORS[i % len(COLORS)],
            texttemplate=f"%{{y:{fmt}}}", textposition="inside", insidetextanchor="end",
            textfont=dict(color="white")))
    fig.update_layout(barmode="group", height=360, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                      title=dict(text=title, x=0.01), yaxis=dict(title=ytitle, range=yrange),
                      legend=dict(orientation="h", y=-0.18))
    return fig


def arms_page(ctx: Ctx) -> None:
    st.header("Compare arms")
    only_selected = st.toggle("Only the runs selected in the sidebar", key="arms_only_selected",
                              help="Off: every run in the runs folder (a study's runs live in one folder).")
    runs = [r for r in ctx.runs if not only_selected or r.name in ctx.selected]
    if not runs:
        st.info("No runs to compare: select runs in the sidebar or turn the toggle off.")
        return
    labels = analysis.arm_labels({r.name: loaders.config(r) for r in runs})
    rows = pl.DataFrame([{"arm": labels[r.name], **loaders.arm_row(r)} for r in runs], infer_schema_length=None)
    arms = analysis.arm_table(rows)
    st.caption(f"{len(runs)} run(s) in {arms.height} arm(s). An arm = runs whose configs are equal except "
               f"{', '.join(sorted(analysis.ARM_IGNORE))}; named by the settings in which the arms differ. "
               "Values: mean ± sd over the arm's runs (n = runs with a value).")
    st.dataframe(clip_frame(display_table(arms)), hide_index=True, key="arms_table")
    st.caption("held-out accuracy: macro avg@k of eval/final (else the newest evaluation). zero-variance "
               "share: mean over steps of frac_zero_std, the share of trained groups whose rewards are all "
               "equal (GRPO: its groups; iGRPO: its refinement groups); draft zero-variance share: iGRPO's "
               "draft groups. fixes / breaks: refinements right where their chosen draft was wrong / wrong "
               "where it was right, summed over a run's rollout records; rates are per refinement.")
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(_bars(arms, [("heldout_accuracy", "held-out accuracy"), ("zero_std_share",
                                     "zero-variance share")], "Accuracy and zero-variance share", "share",
                              [0, 1.1]), key="arms_chart_acc", config={"displaylogo": False})
    with c2:
        if arms["fixes_n"].sum() if "fixes_n" in arms.columns else 0:
            st.plotly_chart(_bars(arms, [("fixes", "fixes"), ("breaks", "breaks")],
                                  "Fixes vs breaks per run (iGRPO)", "refinements", fmt=".1f"),
                            key="arms_chart_fix", config={"displaylogo": False})
        else:
            st.info("No fixes or breaks: no run here has iGRPO rollout records (drafts and refinements).")
    with st.expander("Per run"):
        st.dataframe(clip_frame(rows.sort("arm", "seed", nulls_last=True)), hide_index=True, key="arms_runs")
    missing = rows.filter(pl.col("heldout_accuracy").is_null())["run"].to_list()
    if missing:
        st.caption("Without a held-out evaluation (train with the final evaluation, or `igrpo eval --run`): "
                   + ", ".join(map(md, missing)))
