"""The paper's benchmark protocol applied to many models at once, and its result tables.

A "model" is a path, a hub id, a run directory (its newest checkpoint) or one checkpoint of a run;
each is evaluated on a list of sets under a named protocol (`PROTOCOLS`: the paper's k = 64 on
AIME and 8 elsewhere at T 0.6 / top-p 0.95, greedy, or the config's own eval_* settings), and the
results come back as the tables the benchmark notebook prints.

Deliberately left out: the evaluation loop itself (evaluate.py) and plotting (the notebook's).
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from igrpo_core import records
from igrpo_core.data import load_dataset
from igrpo_core.evaluate import evaluate_model, settings_digest
from igrpo_core.experiments import final_model

# protocol -> Config eval_* settings; eval_num_samples=0 is evaluate's paper rule (k=64 AIME, 8 else)
PROTOCOLS = {
    "paper": dict(eval_num_samples=0, eval_temperature=0.6, eval_top_p=0.95, eval_greedy=False),
    "greedy": dict(eval_num_samples=1, eval_greedy=True),
    "config": {},   # the config's own eval_* values
}


def resolve_models(models: list[str], output_dir: str | Path) -> dict[str, tuple[str, Path]]:
    """label -> (model path or hub id, directory for its evaluation outputs).

    A run directory stands for its newest checkpoint and keeps its results in <run>/eval/, as does
    one checkpoint (<run>/checkpoints/step_N/model, labelled run@step_N); a model directory or hub
    id keeps them in <output_dir>/eval-<name>/.
    """
    out: dict[str, tuple[str, Path]] = {}
    for m in models:
        p = records.resolve_path(m)
        if p.is_dir() and records.is_run_dir(p):
            label, model, root = p.name, str(final_model(p)), p / "eval"
        elif p.is_dir() and p.parent.parent.name == "checkpoints" and records.is_run_dir(p.parents[2]):
            label, model, root = f"{p.parents[2].name}@{p.parent.name}", str(p), p.parents[2] / "eval"
        else:
            model = str(p) if p.exists() else m   # else a hub id (load_model says if it is missing)
            label = p.name if p.exists() else m
            root = Path(output_dir) / f"eval-{label.replace('/', '_')}"
        base, i = label, 2
        while label in out:
            label, i = f"{base} ({i})", i + 1
        out[label] = (model, root)
    return out


def evaluate_benchmarks(cfg, models: list[str], sets: list[str], protocol: str = "paper",
                        progress: bool = True) -> dict[str, dict]:
    """Evaluate each model (path, hub id or run directory) on `sets`; label -> evaluate's summary.

    Results go to <eval root>/<protocol>-<hash of every setting that changes the samples>/, so
    re-running resumes and changed settings never meet stale samples.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    c = cfg.replace(**PROTOCOLS[protocol], eval_dataset=",".join(sets))
    data = {s: load_dataset(s, tiny_num_problems=c.tiny_num_problems, limit=c.eval_limit) for s in sets}
    results = {}
    for label, (model, root) in resolve_models(models, cfg.output_dir).items():
        out = root / f"benchmark-{protocol}-{settings_digest(c, model)}"
        results[label] = {**evaluate_model(c, model, out, datasets=data, progress=progress), "eval_dir": str(out)}
    return results


def benchmark_table(results: dict[str, dict], metric: str = "avg@k") -> pl.DataFrame:
    """Wide table: one row per model, one column per set (in order) plus the macro average."""
    rows = []
    for label, r in results.items():
        row = {"model": label}
        for ds, m in r["metrics"].items():
            row[ds] = m.get(metric)
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def benchmark_details(results: dict[str, dict]) -> pl.DataFrame:
    """Long table: model, set, k, problems, avg@k, pass@1, pass@k, maj@k, no_answer."""
    rows = []
    for label, r in results.items():
        for ds, m in r["metrics"].items():
            if ds == "macro_avg":
                continue
            k = r["protocol"]["num_samples"].get(ds) if isinstance(r["protocol"]["num_samples"], dict) else None
            rows.append({"model": label, "set": ds, "k": k, "problems": m.get("problems"), "avg@k": m.get("avg@k"),
                         "pass@1": m.get("pass@1"), "pass@k": m.get(f"pass@{k}"), "maj@k": m.get("maj@k"),
                         "no_answer": m.get("no_answer"), "skipped_too_long": m.get("skipped_too_long")})
    return pl.DataFrame(rows, infer_schema_length=None)
