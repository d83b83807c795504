"""Answer checking's share of a training step (issue 10 goal: < 5%), on tiny-world completions and on
MATH-like completions (LaTeX answers in \\boxed{}, checked by the same accuracy + format rewards).

One tiny-world GRPO step on the shipped tiny model (demo settings: 16 prompts x 8, 64 tokens) is
timed; its 128 completions are re-scored alone, alternating with the step, medians over rounds.
MATH-like: 128 synthetic solutions with fractions, roots and intervals against their gold answers.

  python bench/answer_check_share.py [--rounds 3]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MATH = [(r"\frac{3}{4}", r"\dfrac{3}{4}"), (r"2\sqrt{3}", r"2\sqrt3"), (r"(1, 5]", r"(1,5]"), ("0.5", r"\frac12"),
        (r"x^2+1", r"1+x^2"), ("42", "42"), (r"\pi/2", r"\frac{\pi}{2}"), ("-7", "7")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, str(common.ROOT))
    import torch
    from igrpo_core import trainer as T
    from igrpo_core.config import Config
    from igrpo_core.rewards import score_batch
    torch.set_num_threads(2)
    cfg = Config(algo="grpo", prompts_per_step=16, num_generations=8, max_completion_length=64, save_steps=10 ** 6,
                 max_steps=100, output_dir=tempfile.mkdtemp(), run_name="share", torch_threads=2)
    tr = T.Trainer(cfg)
    tr.train_step(1)
    ro = tr.collect(2, 0)
    texts = [r["completion"] for r in ro.rows]
    exs = [next(e for e in tr.examples if str(e["id"]) == r["prompt_id"]) for r in ro.rows]
    math_texts = [f"We simplify step by step, so the answer is $\\boxed{{{MATH[i % 8][0]}}}$." for i in range(128)]
    math_exs = [{"id": i, "problem": "p", "answer": MATH[i % 8][1]} for i in range(128)]
    step = iter(range(2, 10 ** 6))

    def timed(fn):
        def run():
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        return run

    res = common.alternate({"step": timed(lambda: tr.train_step(next(step))),
                            "tiny check": timed(lambda: score_batch(texts, exs, tr.reward_fns)),
                            "math check": timed(lambda: score_batch(math_texts, math_exs, tr.reward_fns))}, a.rounds)
    s = common.median(res["step"])
    print(common.header(f"Answer checking share of a tiny-world GRPO step (16x8, 64 tokens), {a.rounds} rounds"))
    print(common.table([["tiny world", f"{common.median(res['tiny check']) * 1000:.1f}", f"{s:.2f}",
                         f"{100 * common.median(res['tiny check']) / s:.2f}%"],
                        ["MATH-like", f"{common.median(res['math check']) * 1000:.1f}", f"{s:.2f}",
                         f"{100 * common.median(res['math check']) / s:.2f}%"]],
                       ["completions", "check ms / 128", "step s", "share"]))


if __name__ == "__main__":
    main()
