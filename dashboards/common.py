"""What every page gets (the runs directory, its runs, the selected runs) and small display helpers.

Model output is untrusted text: `show_text` is the one way pages print it (st.code, no highlighting,
so nothing is interpreted as markdown or HTML). Labels passed to markdown-rendering calls carry only
numbers, run names and ids.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from dashboards import loaders


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


def show_text(text, *, height: int | None = None) -> None:
    """Model or dataset text, shown literally."""
    body = "" if text is None else str(text)
    st.code(body if body else "(empty)", language=None, wrap_lines=True,
            height=height if height else "content")


def pick_run(ctx: Ctx, key: str, *, only_algo: str | None = None, label: str = "Run") -> str | None:
    """Run selectbox, defaulting to the first sidebar-selected run that fits."""
    names = [r.name for r in ctx.runs if only_algo is None or ctx.algo(r.name) == only_algo]
    if not names:
        return None
    preferred = [n for n in ctx.selected if n in names]
    index = names.index(preferred[0]) if preferred else 0
    return st.selectbox(label, names, index=index, key=key)


def md(name) -> str:
    """A run name or path inside markdown (st.info, st.caption, ...): as inline code, so `_` or `*` stay literal."""
    return "`" + str(name).replace("`", "'") + "`"


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)
