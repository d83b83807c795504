"""Pages 1 and 2: the runs table with a multi-run comparison, and training curves overlaid per run.

The curves page also marks, on the entropy plot and in a table, the first step where each run's
entropy fell under given fractions of its start (analysis.entropy_first_below; raw values, not the
smoothed ones, and over the whole run, not the chosen step range).
"""
from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from dashboards import loaders
from dashboards.common import Ctx, clip_frame, md, plot_text, show_text
from igrpo_core import analysis

SUMMARY_ORDER = ["run", "algo", "state", "step", "max_steps", "progress", "seed", "reward_mean", "accuracy_mean",
                 "best_draft_reward_mean", "refine_reward_mean", "refine_gain", "entropy", "completion_len_mean",
                 "step_time_s", "eval_avg@k", "rollout_steps", "updated", "error"]

# (panel title, y-axis title, [(metric column, series label, algos or None for any)]).
PANELS = [
    ("Reward", "mean reward", [("draft_reward_mean", "drafts", {"igrpo"}),
                               ("best_draft_reward_mean", "best draft", {"igrpo"}),
                               ("refine_reward_mean", "refinements", {"igrpo"}),
                               ("reward_mean", "group (GRPO)", {"grpo"})]),
    ("Refinement gain over best draft", "refine − best draft", [("refine_gain", "gain", {"igrpo"})]),
    ("Accuracy (trained completions)", "accuracy reward", [("accuracy_mean", "accuracy", None),
                                                           ("format_mean", "format", None)]),
    ("Entropy", "nats / token", [("entropy", "entropy", None)]),
    ("KL to reference", "k3 KL", [("kl", "kl", None)]),
    ("Clip fraction", "share of tokens clipped", [("clip_frac", "clip frac", None)]),
    ("Completion length", "tokens", [("completion_len_mean", "trained completions", None),
                                     ("draft_len_mean", "drafts", {"igrpo"})]),
    ("Zero-std groups", "share of groups", [("frac_zero_std", "zero-std groups", None)]),
    ("Step time", "seconds", [("step_time_s", "step", None), ("gen_time_s", "generation", None)]),
    ("Throughput", "tokens / s", [("tokens_per_s", "tokens/s", None)]),
    ("Loss", "loss", [("loss", "loss", None)]),
    ("Grad norm", "norm", [("grad_norm", "grad norm", None)]),
    ("Engine vs trainer log-probs", "|log p_trainer − log p_engine|", [("mismatch_mean_abs", "mean", None),
                                                                    ("mismatch_max_abs", "max", None)]),
    ("Engine vs trainer KL", "k3 KL(engine ‖ trainer)", [("mismatch_kl", "mismatch KL", None)]),
    ("Importance-sampling weight", "weight", [("is_ratio_min", "min", None), ("is_ratio_mean", "mean", None),
                                              ("is_ratio_max", "max", None)]),
]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
DASHES = ["solid", "dash", "dot", "dashdot"]


def summaries_frame(ctx: Ctx, names: list[str] | None = None) -> pl.DataFrame:
    rows = [loaders.run_summary(r) for r in ctx.runs if names is None or r.name in names]
    df = pl.DataFrame(rows, infer_schema_length=None)
    if "step" in df.columns and "max_steps" in df.columns:
        df = df.with_columns((pl.col("step") / pl.col("max_steps")).alias("progress"))
    return df.select([c for c in SUMMARY_ORDER if c in df.columns] + [c for c in df.columns if c not in SUMMARY_ORDER])


def overview(ctx: Ctx) -> None:
    st.header("Runs")
    df = summaries_frame(ctx)
    st.caption(f"{len(ctx.runs)} run(s) in {md(ctx.root)}. Metrics are means over each run's last 5 steps.")
    st.dataframe(clip_frame(df), hide_index=True, key="runs_table", column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
        **{c: st.column_config.NumberColumn(c, format="%.3f") for c in df.columns
           if df[c].dtype in (pl.Float64, pl.Float32) and c != "progress"}})
    for row in df.filter(pl.col("state") == "failed").iter_rows(named=True) if "state" in df.columns else []:
        st.error(f"Run {md(row['run'])} failed at step {row.get('step')}:")
        show_text(row.get("error"))

    st.subheader("Compare selected runs")
    names = [n for n in ctx.selected if n in ctx.by_name]
    if not names:
        st.info("Select runs in the sidebar to compare their configs and final metrics.")
        return
    sel = summaries_frame(ctx, names)
    numeric = [c for c in sel.columns if sel[c].dtype.is_numeric() and c not in ("seed", "max_steps", "progress")]
    side = pl.DataFrame([{"metric": c, **{r["run"]: r[c] for r in sel.iter_rows(named=True)}} for c in numeric],
                        infer_schema_length=None)
    left, right = st.columns(2)
    with left:
        st.markdown("**Final metrics** (mean of the last 5 steps)")
        st.dataframe(side, hide_index=True, key="final_metrics", height=35 * (side.height + 1) + 3,
                     column_config={n: st.column_config.NumberColumn(n, format="%.4g") for n in names})
    with right:
        st.markdown("**Config differences**")
        diff = analysis.config_diff({n: loaders.settings(ctx.by_name[n]) for n in names})
        if len(names) < 2:
            st.caption("Select two or more runs to see their config differences.")
        elif diff.height == 0:
            st.success("The selected runs have identical configs.")
        else:
            st.dataframe(clip_frame(diff), hide_index=True, key="config_diff")
    with st.expander("Full config of " + md(names[0])):
        st.json(loaders.config(ctx.by_name[names[0]]), expanded=False)


def _smooth(y: pl.Series, window: int) -> pl.Series:
    return y.rolling_mean(window_size=window, min_samples=1) if window > 1 else y


def step_axis(lo: int, hi: int) -> dict:
    """Whole-number step ticks when there are few steps (plotly would label 1.5)."""
    return dict(dtick=1, tick0=lo) if hi - lo <= 12 else dict(tickformat="d")


def _figure(title: str, ytitle: str, series: list[tuple], frames: dict[str, pl.DataFrame], algos: dict[str, str],
            window: int) -> go.Figure | None:
    fig = go.Figure()
    for ri, (run, m) in enumerate(frames.items()):
        for si, (col, label, only) in enumerate(series):
            if ((only and algos.get(run) not in only) or col not in m.columns or not m[col].dtype.is_numeric()
                    or m[col].null_count() == m.height):
                continue
            d = m.select("step", col).drop_nulls()
            fig.add_trace(go.Scatter(
                x=d["step"].to_list(), y=_smooth(d[col].cast(pl.Float64), window).to_list(),
                name=plot_text(f"{run} · {label}" if len(series) > 1 else run), legendgroup=run, mode="lines+markers",
                marker=dict(size=4), line=dict(color=COLORS[ri % len(COLORS)], dash=DASHES[si % len(DASHES)])))
    if not fig.data:
        return None
    steps = [x for tr in fig.data for x in tr.x]
    fig.update_layout(title=dict(text=title, x=0.01), height=340, margin=dict(l=10, r=10, t=40, b=10),
                      hovermode="x unified", legend=dict(orientation="h", yanchor="top", y=-0.12, x=0),
                      yaxis_title=ytitle, template="plotly_white", xaxis=step_axis(min(steps), max(steps)))
    return fig


def parse_fractions(text: str) -> tuple[list[float], list[str]]:
    """'0.9, 0.75 0.5' -> ([0.9, 0.75, 0.5], []); entries that are not numbers in (0, 1) come back apart.
    Duplicates are dropped; the order is kept."""
    good, bad = [], []
    for tok in (t for t in (text or "").replace(",", " ").split() if t):
        try:
            f = float(tok)
        except ValueError:
            bad.append(tok)
            continue
        if 0 < f < 1:
            good += [] if f in good else [f]
        else:
            bad.append(tok)
    return good, bad


def entropy_marks(frames: dict[str, pl.DataFrame], fractions: list[float]) -> dict[str, dict]:
    """run -> analysis.entropy_first_below of its whole metrics frame (runs without entropy left out)."""
    return {run: analysis.entropy_first_below(m["step"].to_list(), m["entropy"].to_list(), fractions)
            for run, m in frames.items() if "entropy" in m.columns and m["entropy"].dtype.is_numeric()}


def entropy_table(marks: dict[str, dict], fractions: list[float]) -> pl.DataFrame:
    rows = [{"run": run, "entropy at start": d["start"], "entropy at end": d["final"],
             **{f"first step < {f:g}× start": (str(d[f][0]) if d[f] else "never") for f in fractions}}
            for run, d in marks.items()]
    return pl.DataFrame(rows, infer_schema_length=None)


SYMBOLS = ["diamond", "square", "triangle-down", "x", "star", "circle-open"]
TEXT_POS = ["top center", "bottom center", "middle right", "middle left"]


def _mark_entropy(fig: go.Figure, marks: dict[str, dict], fractions: list[float], runs: list[str],
                  rng: tuple[int, int]) -> None:
    """Markers on the entropy plot at each run's first step under f x start, labelled 'f×' (fractions
    reached at the same step share one marker; runs' labels sit on different sides to overlap less)."""
    for ri, run in enumerate(runs):
        d = marks.get(run)
        at: dict[int, list] = {}
        for f in fractions:
            if d and d[f] and rng[0] <= d[f][0] <= rng[1]:
                at.setdefault(d[f][0], []).append(f)
        for step, fs in at.items():
            label = " ".join(f"{f:g}×" for f in fs)
            fig.add_trace(go.Scatter(
                x=[step], y=[d[fs[0]][1]], mode="markers+text", text=[label],
                textposition=TEXT_POS[ri % len(TEXT_POS)], textfont=dict(color=COLORS[ri % len(COLORS)], size=11),
                marker=dict(size=12, symbol=SYMBOLS[fractions.index(fs[-1]) % len(SYMBOLS)],
                            color=COLORS[ri % len(COLORS)], line=dict(color="#000", width=1)),
                name=plot_text(f"{run} · first < {label} start"), legendgroup=run, showlegend=False,
                hovertemplate=plot_text(run) + f"<br>first step under {label} start: %{{x}}<br>"
                              "entropy %{y:.3f}<extra></extra>"))


def curves(ctx: Ctx) -> None:
    st.header("Training curves")
    names = [n for n in ctx.selected if n in ctx.by_name]
    if not names:
        st.info("Select one or more runs in the sidebar to plot their curves.")
        return
    frames = {n: loaders.metrics(ctx.by_name[n]) for n in names}
    missing = [n for n, m in frames.items() if m.height == 0]
    if missing:
        st.caption("No metrics yet (no step finished): " + ", ".join(map(md, missing)))
    frames = {n: m for n, m in frames.items() if m.height}
    if not frames:
        st.info("None of the selected runs has finished a step yet.")
        return
    fractions, bad = parse_fractions(st.text_input("Entropy fractions (mark the first step under f × start)",
                                                   "0.9, 0.75, 0.5", key="curve_fractions"))
    if bad:
        st.caption("Ignored (not a number between 0 and 1): " + ", ".join(map(md, bad)))
    marks = entropy_marks({n: m.sort("step") for n, m in frames.items()}, fractions)
    if marks and fractions:
        st.caption("Entropy: the first step under each fraction of its start (raw values over the whole run, "
                   "NaN steps skipped; marked on the Entropy plot below).")
        st.dataframe(clip_frame(entropy_table(marks, fractions)), hide_index=True, key="entropy_drops",
                     column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                    for c in ("entropy at start", "entropy at end")})
    lo = min(int(m["step"].min()) for m in frames.values())
    hi = max(int(m["step"].max()) for m in frames.values())
    c1, c2 = st.columns([3, 1])
    with c1:
        rng = st.slider("Step range", lo, hi, (lo, hi), key="curve_steps") if hi > lo else (lo, hi)
    with c2:
        window = st.number_input("Smoothing (rolling mean, steps)", 1, 500, 1, key="curve_smooth")
    frames = {n: m.filter(pl.col("step").is_between(rng[0], rng[1])).sort("step") for n, m in frames.items()}
    algos = {n: ctx.algo(n) for n in frames}
    figs = [(t, f) for t, f in ((t, _figure(t, y, s, frames, algos, int(window))) for t, y, s in PANELS) if f]
    for title, fig in figs:
        if title == "Entropy":
            _mark_entropy(fig, marks, fractions, list(frames), rng)
    st.caption("x axis: optimizer step. Line colour = run; line style = series. "
               + ("" if "igrpo" in algos.values() else "Draft, refinement and gain curves appear for iGRPO runs."))
    for i in range(0, len(figs), 2):
        cols = st.columns(2)
        for col, (title, fig) in zip(cols, figs[i:i + 2]):
            with col:
                st.plotly_chart(fig, key=f"curve_{title}", config={"displaylogo": False})

