"""Peak memory of the loss's log-prob + entropy computation (forward and backward), ours (chunked,
recomputation in backward) vs the naive full-logits method, at 512 -> 4,096 completion tokens with a
49k and a 152k vocabulary (issue 10). Each cell is a fresh subprocess; the figure is the peak RSS
above the process's RSS once inputs exist (hidden states (1, T, 128), output layer (V, 128)).
The subprocess runs with glibc's mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_): every tensor
buffer is then its own mapping, returned to the system when freed, so the RSS high-water mark is the
peak of live tensors. With glibc's default dynamic threshold, freed 32 MiB chunks stayed in the heap
and the figures were not monotone in length (measured: 2,255 MB at 49k x 4,096 tokens vs 538 MB at
152k x 4,096).
Naive cells whose logits would need more than --max-naive-gb (x4 copies) are skipped and marked.

  python bench/logprob_memory.py [--lengths 512,1024,2048,4096] [--vocabs 49152,151936]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def worker(method: str, T: int, V: int) -> dict:
    import time

    import torch
    sys.path.insert(0, str(common.ROOT))
    from igrpo_core import chunked, losses
    torch.set_num_threads(2)
    torch.manual_seed(0)
    h = torch.randn(1, T, 128, requires_grad=True)
    w = (torch.randn(V, 128) * 0.02).requires_grad_()
    target = torch.randint(0, V, (1, T))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if method == "ours":
        logp, ent = chunked.chunked_token_logps(h, w, None, target, temperature=0.7, with_entropy=True)
    else:
        logits = (h @ w.T) / 0.7                                        # (1, T, V)
        logp = losses.selective_log_softmax(logits, target)
        losses.token_entropy(logits.detach())   # the naive method also builds a (T, V) entropy
    logp.sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"extra_mb": (peak - base) / 1024, "s": time.perf_counter() - t}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="512,1024,2048,4096")
    ap.add_argument("--vocabs", default="49152,151936")
    ap.add_argument("--max-naive-gb", type=float, default=6.0)
    a = ap.parse_args()
    rows = []
    for V in map(int, a.vocabs.split(",")):
        for T in map(int, a.lengths.split(",")):
            cell = {}
            for m in ("ours", "naive"):
                if m == "naive" and 4 * 4 * T * V / 2 ** 30 > a.max_naive_gb:
                    cell[m] = None
                    continue
                p = subprocess.run([common.PY, __file__, "--worker", m, str(T), str(V)], capture_output=True,
                                   text=True, check=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
                cell[m] = json.loads(p.stdout.strip().splitlines()[-1])
            n = cell["naive"]
            rows.append([V, T, f"{cell['ours']['extra_mb']:.0f}", f"{n['extra_mb']:.0f}" if n else "skipped",
                         f"{cell['ours']['extra_mb'] / n['extra_mb']:.3f}x" if n else "-",
                         f"{cell['ours']['s']:.2f}", f"{n['s']:.2f}" if n else "-"])
    print(common.header("Log-prob + entropy peak memory (fwd + bwd), ours chunked vs naive full logits"))
    print(common.table(rows, ["vocab", "tokens", "ours MB", "naive MB", "ours/naive", "ours s", "naive s"]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
