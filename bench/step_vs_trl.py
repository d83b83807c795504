"""GRPO step time and peak RSS: this project vs TRL's GRPOTrainer on identical work (issue 10).

Random-initialised Llama (hidden 128, 2 layers, tied embeddings) with SmolLM2's 49,152-token
tokenizer; 16 prompts x 8 completions x LEN new tokens forced full length; beta 0, lr 1e-5, T 1.0;
transformers generation on both sides. Each measurement is a fresh subprocess (its peak RSS is that
side's alone), sides alternate round by round; medians over rounds x steps. TRL runs from
bench/.venv-trl (bench/setup_trl.sh). Also prints the step's share of this machine's matmul FLOP/s.

  python bench/step_vs_trl.py [--len 64] [--rounds 3] [--steps 2] [--threads 2] [--variants after,fast,before]
                              [--micro 128] [--no-warmup] [--checkpointing on|off]
--micro: sequences per forward/backward on both sides (one optimizer step over 128 / micro micro-batches);
at 512+ tokens TRL's full (micro, T, 49152) float32 logits need it to fit in memory at all.
--no-warmup: measure from the first step (at 2,048 tokens a TRL step takes tens of minutes).
--checkpointing: gradient checkpointing on both sides (default on: TRL GRPOConfig's default; the runs
before 2026-12-02 04:00 left TRL at it and ours at this project's default, off).
"""
import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="after,fast")
    ap.add_argument("--micro", type=int, default=128)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--checkpointing", default="on", choices=["on", "off"])
    a = ap.parse_args()
    venv = subprocess.run(["bash", str(common.HERE / "setup_trl.sh")], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
    model, prompts = str(common.build_work_model()), str(common.prompts_file())
    base = [model, prompts, str(a.len), str(a.steps), str(a.threads), str(a.micro), str(int(not a.no_warmup)),
            str(int(a.checkpointing == "on"))]
    sides = {"trl": lambda: common.run_side(f"{venv}/bin/python", ["trl", *base])}
    for v in a.variants.split(","):
        sides[f"ours-{v}"] = (lambda v=v: common.run_side(common.PY, ["ours", *base, "grpo", v]))
    flops = common.matmul_flops()
    res = common.alternate(sides, a.rounds)
    flops = max(flops, common.matmul_flops())
    med = {k: {m: common.median([x for r in rs for x in r[m]]) for m in ("step_s", "gen_s")} for k, rs in res.items()}
    for k, rs in res.items():
        med[k]["rss"] = common.median([r["peak_rss_mb"] for r in rs])
        n, toks = rs[0]["n_params"], common.median([x for r in rs for x in r["generated_tokens"]])
        med[k]["share"] = common.step_flops(n, toks, toks) / med[k]["step_s"] / flops
    t = med["trl"]
    rows = [[k, f"{m['step_s']:.1f}", f"{m['step_s'] / t['step_s']:.2f}x", f"{m['gen_s']:.1f}",
             f"{m['rss'] / 1024:.2f}", f"{m['rss'] / t['rss']:.2f}x", f"{100 * m['share']:.2f}%"] for k, m in med.items()]
    print(common.header(f"GRPO step vs TRL GRPOTrainer: 16x8 completions x {a.len} tokens, micro-batch {a.micro}, "
                        f"{a.threads} threads, {a.rounds} rounds x {a.steps} steps"
                        f"{' (no warm-up step)' if a.no_warmup else ''}, gradient checkpointing {a.checkpointing} "
                        "on both sides"))
    print(f"matmul limit: {flops / 1e9:.1f} GFLOP/s (step FLOPs = 6 N trained tokens + 2 N generated)")
    print(common.table(rows, ["side", "step s (median)", "vs TRL", "generation s", "peak RSS GB", "vs TRL",
                              "share of FLOP/s limit"]))


if __name__ == "__main__":
    main()
