"""Run directories: the evidence a run leaves, written as parquet with a fixed schema.

Layout of runs/<run_name>/ (documented in the README; the dashboard and notebooks read only this):
    config.json              resolved Config, written first
    provenance.json          one entry per attempt: versions, git commit, device, model and data digests
    model.json               prompt_format (chat | plain: no chat template), parameters, trainable_parameters,
                             peft (LoRA settings, or null)
    status.json              {"state": running|finished|failed, "step", "max_steps", "updated", "error"}
    metrics.parquet          one row per optimizer step (options.METRIC_COLUMNS; null where a metric does not apply)
    rollouts/step_XXXXXX.parquet   one row per completion of that step (ROLLOUT_SCHEMA)
    checkpoints/step_XXXXXX/ model, tokenizer, optimizer/scheduler/RNG state, trainer_state.json
    eval/<name>/             one evaluation each (layout below; `eval_dir`, `eval_dirs` find them)
    notebooks/               executed notebooks

An evaluation directory (under a run's eval/, or anywhere for a model that is not a run):
    eval_config.json    model, protocol and per-set problem lists (a resume refuses a different one)
    parts/*.parquet     one file per chunk of problems (SAMPLE_SCHEMA), written atomically
    skipped.parquet     problems not evaluated: the prompt does not fit the context (SKIP_SCHEMA)
    samples.parquet     all parts concatenated, one row per sample
    summary.json        {"metrics": per-set + "macro_avg", "protocol", "skipped", speed figures}

Rollout parts are one file per step so that a crashed step never corrupts earlier ones and a live
reader sees whole files only (each is written to a temporary name and renamed). On resume, records
newer than the checkpoint are removed so the directory reads as if the run was never interrupted.

Reading directories you did not write (`find_runs`, `load_json`, `load_parquet`, `load_metrics`,
`load_rollouts`): a file that cannot be read (corrupt, truncated, not JSON, the wrong shape) or that a
symlink would take outside the runs folder (not followed) becomes a `Problem` (path, reason) handed to
a sink the caller shows, or printed as a warning; the reader returns an empty value and goes on.

Deliberately left out: remote loggers. This module never imports torch.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import polars as pl

from igrpo_core import diskio
from igrpo_core.diskio import DiskWriteError, test_pause, writing  # noqa: F401 (re-exported)
from igrpo_core.options import METRIC_COLUMNS, TEXT_METRICS

ROLLOUT_SCHEMA = {
    "step": pl.Int64,               # optimizer step this rollout fed (1-based)
    "stage": pl.Utf8,               # "draft" | "refine" (iGRPO) | "grpo"
    "prompt_id": pl.Utf8,           # dataset id of the question
    "group_index": pl.Int64,        # index of the question within the step
    "sample_index": pl.Int64,       # index of the completion within its group
    "prompt": pl.Utf8,              # user message actually sent (stage 2: question + draft)
    "completion": pl.Utf8,          # decoded completion, special tokens removed
    "gold": pl.Utf8,                # reference answer
    "extracted": pl.Utf8,           # answer extracted from the completion (null if none)
    "reward": pl.Float64,           # weighted total reward (+ reward_overlong when shaping is on)
    "reward_accuracy": pl.Float64,  # parts (null when that reward is not used)
    "reward_format": pl.Float64,
    "reward_judge": pl.Float64,
    "reward_status": pl.Utf8,       # "ok" | "no_answer" | "timeout" | "error: ..." from the checker
    "advantage": pl.Float64,        # null for untrained rows: drafts (unless draft_loss), refinement
                                    # rounds before the last (unless refine_loss_rounds="all")
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,  # includes EOS when finish_reason == "stop"
    "finish_reason": pl.Utf8,       # "stop" (EOS) | "length"
    "is_chosen_draft": pl.Boolean,  # the draft d-hat that stage 2 was conditioned on
    "draft_reward": pl.Float64,     # refine rows: reward of the chosen draft
    "draft_truncated": pl.Boolean,  # refine rows: the draft was shortened to fit max_prompt_length
    # Issue 11 options; each null where its option is off or the row is not of its kind.
    "selection_reason": pl.Utf8,    # chosen draft row: "<draft_selection rule>: why this draft"
    "planned_refinements": pl.Int64,  # draft rows: refinements planned for the group (adaptive_split;
                                    # 0 = refinement skipped); refine_rounds > 1: over all rounds
    "refine_round": pl.Int64,       # refine rows: 1..refine_rounds (draft_reward is then the reward of
                                    # the text this round refined: the chosen draft, then the best so far)
    "reward_overlong": pl.Float64,  # DAPO overlong shaping already included in `reward` (<= 0)
    "loss_masked": pl.Boolean,      # trained rows: length-capped and masked (mask_truncated_completions)
    "sample_batch": pl.Int64,       # dynamic sampling: 0 = the step's batch, k = k-th extra batch
    "dynamic_kept": pl.Boolean,     # dynamic sampling: the group was trained (false: dropped or surplus)
}



SAMPLE_SCHEMA = {
    "dataset": pl.Utf8,             # set name as given ("tiny:heldout", "gsm8k:test", a file path)
    "problem_id": pl.Utf8,
    "sample_index": pl.Int64,       # 0..k-1 within the problem
    "protocol": pl.Utf8,            # "single_shot" | "test_time_refine_r<R> (not paper protocol)"
    "prompt_tokens": pl.Int64,      # prompt of the final answer (refine: question + draft)
    "completion": pl.Utf8,          # final answer text, special tokens removed
    "gold": pl.Utf8,
    "extracted": pl.Utf8,           # answer the checker extracted (null if none)
    "correct": pl.Boolean,
    "status": pl.Utf8,              # answers.CheckResult.status: ok | no_answer | timeout | error
    "completion_tokens": pl.Int64,  # includes EOS when finish_reason == "stop"
    "finish_reason": pl.Utf8,       # "stop" | "length"
    "draft": pl.Utf8,               # refine rows: the single-shot answer that was refined (else null)
    "draft_extracted": pl.Utf8,
    "draft_correct": pl.Boolean,
    "draft_truncated": pl.Boolean,  # refine rows: a draft was shortened to fit the prompt budget
}
SKIP_SCHEMA = {"dataset": pl.Utf8, "problem_id": pl.Utf8, "prompt_tokens": pl.Int64, "reason": pl.Utf8}
METRIC_DTYPES = {"step": pl.Int64, **{k: pl.Utf8 for k in TEXT_METRICS}}   # every other metric: Float64


REPO_ROOT = Path(__file__).resolve().parents[1]

# Keys that steer how a run proceeds, not what it computes: they may change between attempts.
RUN_CONTROL_KEYS = {"max_steps", "resume", "save_steps", "save_total_limit", "nonfinite_policy"}


def atomic_write(path: Path, write, window: str | None = None) -> None:
    """write(tmp), then rename over path; filesystem failures name the path (diskio.atomic_write)."""
    diskio.atomic_write(path, write, window)


def write_json(path: Path, obj, window: str | None = None) -> None:
    atomic_write(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, default=str)), window)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def init_run_dir(run_dir: Path, config: dict, absent_means: dict | None = None) -> None:
    """Create the directory and write the resolved config first. An existing config must match.

    absent_means: for settings added after a run may have started, the value that computes what the
    code did before them; a run whose config lacks such a key resumes with that value."""
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    absent_means = absent_means or {}
    if cfg_path.exists():
        old = read_json(cfg_path)
        was = {**{k: v for k, v in absent_means.items() if k not in old}, **old}
        diff = {k for k in set(old) | set(config) if was.get(k) != config.get(k) and k not in RUN_CONTROL_KEYS}
        if diff:
            raise ValueError(f"{run_dir} holds a run with a different config (keys {sorted(diff)}): "
                             f"{_config_changes(old, config, sorted(diff), absent_means)}; choose another "
                             "run_name or delete the directory, or resume it with the run's own values")
    write_json(cfg_path, config)
    with writing(run_dir / "rollouts"):
        (run_dir / "rollouts").mkdir(exist_ok=True)


def _config_changes(old: dict, new: dict, keys: list[str], absent_means: dict) -> str:
    """'beta: run 0.0, now 0.1; ...'. A key the run's config lacks is a setting added since it started;
    one the new config lacks is a setting that no longer exists."""
    def run_value(k):
        if k in old:
            return json.dumps(old[k], default=str)
        if k in absent_means:
            return f"(added since; {json.dumps(absent_means[k], default=str)} computes as the run did)"
        return "(not in its config: added since)"

    def now_value(k):
        return json.dumps(new[k], default=str) if k in new else "(no longer a setting)"
    return "; ".join(f"{k}: run {run_value(k)}, now {now_value(k)}" for k in keys)


def append_provenance(directory: Path, entry: dict) -> None:
    """Add one attempt's provenance (provenance.collect) to <directory>/provenance.json."""
    path = Path(directory) / "provenance.json"
    entries = read_json(path) if path.exists() else []
    write_json(path, [*entries, entry])


def read_settings(run_dir: Path) -> dict:
    """config.json plus the latest attempt's provenance flattened to "provenance.<key>" entries, so
    a config diff also shows runs that differ in code, versions, model weights or data."""
    prov = Path(run_dir) / "provenance.json"
    return settings_of(read_json(Path(run_dir) / "config.json"), read_json(prov) if prov.exists() else None)


def settings_of(config: dict, provenance: list | None) -> dict:
    out = dict(config)
    if provenance is not None:
        out["provenance.attempts"] = len(provenance)
        last = provenance[-1] if provenance else {}
        out.update(_flatten(last if isinstance(last, dict) else {}, "provenance."))
    return out


def _flatten(d: dict, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif k != "time":
            out[f"{prefix}{k}"] = v
    return out


def write_status(run_dir: Path, state: str, step: int, max_steps: int, error: str | None = None) -> None:
    """status.json. Recording a failure is best effort: when the disk that failed the run cannot take
    status.json either, a warning says so and the run's own error (not this one) is what gets raised."""
    obj = {"state": state, "step": step, "max_steps": max_steps,
           "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "error": error}
    try:
        write_json(run_dir / "status.json", obj, window="status")
    except OSError as exc:
        if state not in ("failed", "interrupted"):
            raise
        print(f"warning: could not record state {state!r} in status.json: {exc}", file=sys.stderr)


def write_rollouts(run_dir: Path, step: int, rows: list[dict]) -> None:
    df = pl.DataFrame([{k: r.get(k) for k in ROLLOUT_SCHEMA} for r in rows], schema=ROLLOUT_SCHEMA)
    path = run_dir / "rollouts" / f"step_{step:06d}.parquet"
    atomic_write(path, lambda p: df.write_parquet(p), window="rollouts")


def append_metrics(run_dir: Path, row: dict) -> None:
    """Append one step's metrics; the file is rewritten atomically (a few KB per thousand steps).

    Columns are `options.METRIC_COLUMNS`, in that order; a name outside that vocabulary is an error
    (it would be a metric no reader knows), a missing one is null.
    """
    unknown = sorted(set(row) - set(METRIC_COLUMNS))
    if unknown:
        raise ValueError(f"metrics {unknown} are not in options.METRIC_COLUMNS; add them there")
    path = run_dir / "metrics.parquet"
    new = pl.DataFrame([{k: row.get(k) for k in METRIC_COLUMNS}],
                       schema={k: METRIC_DTYPES.get(k, pl.Float64) for k in METRIC_COLUMNS})
    if path.exists():
        new = pl.concat([pl.read_parquet(path), new], how="diagonal_relaxed")
    atomic_write(path, lambda p: new.write_parquet(p), window="metrics")


def truncate_after(run_dir: Path, step: int) -> None:
    """Drop records of steps > step (used on resume so the run reads as uninterrupted)."""
    path = run_dir / "metrics.parquet"
    if path.exists():
        df = pl.read_parquet(path).filter(pl.col("step") <= step)
        atomic_write(path, lambda p: df.write_parquet(p))
    for tmp in (run_dir / "rollouts").glob("step_*.parquet.tmp"):  # half-written when the run died
        tmp.unlink()
    for part_step, part in rollout_parts(run_dir).items():
        if part_step > step:
            part.unlink()


def read_parquet(path: Path) -> pl.DataFrame:
    """pl.read_parquet of one file: polars would read `[`, `*` or `?` in a path (a run name) as a glob."""
    return pl.read_parquet(path, glob=False)


def parquet_schema(path: Path) -> pl.Schema:
    """A parquet file's columns from its footer alone (raises like read_parquet on a damaged file)."""
    return pl.scan_parquet(path, glob=False).collect_schema()


def read_metrics(run_dir: Path) -> pl.DataFrame:
    path = Path(run_dir) / "metrics.parquet"
    return read_parquet(path) if path.exists() else pl.DataFrame()


def rollout_parts(run_dir: Path) -> dict[int, Path]:
    """Step -> its complete rollout part (temporaries and foreign names skipped), in step order."""
    parts = {}
    for p in (Path(run_dir) / "rollouts").glob("step_*.parquet"):
        try:
            parts[int(p.name[5:11])] = p
        except ValueError:
            continue
    return dict(sorted(parts.items()))


def read_rollouts(run_dir: Path, steps: list[int] | None = None) -> pl.DataFrame:
    wanted = None if steps is None else set(steps)
    parts = [p for step, p in rollout_parts(run_dir).items() if wanted is None or step in wanted]
    if not parts:
        return pl.DataFrame(schema=ROLLOUT_SCHEMA)
    return pl.concat([read_parquet(p) for p in parts], how="diagonal_relaxed")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints (those with trainer_state.json, written last), oldest first."""
    ckpts = [p for p in (Path(run_dir) / "checkpoints").glob("step_*") if (p / "trainer_state.json").exists()]
    return sorted(ckpts, key=lambda p: int(p.name[5:]))


def finish_checkpoint(ckpt: Path, state: dict) -> None:
    """Mark a written checkpoint complete: its files synced to disk first, then trainer_state.json
    (written last, atomically: a kill or a full disk before it leaves a partial checkpoint, which
    checkpoint_dirs ignores and the next save removes)."""
    with writing(ckpt):
        diskio.sync_tree(ckpt)
    test_pause("checkpoint", ckpt)
    write_json(ckpt / "trainer_state.json", state)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in checkpoint_dirs(run_dir)[:-keep]:
        # the completion mark goes first: a kill inside rmtree (which deletes in directory order)
        # must leave a partial checkpoint, never one still marked complete without its weights
        (old / "trainer_state.json").unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)
    for partial in (Path(run_dir) / "checkpoints").glob("step_*"):  # left by a crash mid-save
        if not (partial / "trainer_state.json").exists():
            shutil.rmtree(partial, ignore_errors=True)


def resolve_path(path: str | Path) -> Path:
    """A relative path that does not exist here is tried against the repository root (JupyterLab
    starts kernels in notebooks/, shells start wherever the user is)."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
        return REPO_ROOT / p
    return p


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "checkpoints").is_dir() or (Path(path) / "status.json").is_file()


def list_runs(output_dir: Path) -> list[Path]:
    root = Path(output_dir)
    return sorted(p for p in root.iterdir() if (p / "config.json").exists()) if root.is_dir() else []


# --- evaluation directories ------------------------------------------------------------------

def eval_dir(run_dir: Path, name: str) -> Path:
    """Where an evaluation named `name` of a run lives: <run>/eval/<name>/."""
    return Path(run_dir) / "eval" / name


def eval_dirs(root: Path) -> list[Path]:
    """Every evaluation directory at or below `root` (a run's eval/, or a folder of them), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = {p.parent for pat in ("summary.json", "samples.parquet") for p in root.glob(f"**/{pat}")}
    found |= {p.parent for p in root.glob("**/parts") if p.is_dir()}
    return sorted(found)


def read_eval_summary(eval_dir: Path) -> dict:
    """summary.json of a finished evaluation ({} while it is still running)."""
    p = Path(eval_dir) / "summary.json"
    return read_json(p) if p.exists() else {}


def read_eval_samples(eval_dir: Path) -> pl.DataFrame:
    """samples.parquet, or the finished chunk parts of an evaluation still in progress."""
    p = Path(eval_dir) / "samples.parquet"
    if p.exists():
        return read_parquet(p)
    frames = [read_parquet(q) for q in sorted((Path(eval_dir) / "parts").glob("*.parquet"))]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=SAMPLE_SCHEMA)


# --- reading directories you did not write ---------------------------------------------------

# What a read of a damaged or foreign file raises: JSON and UTF-8 decode errors are ValueErrors,
# corrupt or truncated parquet is a PolarsError (ComputeError), a vanished file an OSError.
READ_ERRORS = (OSError, ValueError, pl.exceptions.PolarsError)
RUN_FILES = ("metrics.parquet", "status.json", "rollouts", "checkpoints")  # a run without config.json


class Problem(NamedTuple):
    path: str      # the file (or link) that was not read
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def warn(problem: Problem, sink: list | None = None) -> None:
    """Hand a problem to `sink` (a list the caller shows), or print it as a warning (notebooks)."""
    if sink is None:
        print(f"warning: skipped {problem}", file=sys.stderr)
    else:
        sink.append(problem)


def escapes(path: Path, root: Path) -> str | None:
    """Why `path` may not be read because links take it out of `root`, else None.

    Policy: run folders are untrusted, so a symlink (the run directory itself, or any file in it)
    that leads outside the runs folder is never followed; one that stays inside is fine."""
    try:
        target = Path(path).resolve()
        if target.is_relative_to(Path(root).resolve()):
            return None
    except (OSError, RuntimeError):  # a symlink loop
        return "a symlink loop: not followed"
    return f"a symlink to {target}, outside the runs folder {root}: not followed"


def reason_of(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"unreadable ({type(exc).__name__}: {first[:200]})"


def load_json(path: Path, sink: list | None = None, *, root: Path, missing_ok: bool = True, kind: type = dict):
    """A JSON file holding a `kind` (dict or list); an empty one when missing, unreadable, of
    another shape, or out of root."""
    path = Path(path)
    if not os.path.lexists(path):
        if not missing_ok:
            warn(Problem(str(path), "missing"), sink)
        return kind()
    why = escapes(path, root)
    if why is None:
        try:
            obj = read_json(path)
            if isinstance(obj, kind):
                return obj
            why = f"not a JSON {'object' if kind is dict else 'list'} (a {type(obj).__name__})"
        except READ_ERRORS as exc:
            why = reason_of(exc)
    warn(Problem(str(path), why), sink)
    return kind()


def load_parquet(path: Path, sink: list | None = None, *, root: Path, need: tuple = ()) -> pl.DataFrame | None:
    """A parquet file, or None when it is unreadable, lacks a column of `need`, or is out of root."""
    why = escapes(path, root)
    if why is None:
        try:
            df = read_parquet(path)
            missing = [c for c in need if c not in df.columns]
            if not missing:
                return df
            why = f"not a run record: no column {missing}"
        except READ_ERRORS as exc:
            why = reason_of(exc)
    warn(Problem(str(path), why), sink)
    return None


def load_metrics(run_dir: Path, sink: list | None = None) -> pl.DataFrame:
    """read_metrics for a run folder you did not write (runs folder = the run's parent)."""
    path = Path(run_dir) / "metrics.parquet"
    df = load_parquet(path, sink, root=Path(run_dir).parent, need=("step",)) if os.path.lexists(path) else None
    return pl.DataFrame() if df is None else df


def half_written(run_dir: Path) -> list[Problem]:
    """Rollout temporaries: a step being written now, or left by a crash (never read)."""
    return [Problem(str(t), "a half-written step (a write in progress, or a crash): not read")
            for t in sorted((Path(run_dir) / "rollouts").glob("step_*.parquet.tmp"))]


def load_rollouts(run_dir: Path, sink: list | None = None, steps: list[int] | None = None) -> pl.DataFrame:
    """read_rollouts that skips (and reports) unreadable parts and half-written steps."""
    for problem in half_written(run_dir):
        warn(problem, sink)
    wanted = None if steps is None else set(steps)
    frames = [load_parquet(p, sink, root=Path(run_dir).parent, need=("step", "stage", "completion"))
              for step, p in rollout_parts(run_dir).items() if wanted is None or step in wanted]
    frames = [f for f in frames if f is not None]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=ROLLOUT_SCHEMA)


def find_runs(output_dir: Path, sink: list | None = None) -> list[Path]:
    """Run directories under output_dir: those with config.json, and (reported) those holding run
    records without one. Links that lead outside output_dir are reported and left out."""
    root = Path(output_dir)
    runs = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.is_symlink() and (why := escapes(p, root)):
            warn(Problem(str(p), why), sink)
        elif not p.is_dir():
            continue
        elif os.path.lexists(p / "config.json"):
            runs.append(p)
        elif any(os.path.lexists(p / f) for f in RUN_FILES):
            warn(Problem(str(p / "config.json"), "missing: the run is shown without its settings"), sink)
            runs.append(p)
    return runs
