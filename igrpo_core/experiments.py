"""Procedures built from the engine parts: matched GRPO-vs-iGRPO comparison (the main job).

Notebooks and the CLI call these, so a comparison run from a shell and from papermill is the same
code. Deliberately left out: plotting (notebooks and the dashboard do that from the records).
"""
from __future__ import annotations

import time
from pathlib import Path

from igrpo_core import records
from igrpo_core.config import Config
from igrpo_core.evaluate import evaluate_model, format_table
from igrpo_core.trainer import train

FINAL_EVAL = "final"   # <run>/eval/final: the config's own evaluation of the run's last checkpoint


def final_model(run_dir: str | Path) -> Path:
    """Model directory of a run's newest complete checkpoint."""
    ckpts = records.checkpoint_dirs(Path(run_dir))
    if not ckpts:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint")
    return ckpts[-1] / "model"


def train_and_evaluate(cfg: Config, progress: bool = True, eval_workers: int = 2) -> tuple[Path, dict, float]:
    """Train (or resume) one run, evaluate its final checkpoint into <run_dir>/eval/final.

    eval_workers: answer-check processes (evaluate_model's `workers`); 1 checks inline, which saves
    a worker pool's start-up per chunk of problems (most of a small evaluation's time on a busy CPU)
    at the price of the hang guard. Returns (run_dir, evaluation summary, training wall time in s).
    """
    t0 = time.perf_counter()
    run_dir = train(cfg)
    train_s = time.perf_counter() - t0
    out = records.eval_dir(run_dir, FINAL_EVAL)
    ev = evaluate_model(cfg, str(final_model(run_dir)), out, progress=progress, workers=eval_workers)
    return run_dir, ev, train_s


def compare(base: Config, algos: tuple[str, ...] = ("grpo", "igrpo"), seeds: tuple[int, ...] = (0,),
            tag: str | None = None, evaluate_base: bool = True) -> dict:
    """Train each algo x seed at the same budget, evaluate all single-shot, return results + a table.

    Evaluation uses base.eval_* settings on base.eval_dataset; each run's results go to
    <run_dir>/eval/final/, the base model's to <output_dir>/<tag>-base/eval/final/.
    """
    tag = tag or time.strftime("%Y%m%d-%H%M%S")
    results, runs = {}, {}
    if evaluate_base:
        out = records.eval_dir(Path(base.output_dir) / f"{tag}-base", FINAL_EVAL)
        results["base model"] = evaluate_model(base, base.model_name_or_path, out)
    for algo in algos:
        for seed in seeds:
            cfg = base.replace(algo=algo, seed=seed, run_name=f"{tag}-{algo}-s{seed}")
            run_dir, res, train_s = train_and_evaluate(cfg)
            res["train_time_s"] = train_s
            results[f"{algo} seed {seed}"] = res
            runs[f"{algo} seed {seed}"] = str(run_dir)
    table = format_table(results)
    return {"results": results, "runs": runs, "table": table, "spread": seed_spread(results, algos)}


def seed_spread(results: dict, algos) -> dict:
    """Mean, min and max of the macro avg@k over seeds, per algorithm."""
    out = {}
    for algo in algos:
        vals = [r["metrics"]["macro_avg"]["avg@k"] for name, r in results.items() if name.startswith(f"{algo} ")]
        if vals:
            out[algo] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    return out
