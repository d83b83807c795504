"""Read-side analysis of run directories: the tables the dashboard and the notebooks show.

Polars only (never torch), so the dashboard can import it. Single-run functions take frames read
with `records` and return a frame; the multi-run ones (`*_long`, `metrics_long`, `entropy_drops`)
take run directories and add a `run` column for colouring plots. Plotting is left to the caller.

Run folders are read as untrusted (records.load_*): a corrupt, missing or out-of-folder file is
skipped with a warning naming it (printed, or appended to `sink` when the caller shows it itself).

Deliberately left out: anything that needs a model.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import polars as pl

from igrpo_core import records


def _int(v) -> int | None:
    """A count from a JSON file, None when the file holds something else there (a string, a list)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _text(v) -> str | None:
    return None if v is None else str(v)


def run_summary(run_dir: Path, last_n: int = 5, sink: list | None = None) -> dict:
    """Name, algo, state, steps and the mean of the last `last_n` steps' key metrics."""
    run_dir = Path(run_dir)
    cfg = records.load_json(run_dir / "config.json", sink, root=run_dir.parent, missing_ok=False)
    status = records.load_json(run_dir / "status.json", sink, root=run_dir.parent)
    m = records.load_metrics(run_dir, sink)
    out = {"run": run_dir.name, "algo": _text(cfg.get("algo")), "seed": _int(cfg.get("seed")),
           "state": _text(status.get("state", "unknown")), "step": _int(status.get("step", 0)),
           "max_steps": _int(cfg.get("max_steps"))}
    if m.height:
        tail = m.tail(last_n)
        for col in ("reward_mean", "accuracy_mean", "refine_reward_mean", "best_draft_reward_mean",
                    "refine_gain", "entropy", "completion_len_mean", "step_time_s"):
            if col in tail.columns and tail[col].dtype.is_numeric() and tail[col].null_count() < tail.height:
                out[col] = tail[col].mean()
    for ev in records.eval_dirs(run_dir / "eval"):
        summary = records.load_json(ev / "summary.json", sink, root=run_dir.parent)
        macro = (summary.get("metrics") or {}).get("macro_avg") if isinstance(summary.get("metrics"), dict) else None
        if isinstance(macro, dict) and isinstance(macro.get("avg@k"), (int, float)):
            out["eval_avg@k"] = float(macro["avg@k"])
    return out


def run_settings(run_dir: Path, sink: list | None = None) -> dict:
    """records.read_settings for a folder you did not write: unreadable files are reported, not raised."""
    run_dir = Path(run_dir)
    cfg = records.load_json(run_dir / "config.json", sink, root=run_dir.parent, missing_ok=False)
    prov = run_dir / "provenance.json"
    entries = records.load_json(prov, sink, root=run_dir.parent, kind=list) if prov.exists() else None
    return records.settings_of(cfg, entries)


def config_diff(configs: dict[str, dict]) -> pl.DataFrame:
    """Keys whose values differ between runs (one row per key, one column per run)."""
    keys = sorted({k for c in configs.values() for k in c})
    rows = []
    for k in keys:
        vals = [configs[name].get(k) for name in configs]
        if len({repr(v) for v in vals}) > 1:
            rows.append({"key": k, **{name: repr(v) for name, v in zip(configs, vals)}})
    return pl.DataFrame(rows) if rows else pl.DataFrame({"key": []}, schema={"key": pl.Utf8})


def chosen_drafts(rollouts: pl.DataFrame) -> pl.DataFrame:
    return rollouts.filter((pl.col("stage") == "draft") & pl.col("is_chosen_draft")).select(
        "step", "group_index", pl.col("completion").alias("draft"),
        pl.col("reward_accuracy").alias("draft_accuracy"), pl.col("reward").alias("chosen_draft_reward"))


def near_misses(rollouts: pl.DataFrame) -> pl.DataFrame:
    """Refinements whose correctness differs from their chosen draft's.

    direction "fix": draft wrong -> refinement right; "break": draft right -> refinement wrong.
    Correctness is the accuracy reward part (1.0 right, 0.0 wrong).
    """
    refines = rollouts.filter(pl.col("stage") == "refine")
    if refines.height == 0:
        return pl.DataFrame(schema={"step": pl.Int64, "direction": pl.Utf8})
    joined = refines.join(chosen_drafts(rollouts), on=["step", "group_index"], how="inner")
    return joined.filter(pl.col("draft_accuracy") != pl.col("reward_accuracy")).with_columns(
        pl.when(pl.col("reward_accuracy") > pl.col("draft_accuracy")).then(pl.lit("fix"))
        .otherwise(pl.lit("break")).alias("direction")
    ).select("step", "direction", "prompt_id", "group_index", "sample_index", "prompt", "gold", "draft",
             "draft_accuracy", "completion", "reward_accuracy", "reward", "advantage", "extracted")


def near_miss_counts(rollouts: pl.DataFrame) -> pl.DataFrame:
    """Per step: refinements, fixes, breaks, and their shares."""
    refines = rollouts.filter(pl.col("stage") == "refine").group_by("step").agg(pl.len().alias("refinements"))
    nm = near_misses(rollouts)
    if nm.height == 0:
        counts = refines.with_columns(pl.lit(0, pl.UInt32).alias("fix"), pl.lit(0, pl.UInt32).alias("break"))
    else:
        counts = refines.join(nm.group_by("step").agg((pl.col("direction") == "fix").sum().alias("fix"),
                                                      (pl.col("direction") == "break").sum().alias("break")),
                              on="step", how="left").fill_null(0)
    return counts.with_columns((pl.col("fix") / pl.col("refinements")).alias("fix_rate"),
                               (pl.col("break") / pl.col("refinements")).alias("break_rate")).sort("step")


def stage_rewards(rollouts: pl.DataFrame) -> pl.DataFrame:
    """Per step and stage: mean reward and accuracy (drafts, chosen drafts, refinements, grpo)."""
    base = rollouts.group_by("step", "stage").agg(pl.col("reward").mean().alias("reward"),
                                                  pl.col("reward_accuracy").mean().alias("accuracy"))
    chosen = rollouts.filter(pl.col("is_chosen_draft").fill_null(False)).group_by("step").agg(
        pl.col("reward").mean().alias("reward"), pl.col("reward_accuracy").mean().alias("accuracy")
    ).with_columns(pl.lit("chosen draft").alias("stage")).select("step", "stage", "reward", "accuracy")
    return pl.concat([base, chosen]).sort("step", "stage")


def group_view(rollouts: pl.DataFrame, step: int, group_index: int) -> dict[str, pl.DataFrame]:
    """One prompt of one step: its drafts and its refinements."""
    g = rollouts.filter((pl.col("step") == step) & (pl.col("group_index") == group_index)).sort("sample_index")
    return {"drafts": g.filter(pl.col("stage") == "draft"),
            "refinements": g.filter(pl.col("stage").is_in(["refine", "grpo"]))}


def draft_choice(drafts: pl.DataFrame, rule: str | None = None) -> dict:
    """Which draft of one group stage 2 refined, and why (the rollout page's draft-selection panel).

    drafts: the group's draft rows (group_view). rule: the run's draft_selection (config), used when
    the chosen row has no recorded selection_reason (runs from before it was recorded: rule "best").
    Returns {chosen: sample_index or None, reason, rule, rank: 1 = highest reward, mix: "a right, b
    wrong", rows: [{sample_index, reward, correct (None when no correctness reward), chosen}]}.
    """
    def correct(r) -> bool | None:
        v = r.get("reward_accuracy") if r.get("reward_accuracy") is not None else r.get("reward_judge")
        return None if v is None else v > 0.5
    rows = [{"sample_index": r["sample_index"], "reward": r.get("reward"), "correct": correct(r),
             "chosen": bool(r.get("is_chosen_draft"))} for r in drafts.sort("sample_index").iter_rows(named=True)]
    chosen = next((r for r in rows if r["chosen"]), None)
    reasons = drafts["selection_reason"].to_list() if "selection_reason" in drafts.columns else []
    recorded = next((str(x) for x in reasons if x), None)
    rule = rule or "best"
    known = [r["correct"] for r in rows if r["correct"] is not None]
    rank = None
    if chosen and isinstance(chosen["reward"], (int, float)) and math.isfinite(chosen["reward"]):
        rank = 1 + sum(isinstance(r["reward"], (int, float)) and r["reward"] > chosen["reward"] for r in rows)
    return {"chosen": chosen["sample_index"] if chosen else None, "rule": rule, "rank": rank,
            "reason": recorded or (f"{rule}: no reason recorded (this run predates selection_reason)"
                                   if chosen else "no draft was marked chosen"),
            "mix": f"{sum(known)} right, {len(known) - sum(known)} wrong" if known else None, "rows": rows}


def questions(rollouts: pl.DataFrame) -> pl.DataFrame:
    """Per step and group: the question as sent in stage 1 (draft or grpo rows; refine prompts hold q + draft)."""
    first = rollouts.filter(pl.col("stage").is_in(["draft", "grpo"])).sort("sample_index")
    return first.group_by("step", "group_index", maintain_order=True).agg(
        pl.col("prompt_id").first(), pl.col("prompt").first().alias("question"), pl.col("gold").first())


def group_index_table(rollouts: pl.DataFrame) -> pl.DataFrame:
    """One row per (step, group): prompt id, completions per stage, mean and best reward, chosen draft's reward."""
    if rollouts.height == 0:
        return pl.DataFrame(schema={"step": pl.Int64, "group_index": pl.Int64, "prompt_id": pl.Utf8})
    return rollouts.group_by("step", "group_index").agg(
        pl.col("prompt_id").first(),
        (pl.col("stage") == "draft").sum().alias("drafts"),
        (pl.col("stage") != "draft").sum().alias("trained"),
        pl.col("reward").filter(pl.col("is_chosen_draft").fill_null(False)).first().alias("chosen_draft_reward"),
        pl.col("reward").filter(pl.col("stage") != "draft").mean().alias("trained_reward_mean"),
        pl.col("reward").filter(pl.col("stage") != "draft").max().alias("trained_reward_max"),
    ).sort("step", "group_index")


def eval_results(summaries: dict[str, dict]) -> pl.DataFrame:
    """One row per (evaluation, dataset) from summary.json contents keyed by a display name.

    Columns: eval, dataset, problems, samples_per_problem, avg@k, pass@<k>..., then the other metrics
    (maj@k, no_answer, ...) and the protocol (label, paper_protocol, temperature, greedy,
    refine_rounds) and model. The macro average is its own row, dataset "macro_avg".
    """
    rows = []
    for name, summary in summaries.items():
        proto = summary.get("protocol") if isinstance(summary.get("protocol"), dict) else {}
        sets = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
        for ds, m in ((ds, m) for ds, m in sets.items() if isinstance(m, dict)):  # a foreign file: skip the rest
            rows.append({"eval": name, "dataset": ds, **{k: v for k, v in m.items() if not isinstance(v, (dict, list))},
                         "protocol": proto.get("label"), "paper_protocol": proto.get("paper_protocol"),
                         "temperature": proto.get("temperature"), "greedy": proto.get("greedy"),
                         "refine_rounds": proto.get("refine_rounds"), "model": summary.get("model")})
    if not rows:
        return pl.DataFrame(schema={"eval": pl.Utf8, "dataset": pl.Utf8})
    df = pl.DataFrame(rows, infer_schema_length=None)
    pass_cols = sorted((c for c in df.columns if c.startswith("pass@")), key=lambda c: int(c[5:]))
    front = [c for c in ("eval", "dataset", "problems", "samples_per_problem", "avg@k") if c in df.columns]
    rest = [c for c in df.columns if c not in front and c not in pass_cols]
    return df.select(front + pass_cols + rest)


def eval_problem_table(samples: pl.DataFrame) -> pl.DataFrame:
    """Per (dataset, problem): samples, correct ones, accuracy, distinct extracted answers, gold."""
    if samples.height == 0:
        return pl.DataFrame(schema={"dataset": pl.Utf8, "problem_id": pl.Utf8})
    return samples.group_by("dataset", "problem_id", maintain_order=True).agg(
        pl.len().alias("samples"), pl.col("correct").sum().alias("correct"),
        pl.col("correct").cast(pl.Float64).mean().alias("accuracy"),
        pl.col("extracted").drop_nulls().unique().sort().str.join(" | ").alias("answers"),
        pl.col("gold").first(), (pl.col("status") == "no_answer").sum().alias("no_answer"))


# --- arms: runs whose configs differ only in seed and bookkeeping ------------------------------

# Keys that name or place a run, or steer how it proceeds, not what it computes: runs equal in
# everything else are seeds of one arm (records.RUN_CONTROL_KEYS minus max_steps, which changes
# what is trained).
ARM_IGNORE = frozenset({"seed", "run_name", "output_dir", "resume", "save_steps", "save_total_limit"})
ARM_METRICS = ("heldout_accuracy", "zero_std_share", "draft_zero_std_share", "fixes", "breaks", "fix_rate",
               "break_rate", "step_time_s")


def _short(v, limit: int = 40) -> str:
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= limit else s[:limit] + "…"


def arm_labels(configs: dict[str, dict]) -> dict[str, str]:
    """run -> arm label. Runs whose configs agree outside ARM_IGNORE share an arm, named by the
    settings in which the arms differ ("algo=grpo", "algo=igrpo · draft_selection=worst");
    "all runs" when every run is one arm. A key missing from a config counts as its own value ("–")."""
    kept = {r: {k: v for k, v in c.items() if k not in ARM_IGNORE} for r, c in configs.items()}
    keys = sorted({k for c in kept.values() for k in c})
    varying = [k for k in keys if len({repr(c.get(k, "–")) for c in kept.values()}) > 1]
    return {r: " · ".join(f"{k}={_short(c.get(k, '–'))}" for k in varying) or "all runs" for r, c in kept.items()}


def heldout_accuracy(summaries: dict[str, dict], prefer: str = "final") -> tuple[float | None, str | None]:
    """(macro avg@k, evaluation name) of a run's evaluations {name: summary.json}: the one named
    `prefer` (experiments.FINAL_EVAL, the config's own held-out evaluation) when it has a result, else
    the last by name that has one; (None, None) when none has."""
    def acc(summary) -> float | None:
        m = summary.get("metrics") if isinstance(summary, dict) else None
        macro = m.get("macro_avg") if isinstance(m, dict) else None
        v = macro.get("avg@k") if isinstance(macro, dict) else None
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    found = [(n, acc(s)) for n, s in sorted(summaries.items()) if acc(s) is not None]
    pick = next(((n, a) for n, a in found if n == prefer), found[-1] if found else (None, None))
    return pick[1], pick[0]


def _metric_mean(metrics: pl.DataFrame, col: str) -> float | None:
    if col not in metrics.columns or not metrics[col].dtype.is_numeric():
        return None
    v = metrics[col].cast(pl.Float64).fill_nan(None).mean()
    return None if v is None else float(v)


def arm_run_row(run: str, config: dict, metrics: pl.DataFrame, eval_summaries: dict[str, dict],
                near_miss_counts: pl.DataFrame) -> dict:
    """One run's figures for the arm comparison: held-out accuracy, zero-variance shares (means over
    all logged steps of frac_zero_std, i.e. GRPO's groups or iGRPO's trained refinement groups, and
    draft_frac_zero_std), fixes and breaks summed over its rollout records (near_miss_counts)."""
    acc, ev = heldout_accuracy(eval_summaries)
    n = near_miss_counts
    refs = int(n["refinements"].sum()) if n.height else 0
    fixes = int(n["fix"].sum()) if n.height else None
    breaks = int(n["break"].sum()) if n.height else None
    return {"run": run, "algo": _text(config.get("algo")), "seed": _int(config.get("seed")),
            "heldout_accuracy": acc, "eval": ev, "steps": metrics.height,
            "zero_std_share": _metric_mean(metrics, "frac_zero_std"),
            "draft_zero_std_share": _metric_mean(metrics, "draft_frac_zero_std"),
            "refinements": refs if n.height else None, "fixes": fixes, "breaks": breaks,
            "fix_rate": fixes / refs if refs else None, "break_rate": breaks / refs if refs else None,
            "step_time_s": _metric_mean(metrics, "step_time_s")}


def arm_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Per arm (rows carry `arm` and arm_run_row's columns): runs, seeds, and mean / sd (sample
    standard deviation over the arm's runs; null with one run) / n (runs with a value) of each of
    ARM_METRICS. Arms in first-seen order."""
    if rows.height == 0:
        return pl.DataFrame(schema={"arm": pl.Utf8, "runs": pl.UInt32})
    aggs = [pl.len().alias("runs"), pl.col("seed").drop_nulls().sort().cast(pl.Utf8).str.join(",").alias("seeds")]
    for m in (m for m in ARM_METRICS if m in rows.columns):
        c = pl.col(m).cast(pl.Float64)
        aggs += [c.mean().alias(f"{m}_mean"), c.std().alias(f"{m}_sd"), c.count().alias(f"{m}_n")]
    return rows.group_by("arm", maintain_order=True).agg(aggs)


# --- several runs at once -------------------------------------------------------------------

def newest_runs(output_dir: str | Path = "runs", n: int = 2, sink: list | None = None) -> list[Path]:
    """The n most recently updated run directories (by status.json, else config.json, else the folder)."""
    def updated(p: Path) -> float:
        return max([(p / f).lstat().st_mtime for f in ("config.json", "status.json") if (p / f).exists()]
                   or [p.lstat().st_mtime])
    runs = sorted(records.find_runs(records.resolve_path(output_dir), sink), key=updated)
    if not runs:
        raise FileNotFoundError(f"no run directories under {output_dir!r}: run notebooks/quickstart.ipynb "
                                "or `igrpo train` first, or pass run_dirs")
    return runs[-n:]


def pick_runs(run_dirs: list[str], output_dir: str | Path = "runs", newest: int = 2) -> list[Path]:
    """The given run directories (checked), or else the `newest` ones under output_dir."""
    if not run_dirs:
        return newest_runs(output_dir, newest)
    out = [records.resolve_path(d) for d in run_dirs]
    missing = [str(d) for d in out if not any(os.path.lexists(d / f) for f in ("config.json", *records.RUN_FILES))]
    if missing:
        raise FileNotFoundError(f"not run directories (no config.json, metrics or rollouts): {missing}")
    return out


def run_label(run_dir: Path) -> str:
    """`name (algo)`; a config.json that cannot be read was reported by whoever read it first."""
    cfg = records.load_json(Path(run_dir) / "config.json", [], root=Path(run_dir).parent)
    return f"{Path(run_dir).name} ({cfg.get('algo')})"


def metrics_long(run_dirs, sink: list | None = None) -> pl.DataFrame:
    """All runs' per-step metrics with a `run` column (label) for colouring plots."""
    parts = [records.load_metrics(d, sink).with_columns(pl.lit(run_label(d)).alias("run")) for d in run_dirs]
    parts = [p for p in parts if p.height]
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame({"run": [], "step": []})


def _per_run(run_dirs, table, sink: list | None) -> list[pl.DataFrame]:
    """table(rollouts) of each run that yields rows, with a `run` column."""
    parts = []
    for d in run_dirs:
        t = table(records.load_rollouts(d, sink))
        if t.height:
            parts.append(t.with_columns(pl.lit(run_label(d)).alias("run")))
    return parts


def stage_rewards_long(run_dirs, sink: list | None = None) -> pl.DataFrame:
    """stage_rewards for each run, with a `run` column."""
    parts = _per_run(run_dirs, stage_rewards, sink)
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame({"run": [], "step": []})


def near_miss_counts_long(run_dirs, sink: list | None = None) -> pl.DataFrame:
    """near_miss_counts per iGRPO run (GRPO runs have no drafts), with a `run` column."""
    parts = _per_run(run_dirs, near_miss_counts, sink)
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame({"run": [], "step": []})


def near_misses_long(run_dirs, sink: list | None = None) -> pl.DataFrame:
    """near_misses of every run, with a `run` column; fixes first."""
    parts = _per_run(run_dirs, near_misses, sink)
    if not parts:
        return pl.DataFrame({"run": [], "step": [], "direction": []})
    return pl.concat(parts, how="diagonal_relaxed").sort(pl.col("direction") != "fix", "run", "step")


def entropy_first_below(steps, values, fractions=(0.9, 0.75, 0.5)) -> dict:
    """The first step where entropy fell under f x its start, for each f in `fractions`.

    steps, values: one run's per-step entropy, in step order. Missing and non-finite values (a NaN
    logged by a diverged step) are skipped; the start is the first finite value. Returns
    {"start", "final", "steps", f: (step, entropy at that step) or None when it never fell that far};
    a start <= 0 never falls "below a fraction of itself", so every f is None then.
    """
    pts = [(int(s), float(v)) for s, v in zip(steps, values)
           if s is not None and isinstance(v, (int, float)) and math.isfinite(v)]
    out: dict = {"start": pts[0][1] if pts else None, "final": pts[-1][1] if pts else None, "steps": len(pts)}
    for f in fractions:
        hit = next(((s, v) for s, v in pts if v < f * pts[0][1]), None) if pts and pts[0][1] > 0 else None
        out[f] = hit
    return out


def entropy_drops(metrics: pl.DataFrame, fractions=(0.9, 0.75, 0.5)) -> pl.DataFrame:
    """Per run: start and final entropy, and the first step where entropy < f x its first-step value.

    A later step (or null: never) means entropy collapsed more slowly; the paper reports that iGRPO
    delays the collapse relative to GRPO. NaN steps are skipped (entropy_first_below).
    """
    rows = []
    if "entropy" not in metrics.columns or not metrics["entropy"].dtype.is_numeric():
        return pl.DataFrame({"run": []}, schema={"run": pl.Utf8})
    for (run,), m in metrics.sort("step").group_by(["run"], maintain_order=True):
        d = entropy_first_below(m["step"].to_list(), m["entropy"].to_list(), fractions)
        row = {"run": run, "steps": d["steps"], "entropy_start": d["start"], "entropy_final": d["final"]}
        for f in fractions:
            row[f"first_step_below_{f:g}x"] = d[f][0] if d[f] else None
        rows.append(row)
    schema = {"run": pl.Utf8, "steps": pl.Int64, "entropy_start": pl.Float64, "entropy_final": pl.Float64,
              **{f"first_step_below_{f:g}x": pl.Int64 for f in fractions}}
    return pl.DataFrame(rows, schema=schema)


def format_near_misses(nm: pl.DataFrame, n: int = 3, max_chars: int = 400) -> str:
    """A few near-miss rows as plain text (model output is shown as text, never rendered)."""
    def clip(s):
        s = "" if s is None else str(s)
        return s if len(s) <= max_chars else s[:max_chars] + f"... [{len(s) - max_chars} more chars]"
    blocks = []
    for r in nm.head(n).iter_rows(named=True):
        blocks.append("\n".join([
            f"--- {r.get('run', '')} step {r['step']}  group {r['group_index']}  sample {r['sample_index']}  "
            f"{r['direction']}  (gold {r['gold']}, extracted {r['extracted']})",
            f"[draft, accuracy {r['draft_accuracy']}]", clip(r["draft"]),
            f"[refinement, accuracy {r['reward_accuracy']}, advantage {r['advantage']}]", clip(r["completion"])]))
    return "\n\n".join(blocks) if blocks else "(no near misses in these runs)"
