"""Pages 3 and 4: the rollout browser (one prompt of one step) and near-miss fixes over training.

All completions, drafts, prompts and extracted answers go through st.dataframe or show_text
(st.code): they are shown as text, never rendered. The one HTML view, the inline draft-vs-refinement
diff, is textdiff.inline_diff's escaped output through common.show_html. On iGRPO groups the page
shows which draft stage 2 refined, by which draft_selection rule and why (the recorded
selection_reason), among the group's draft rewards.
"""
from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from dashboards import loaders, textdiff
from dashboards.common import Ctx, clip, clip_frame, fmt, md, pick_run, show_html, show_text
from dashboards.views_runs import step_axis
from igrpo_core import analysis

# Characters of each text the word and line diffs compare: difflib is quadratic on texts that differ
# throughout (two different 5,000-char texts: 1.9 s; 50,000: 241 s; one 10 MB text against a short one: 1 s).
DIFF_LIMIT = 5_000

ROW_COLS = ["sample_index", "is_chosen_draft", "selection_reason", "reward", "advantage", "extracted", "completion",
            "reward_accuracy", "reward_format", "reward_judge", "reward_status", "finish_reason", "completion_tokens",
            "prompt_tokens", "draft_truncated"]


def _table(df: pl.DataFrame, key: str, drop: tuple[str, ...] = ()) -> None:
    cols = [c for c in ROW_COLS if c in df.columns and c not in drop and df[c].null_count() < df.height]
    st.dataframe(clip_frame(df.select(cols)), hide_index=True, key=key, column_config={
        "is_chosen_draft": st.column_config.CheckboxColumn("chosen"),
        "completion": st.column_config.TextColumn("completion", width="large"),
        **{c: st.column_config.NumberColumn(c, format="%.3f") for c in ("reward", "reward_accuracy",
           "reward_format", "reward_judge", "advantage")}})


def _no_rollouts_message(ctx: Ctx, run: str) -> None:
    if loaders.config(ctx.by_name[run]).get("log_completions") is False:
        st.info(f"Run {md(run)} has no rollout records: it was trained with log_completions = false. "
                "Train with --log_completions true to browse completions.")
    else:
        st.info(f"Run {md(run)} has no rollout records yet (no step has finished).")


def _label(row: dict, with_adv: bool) -> str:
    adv = f", advantage {fmt(row.get('advantage'))}" if with_adv else ""
    return f"#{row['sample_index']}: reward {fmt(row.get('reward'))}{adv}"


def rollout_browser(ctx: Ctx) -> None:
    st.header("Rollout browser")
    run = pick_run(ctx, "rb_run")
    if run is None:
        return
    steps = list(loaders.readable_parts(ctx.by_name[run]))
    if not steps:
        _no_rollouts_message(ctx, run)
        return
    c1, c2 = st.columns([1, 2])
    with c1:
        step = (st.select_slider("Step", steps, value=steps[-1], key=f"rb_step_{run}") if len(steps) > 1
                else steps[0])
    df = loaders.rollouts(ctx.by_name[run], step)
    groups = analysis.group_index_table(df)
    labels = {r["group_index"]: f"group {r['group_index']} · {clip(r['prompt_id'], 80)} · mean reward "
              f"{fmt(r['trained_reward_mean'])}" for r in groups.iter_rows(named=True)}
    with c2:
        g = st.selectbox("Prompt (group)", list(labels), format_func=labels.get, key=f"rb_group_{run}_{step}")
    if g is None:
        st.info(f"Step {step} of {md(run)} has no completions.")
        return
    view = analysis.group_view(df, step, g)
    q = analysis.questions(df).filter(pl.col("group_index") == g).row(0, named=True) if df.height else {}
    st.subheader("Problem")
    show_text(q.get("question"))
    st.text(f"gold answer: {clip(q.get('gold'), 2000)}    prompt id: {clip(q.get('prompt_id'), 200)}")
    drafts, trained = view["drafts"], view["refinements"]
    if drafts.height == 0:
        st.info("GRPO run: one stage, no drafts or refinements. Showing the group's completions.")
        st.subheader(f"Completions ({trained.height})")
        _table(trained, "rb_grpo_table", drop=("is_chosen_draft", "draft_truncated"))
        for r in trained.iter_rows(named=True):
            st.caption(_label(r, True) + f" · {md(r['finish_reason'])} · {r['completion_tokens']} tokens")
            show_text(r["completion"])
        return
    _igrpo_group(drafts, trained, loaders.config(ctx.by_name[run]).get("draft_selection"))


def _selection_figure(choice: dict) -> go.Figure:
    """The group's draft rewards as bars, the chosen one highlighted and labelled."""
    rows = choice["rows"]
    verdict = {True: "right", False: "wrong", None: ""}
    fig = go.Figure(go.Bar(
        x=[f"#{r['sample_index']}" for r in rows], y=[r["reward"] for r in rows],
        marker_color=["#ff7f0e" if r["chosen"] else "#9db4cc" for r in rows],
        marker_line=dict(color=["#333" if r["chosen"] else "rgba(0,0,0,0)" for r in rows], width=2),
        text=[("chosen · " if r["chosen"] else "") + verdict[r["correct"]] for r in rows], textposition="outside",
        hovertemplate="draft %{x}<br>reward %{y:.3f}<br>%{text}<extra></extra>"))
    ys = [r["reward"] for r in rows if isinstance(r["reward"], (int, float))]
    top = max(ys + [0.0])
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white", showlegend=False,
                      title=dict(text="Draft rewards (orange: the draft stage 2 refined)", x=0.01),
                      yaxis=dict(title="reward", range=[min(ys + [0.0]), top * 1.25 + 0.1]), xaxis_title="draft")
    return fig


def _selection_panel(drafts: pl.DataFrame, rule: str | None) -> None:
    choice = analysis.draft_choice(drafts, rule)
    st.markdown("**Draft selection**")
    c1, c2 = st.columns([1, 2])
    with c1:
        st.metric("Chosen draft", "–" if choice["chosen"] is None else f"#{choice['chosen']}",
                  help="sample_index of the draft that stage 2 refined")
        st.caption(f"rule (draft_selection): {md(choice['rule'])}")
        if choice["rank"] is not None:
            st.caption(f"reward rank {choice['rank']} of {len(choice['rows'])}"
                       + (f" · drafts: {choice['mix']}" if choice["mix"] else ""))
        st.caption("Why (selection_reason):")
        st.text(clip(choice["reason"], 2000))
    with c2:
        if choice["rows"]:
            st.plotly_chart(_selection_figure(choice), key="rb_selection_chart", config={"displaylogo": False})


def _igrpo_group(drafts: pl.DataFrame, trained: pl.DataFrame, rule: str | None = None) -> None:
    chosen_rows = drafts.filter(pl.col("is_chosen_draft").fill_null(False))
    chosen = chosen_rows.row(0, named=True) if chosen_rows.height else None
    st.subheader(f"Stage 1 — drafts ({drafts.height})")
    _selection_panel(drafts, rule)
    _table(drafts, "rb_drafts", drop=("advantage", "draft_truncated"))
    if chosen:
        st.caption(f"Chosen draft {_label(chosen, False)} · {md(chosen['finish_reason'])} · "
                   f"{chosen['completion_tokens']} tokens")
        show_text(chosen["completion"])
    with st.expander("All draft texts"):
        for r in drafts.iter_rows(named=True):
            st.caption(_label(r, False) + (" · chosen" if r["is_chosen_draft"] else ""))
            show_text(r["completion"])
    st.subheader(f"Stage 2 — refinements ({trained.height})")
    if trained.height and trained["draft_truncated"].fill_null(False).any():
        st.warning("The chosen draft was truncated to fit max_prompt_length in this group's stage-2 prompt.")
    _table(trained, "rb_refines", drop=("is_chosen_draft",))
    if trained.height:
        with st.expander("Stage-2 prompt (question + chosen draft)"):
            show_text(trained["prompt"][0])
    if not chosen or trained.height == 0:
        return
    st.subheader("Chosen draft vs refinement")
    rows = list(trained.iter_rows(named=True))
    pick = st.selectbox("Refinement", range(len(rows)), format_func=lambda i: _label(rows[i], True),
                        key="rb_refine_pick")
    _diff(chosen["completion"], rows[pick]["completion"], "chosen draft", f"refinement #{rows[pick]['sample_index']}")


def _diff(left: str, right: str, left_name: str, right_name: str) -> None:
    long = max(len(left or ""), len(right or "")) > DIFF_LIMIT
    left, right = (clip(left, DIFF_LIMIT), clip(right, DIFF_LIMIT)) if long else (left or "", right or "")
    inline, stats = textdiff.inline_diff(left, right, DIFF_LIMIT)
    st.caption(f"Inline diff of the {right_name} against the {left_name}: struck-through red = removed, "
               f"green = added ({stats['removed_words']} word(s) removed, {stats['added_words']} added; "
               f"similarity {stats['ratio']:.2f})." + (f" Texts over {DIFF_LIMIT} characters are compared on "
                                                       "their first ones (difflib is quadratic)." if long else ""))
    show_html(inline)
    a, b, ratio = textdiff.word_diff(left, right)
    st.caption(f"Side by side: [-removed-] from the {left_name}, {{+added+}} in the {right_name}.")
    c1, c2 = st.columns(2)
    with c1:
        st.caption(left_name)
        show_text(a)
    with c2:
        st.caption(right_name)
        show_text(b)
    with st.expander("Line diff"):
        st.code(textdiff.unified(left, right, left_name, right_name), language="diff")
        st.dataframe(clip_frame(pl.DataFrame(textdiff.line_table(left, right), schema={"op": pl.Utf8, "left": pl.Utf8,
                     "right": pl.Utf8})), hide_index=True, key=f"line_diff_{left_name}_{right_name}")


def near_miss_page(ctx: Ctx) -> None:
    st.header("Near-miss fixes")
    st.caption("A fix is a refinement that is right where its chosen draft was wrong; a break is the reverse "
               "(correctness = the accuracy reward).")
    if not any(ctx.algo(r.name) == "igrpo" for r in ctx.runs):
        st.info("Near misses need an iGRPO run (drafts and refinements); every run here is GRPO. "
                "Train one with: igrpo train --algo igrpo")
        return
    run = pick_run(ctx, "nm_run", only_algo="igrpo", label="iGRPO run")
    if not loaders.readable_parts(ctx.by_name[run]):
        _no_rollouts_message(ctx, run)
        return
    nm, counts = loaders.near_misses(ctx.by_name[run])
    n_ref = int(counts["refinements"].sum()) if counts.height else 0
    n_fix = int(counts["fix"].sum()) if counts.height else 0
    n_break = int(counts["break"].sum()) if counts.height else 0
    m = st.columns(4)
    m[0].metric("Refinements", n_ref)
    m[1].metric("Fixes", n_fix, help="draft wrong → refinement right")
    m[2].metric("Breaks", n_break, help="draft right → refinement wrong")
    m[3].metric("Net fixes", n_fix - n_break)
    if counts.height:
        st.plotly_chart(_counts_figure(counts), key="nm_counts_chart", config={"displaylogo": False})
        with st.expander("Counts per step"):
            st.dataframe(clip_frame(counts), hide_index=True, key="nm_counts_table")
    if nm.height == 0:
        st.info("No near misses yet: no refinement's correctness differs from its chosen draft's.")
        return
    _near_miss_list(nm)


def _counts_figure(counts: pl.DataFrame) -> go.Figure:
    steps = counts["step"].to_list()
    fig = go.Figure()
    fig.add_trace(go.Bar(x=steps, y=counts["fix"].to_list(), name="fixes", marker_color="#2ca02c"))
    fig.add_trace(go.Bar(x=steps, y=(-counts["break"].cast(pl.Int64)).to_list(), name="breaks (negative)",
                         marker_color="#d62728"))
    fig.add_trace(go.Scatter(x=steps, y=(counts["fix_rate"] - counts["break_rate"]).to_list(),
                             name="net rate (per refinement)", yaxis="y2", mode="lines+markers",
                             line=dict(color="#333")))
    fig.update_layout(barmode="relative", height=340, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                      title=dict(text="Fixes and breaks per step", x=0.01), yaxis_title="count",
                      yaxis2=dict(title="net rate", overlaying="y", side="right", showgrid=False, tickformat=".0%"),
                      xaxis=step_axis(min(steps), max(steps)), legend=dict(orientation="h", y=-0.2))
    return fig


def _near_miss_list(nm: pl.DataFrame) -> None:
    st.subheader("Browse near misses")
    c1, c2 = st.columns([1, 2])
    with c1:
        direction = st.segmented_control("Direction", ["fix", "break"], selection_mode="multi",
                                         default=["fix", "break"], key="nm_direction")
    lo, hi = int(nm["step"].min()), int(nm["step"].max())
    with c2:
        rng = st.slider("Steps", lo, hi, (lo, hi), key="nm_steps") if hi > lo else (lo, hi)
    view = nm.filter(pl.col("direction").is_in(direction or []) & pl.col("step").is_between(*rng)).sort(
        "step", "group_index", "sample_index")
    st.dataframe(clip_frame(view.select("step", "direction", "prompt_id", "group_index", "sample_index", "gold",
                                        "draft_accuracy", "reward_accuracy", "reward", "advantage", "extracted")),
                 hide_index=True, key="nm_table")
    if view.height == 0:
        st.info("No near misses match the filters.")
        return
    rows = list(view.iter_rows(named=True))
    i = st.selectbox("Near miss", range(len(rows)), key="nm_pick", format_func=lambda i: (
        f"step {rows[i]['step']} · group {rows[i]['group_index']} · refinement #{rows[i]['sample_index']} · "
        f"{rows[i]['direction']} · {clip(rows[i]['prompt_id'], 80)}"))
    r = rows[i]
    st.caption("Problem")
    show_text(r.get("question") or r.get("prompt"))
    st.text(f"gold answer: {clip(r['gold'], 2000)}    extracted from the refinement: {clip(r['extracted'], 2000)}")
    c1, c2 = st.columns(2)
    with c1:
        st.caption(f"Chosen draft · accuracy {fmt(r['draft_accuracy'], 1)}")
        show_text(r["draft"])
    with c2:
        st.caption(f"Refinement #{r['sample_index']} · accuracy {fmt(r['reward_accuracy'], 1)} · "
                   f"advantage {fmt(r['advantage'])}")
        show_text(r["completion"])
    _diff(r["draft"], r["completion"], "chosen draft", "refinement")
