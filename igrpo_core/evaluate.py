"""Single-shot evaluation: k samples per problem, avg@k (mean pass@1), unbiased pass@k, maj@k.

The paper's protocol is the default (temperature 0.6, top-p 0.95, k = 64 for AIME and 8 otherwise);
greedy is an option. Work proceeds in fixed chunks of problems, each written as its own parquet
part with a seed derived from (seed, set, chunk), so an interrupted evaluation resumes where it
stopped and ends with exactly the metrics of an uninterrupted one.

`refine_rounds=1` adds one draft -> refine round at inference (NOT the paper's protocol, which is
single-shot): it measures what the refinement skill buys at test time. Its rows are labelled.

Deliberately left out: tool use, multi-turn chat, and any execution of model output.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import polars as pl

from igrpo_core import answers, records
from igrpo_core.engine import SamplingParams
from igrpo_core.prompts import build_refine_prompt, render_prompt

SAMPLE_SCHEMA = {
    "dataset": pl.Utf8, "problem_id": pl.Utf8, "sample_index": pl.Int64, "protocol": pl.Utf8,
    "completion": pl.Utf8, "gold": pl.Utf8, "extracted": pl.Utf8, "correct": pl.Boolean, "status": pl.Utf8,
    "completion_tokens": pl.Int64, "finish_reason": pl.Utf8,
}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed stably."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority_correct(extracted: list[str | None], correct: list[bool]) -> bool:
    """maj@k: is the most frequent extracted answer correct? (ties: first seen; no answers: wrong)."""
    votes = Counter(e for e in extracted if e is not None)
    if not votes:
        return False
    winner = votes.most_common(1)[0][0]
    return correct[extracted.index(winner)]


def summarize(samples: pl.DataFrame, ks: list[int] | None = None) -> dict:
    """Per-dataset avg@k, pass@k, maj@k, and the macro average across datasets."""
    out = {}
    for (ds,), df in samples.group_by(["dataset"], maintain_order=True):
        per = df.group_by("problem_id", maintain_order=True).agg(
            pl.col("correct"), pl.col("extracted"), pl.len().alias("n"))
        n = int(per["n"].min())
        kk = sorted({k for k in (ks or [1, n]) if k <= n})
        row = {"problems": per.height, "samples_per_problem": n,
               "avg@k": float(df["correct"].cast(pl.Float64).mean()),
               "maj@k": sum(majority_correct(e, c) for e, c in zip(per["extracted"], per["correct"])) / per.height,
               "no_answer": float((df["status"] == "no_answer").mean()),
               "check_failures": int(df["status"].is_in(["timeout", "error"]).sum())}
        for k in kk:
            row[f"pass@{k}"] = sum(pass_at_k(len(c), sum(c), k) for c in per["correct"]) / per.height
        out[ds] = row
    if out:
        out["macro_avg"] = {"avg@k": sum(r["avg@k"] for r in out.values()) / len(out)}
    return out


def _chunk_rows(engine, tokenizer, ds_name, chunk, *, k, params, system_prompt, refine_rounds,
                draft_template, max_prompt_length, timeout_s, workers):
    prompts = [render_prompt(tokenizer, ex["problem"], system_prompt) for ex in chunk]
    comps = engine.generate(prompts, SamplingParams(**{**params.__dict__, "n": k}))
    protocol = "single_shot"
    if refine_rounds:
        protocol = "draft_refine(test-time, not paper protocol)"
        refine = [build_refine_prompt(tokenizer, chunk[c.prompt_index]["problem"], c.text, template=draft_template,
                                      system_prompt=system_prompt, max_prompt_length=max_prompt_length).ids
                  for c in comps]
        comps2 = engine.generate(refine, SamplingParams(**{**params.__dict__, "n": 1, "seed": params.seed + 1}))
        for c, c2 in zip(comps, comps2):
            c.ids, c.text, c.finish_reason = c2.ids, c2.text, c2.finish_reason
    golds = [str(chunk[c.prompt_index]["answer"]) for c in comps]
    checks = answers.check_many([(c.text, g) for c, g in zip(comps, golds)], timeout_s=timeout_s, workers=workers)
    return [dict(dataset=ds_name, problem_id=str(chunk[c.prompt_index]["id"]), sample_index=i % k,
                 protocol=protocol, completion=c.text, gold=g, extracted=r.extracted, correct=r.correct,
                 status=r.status, completion_tokens=len(c.ids), finish_reason=c.finish_reason)
            for i, (c, g, r) in enumerate(zip(comps, golds, checks))]


def evaluate(engine, tokenizer, datasets: dict[str, list[dict]], out_dir: str | Path, *, num_samples: int = 1,
             greedy: bool = False, temperature: float = 0.6, top_p: float = 0.95, max_new_tokens: int = 64,
             system_prompt: str | None = None, seed: int = 0, chunk_size: int = 64, refine_rounds: int = 0,
             draft_template: str = "{question}\n{draft}", max_prompt_length: int = 1024,
             timeout_s: float = 5.0, workers: int = 0, progress: bool = True) -> dict:
    """Evaluate `engine` on named example lists; writes samples parquet parts and summary.json."""
    from tqdm.auto import tqdm
    out_dir = Path(out_dir)
    (out_dir / "parts").mkdir(parents=True, exist_ok=True)
    k = 1 if greedy else num_samples
    total = sum(len(v) for v in datasets.values())
    bar = tqdm(total=total, desc="eval", unit="problem", disable=not progress)
    t0, done_now = time.perf_counter(), 0
    for ds_name, examples in datasets.items():
        for ci, start in enumerate(range(0, len(examples), chunk_size)):
            chunk = examples[start: start + chunk_size]
            part = out_dir / "parts" / f"{ds_name.replace('/', '_').replace(':', '_')}_{ci:05d}.parquet"
            if not part.exists():  # resume: finished chunks are skipped
                params = SamplingParams(temperature=temperature, top_p=top_p, top_k=0, greedy=greedy,
                                        max_new_tokens=max_new_tokens, seed=(seed * 7919 + ci * 104_729
                                        + sum(map(ord, ds_name))) % 2**31)
                rows = _chunk_rows(engine, tokenizer, ds_name, chunk, k=k, params=params,
                                   system_prompt=system_prompt, refine_rounds=refine_rounds,
                                   draft_template=draft_template, max_prompt_length=max_prompt_length,
                                   timeout_s=timeout_s, workers=workers)
                records._atomic_write_bytes(part, lambda p: pl.DataFrame(rows, schema=SAMPLE_SCHEMA).write_parquet(p))
                done_now += len(chunk)
            bar.update(len(chunk))
    bar.close()
    samples = pl.concat([pl.read_parquet(p) for p in sorted((out_dir / "parts").glob("*.parquet"))])
    samples = samples.filter(pl.col("dataset").is_in(list(datasets)))
    samples.write_parquet(out_dir / "samples.parquet")
    elapsed = time.perf_counter() - t0
    summary = {"metrics": summarize(samples), "protocol": {
        "num_samples": k, "greedy": greedy, "temperature": temperature, "top_p": top_p,
        "max_new_tokens": max_new_tokens, "seed": seed, "refine_rounds": refine_rounds},
        "problems_per_s": done_now / elapsed if done_now else None, "elapsed_s": elapsed}
    records.write_json(out_dir / "summary.json", summary)
    return summary


def format_table(results: dict[str, dict], metric: str = "avg@k") -> str:
    """Rows: model/run; columns: datasets (+ macro average)."""
    cols = sorted({ds for r in results.values() for ds in r["metrics"]} - {"macro_avg"}) + ["macro_avg"]
    lines = [" | ".join([f"{'model':<28}"] + [f"{c:>12}" for c in cols])]
    for name, r in results.items():
        vals = [r["metrics"].get(c, {}).get(metric) for c in cols]
        lines.append(" | ".join([f"{name:<28}"] + [f"{v:12.3f}" if v is not None else f"{'-':>12}" for v in vals]))
    return "\n".join(lines)


def load_summary(path: str | Path) -> dict:
    return json.loads((Path(path) / "summary.json").read_text())



def evaluate_model(cfg, model_path: str, out_dir: str | Path, *, datasets: dict[str, list[dict]] | None = None,
                   refine_rounds: int = 0, progress: bool = True) -> dict:
    """Load `model_path` and evaluate it with the config's eval_* settings on cfg.eval_dataset."""
    from igrpo_core.engine import TransformersEngine
    from igrpo_core.models import load_examples, load_model, load_tokenizer, resolve_device, setup_threads, weight_dtype
    setup_threads(cfg.torch_threads)
    if datasets is None:
        datasets = {spec: load_examples(spec, tiny_num_problems=cfg.tiny_num_problems, limit=cfg.eval_limit)
                    for spec in cfg.eval_dataset.split(",")}
    gguf = cfg.gguf_file if model_path == cfg.model_name_or_path else None
    tok = load_tokenizer(model_path, gguf)
    device = resolve_device(cfg.device)
    if cfg.rollout_engine == "vllm":
        from igrpo_core.engine_vllm import VLLMEngine
        engine = VLLMEngine(cfg.replace(model_name_or_path=model_path), tok)
    else:
        model = load_model(model_path, tok, device=device, dtype=weight_dtype(cfg.dtype, device), gguf_file=gguf)
        engine = TransformersEngine(model, tok, batch_size=cfg.generation_batch_size)
    return evaluate(engine, tok, datasets, out_dir, num_samples=cfg.eval_num_samples, greedy=cfg.eval_greedy,
                    temperature=cfg.eval_temperature, top_p=cfg.eval_top_p,
                    max_new_tokens=cfg.max_completion_length, system_prompt=cfg.system_prompt, seed=cfg.seed,
                    refine_rounds=refine_rounds, draft_template=cfg.draft_template,
                    max_prompt_length=cfg.max_prompt_length, timeout_s=cfg.reward_timeout_s, progress=progress)
