"""iGRPO (4 drafts + 4 refinements) vs GRPO (8) step time and peak RSS at the matched budget (issue 10
goal: <= 1.05x time, <= 1.02x memory), on the tiny world demo's settings (shipped tiny model) and on
the work of step_vs_trl.py. Fresh subprocess per measurement, sides alternating, medians.

  python bench/igrpo_vs_grpo.py [--work tiny,llama] [--len 64] [--rounds 3] [--steps 2] [--variant fast]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="tiny,llama")
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="fast")
    a = ap.parse_args()
    sys.path.insert(0, str(common.ROOT))
    from igrpo_core.config import TINY_MODEL
    rows = []
    for work in a.work.split(","):
        model = TINY_MODEL if work == "tiny" else str(common.build_work_model())
        base = [model, str(common.prompts_file()), str(a.len), str(a.steps), str(a.threads), "128", "1", "0"]
        res = common.alternate({algo: (lambda algo=algo: common.run_side(common.PY, ["ours", *base, algo, a.variant]))
                                for algo in ("grpo", "igrpo")}, a.rounds)
        med = {k: (common.median([x for r in rs for x in r["step_s"]]), common.median([r["peak_rss_mb"] for r in rs]))
               for k, rs in res.items()}
        (tg, mg), (ti, mi) = med["grpo"], med["igrpo"]
        rows.append([work, f"{tg:.1f}", f"{ti:.1f}", f"{ti / tg:.2f}x", f"{mg / 1024:.2f}", f"{mi / 1024:.2f}",
                     f"{mi / mg:.2f}x"])
    print(common.header(f"iGRPO 4+4 vs GRPO 8: 16 prompts, {a.len} tokens, {a.rounds} rounds x {a.steps} steps, "
                        f"variant {a.variant}"))
    print(common.table(rows, ["work", "GRPO s", "iGRPO s", "iGRPO/GRPO", "GRPO RSS GB", "iGRPO RSS GB", "ratio"]))


if __name__ == "__main__":
    main()
