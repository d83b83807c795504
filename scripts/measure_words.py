"""Measure a model's success on the word-problem levels: accuracy, answer extraction and tokens/s.

    PYTHONPATH=. python scripts/measure_words.py --model "$(igrpo prepare-model smollm2)" \
        --levels 1,2,3 --n 100 --modes sample,greedy --batch_size 64

Prompts are rendered exactly as the trainer renders them (prompts.render_prompt with the recipe's
system prompt); correctness is the project's accuracy reward (math-verify on the extracted answer).
tokens/s counts completion tokens kept (up to and including EOS) over generate's wall time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from igrpo_core import wordproblems  # noqa: E402
from igrpo_core.answers import extract_answer  # noqa: E402
from igrpo_core.engine import SamplingParams  # noqa: E402
from igrpo_core.models import load_transformers_engine  # noqa: E402
from igrpo_core.prompts import render_prompt  # noqa: E402
from igrpo_core.rewards import score_batch  # noqa: E402


def measure(engine, tok, rows, *, system_prompt, greedy, temperature, max_new_tokens, seed=0) -> dict:
    prompts = [render_prompt(tok, r["problem"], system_prompt) for r in rows]
    params = SamplingParams(n=1, temperature=temperature, max_new_tokens=max_new_tokens,
                            greedy=greedy, seed=seed)
    t0 = time.time()
    comps = engine.generate(prompts, params)
    secs = time.time() - t0
    scores = score_batch([c.text for c in comps], rows, ["accuracy"], [1.0])
    n_tok = sum(len(c.ids) for c in comps)
    return {"n": len(rows), "accuracy": sum(s.total for s in scores) / len(rows),
            "extracted": sum(extract_answer(c.text) is not None for c in comps) / len(rows),
            "truncated": sum(c.finish_reason == "length" for c in comps) / len(rows),
            "mean_completion_tokens": n_tok / len(rows), "seconds": round(secs, 1),
            "tokens_per_s": round(n_tok / secs, 1),
            "examples": [(r["problem"], r["answer"], c.text) for r, c in zip(rows[:3], comps[:3])]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--levels", default="1,2,3")
    p.add_argument("--n", type=int, default=100, help="held-out problems per level")
    p.add_argument("--modes", default="sample,greedy")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no_system_prompt", action="store_true", help="measure without the format instruction")
    p.add_argument("--system_prompt", help="try another instruction (default wordproblems.SYSTEM_PROMPT)")
    p.add_argument("--instruction", help="user-turn answer instruction in place of wordproblems.INSTRUCTION")
    p.add_argument("--json", help="append one JSON line per (level, mode) here")
    ns = p.parse_args(argv)
    torch.set_num_threads(ns.threads)
    engine, tok = load_transformers_engine(ns.model, device="cpu", dtype="float32", batch_size=ns.batch_size)
    system = None if ns.no_system_prompt else (ns.system_prompt or wordproblems.SYSTEM_PROMPT)
    for level in map(int, ns.levels.split(",")):
        rows = wordproblems.make_split("heldout", ns.n, level)
        if ns.instruction is not None:  # try another answer instruction in place of wordproblems.INSTRUCTION
            rows = [{**r, "problem": f"{r['question']}\n{ns.instruction}".rstrip()} for r in rows]
        for mode in ns.modes.split(","):
            res = measure(engine, tok, rows, system_prompt=system, greedy=mode == "greedy",
                          temperature=ns.temperature, max_new_tokens=ns.max_new_tokens)
            res.update(level=level, mode=mode, batch_size=ns.batch_size, threads=ns.threads,
                       system_prompt=system is not None, temperature=ns.temperature)
            print(json.dumps({k: v for k, v in res.items() if k != "examples"}), flush=True)
            for ex in res["examples"]:
                print("   ", json.dumps(ex)[:300], flush=True)
            if ns.json:
                with open(ns.json, "a") as f:
                    f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
