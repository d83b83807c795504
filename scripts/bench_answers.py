"""Benchmark the answer checker on MATH-500 gold answers, each checked against itself.

Every gold answer `g` is checked as the completion `\\boxed{g}` against gold `g`: all should be
correct, so anything else is a gold that math-verify cannot round-trip. Prints the count, the number
correct, counts by status, the slowest single check, and checks/s of check_many's worker pool
beside the inline loop (pool time includes forking its workers; the forkserver is started
by a one-pair warm-up call, timed separately).

    python scripts/bench_answers.py [--workers 2] [--timeout-s 5] [--limit N]
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere

from igrpo_core.answers import check_answer  # noqa: E402
from igrpo_core.checkpool import check_many  # noqa: E402

DATA_PATHS = [ROOT / "data/benchmarks/math500/test.jsonl", Path("/work/shared/data/math500/test.jsonl")]


def load_golds(limit: int | None) -> list[str]:
    path = next(p for p in DATA_PATHS if p.exists())
    with path.open() as f:
        golds = [str(json.loads(line)["answer"]) for line in f if line.strip()]
    print(f"data: {path} ({len(golds)} answers)")
    return golds[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout-s", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    golds = load_golds(args.limit)
    pairs = [("\\boxed{" + g + "}", g) for g in golds]

    t0 = time.perf_counter()  # first call in a process also starts the forkserver (imports sympy once)
    check_many(pairs[:1], timeout_s=args.timeout_s, workers=args.workers)
    first_call_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pooled = check_many(pairs, timeout_s=args.timeout_s, workers=args.workers)
    pool_s = time.perf_counter() - t0

    inline, per_check = [], []
    t0 = time.perf_counter()
    for completion, gold in pairs:
        t1 = time.perf_counter()
        inline.append(check_answer(completion, gold, timeout_s=args.timeout_s))
        per_check.append(time.perf_counter() - t1)
    inline_s = time.perf_counter() - t0

    statuses = collections.Counter(r.status for r in pooled)
    slowest = max(range(len(pairs)), key=per_check.__getitem__)
    n = len(pairs)
    print(f"count: {n}")
    print(f"correct: {sum(r.correct for r in pooled)} (pool)  {sum(r.correct for r in inline)} (inline)")
    print("by status: " + ", ".join(f"{k}={v}" for k, v in sorted(statuses.items())))
    print(f"slowest single check: {per_check[slowest]:.3f}s  item {slowest}: {golds[slowest]!r}")
    print(
        f"checks/s: pool(workers={args.workers}) {n / pool_s:.1f} ({pool_s:.2f}s)  |  "
        f"inline {n / inline_s:.1f} ({inline_s:.2f}s)  |  pool/inline {inline_s / pool_s:.2f}x"
    )
    print(f"one-pair check_many, first in this process (forkserver start + worker start): {first_call_s:.2f}s")
    disagree = [i for i in range(n) if pooled[i] != inline[i]]
    print(f"pool vs inline disagreements: {len(disagree)}")
    for i, r in enumerate(pooled):
        if not r.correct:
            print(f"  not correct [{i}] {golds[i]!r}: {r.status} {r.detail}")


if __name__ == "__main__":
    main()
