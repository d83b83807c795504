"""Page 5: evaluation results (summary.json per evaluation) and a per-problem drill-down of samples."""
from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from dashboards import loaders
from dashboards.common import Ctx, clip, clip_frame, md, plot_text, show_text
from igrpo_core import analysis

SAMPLE_COLS = ["sample_index", "correct", "extracted", "completion", "status", "completion_tokens", "finish_reason",
               "protocol", "draft_correct", "draft_extracted", "draft", "draft_truncated"]


def eval_page(ctx: Ctx) -> None:
    st.header("Evaluation")
    evals = loaders.find_evals(ctx.root, ctx.runs)
    if not evals:
        st.info(f"No evaluation results under {md(str(ctx.root) + '/<run>/eval/')}. Evaluate a run's final "
                f"checkpoint with:\n\n`igrpo eval --run {ctx.root}/<run_name>`")
        st.code(f".venv/bin/igrpo eval --run {ctx.root}/<run_name>", language="bash")
        return
    summaries = {name: loaders.eval_summary(d, ctx.root) for name, d in evals.items()}
    table = analysis.eval_results({n: s for n, s in summaries.items() if s})
    pending = [n for n, s in summaries.items() if not s]
    st.caption("avg@k = mean pass@1 over k samples per problem; pass@k unbiased (Chen et al. 2021); "
               "maj@k = majority-vote answer correct. The macro_avg row averages avg@k over datasets.")
    if table.height:
        st.dataframe(clip_frame(table), hide_index=True, key="eval_table", column_config={
            c: st.column_config.NumberColumn(c, format="%.3f") for c in table.columns
            if c.startswith(("avg@", "pass@", "maj@")) or c == "no_answer"})
        st.plotly_chart(_bars(table), key="eval_chart", config={"displaylogo": False})
    if pending:
        st.caption("Without summary.json (still running, or failed before summarising): " + ", ".join(map(md, pending)))
    _drill_down(evals, ctx)


def _bars(table: pl.DataFrame) -> go.Figure:
    fig = go.Figure()
    body = table.filter(pl.col("dataset") != "macro_avg")
    for name in body["eval"].unique(maintain_order=True).to_list():
        sub = body.filter(pl.col("eval") == name)
        fig.add_trace(go.Bar(x=[plot_text(d) for d in sub["dataset"]], y=sub["avg@k"].to_list(), name=plot_text(name),
                             texttemplate="%{y:.3f}", textposition="outside"))
    fig.update_layout(barmode="group", height=300, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                      title=dict(text="avg@k per dataset", x=0.01), yaxis=dict(range=[0, 1], title="avg@k"),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def _drill_down(evals: dict, ctx: Ctx) -> None:
    st.subheader("Per-problem drill-down")
    c1, c2 = st.columns(2)
    with c1:
        name = st.selectbox("Evaluation", list(evals), key="ev_pick")
    samples = loaders.eval_samples(evals[name], ctx.root)
    if samples.height == 0:
        st.info(f"{md(name)} has no samples yet.")
        return
    datasets = samples["dataset"].unique(maintain_order=True).to_list()
    with c2:
        ds = st.selectbox("Dataset", datasets, key=f"ev_ds_{name}")
    samples = samples.filter(pl.col("dataset") == ds)
    problems = analysis.eval_problem_table(samples)
    only_wrong = st.toggle("Only problems with a wrong sample", key="ev_only_wrong")
    if only_wrong:
        problems = problems.filter(pl.col("correct") < pl.col("samples"))
    st.dataframe(clip_frame(problems.drop("dataset")), hide_index=True, key="ev_problems",
                 column_config={"accuracy": st.column_config.NumberColumn("accuracy", format="%.2f")})
    if problems.height == 0:
        st.info("No problems match.")
        return
    rows = {r["problem_id"]: r for r in problems.iter_rows(named=True)}
    pid = st.selectbox("Problem", list(rows), key=f"ev_problem_{name}_{ds}",
                       format_func=lambda p: f"{clip(p, 80)} · {rows[p]['correct']}/{rows[p]['samples']} correct")
    st.text(f"gold answer: {clip(rows[pid]['gold'], 2000)}")
    per = samples.filter(pl.col("problem_id") == pid).sort("sample_index")
    cols = [c for c in SAMPLE_COLS
            if c in per.columns and (not c.startswith("draft") or per[c].null_count() < per.height)]
    st.dataframe(clip_frame(per.select(cols)), hide_index=True, key="ev_samples",
                 column_config={"completion": st.column_config.TextColumn("completion", width="large")})
    for r in per.iter_rows(named=True):
        st.caption(f"sample {r['sample_index']} · {'correct' if r['correct'] else 'wrong'} · "
                   f"{r['completion_tokens']} tokens · {md(r['finish_reason'])}")
        if r.get("draft") is not None:
            st.caption(f"test-time draft that was refined · {'correct' if r.get('draft_correct') else 'wrong'}")
            show_text(r["draft"])
            st.caption("refined answer")
        show_text(r["completion"])
        st.text(f"extracted: {clip(r['extracted'], 2000)}")
