"""Cached reads of run directories, keyed on file modification times so a live refresh is cheap.

Every loader takes paths (strings) plus a signature of the files it reads (mtime_ns, size); when a
file changes, its signature changes and the cache misses. Rollouts are read one step part at a time
so that refreshing a growing run only reads the new parts.

Deliberately left out: anything that writes, and anything that imports torch (evaluation records
are read through igrpo_core.records, which never does).
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
import streamlit as st

from igrpo_core import analysis, records


def file_sig(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of a file, (0, 0) when it is missing."""
    try:
        s = Path(path).stat()
        return (s.st_mtime_ns, s.st_size)
    except OSError:
        return (0, 0)


def list_runs(root: str) -> list[Path]:
    try:
        return records.list_runs(Path(root))
    except OSError:
        return []


rollout_parts = records.rollout_parts  # step -> whole part file; re-exported for the views


def _run_sig(run_dir: Path) -> tuple:
    evals = [d / "summary.json" for d in records.eval_dirs(run_dir / "eval")]
    return tuple(file_sig(run_dir / f) for f in ("config.json", "status.json", "metrics.parquet")) + tuple(
        (str(p), file_sig(p)) for p in evals)


@st.cache_data(show_spinner=False, max_entries=512)
def _summary(run_dir: str, sig: tuple) -> dict:
    try:
        out = analysis.run_summary(Path(run_dir))
    except Exception as exc:  # a half-written or foreign directory: show it, do not crash the page
        out = {"run": Path(run_dir).name, "state": f"unreadable: {exc}"}
    status = _json(str(Path(run_dir) / "status.json"), file_sig(Path(run_dir) / "status.json"))
    out["updated"] = status.get("updated")
    out["error"] = status.get("error")
    out["rollout_steps"] = len(rollout_parts(run_dir))
    return out


def run_summary(run_dir: Path) -> dict:
    return _summary(str(run_dir), _run_sig(run_dir))


@st.cache_data(show_spinner=False, max_entries=1024)
def _json(path: str, sig: tuple) -> dict:
    try:
        return records.read_json(Path(path)) if sig != (0, 0) else {}
    except (OSError, ValueError):
        return {}


def config(run_dir: Path) -> dict:
    p = Path(run_dir) / "config.json"
    return _json(str(p), file_sig(p))


@st.cache_data(show_spinner=False, max_entries=1024)
def _settings(run_dir: str, sig: tuple) -> dict:
    try:
        return records.read_settings(Path(run_dir))
    except (OSError, ValueError):
        return {}


def settings(run_dir: Path) -> dict:
    """config.json plus the flattened provenance of the latest attempt (for the config diff)."""
    return _settings(str(run_dir), tuple(file_sig(Path(run_dir) / f) for f in ("config.json", "provenance.json")))


def status(run_dir: Path) -> dict:
    p = Path(run_dir) / "status.json"
    return _json(str(p), file_sig(p))


@st.cache_data(show_spinner=False, max_entries=256)
def _parquet(path: str, sig: tuple) -> pl.DataFrame:
    return pl.read_parquet(path)


def metrics(run_dir: Path) -> pl.DataFrame:
    p = Path(run_dir) / "metrics.parquet"
    return _parquet(str(p), file_sig(p)) if p.exists() else pl.DataFrame()


def rollouts(run_dir: Path, step: int) -> pl.DataFrame:
    p = rollout_parts(str(run_dir)).get(step)
    return _parquet(str(p), file_sig(p)) if p else pl.DataFrame(schema=records.ROLLOUT_SCHEMA)


@st.cache_data(show_spinner=False, max_entries=4096)
def _near_miss_part(path: str, sig: tuple) -> tuple[pl.DataFrame, pl.DataFrame]:
    r = pl.read_parquet(path)
    nm = analysis.near_misses(r)
    if nm.height:
        nm = nm.join(analysis.questions(r).select("step", "group_index", "question"),
                     on=["step", "group_index"], how="left")
    return nm, analysis.near_miss_counts(r)


def near_misses(run_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(near-miss rows, per-step counts) over all rollout parts; computed per part, cached per part."""
    pieces = [_near_miss_part(str(p), file_sig(p)) for p in rollout_parts(str(run_dir)).values()]
    rows = [nm for nm, _ in pieces if nm.height]
    counts = [c for _, c in pieces if c.height]
    return (pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame(),
            pl.concat(counts, how="diagonal_relaxed").sort("step") if counts else pl.DataFrame())


def find_evals(root: Path, runs: list[Path]) -> dict[str, Path]:
    """Display name -> evaluation directory (one holding summary.json, samples.parquet or parts/).

    Looks in <run>/eval/** of every run and in directories directly under the runs root that are not
    runs (e.g. `igrpo eval` without --run writes <output_dir>/eval-<model>)."""
    found: dict[str, Path] = {}
    run_set = set(runs)
    for run in runs:
        base = run / "eval"
        for d in records.eval_dirs(base):
            rel = d.relative_to(base)
            found[f"{run.name}" + ("" if str(rel) == "." else f"/{rel}")] = d
    if Path(root).is_dir():
        for d in sorted(Path(root).iterdir()):
            if d.is_dir() and d not in run_set:
                for s in records.eval_dirs(d):
                    found[str(s.relative_to(root))] = s
    return found


def eval_summary(eval_dir: Path) -> dict:
    p = Path(eval_dir) / "summary.json"
    return _json(str(p), file_sig(p))


def eval_samples(eval_dir: Path) -> pl.DataFrame:
    """samples.parquet, or the finished chunk parts of an evaluation still in progress."""
    p = Path(eval_dir) / "samples.parquet"
    if p.exists():
        return _parquet(str(p), file_sig(p))
    parts = sorted((Path(eval_dir) / "parts").glob("*.parquet"))
    frames = [_parquet(str(q), file_sig(q)) for q in parts]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=records.SAMPLE_SCHEMA)
