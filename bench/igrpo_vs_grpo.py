"""iGRPO (4 drafts + 4 refinements) vs GRPO (8) step time and peak RSS at the matched budget (issue 10
goal: <= 1.05x time, <= 1.02x memory). Works: `tiny` (the shipped tiny model on the bench prompts,
LEN forced tokens), `llama` (the work of step_vs_trl.py), `demo` (the main job itself: `Config()`'s
defaults, the tiny world, completions ending at EOS; also the sequential decode steps per training
step, and how many a scheduler that started each question's refinements as soon as its own drafts
ended would need). Fresh subprocess per measurement, sides alternating, medians.

  python bench/igrpo_vs_grpo.py [--work tiny,llama,demo] [--len 64] [--rounds 3] [--steps 2] [--variant fast]
                                [--micro-tokens auto]
--micro-tokens: the demo work's Config.micro_batch_tokens on both sides (auto: the main job's default; 0: off).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="tiny,demo,llama")
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="fast")
    ap.add_argument("--micro-tokens", default="auto")
    a = ap.parse_args()
    sys.path.insert(0, str(common.ROOT))
    from igrpo_core.config import TINY_MODEL
    rows, notes = [], []
    for work in a.work.split(","):
        if work == "demo":
            args = {algo: ["demo", str(a.steps), str(a.threads), algo, str(a.micro_tokens)] for algo in ("grpo", "igrpo")}
        else:
            model = TINY_MODEL if work == "tiny" else str(common.build_work_model())
            base = [model, str(common.prompts_file()), str(a.len), str(a.steps), str(a.threads), "128", "1", "0"]
            args = {algo: ["ours", *base, algo, a.variant] for algo in ("grpo", "igrpo")}
        res = common.alternate({algo: (lambda algo=algo: common.run_side(common.PY, args[algo]))
                                for algo in ("grpo", "igrpo")}, a.rounds)
        med = {k: (common.median([x for r in rs for x in r["step_s"]]), common.median([r["peak_rss_mb"] for r in rs]))
               for k, rs in res.items()}
        gen = {k: common.median([x for r in rs for x in r["gen_s"]]) for k, rs in res.items()}
        (tg, mg), (ti, mi) = med["grpo"], med["igrpo"]
        rows.append([work, f"{tg:.2f} ({gen['grpo']:.2f})", f"{ti:.2f} ({gen['igrpo']:.2f})", f"{ti / tg:.2f}x",
                     f"{mg / 1024:.2f}", f"{mi / 1024:.2f}", f"{mi / mg:.2f}x"])
        if work == "demo":
            seq = {k: common.median([x for r in rs for x in r["decode_steps"]]) for k, rs in res.items()}
            lap = [x for r in res["igrpo"] for x in r["overlapped_steps"] if x is not None]
            notes.append(f"demo: sequential decode steps per training step, median: GRPO {seq['grpo']:g}, "
                         f"iGRPO {seq['igrpo']:g} (drafts then refinements); with each question's refinements "
                         f"started as soon as its own drafts end: {f'{common.median(lap):g}' if lap else 'n/a'} "
                         f"({len(lap)} of {sum(len(r['overlapped_steps']) for r in res['igrpo'])} steps had every "
                         "question in both stages)")
    print(common.header(f"iGRPO 4+4 vs GRPO 8: 16 prompts, {a.len} forced tokens (demo: up to 64, to EOS), "
                        f"{a.rounds} rounds x {a.steps} steps, demo micro_batch_tokens {a.micro_tokens}, "
                        f"variant {a.variant}"))
    print(common.table(rows, ["work", "GRPO step s (gen)", "iGRPO step s (gen)", "iGRPO/GRPO", "GRPO RSS GB",
                              "iGRPO RSS GB", "ratio"]))
    print("\n".join(notes))


if __name__ == "__main__":
    main()
