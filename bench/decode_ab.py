"""Decode-loop A/B across checkouts or engine settings: seconds per engine.generate call (issue 10).

Each SIDE is ROOT[:copy|:share]: igrpo_core imported from ROOT (this checkout, or e.g. a `git
worktree` of an older commit), with the prompt's KV copied to each row (copy) or held once (share,
whatever the prompt length). Cases, 64 forced tokens each, on the shipped tiny model and the work
model of step_vs_trl.py: GRPO's 16 x 8 rows on the questions; iGRPO's stage 1 (16 x 4) on the same
questions; its stage 2 (16 x 4) on the questions plus a 64-token stand-in draft. Each measurement is
a fresh subprocess (the fastest of --calls timed calls after --warm untimed ones: on a shared
machine single calls vary by +-20%, and a fixed amount of work is never faster than its cost),
sides alternate round by round; medians over rounds.

  python bench/decode_ab.py SIDE [SIDE ...] [--rounds 3] [--threads 2] [--warm 1] [--calls 5] [--models tiny,49k]
  e.g.  git worktree add /tmp/old <commit>;  python bench/decode_ab.py /tmp/old .:copy .:share
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CHILD = r'''
import json, sys, time, torch
root, flag, threads, work, tiny, prompts_file, warm, calls, models = sys.argv[1:10]
warm, calls = int(warm), int(calls)
sys.path.insert(0, root)
torch.set_num_threads(int(threads))
from transformers import AutoModelForCausalLM, AutoTokenizer
from igrpo_core.engine import SamplingParams, TransformersEngine
from igrpo_core.prompts import render_prompt
out = {}
for name, path in [(m, {"tiny": tiny, "49k": work}[m]) for m in models.split(",")]:
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    rows = [json.loads(line) for line in open(prompts_file)][:16]
    q = [render_prompt(tok, r["problem"], None) for r in rows]
    g = torch.Generator().manual_seed(0)
    s2 = [p + torch.randint(10, min(len(tok), 300), (64,), generator=g).tolist() for p in q]
    eng = TransformersEngine(model, tok, batch_size=128)
    eng.eos_ids = {-1}                                     # forced full length
    eng.share_prefix_kv = flag == "share"                  # older checkouts ignore both attributes
    eng.share_prefix_min_tokens = 0
    for case, prompts, n in (("GRPO 16x8", q, 8), ("stage 1 16x4", q, 4), ("stage 2 16x4", s2, 4)):
        ts = []
        for i in range(warm + calls):                   # `warm` untimed calls first, then `calls` timed
            t = time.perf_counter()
            eng.generate(prompts, SamplingParams(n=n, max_new_tokens=64, seed=1))
            if i >= warm:
                ts.append(time.perf_counter() - t)
        out[f"{name} {case}"] = min(ts)                 # the least-disturbed call: shared machines are noisy
print(json.dumps(out))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sides", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm", type=int, default=1, help="untimed calls per case before the timed ones")
    ap.add_argument("--calls", type=int, default=5, help="timed calls per case; the fastest is kept")
    ap.add_argument("--models", default="tiny,49k")
    a = ap.parse_args()
    sys.path.insert(0, str(common.ROOT))
    from igrpo_core.config import TINY_MODEL
    work, prompts = str(common.build_work_model()), str(common.prompts_file())

    def side(spec: str):
        root, _, flag = spec.partition(":")
        args = [str(Path(root).resolve()), flag or "copy", str(a.threads), work, TINY_MODEL, prompts, str(a.warm), str(a.calls), a.models]

        def run():
            p = subprocess.run([common.PY, "-c", CHILD, *args], capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(f"side {spec} failed:\n{p.stderr[-2000:]}")
            return json.loads(p.stdout.strip().splitlines()[-1])
        return run

    res = common.alternate({s: side(s) for s in a.sides}, a.rounds)
    cases = list(res[a.sides[0]][0])
    med = {s: [statistics.median(r[c] for r in res[s]) for c in cases] for s in a.sides}
    first = med[a.sides[0]]
    rows = [[c, *(f"{med[s][i]:.3f} ({med[s][i] / first[i]:.2f}x)" for s in a.sides)] for i, c in enumerate(cases)]
    print(common.header(f"decode A/B: seconds per generate call, 64 forced tokens, {a.threads} threads, "
                        f"{a.rounds} rounds, fastest of {a.calls} calls after {a.warm} warm-up (x the first side)"))
    print(common.table(rows, ["case", *a.sides]))


if __name__ == "__main__":
    main()
