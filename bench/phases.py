"""Where one side's step goes: time and RSS after each phase (generation, update) of a few training
steps, ours only, in this process. The before/after figures of single levers in the README come
from running this on two commits.

  python bench/phases.py [--work llama|tiny] [--len 64] [--algo grpo] [--steps 2] [--micro 128] [--checkpointing]
"""
import argparse
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _side  # noqa: E402
import common  # noqa: E402


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20


def timed(obj, name: str, rows: list):
    """Wrap obj.name so each call appends (phase, seconds, RSS after, peak RSS after)."""
    fn = getattr(obj, name)

    @functools.wraps(fn)
    def wrapper(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        rows.append([name, f"{time.perf_counter() - t:.2f}", f"{rss_mb():.0f}", f"{_side.peak_rss_mb():.0f}"])
        return out
    setattr(obj, name, wrapper)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="llama", choices=["llama", "tiny"])
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--algo", default="grpo", choices=["grpo", "igrpo"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--micro", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpointing", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(common.ROOT))
    from igrpo_core import trainer as T
    from igrpo_core.config import TINY_MODEL
    rows = []
    timed(T.Trainer, "collect", rows)
    timed(T.Trainer, "update", rows)
    model = TINY_MODEL if a.work == "tiny" else str(common.build_work_model())
    res = _side.ours(model, str(common.prompts_file()), a.len, a.steps, a.threads, a.micro, 1, int(a.checkpointing),
                     a.algo, "fast")
    print(common.header(f"phases of {a.algo} on {a.work}: 16x8 x {a.len} tokens, micro-batch {a.micro}, "
                        f"1 warm-up + {a.steps} steps"))
    print(common.table(rows, ["phase", "seconds", "RSS after MB", "peak RSS MB"]))
    print("step s:", ", ".join(f"{x:.2f}" for x in res["step_s"]), f"| peak RSS {res['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
