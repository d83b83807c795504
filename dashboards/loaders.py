"""Cached reads of run directories, keyed on file modification times so a live refresh is cheap.

Every loader takes paths (strings) plus a signature of the files it reads (mtime_ns, size); when a
file changes, its signature changes and the cache misses. Rollouts are read one step part at a time
so that refreshing a growing run only reads the new parts.

Run folders are untrusted (igrpo_core.records' `load_*` readers): a file that cannot be read, or a
symlink leading out of the runs folder (never followed), gives an empty value and a `Problem`
(path, reason). Cached functions return their problems beside their value, so a cache hit reports
them again; the public loaders `_note` them for the page being drawn, and app.py shows them all in
one warning at the top of the page (`begin` / `noted`). `check` looks at every file of every run, so
each page names every bad file, not only those it happened to read.

Deliberately left out: anything that writes, and anything that imports torch (evaluation records
are read through igrpo_core.records, which never does).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import polars as pl
import streamlit as st

from igrpo_core import analysis, records

ROLLOUT_NEED = ("step", "stage", "group_index", "sample_index", "completion")
SAMPLE_NEED = ("dataset", "problem_id", "sample_index", "completion")

_page = threading.local()  # problems met while drawing the current page (one script thread per session)


def begin() -> None:
    """Start collecting the problems of one page render."""
    _page.found = {}


def noted() -> list[records.Problem]:
    return list(getattr(_page, "found", {}).values())


def _note(problems) -> None:
    if not hasattr(_page, "found"):
        begin()
    for p in problems:
        _page.found.setdefault(p.path, p)


def file_sig(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of a file, (0, 0) when it is missing."""
    try:
        s = Path(path).stat()
        return (s.st_mtime_ns, s.st_size)
    except OSError:
        return (0, 0)


def list_runs(root: str) -> list[Path]:
    sink: list = []
    try:
        runs = records.find_runs(Path(root), sink)
    except OSError as exc:  # the runs folder itself is unreadable
        sink.append(records.Problem(str(root), f"unreadable ({exc.strerror})"))
        runs = []
    _note(sink)
    return runs


rollout_parts = records.rollout_parts  # step -> whole part file; re-exported for the views


# --- cached readers: (value, problems) ---------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=1024)
def _json(path: str, root: str, sig: tuple, missing_ok: bool) -> tuple[dict, tuple]:
    sink: list = []
    return records.load_json(Path(path), sink, root=Path(root), missing_ok=missing_ok), tuple(sink)


@st.cache_data(show_spinner=False, max_entries=256)
def _parquet(path: str, root: str, sig: tuple, need: tuple) -> tuple[pl.DataFrame | None, tuple]:
    sink: list = []
    return records.load_parquet(Path(path), sink, root=Path(root), need=need), tuple(sink)


@st.cache_data(show_spinner=False, max_entries=16384)
def _footer(path: str, root: str, sig: tuple, need: tuple) -> tuple:
    """Problems of a parquet file found from its footer alone (cheap for a thousand rollout parts)."""
    why = records.escapes(Path(path), Path(root))
    if why is None:
        try:
            missing = [c for c in need if c not in records.parquet_schema(path)]
            why = f"not a run record: no column {missing}" if missing else None
        except records.READ_ERRORS as exc:
            why = records.reason_of(exc)
    return () if why is None else (records.Problem(path, why),)


def _read_json(path: Path, root: Path, missing_ok: bool = True) -> dict:
    value, problems = _json(str(path), str(root), file_sig(path), missing_ok)
    _note(problems)
    return value


def _read_parquet(path: Path, root: Path, need: tuple = ()) -> pl.DataFrame | None:
    value, problems = _parquet(str(path), str(root), file_sig(path), need)
    _note(problems)
    return value


def _ok(path: Path, root: Path, need: tuple) -> bool:
    problems = _footer(str(path), str(root), file_sig(path), need)
    _note(problems)
    return not problems


# --- runs -----------------------------------------------------------------------------------------

def _run_sig(run_dir: Path) -> tuple:
    evals = [d / "summary.json" for d in records.eval_dirs(run_dir / "eval")]
    return tuple(file_sig(run_dir / f) for f in ("config.json", "status.json", "metrics.parquet")) + tuple(
        (str(p), file_sig(p)) for p in evals)


@st.cache_data(show_spinner=False, max_entries=512)
def _summary(run_dir: str, sig: tuple) -> tuple[dict, tuple]:
    sink: list = []
    out = analysis.run_summary(Path(run_dir), sink=sink)
    status = records.load_json(Path(run_dir) / "status.json", sink, root=Path(run_dir).parent)
    out["updated"] = analysis._text(status.get("updated"))
    out["error"] = analysis._text(status.get("error"))
    out["rollout_steps"] = len(rollout_parts(run_dir))
    return out, tuple(sink)


def run_summary(run_dir: Path) -> dict:
    out, problems = _summary(str(run_dir), _run_sig(run_dir))
    _note(problems)
    return out


def config(run_dir: Path) -> dict:
    return _read_json(Path(run_dir) / "config.json", Path(run_dir).parent, missing_ok=False)


@st.cache_data(show_spinner=False, max_entries=1024)
def _settings(run_dir: str, sig: tuple) -> tuple[dict, tuple]:
    sink: list = []
    return analysis.run_settings(Path(run_dir), sink), tuple(sink)


def settings(run_dir: Path) -> dict:
    """config.json plus the flattened provenance of the latest attempt (for the config diff)."""
    out, problems = _settings(str(run_dir), tuple(file_sig(Path(run_dir) / f)
                                                  for f in ("config.json", "provenance.json")))
    _note(problems)
    return out


def status(run_dir: Path) -> dict:
    return _read_json(Path(run_dir) / "status.json", Path(run_dir).parent)


def metrics(run_dir: Path) -> pl.DataFrame:
    p = Path(run_dir) / "metrics.parquet"
    df = _read_parquet(p, Path(run_dir).parent, ("step",)) if os.path.lexists(p) else None
    return pl.DataFrame() if df is None else df


def readable_parts(run_dir: Path) -> dict[int, Path]:
    """rollout_parts whose files can be read (the others are noted for the page's warning)."""
    return {s: p for s, p in rollout_parts(str(run_dir)).items() if _ok(p, Path(run_dir).parent, ROLLOUT_NEED)}


def rollouts(run_dir: Path, step: int) -> pl.DataFrame:
    p = rollout_parts(str(run_dir)).get(step)
    df = _read_parquet(p, Path(run_dir).parent, ROLLOUT_NEED) if p else None
    return pl.DataFrame(schema=records.ROLLOUT_SCHEMA) if df is None else df


@st.cache_data(show_spinner=False, max_entries=4096)
def _near_miss_part(path: str, root: str, sig: tuple) -> tuple[pl.DataFrame, pl.DataFrame, tuple]:
    sink: list = []
    r = records.load_parquet(Path(path), sink, root=Path(root), need=ROLLOUT_NEED)
    if r is None:
        return pl.DataFrame(), pl.DataFrame(), tuple(sink)
    nm = analysis.near_misses(r)
    if nm.height:
        nm = nm.join(analysis.questions(r).select("step", "group_index", "question"),
                     on=["step", "group_index"], how="left")
    return nm, analysis.near_miss_counts(r), tuple(sink)


def near_misses(run_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(near-miss rows, per-step counts) over all readable rollout parts; computed and cached per part."""
    pieces = [_near_miss_part(str(p), str(Path(run_dir).parent), file_sig(p))
              for p in readable_parts(run_dir).values()]
    _note(q for _, _, problems in pieces for q in problems)
    rows = [nm for nm, _, _ in pieces if nm.height]
    counts = [c for _, c, _ in pieces if c.height]
    return (pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame(),
            pl.concat(counts, how="diagonal_relaxed").sort("step") if counts else pl.DataFrame())


def arm_row(run_dir: Path) -> dict:
    """analysis.arm_run_row of one run from its cached records (config, metrics, evaluations, near misses)."""
    run_dir = Path(run_dir)
    base = run_dir / "eval"
    evals = {} if records.escapes(base, run_dir.parent) else {
        d.relative_to(base).as_posix(): _read_json(d / "summary.json", run_dir.parent) for d in records.eval_dirs(base)}
    _, counts = near_misses(run_dir)
    return analysis.arm_run_row(run_dir.name, config(run_dir), metrics(run_dir), evals, counts)


# --- evaluations --------------------------------------------------------------------------------

def find_evals(root: Path, runs: list[Path]) -> dict[str, Path]:
    """Display name -> evaluation directory (one holding summary.json, samples.parquet or parts/).

    Looks in <run>/eval/** of every run and in directories directly under the runs root that are not
    runs (e.g. `igrpo eval` without --run writes <output_dir>/eval-<model>). Links leading out of the
    runs root are not followed (find_runs reports those directly under it)."""
    found: dict[str, Path] = {}
    run_set = set(runs)
    for run in runs:
        base = run / "eval"
        if records.escapes(base, root) is None:
            for d in records.eval_dirs(base):
                rel = d.relative_to(base)
                found[f"{run.name}" + ("" if str(rel) == "." else f"/{rel}")] = d
    if Path(root).is_dir():
        for d in sorted(Path(root).iterdir()):
            if d.is_dir() and d not in run_set and records.escapes(d, root) is None:
                for s in records.eval_dirs(d):
                    found[str(s.relative_to(root))] = s
    return {name: d for name, d in found.items() if records.escapes(d, root) is None}


def eval_summary(eval_dir: Path, root: Path) -> dict:
    return _read_json(Path(eval_dir) / "summary.json", root)


def _eval_parts(eval_dir: Path) -> list[Path]:
    return sorted((Path(eval_dir) / "parts").glob("*.parquet"))


def eval_samples(eval_dir: Path, root: Path) -> pl.DataFrame:
    """samples.parquet, or the finished chunk parts of an evaluation still in progress."""
    p = Path(eval_dir) / "samples.parquet"
    frames = [_read_parquet(q, root, SAMPLE_NEED) for q in ([p] if p.exists() else _eval_parts(eval_dir))]
    frames = [f for f in frames if f is not None]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=records.SAMPLE_SCHEMA)


# --- every file of every run, for the page's warning -------------------------------------------

def check(root: Path, runs: list[Path]) -> None:
    """Note the problems of every file the pages may read, cheaply (cached on file signatures)."""
    for run in runs:
        config(run)
        status(run)
        metrics(run)
        settings(run)
        readable_parts(run)
        _note(records.half_written(run))
    for d in find_evals(root, runs).values():
        eval_summary(d, root)
        p = d / "samples.parquet"
        for q in [p] if p.exists() else _eval_parts(d):
            _ok(q, root, SAMPLE_NEED)
