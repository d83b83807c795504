"""Rollout engine tokens/s vs a plain `model.generate` on the same batch (issue 10).

The work model (random Llama, SmolLM2 vocabulary), 16 prompts x 8 samples, LEN new tokens forced full
length (no EOS), T 1.0; sides alternate in one process, medians over rounds. The engine sides show each
lever on its own: the multinomial sampler with a prefill per sample row (the loop's first version),
the inverse-CDF sampler, one prefill per distinct prompt with its KV copied to the prompt's rows, then
that KV held once for all rows (kvcache.shared_prefix; the engine's default for prompts of 256+ tokens). --prompt-len N lengthens each prompt to
about N tokens with random ones, the shape of iGRPO's stage 2 (question + a whole draft).

  python bench/sampler.py [--len 64] [--rounds 3] [--threads 2] [--top-p 1.0] [--top-k 0] [--prompt-len 0]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--prompt-len", type=int, default=0)
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    sys.path.insert(0, str(common.ROOT))
    from igrpo_core.engine import SamplingParams, TransformersEngine, left_pad
    from igrpo_core.prompts import render_prompt
    torch.set_num_threads(a.threads)
    path = common.build_work_model()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    rows = [json.loads(x) for x in open(common.prompts_file())][:16]
    prompts = [render_prompt(tok, r["problem"], None) for r in rows]
    if a.prompt_len:   # a stand-in draft: random tokens up to ~prompt_len (prompts of 16 different lengths)
        g = torch.Generator().manual_seed(0)
        prompts = [p + torch.randint(100, len(tok), (max(0, a.prompt_len - j - len(p)),), generator=g).tolist()
                   for j, p in enumerate(prompts)]
    params = SamplingParams(n=8, temperature=1.0, top_p=a.top_p, top_k=a.top_k, max_new_tokens=a.len, seed=0)
    flat = [p for p in prompts for _ in range(8)]
    ids, mask = left_pad(flat, tok.pad_token_id, "cpu")

    def plain_generate():
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=a.top_p,
                                 top_k=a.top_k, max_new_tokens=a.len, min_new_tokens=a.len,
                                 pad_token_id=tok.pad_token_id)
        return out.shape[1] - ids.shape[1]

    def engine(sampler, share_prefill=True, share_kv=True):
        eng = TransformersEngine(model, tok, batch_size=128, sampler=sampler)
        eng.eos_ids = {-1}   # forced full length
        eng.share_prefill, eng.share_prefix_kv = share_prefill, share_kv
        eng.share_prefix_min_tokens = 0   # whatever the prompt length: the comparison is the point
        return lambda: sum(len(c.ids) for c in eng.generate(prompts, params)) // 128

    sides = {"model.generate": plain_generate, "engine multinomial, prefill per row": engine("multinomial", False),
             "engine inverse_cdf, prefill per row": engine("inverse_cdf", False),
             "engine inverse_cdf, one prefill per prompt, KV copied per row": engine("inverse_cdf", True, False),
             "engine inverse_cdf, one prefill per prompt, KV held once": engine("inverse_cdf")}

    def timed(fn):
        def run():
            t = time.perf_counter()
            n = fn()
            return 128 * n / (time.perf_counter() - t)
        return run

    res = common.alternate({k: timed(f) for k, f in sides.items()}, a.rounds)
    base = common.median(res["model.generate"])
    P = max(len(p) for p in prompts)
    print(common.header(f"Rollout engine vs model.generate: 128 sequences x {a.len} tokens, prompts up to {P} "
                        f"tokens, top_p {a.top_p}, top_k {a.top_k}, {a.threads} threads, {a.rounds} rounds"))
    print(common.table([[k, f"{common.median(v):.0f}", f"{common.median(v) / base:.2f}x"] for k, v in res.items()],
                       ["side", "tokens/s (median)", "vs generate"]))
    c = model.config   # the decode cache's size: fp32 keys + values of every layer
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    per_tok = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 4
    print(f"KV cache at the last step: prompt copied per row {128 * (P + a.len) * per_tok / 2**20:.0f} MiB, "
          f"held once {(16 * P + 128 * a.len) * per_tok / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
