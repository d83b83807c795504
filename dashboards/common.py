"""What every page gets (the runs directory, its runs, the selected runs) and small display helpers.

Model output is untrusted text: `show_text` is the one way pages print it (st.code, no highlighting,
so nothing is interpreted as markdown or HTML). The one exception is the inline refinement diff:
`show_html` renders a textdiff.SafeHtml (every token escaped before it was wrapped in <ins>/<del>)
with st.html, which also sanitises (DOMPurify) and never runs scripts; it refuses any other string. Any other untrusted value passed to a markdown-rendering
call (st.caption, st.info, st.warning, expander labels) goes through `md` (inline code, one line).
Plotly renders a few HTML-like tags in names and labels, so run and dataset names go through
`plot_text`. Long text is clipped for display (`clip`, `clip_frame`), never on disk: a 10 MB
completion would otherwise freeze the browser.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import streamlit as st

from dashboards import loaders
from dashboards.textdiff import SafeHtml


@dataclass
class Ctx:
    root: Path                        # the runs directory
    runs: list[Path]                  # run directories in it (those with config.json)
    selected: list[str] = field(default_factory=list)  # names picked in the sidebar for comparison

    @property
    def by_name(self) -> dict[str, Path]:
        return {r.name: r for r in self.runs}

    def algo(self, name: str) -> str | None:
        return loaders.config(self.by_name[name]).get("algo")


def default_runs_dir(argv: list[str] | None = None) -> str:
    """--runs DIR (after `--` on the streamlit command line), else $IGRPO_RUNS, else ./runs."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs")
    ns, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return ns.runs or os.environ.get("IGRPO_RUNS") or "runs"


TEXT_LIMIT = 20_000   # characters of one text block (a long completion is a few thousand)
CELL_LIMIT = 500      # characters of a table cell (the table is an index; the text is shown below it)
NAME_LIMIT = 200      # characters of a name inside markdown
SCROLL_AFTER, SCROLL_HEIGHT = 4_000, 480  # a longer text scrolls in a box of this many pixels


def clip(text, limit: int = TEXT_LIMIT) -> str:
    """The first `limit` characters, with a note saying how many were left out."""
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[:limit] + f" … [{len(s) - limit} more chars]"


def clip_frame(df: pl.DataFrame, limit: int = CELL_LIMIT) -> pl.DataFrame:
    """Text columns clipped like `clip`, for st.dataframe."""
    n = pl.col
    return df.with_columns(
        pl.when(n(c).str.len_chars() > limit)
        .then(pl.concat_str(n(c).str.slice(0, limit), pl.lit(" … ["),
                            (n(c).str.len_chars() - limit).cast(pl.Utf8), pl.lit(" more chars]")))
        .otherwise(n(c)).alias(c)
        for c, dtype in df.schema.items() if dtype == pl.Utf8)


def show_text(text, *, height: int | None = None) -> None:
    """Model or dataset text, shown literally; past TEXT_LIMIT characters clipped, past SCROLL_AFTER scrolled."""
    full = "" if text is None else str(text)
    if len(full) > TEXT_LIMIT:
        st.caption(f"Showing the first {TEXT_LIMIT} of {len(full)} characters (the full text stays on disk).")
    body = clip(full)
    st.code(body if body else "(empty)", language=None, wrap_lines=True,
            height=height if height else (SCROLL_HEIGHT if len(body) > SCROLL_AFTER else "content"))


def show_html(body: SafeHtml) -> None:
    """The dashboard's only HTML sink: accepts only HTML that textdiff built from escaped text."""
    if not isinstance(body, SafeHtml):
        raise TypeError(f"show_html renders textdiff.SafeHtml only, not {type(body).__name__}")
    st.html(body)


def show_problems(root: Path, problems: list) -> None:
    """One warning naming every file that could not be read (paths relative to the runs folder)."""
    if not problems:
        return
    def rel(path: str) -> str:
        p = Path(path)
        return str(p.relative_to(root)) if p.is_relative_to(root) else path
    lines = [f"- {md(rel(p.path))}: {md(p.reason, 400)}" for p in problems]
    st.warning(f"{len(problems)} file(s) in {md(root)} could not be read; the pages leave them out:\n\n"
               + "\n".join(lines), icon="⚠️")


def pick_run(ctx: Ctx, key: str, *, only_algo: str | None = None, label: str = "Run") -> str | None:
    """Run selectbox, defaulting to the first sidebar-selected run that fits."""
    names = [r.name for r in ctx.runs if only_algo is None or ctx.algo(r.name) == only_algo]
    if not names:
        return None
    preferred = [n for n in ctx.selected if n in names]
    index = names.index(preferred[0]) if preferred else 0
    return st.selectbox(label, names, index=index, key=key)


def md(name, limit: int = NAME_LIMIT) -> str:
    """An untrusted name inside markdown (st.info, st.caption, ...): inline code on one line, so `_`, `*`,
    `<b>` or `[x](javascript:...)` stay literal (a backtick or a blank line would end the code span)."""
    s = clip(name, limit).replace("`", "'")
    return "`" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in s) + "`"


def plot_text(name) -> str:
    """A name for a plotly label or legend: plotly renders <b>, <a href>, <br> ...; entities stay literal."""
    return clip(name, NAME_LIMIT).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)
