"""The paper's ablations as grids of Config overrides, a runner, and a seed summary.

A family maps a base Config to arms: `(arm name, overrides)`. Families (arXiv 2602.09000, Sec. 5):
    split      N/G split of a fixed total budget (e.g. 8 = 2+6, 4+4, 6+2), GRPO at the same total
    budget     total budget {4, 8, 16, 32}: GRPO (G = total) vs iGRPO (N = G = total / 2)
    beta       KL coefficient {0, 1e-4, 1e-3, 1e-2} on the base algorithm
    base_algo  iGRPO wrapped around GRPO / DAPO / GSPO, each vs its plain version; the DAPO and GSPO
               arms use num_iterations=2 (TRL's GSPO recipe): at 1 the ratio is 1, no clip range acts
               and GSPO equals GRPO
    reward     rule-based reward vs a generative judge (needs judge_model; else skipped with a note)
    seeds are a separate axis: every arm runs once per seed.

`run_ablation` trains each arm x seed, evaluates the final checkpoint single-shot with the base
config's eval_* settings, and returns one row per arm x seed; arms whose resolved config is
identical (e.g. "split 4+4" and "beta 0") train once and share the run. `summarize` reduces over
seeds.

Deliberately left out: DAPO's dynamic sampling and overlong reward shaping (only its loss
normalisation and clip-higher are ours), and any plotting.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

import polars as pl

from igrpo_core import records
from igrpo_core.config import Config

Arms = list[tuple[str, dict]]

# Both off-policy (2 updates per rollout batch, as TRL's GSPO recipe): their clip ranges only act when ratio != 1.
DAPO = {"loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "num_iterations": 2}  # token norm + clip-higher
GSPO = {"importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4,
        "num_iterations": 2}  # GSPO paper ranges
BETAS = (0.0, 1e-4, 1e-3, 1e-2)
TOTALS = (4, 8, 16, 32)


def split_arms(base: Config) -> Arms:
    total = base.num_generations
    drafts = sorted({max(1, total // 4), total // 2, total - max(2, total // 4)})
    arms = [(f"grpo G{total}", {"algo": "grpo"})]
    return arms + [(f"igrpo N{n}+G{total - n}", {"algo": "igrpo", "num_drafts": n})
                   for n in drafts if 1 <= n <= total - 2]


def budget_arms(base: Config) -> Arms:
    arms = []
    for t in TOTALS:
        arms += [(f"grpo {t}", {"algo": "grpo", "num_generations": t}),
                 (f"igrpo {t // 2}+{t // 2}", {"algo": "igrpo", "num_generations": t, "num_drafts": t // 2})]
    return arms


def beta_arms(base: Config) -> Arms:
    return [(f"{base.algo} beta={b:g}", {"beta": b}) for b in BETAS]


def base_algo_arms(base: Config) -> Arms:
    plain = {"loss_type": "grpo", "importance_sampling_level": "token", "epsilon": 0.2, "epsilon_high": None}
    arms = []
    for name, ov in (("grpo", plain), ("dapo", {**plain, **DAPO}), ("gspo", {**plain, **GSPO})):
        arms += [(name, {**ov, "algo": "grpo"}), (f"igrpo({name})", {**ov, "algo": "igrpo"})]
    return arms


def reward_arms(base: Config) -> Arms:
    return [("rule", {"reward_funcs": ["accuracy", "format"], "reward_weights": [1.0, 1.0]}),
            ("judge", {"reward_funcs": ["judge"], "reward_weights": [1.0]})]


FAMILIES: dict[str, Callable[[Config], Arms]] = {
    "split": split_arms, "budget": budget_arms, "beta": beta_arms, "base_algo": base_algo_arms,
    "reward": reward_arms,
}


def plan(base: Config, families: list[str]) -> tuple[list[tuple[str, str, Config]], list[str]]:
    """(family, arm, config) for every runnable arm, and a note for every arm that cannot run."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown ablation families {unknown}; known: {sorted(FAMILIES)}")
    arms, notes = [], []
    for fam in families:
        for arm, ov in FAMILIES[fam](base):
            if "judge" in ov.get("reward_funcs", []) and not base.judge_model:
                notes.append(f"skipped {fam}/{arm}: set judge_model (a local model path or an "
                             "http(s)://host/v1 endpoint) to run the generative-judge arm")
                continue
            arms.append((fam, arm, base.replace(**ov)))
    return arms, notes


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", s).strip("-")


def _varying(cfgs: list[Config]) -> list[str]:
    dicts = [c.to_dict() for c in cfgs]
    keys = [k for k in dicts[0] if k != "run_name"]
    return [k for k in keys if len({json.dumps(d[k]) for d in dicts}) > 1]


def _final(m: pl.DataFrame, col: str, last_n: int = 3) -> float | None:
    if col not in m.columns or m.height == 0:
        return None
    return m.tail(last_n)[col].mean()


def new_tag(tag: str | None = None) -> str:
    return tag or time.strftime("%Y%m%d-%H%M%S")


def ablation_dir(base: Config, tag: str) -> Path:
    """Where an ablation's results.parquet and summary.parquet go (beside its runs)."""
    return Path(base.output_dir) / f"ablation-{tag}"


def run_cell(cfg: Config, progress: bool = True, eval_workers: int = 2) -> dict:
    """Train (or resume) and evaluate one grid cell; its run directory and headline figures."""
    from igrpo_core.experiments import train_and_evaluate
    run_dir, ev, _ = train_and_evaluate(cfg, progress=progress, eval_workers=eval_workers)
    m = records.read_metrics(run_dir)
    # train time from the run's records (the sum of its step times), not this attempt's wall clock:
    # a run resumed after a kill reports its whole training, not what was left of it
    return {"run_dir": str(run_dir), "eval_avg@k": ev["metrics"]["macro_avg"]["avg@k"],
            "final_reward": _final(m, "reward_mean"), "final_accuracy": _final(m, "accuracy_mean"),
            "final_entropy": _final(m, "entropy"), "refine_gain": _final(m, "refine_gain"),
            "reward_failures": m["reward_failures"].sum() if "reward_failures" in m.columns else None,
            "train_time_s": m["step_time_s"].sum() if "step_time_s" in m.columns else None}


def run_ablation(base: Config, families: list[str], seeds: list[int] = (0,), tag: str | None = None,
                 progress: bool = True) -> pl.DataFrame:
    """Train and evaluate every arm x seed; one row per arm x seed.

    Rows are also written to <output_dir>/ablation-<tag>/results.parquet after every arm, atomically.
    Re-running with the same tag resumes: an arm with a row there (whose run's config.json is this
    arm's config) is never rerun, a half-finished one resumes its run and its evaluation, so a killed
    and relaunched ablation ends with the table of an uninterrupted one. The seed summary goes to
    summary.parquet beside it.
    """
    tag = new_tag(tag)
    arms, notes = plan(base, families)
    for n in notes:
        print(n)
    out_dir = ablation_dir(base, tag)
    with records.writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    previous = _finished_rows(out_dir)
    varying = {fam: _varying([c for f, _, c in arms if f == fam]) for fam in {f for f, _, _ in arms}}
    done: dict[str, dict] = {}   # resolved config (without run_name) -> metrics of its run
    rows = []
    for seed in seeds:
        for fam, arm, cfg in arms:
            cfg = cfg.replace(seed=seed, run_name=f"{tag}-{_slug(fam)}-{_slug(arm)}-s{seed}")
            key = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "run_name"}, sort_keys=True)
            if key not in done:
                done[key] = _reuse(previous.get((fam, arm, seed)), cfg) or run_cell(cfg, progress)
            row = {"family": fam, "arm": arm, "seed": seed, "algo": cfg.algo,
                   "rollouts": f"{cfg.num_drafts}+{cfg.num_refinements}" if cfg.algo == "igrpo"
                   else str(cfg.num_generations)}
            for k in varying.get(fam, []):
                v = None if k == "num_drafts" and cfg.algo != "igrpo" else getattr(cfg, k)  # GRPO has no drafts
                row[k] = "+".join(map(str, v)) if isinstance(v, list) else v
            rows.append({**row, **done[key]})
            _write(out_dir / "results.parquet", pl.DataFrame(rows, infer_schema_length=None))
    if not rows:
        raise ValueError("no runnable arms: " + "; ".join(notes))
    df = pl.DataFrame(rows, infer_schema_length=None)
    _write(out_dir / "summary.parquet", summarize(df))
    return df


RUN_METRICS = ("run_dir", "eval_avg@k", "final_reward", "final_accuracy", "final_entropy", "refine_gain",
               "reward_failures", "train_time_s")


def _finished_rows(out_dir: Path) -> dict[tuple, dict]:
    """(family, arm, seed) -> row of an earlier attempt's results.parquet (none if there is none)."""
    path = out_dir / "results.parquet"
    if not path.exists():
        return {}
    return {(r["family"], r["arm"], r["seed"]): r for r in records.read_parquet(path).to_dicts()}


def _reuse(row: dict | None, cfg: Config) -> dict | None:
    """An earlier attempt's RUN_METRICS for this arm, if its run was trained with this very config."""
    if row is None or not row.get("run_dir"):
        return None
    cfg_path = Path(row["run_dir"]) / "config.json"
    if not cfg_path.exists():
        return None
    old = {k: v for k, v in records.read_json(cfg_path).items() if k != "run_name"}
    new = json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k != "run_name"}, default=str))
    if old != new:
        return None
    return {k: row.get(k) for k in RUN_METRICS}


def _write(path: Path, df: pl.DataFrame) -> None:
    records.atomic_write(path, lambda p: df.write_parquet(p), window="ablation_results")


METRICS = ("eval_avg@k", "final_reward", "final_accuracy", "final_entropy", "refine_gain", "train_time_s")


def summarize(df: pl.DataFrame, metrics=METRICS) -> pl.DataFrame:
    """Per family and arm (in first-seen order): seeds, and mean / std / min / max of each metric."""
    metrics = [m for m in metrics if m in df.columns]
    aggs = [pl.col("seed").n_unique().alias("seeds")]
    for m in metrics:
        col = pl.col(m).cast(pl.Float64)
        aggs += [col.mean().alias(f"{m}_mean"), col.std().alias(f"{m}_std"),
                 col.min().alias(f"{m}_min"), col.max().alias(f"{m}_max")]
    return df.group_by("family", "arm", maintain_order=True).agg(aggs)
