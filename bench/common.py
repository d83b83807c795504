"""Shared helpers of the bench/ scripts: machine header, the benchmark's model and prompts, running one
side of a comparison in its own subprocess (so peak RSS is that side's), alternation, FLOP/s.

Not a test and not part of igrpo_core: run the scripts directly (`python bench/step_vs_trl.py`).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
PY = sys.executable


def header(title: str) -> str:
    import torch
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU x{os.cpu_count()}"
    return (f"## {title}\n{datetime.datetime.now().isoformat(timespec='seconds')} | {platform.node()} | {dev} | "
            f"torch {torch.__version__} | load avg {' '.join(f'{x:.1f}' for x in load)}")


def smollm2_tokenizer():
    """SmolLM2's 49,152-token tokenizer from scripts/get_smollm2.sh's GGUF; a stand-in with the same
    vocabulary size if that fails (the caller prints which)."""
    from transformers import AutoTokenizer
    try:
        d = subprocess.run(["bash", str(ROOT / "scripts" / "get_smollm2.sh")], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHON": PY}).stdout.strip().splitlines()[-1]
        gguf = next(p.name for p in Path(d).glob("*.gguf"))
        return AutoTokenizer.from_pretrained(d, gguf_file=gguf), f"SmolLM2 ({gguf})"
    except (subprocess.CalledProcessError, StopIteration, OSError) as exc:
        raise SystemExit(f"SmolLM2 tokenizer unavailable ({exc}); no stand-in is built silently")


def build_work_model(vocab_model: str = "smollm2", hidden: int = 128, layers: int = 2) -> Path:
    """A random-initialised Llama (hidden 128, 2 layers, tied embeddings) with SmolLM2's tokenizer,
    saved once under bench/.work so both sides load the same weights with from_pretrained."""
    out = WORK / f"llama-h{hidden}-l{layers}"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    tok, _ = smollm2_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                      max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def prompts_file(n: int = 256) -> Path:
    """Tiny-world problems as a .jsonl both sides read (id, problem, answer)."""
    out = WORK / "prompts.jsonl"
    if not out.exists():
        sys.path.insert(0, str(ROOT))
        from igrpo_core.data import load_dataset
        rows = load_dataset("tiny:train", tiny_num_problems=n)[:n]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps({k: r[k] for k in ("id", "problem", "answer")}) + "\n" for r in rows))
    return out


def run_side(python: str, args: list[str], timeout: int = 4 * 3600) -> dict:
    """Run bench/_side.py in a fresh process; its last stdout line is a JSON result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([python, str(HERE / "_side.py"), *args], capture_output=True, text=True, timeout=timeout,
                       env=env)
    if p.returncode != 0:
        raise RuntimeError(f"side {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def alternate(sides: dict[str, callable], rounds: int) -> dict[str, list]:
    """Run each side once per round, in rotating order, so drifting machine load hits all alike."""
    names, out = list(sides), {k: [] for k in sides}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            out[k].append(sides[k]())
            print(f"  round {r + 1}/{rounds} {k}: {json.dumps(out[k][-1])[:200]}", file=sys.stderr, flush=True)
    return out


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def matmul_flops(seconds: float = 2.0, n: int = 1024) -> float:
    """This machine's float32 matmul FLOP/s now (bf16 on GPU), best of a few timed batches."""
    import torch
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    n = 8192 if dev == "cuda" else n
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if dev == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t))
    return best


def step_flops(n_params: int, trained_tokens: int, generated_tokens: int) -> float:
    """Policy forward/backward ~ 6 N per trained token, generation ~ 2 N per generated token."""
    return 6 * n_params * trained_tokens + 2 * n_params * generated_tokens


def table(rows: list[list], cols: list[str]) -> str:
    w = [max(len(str(c)), *(len(f"{r[i]}") for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "| " + " | ".join(f"{v}".ljust(w[i]) for i, v in enumerate(r)) + " |"
    return "\n".join([line(cols), "|" + "|".join("-" * (x + 2) for x in w) + "|", *map(line, rows)])
