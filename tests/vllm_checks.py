"""The vLLM engine checks behind tests/test_vllm_engine.py, run as ONE script so vLLM starts once.

vLLM must be created under `if __name__ == "__main__":` and its start-up costs tens of seconds on
two cores, so every check shares one `VLLMEngine` (made by `models.make_engine`, the trainer's own
path) on the shipped tiny model. Usage: `python tests/vllm_checks.py RESULTS.json WORK_DIR`; it
writes {"checks": {name: {"ok", "error", "traceback"}}, "details": {...}, "timings_s": {...}} and
exits 0 unless it crashed.

Log-probs: vLLM returns them in its engine-level `logprobs_mode` (ModelConfig, not SamplingParams).
VLLMEngine sets "processed_logprobs" (as TRL does): log_softmax of the logits after temperature (and
top-k/top-p), i.e. the distribution each token was sampled from, which the trainer's
`sequence_logps(temperature=T)` computes too; at T=1 without top-k/top-p that is the raw log_softmax.
The mismatch check reads the mismatch metrics (mismatch.py) of the two short training runs.

Left out: the transformers engine's own conventions (tests/test_engine.py), GPU builds of vLLM.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = str(ROOT / "data" / "models" / "tiny-arith")
LOGP_TOL = 1e-4       # fp32 on both sides (measured ~6e-6 on CPU); the max |diff| is in the results
# The tiny model is nearly deterministic on its own questions (8 samples at T=1: 1 distinct) and vLLM
# caps temperature at 2, so seed checks use random token ids, where 8 samples of 24 tokens all differ.
NOISY_PROMPT = [random.Random(0).randrange(3, 350) for _ in range(10)]
QUESTIONS = ["Compute 3+4*2.", "Compute 20+5*4.", "Compute 7*8-6."]


def vllm_sample(eng, prompts, *, n, temperature, seed, max_tokens=24):
    """(prompt ids, completion ids, vLLM's log-prob of each sampled token), one triple per sample."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    sp = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=0,
                        stop_token_ids=sorted(eng.eos_ids))
    outs = eng.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
    return [(p, list(o.token_ids), [d[t].logprob for d, t in zip(o.logprobs, o.token_ids)])
            for p, out in zip(prompts, outs) for o in out.outputs]


def trainer_logps(model, samples, temperature: float = 1.0) -> list[list[float]]:
    """The trainer's own log-probs (`sequence_logps` at `temperature`) of the same tokens."""
    import torch
    from igrpo_core.trainer import sequence_logps
    with torch.no_grad():
        logp, mask, _ = sequence_logps(model, [s[0] for s in samples], [s[1] for s in samples],
                                       pad_id=0, device=torch.device("cpu"), amp_dtype=None,
                                       temperature=temperature)
    return [logp[i, : len(s[1])].tolist() for i, s in enumerate(samples)]


def scaled_logps(model, prompt, completion, temperature) -> list[float]:
    """log_softmax(logits / T) of each completion token: the sampling policy at temperature T."""
    import torch
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1] / temperature   # (T, V)
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def check_logprobs_agree(ctx) -> dict:
    eng, model = ctx["eng"], ctx["model"]
    samples = vllm_sample(eng, ctx["prompts"], n=4, temperature=1.0, seed=11)
    ctx["samples"] = samples
    d1 = max_diff([s[2] for s in samples], trainer_logps(model, samples))
    assert d1 < LOGP_TOL, f"T=1.0: vLLM vs trainer log-probs differ by {d1:.2e} > {LOGP_TOL}"
    # At T=0.7 vLLM reports the T-scaled policy's log-probs (processed_logprobs), not the raw ones.
    hot = vllm_sample(eng, ctx["prompts"], n=2, temperature=0.7, seed=12)
    d_trainer = max_diff([s[2] for s in hot], trainer_logps(model, hot, temperature=0.7))
    d_scaled = max_diff([s[2] for s in hot], [scaled_logps(model, p, c, 0.7) for p, c, _ in hot])
    d_raw = max_diff([s[2] for s in hot], trainer_logps(model, hot))
    assert d_trainer < LOGP_TOL, f"T=0.7: vLLM vs trainer log-probs at T=0.7 differ by {d_trainer:.2e}"
    assert d_scaled < LOGP_TOL, f"T=0.7: vLLM vs the T-scaled policy differ by {d_scaled:.2e}"
    assert d_raw > 10 * LOGP_TOL, f"T=0.7: vLLM log-probs match the raw (T=1) ones ({d_raw:.2e})"
    n_tok = sum(len(s[1]) for s in samples + hot)
    return {"max_abs_diff_T1": d1, "max_abs_diff_T07_trainer": d_trainer, "max_abs_diff_T07_scaled": d_scaled,
            "max_abs_diff_T07_raw": d_raw, "tokens": n_tok}


def check_prefix_caching(ctx) -> dict:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from igrpo_core.prompts import TINY_DRAFT_TEMPLATE, build_refine_prompt, render_prompt
    eng, tok = ctx["eng"], ctx["tok"]
    cache_cfg = eng.llm.llm_engine.vllm_config.cache_config
    assert cache_cfg.enable_prefix_caching, "the engine runs without prefix caching"
    # KV blocks are cached whole (128 tokens on CPU), so the question must span at least one block.
    question = "Compute " + "+".join(str(i % 10) for i in range(80)) + "."
    draft_prompt = render_prompt(tok, question, None)
    refine = build_refine_prompt(tok, question, "<think>1+1=2</think><answer>\\boxed{2}</answer>",
                                 template=TINY_DRAFT_TEMPLATE, system_prompt=None, max_prompt_length=400)
    sp = SamplingParams(max_tokens=4, temperature=1.0, seed=1)
    first = eng.llm.generate([TokensPrompt(prompt_token_ids=draft_prompt)], sp, use_tqdm=False)[0]
    second = eng.llm.generate([TokensPrompt(prompt_token_ids=refine.ids)], sp, use_tqdm=False)[0]
    common = next(i for i, (a, b) in enumerate(zip(draft_prompt + [-1], refine.ids)) if a != b)
    expect = common // cache_cfg.block_size * cache_cfg.block_size
    assert expect > 0, f"test set-up: shared prefix {common} shorter than a block {cache_cfg.block_size}"
    assert first.num_cached_tokens == 0, first.num_cached_tokens
    assert second.num_cached_tokens == expect, (second.num_cached_tokens, expect)
    ctx["long_prompt"] = draft_prompt
    return {"block_size": cache_cfg.block_size, "shared_prefix_tokens": common,
            "cached_tokens": second.num_cached_tokens}


def check_completions(ctx) -> dict:
    """engine.py's conventions: grouped by prompt, EOS kept exactly when finish_reason is "stop"."""
    from igrpo_core.engine import SamplingParams
    eng = ctx["eng"]
    comps = eng.generate(ctx["prompts"], SamplingParams(n=3, temperature=1.0, max_new_tokens=24, seed=3))
    # Seeded sampling is reproducible, and its n samples differ.
    noisy = SamplingParams(n=4, temperature=1.0, max_new_tokens=24, seed=3)
    again = [[c.ids for c in eng.generate([ctx["noisy_prompt"]], noisy)] for _ in range(2)]
    assert again[0] == again[1], "the same seeded call sampled differently twice"
    assert len({tuple(x) for x in again[0]}) == 4, f"n=4 samples are not all distinct: {again[0]}"
    assert [c.prompt_index for c in comps] == [i for i in range(len(ctx["prompts"])) for _ in range(3)]
    for c in comps:
        assert (c.ids[-1] in eng.eos_ids) == (c.finish_reason == "stop"), c
        assert not any(t in eng.eos_ids for t in c.ids[:-1]), c
        assert c.finish_reason == "stop" or len(c.ids) == 24, c
        assert c.text == ctx["tok"].decode(c.ids, skip_special_tokens=True), c
    return {"stopped": sum(c.finish_reason == "stop" for c in comps), "samples": len(comps)}


def check_large_batch(ctx) -> dict:
    """A rollout batch whose prompts exceed one scheduler step's token budget (a partial prefill)."""
    from igrpo_core.engine import SamplingParams
    eng, p = ctx["eng"], ctx["prompts"][0]
    budget = eng.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    n_prompts = budget // (4 * len(p)) + 2                     # x 4 samples: just over one step's budget
    comps = eng.generate([p] * n_prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=2, seed=7))
    assert len(comps) == 4 * n_prompts
    return {"prompt_tokens": 4 * n_prompts * len(p), "max_num_batched_tokens": budget}


def check_seeds_distinct(ctx) -> dict:
    from igrpo_core.engine import SamplingParams
    eng, p = ctx["eng"], ctx["noisy_prompt"]
    # A prompt where two different noise streams give different samples almost surely.
    comps = eng.generate([p, p], SamplingParams(n=4, temperature=1.0, max_new_tokens=24, seed=5))
    first, second = [c.ids for c in comps[:4]], [c.ids for c in comps[4:]]
    assert first != second, "the same prompt twice in one call got identical samples: shared seeds"
    return {"distinct_samples": len({tuple(x) for x in first + second})}


def check_sync_weights(ctx) -> dict:
    """One real AdamW step on the transformers policy, sync, and vLLM must follow it."""
    import torch
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from igrpo_core.trainer import sequence_logps
    eng, model, samples = ctx["eng"], ctx["model"], ctx["samples"]
    warm = SamplingParams(max_tokens=2, temperature=1.0, seed=1)
    eng.llm.generate([TokensPrompt(prompt_token_ids=ctx["long_prompt"])], warm, use_tqdm=False)
    before = trainer_logps(model, samples)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    logp, mask, _ = sequence_logps(model, [s[0] for s in samples], [s[1] for s in samples],
                                   pad_id=0, device=torch.device("cpu"), amp_dtype=None)
    (-(logp * mask).sum() / mask.sum()).backward()    # raise the sampled sequences' likelihood
    opt.step()
    opt.zero_grad(set_to_none=True)
    after = trainer_logps(model, samples)
    moved = max_diff(before, after)
    assert moved > 100 * LOGP_TOL, f"the optimizer step barely moved the policy ({moved:.2e})"
    eng.sync_weights(model)
    stale = eng.llm.generate([TokensPrompt(prompt_token_ids=ctx["long_prompt"])], warm, use_tqdm=False)[0]
    assert stale.num_cached_tokens == 0, "KV blocks computed with the old weights survived the sync"
    new = vllm_sample(eng, ctx["prompts"], n=4, temperature=1.0, seed=13)
    d = max_diff([s[2] for s in new], trainer_logps(model, new))
    assert d < LOGP_TOL, f"after sync, vLLM vs updated trainer log-probs differ by {d:.2e}"
    return {"policy_moved_max_logp": moved, "max_abs_diff_after_sync": d}


def check_train(ctx, algo: str, **overrides) -> dict:
    """A 2-step run with rollout_engine=vllm through trainer.train, on the shared engine, at T=0.7."""
    from igrpo_core import records, trainer
    from igrpo_core.config import Config
    eng, calls = ctx["eng"], []

    def shared_engine(cfg, tokenizer, model=None, **_):
        assert cfg.rollout_engine == "vllm", cfg.rollout_engine
        eng.sync_weights(model)          # the run's fresh policy, not the earlier checks' weights
        return eng

    real_generate = eng.generate
    eng.generate = lambda prompts, params: calls.append(len(prompts)) or real_generate(prompts, params)
    real_make, trainer.make_engine = trainer.make_engine, shared_engine
    try:
        cfg = Config(model_name_or_path=TINY, rollout_engine="vllm", dtype="float32", algo=algo,
                     output_dir=str(ctx["work"] / "runs"), run_name=algo, max_steps=2, prompts_per_step=2,
                     num_generations=4, num_drafts=2, max_completion_length=24, save_steps=2,
                     tiny_num_problems=50, per_device_train_batch_size=8, generation_batch_size=32,
                     temperature=0.7, **overrides)
        run_dir = trainer.train(cfg)
    finally:
        trainer.make_engine, eng.generate = real_make, real_generate
    metrics = records.read_metrics(run_dir)
    rows = records.read_rollouts(run_dir)
    assert metrics["step"].to_list() == [1, 2], metrics["step"].to_list()
    rewards = metrics["reward_mean"].to_list()
    assert all(math.isfinite(r) for r in rewards), rewards
    assert len(calls) == (2 if algo == "grpo" else 4), calls     # one call per stage per step
    assert records.read_json(run_dir / "status.json")["state"] == "finished"
    ctx.setdefault("runs", {})[algo] = metrics
    return {"reward_mean": rewards, "rollout_rows": rows.height, "generate_calls": len(calls)}


def check_mismatch(ctx) -> dict:
    """vLLM's sampling log-probs vs the trainer's in the two runs (fp32 both sides): near 0 per token;
    iGRPO ran with the importance-sampling correction on, whose weights are then ~1."""
    out = {}
    for algo, m in ctx["runs"].items():
        cols = ["mismatch_mean_abs", "mismatch_max_abs", "mismatch_kl", "is_ratio_min", "is_ratio_max"]
        out[algo] = {c: m[c].to_list() for c in cols}
        print(f"VLLM_MISMATCH {algo}: " + ", ".join(f"{c}={m[c].to_list()}" for c in cols), flush=True)
        assert m["mismatch_mean_abs"].max() < LOGP_TOL / 10, out[algo]
        assert m["mismatch_max_abs"].max() < LOGP_TOL, out[algo]
        assert 0 <= m["mismatch_kl"].min() and m["mismatch_kl"].max() < LOGP_TOL ** 2, out[algo]
    weights = ctx["runs"]["igrpo"]
    assert (weights["is_ratio_min"] > 1 - 1e-3).all() and (weights["is_ratio_max"] < 1 + 1e-3).all(), out
    return out


CHECKS = [("logprobs_agree", check_logprobs_agree), ("completions", check_completions),
          ("prefix_caching", check_prefix_caching),
          ("seeds_distinct", check_seeds_distinct), ("sync_weights", check_sync_weights),
          ("train_grpo", lambda ctx: check_train(ctx, "grpo")),
          ("train_igrpo", lambda ctx: check_train(ctx, "igrpo", vllm_importance_sampling_correction=True)),
          ("mismatch", check_mismatch),
          ("large_batch", check_large_batch)]     # last: when it fails, vLLM's engine core is dead


def main(out_path: Path, work: Path) -> None:
    import torch
    torch.manual_seed(0)
    t0 = time.perf_counter()
    import vllm  # noqa: F401  (timed apart from the engine start)
    from igrpo_core.config import Config
    from igrpo_core.models import load_model, load_tokenizer, make_engine
    from igrpo_core.prompts import render_prompt
    t_import = time.perf_counter() - t0
    cfg = Config(model_name_or_path=TINY, rollout_engine="vllm", dtype="float32", max_prompt_length=400,
                 max_completion_length=40, vllm_gpu_memory_utilization=0.1)
    tok = load_tokenizer(TINY)
    t1 = time.perf_counter()
    eng = make_engine(cfg, tok)
    timings = {"import_vllm": t_import, "engine_start": time.perf_counter() - t1}
    model = load_model(TINY, tok, device=torch.device("cpu"), dtype=torch.float32)
    ctx = {"eng": eng, "tok": tok, "model": model, "work": work,
           "prompts": [render_prompt(tok, q, None) for q in QUESTIONS],
           "noisy_prompt": NOISY_PROMPT}
    results, details = {}, {}
    for name, fn in CHECKS:
        t = time.perf_counter()
        try:
            details[name] = fn(ctx)
            results[name] = {"ok": True}
        except Exception as exc:  # recorded per check, so one failure does not hide the others' results
            results[name] = {"ok": False, "error": type(exc).__name__, "traceback": traceback.format_exc(limit=4)}
        timings[name] = time.perf_counter() - t
        state = "ok" if results[name]["ok"] else f"FAILED ({results[name]['error']})"
        print(f"VLLM_CHECK {name}: {state} in {timings[name]:.1f}s", flush=True)
    out_path.write_text(json.dumps({"checks": results, "details": details, "timings_s": timings}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
