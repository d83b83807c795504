"""Device check: a few GRPO and iGRPO steps on the tiny model and on a random-initialised model with
Qwen2.5-0.5B's shapes (no download), printing step time, tokens/s and peak accelerator memory.

    python scripts/gpu_check.py --steps 3 --out /tmp/gpu_check        # on a GPU machine
    python scripts/gpu_check.py --steps 1 --small                      # CPU smoke test of the script

The Qwen-shaped model uses the tiny character tokenizer, so its vocabulary is small; everything
else (hidden 896, 24 layers, 14 query / 2 KV heads of 64, MLP 4864) matches Qwen2.5-0.5B.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from igrpo_core import records  # noqa: E402
from igrpo_core.config import TINY_MODEL, Config  # noqa: E402
from igrpo_core.trainer import train  # noqa: E402


def build_qwen_shaped(out: Path, small: bool) -> str:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    layers, hidden, inter = (2, 128, 256) if small else (24, 896, 4864)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=2, head_dim=64,
                      max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def run(name: str, model: str, algo: str, steps: int, out: Path) -> dict:
    cfg = Config(model_name_or_path=model, algo=algo, max_steps=steps, output_dir=str(out), run_name=f"{name}-{algo}",
                 prompts_per_step=16, num_generations=8, num_drafts=4, max_completion_length=64,
                 save_steps=10_000, torch_threads=None, resume=False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run_dir = train(cfg)
    m = records.read_metrics(run_dir)
    return {"model": name, "algo": algo, "device": str(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"),
            "steps": steps, "wall_s": round(time.perf_counter() - t0, 1),
            "step_time_s_median": float(m["step_time_s"].median()),
            "tokens_per_s_median": float(m["tokens_per_s"].median()),
            "reward_mean_last": float(m["reward_mean"][-1]),
            "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="/tmp/gpu_check")
    ap.add_argument("--small", action="store_true", help="tiny Qwen-shaped model, for a CPU smoke test")
    args = ap.parse_args()
    out = Path(args.out)
    qwen = build_qwen_shaped(out / "qwen2.5-0.5b-shaped", args.small)
    results = [run(name, path, algo, args.steps, out / "runs")
               for name, path in (("tiny", TINY_MODEL), ("qwen0.5b-shaped", qwen)) for algo in ("grpo", "igrpo")]
    for r in results:
        print(json.dumps(r))
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
