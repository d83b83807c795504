"""iGRPO Workbench dashboard: browse run directories (Streamlit + plotly).

    streamlit run dashboards/app.py -- --runs runs        (or IGRPO_RUNS=runs; default ./runs)

Pages: runs overview and comparison, arms side by side (runs grouped by config, mean ± sd over
seeds), training curves, rollout browser, near-miss fixes, evaluation.
Reads run directories only (igrpo_core.records / analysis, polars) and never imports torch or
transformers. Model output is shown as text (st.code / st.text / st.dataframe); the one HTML view, the inline
refinement diff, escapes every token first (dashboards/textdiff.py, common.show_html).
Run folders are untrusted: a file that cannot be read, or a symlink out of the runs folder (never
followed), is named in a warning at the top of every page and left out (dashboards/loaders.py).
Run it from the repository root so that .streamlit/config.toml (localhost only) applies.

Deliberately left out: starting or stopping runs, and editing anything on disk.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboards import loaders, views_arms, views_eval, views_rollouts, views_runs  # noqa: E402
from dashboards.common import Ctx, default_runs_dir, md, show_problems  # noqa: E402

PAGES = {
    "Runs": views_runs.overview,
    "Arms": views_arms.arms_page,
    "Curves": views_runs.curves,
    "Rollouts": views_rollouts.rollout_browser,
    "Near misses": views_rollouts.near_miss_page,
    "Evaluation": views_eval.eval_page,
}


def empty_message(root: Path) -> None:
    what = "does not exist" if not root.exists() else "holds no runs (directories with config.json)"
    cmd = (f".venv/bin/igrpo train --max_steps 20 --output_dir {root} --run_name igrpo-demo\n"
           f".venv/bin/igrpo train --max_steps 20 --output_dir {root} --run_name grpo-demo --algo grpo")
    st.info(f"The runs directory {md(root)} {what}. Create a run with:\n\n"
            f"`igrpo train --max_steps 20 --output_dir {root} --run_name igrpo-demo`\n\n"
            "or point the sidebar's runs directory (or --runs / IGRPO_RUNS) elsewhere.")
    st.code(cmd, language="bash")


def sidebar() -> tuple[Path, list[Path], list[str], str, float | None]:
    with st.sidebar:
        st.title("iGRPO Workbench")
        runs_dir = st.text_input("Runs directory", value=default_runs_dir(), key="runs_dir")
        root = Path(runs_dir).expanduser()
        runs = loaders.list_runs(str(root))
        page = st.radio("Page", list(PAGES), key="page")
        names = [r.name for r in runs]
        selected = st.multiselect("Runs to compare and plot", names, default=names[:6], key="selected_runs")
        live = st.toggle("Live refresh", key="live", help="Re-read the run files on a timer while runs are writing. "
                         "Reads are cached on file modification times, so unchanged files cost nothing.")
        every = st.number_input("Refresh every (s)", 1.0, 600.0, 5.0, step=1.0, key="live_every", disabled=not live)
        if st.button("Reload now", key="reload"):
            st.rerun()
        st.caption(f"{len(runs)} run(s) in {md(root)}")
    return root, runs, selected, page, float(every) if live else None


def main() -> None:
    st.set_page_config(page_title="iGRPO Workbench", layout="wide")
    root, runs, selected, page, every = sidebar()
    known = [r.name for r in runs]

    @st.fragment(run_every=every)
    def body() -> None:
        loaders.begin()
        current = loaders.list_runs(str(root))
        if [r.name for r in current] != known:  # a run appeared or vanished: rebuild the sidebar too
            st.rerun()
        top = st.container()  # filled last: the problems of every file, and of those the page read
        if current:
            loaders.check(root, current)
            PAGES[page](Ctx(root=root, runs=current, selected=selected))
        else:
            empty_message(root)
        with top:
            show_problems(root, loaders.noted())

    body()


main()
