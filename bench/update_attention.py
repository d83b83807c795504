"""The update's attention, padded vs unpadded (attention.unpadded, issue 10): one micro-batch's forward +
backward through `sequence_logps` (chunked log-probs and entropy), seconds and peak RSS above the loaded
model, each measurement in a fresh process, the two sides alternating round by round.

Work: the random Llama of step_vs_trl.py (hidden 128, 2 layers, 49,152-token vocabulary), B rows of
~30-token left-padded prompts and LEN-token completions, gradient checkpointing on or off.
"padded": sdpa with the (B, 1, L, L) padding mask; "unpadded": causal sdpa per row span.

  python bench/update_attention.py [--len 1024,2048] [--rows 8] [--rounds 3] [--threads 2] [--checkpointing on|off|both]
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
import contextlib, json, sys, threading, time, torch
root, model_dir, rows, length, ckpt, unpadded, threads = sys.argv[1:8]
sys.path.insert(0, root)
torch.set_num_threads(int(threads))
from transformers import AutoModelForCausalLM
from igrpo_core import attention
from igrpo_core.logprobs import sequence_logps
model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").train()
if ckpt == "1":
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
attention.UNPADDED_MIN_TOKENS = 0
B, T, g = int(rows), int(length), torch.Generator().manual_seed(0)
prompts = [torch.randint(10, 1000, (30 - i % 4,), generator=g).tolist() for i in range(B)]
comps = [torch.randint(10, 1000, (T,), generator=g).tolist() for _ in range(B)]
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20
base, peak, stop = rss(), [0.0], []
def sample():
    while not stop:
        peak[0] = max(peak[0], rss())
        time.sleep(0.01)
th = threading.Thread(target=sample)
th.start()
t = time.perf_counter()
with attention.unpadded(model) if unpadded == "1" else contextlib.nullcontext():
    logp, mask, ent = sequence_logps(model, prompts, comps, pad_id=0, device=torch.device("cpu"), amp_dtype=None,
                                     with_entropy=True, chunked=True)
    ((logp * mask).sum() / mask.sum() + (ent * mask).mean()).backward()
seconds = time.perf_counter() - t
stop.append(1)
th.join()
print(json.dumps({"s": seconds, "peak_mb": peak[0] - base}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--len", default="1024,2048")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpointing", default="on", choices=["on", "off", "both"])
    a = ap.parse_args()
    model = str(common.build_work_model())
    ckpts = {"on": ["1"], "off": ["0"], "both": ["1", "0"]}[a.checkpointing]
    cases = [(n, c) for n in a.len.split(",") for c in ckpts]

    def side(unpadded: str):
        def run():
            out = {}
            for n, c in cases:
                p = subprocess.run([common.PY, "-c", CHILD, str(common.ROOT), model, str(a.rows), n, c, unpadded,
                                    str(a.threads)], capture_output=True, text=True)
                if p.returncode:
                    raise SystemExit(f"unpadded={unpadded} len={n} failed:\n{p.stderr[-2000:]}")
                out[f"{n} {c}"] = json.loads(p.stdout.strip().splitlines()[-1])
            return out
        return run

    res = common.alternate({"padded": side("0"), "unpadded": side("1")}, a.rounds)
    rows = []
    for n, c in cases:
        k = f"{n} {c}"
        s = {x: statistics.median(r[k]["s"] for r in res[x]) for x in res}
        m = {x: statistics.median(r[k]["peak_mb"] for r in res[x]) for x in res}
        rows.append([n, "on" if c == "1" else "off", f"{s['padded']:.1f}", f"{s['unpadded']:.1f}",
                     f"{s['unpadded'] / s['padded']:.2f}x", f"{m['padded']:.0f}", f"{m['unpadded']:.0f}",
                     f"{m['unpadded'] / m['padded']:.2f}x"])
    print(common.header(f"update attention: {a.rows} rows x (~30 + LEN) tokens, forward + backward of log-probs "
                        f"and entropy, {a.threads} threads, median of {a.rounds} alternated rounds"))
    print(common.table(rows, ["completion tokens", "checkpointing", "padded s", "unpadded s", "time",
                              "padded peak MB", "unpadded peak MB", "memory"]))


if __name__ == "__main__":
    main()
