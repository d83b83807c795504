"""One side of a bench comparison, in its own process: a few training steps, then one JSON line with
the step times, generation times, tokens and this process's peak RSS. Run by bench/common.run_side.

  _side.py ours  MODEL PROMPTS LEN STEPS THREADS MICRO WARMUP CKPT ALGO VARIANT   (VARIANT: before | after | fast)
  _side.py trl   MODEL PROMPTS LEN STEPS THREADS MICRO WARMUP CKPT
  _side.py demo  STEPS THREADS ALGO [MICRO_TOKENS]   (the main job's settings: the tiny world, real EOS; step 1
                                                    unmeasured; MICRO_TOKENS: Config.micro_batch_tokens, default auto)
MICRO: sequences per forward/backward (the 128 completions of a step in 128 / MICRO micro-batches, one
optimizer step); WARMUP: 1 runs an unmeasured first step, 0 measures from the first (long completions);
CKPT: 1 recomputes the transformer blocks' activations in backward (gradient checkpointing), 0 keeps
them. Always passed explicitly: TRL's GRPOConfig defaults to 1, this project's Config to 0.
before = model.generate + full-logits log-probs (the code before issue 10); after = decode loop +
multinomial (generate's samples) + chunked log-probs; fast = after with the inverse-CDF sampler and one
prefill per distinct prompt (the defaults).
"""
import json
import resource
import sys
import tempfile
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _full_logits(sequence_logps, *args, chunked=False, **kwargs):
    """The trainer's sequence_logps with chunking switched off, whatever the trainer asks for."""
    return sequence_logps(*args, chunked=False, **kwargs)


def ours(model, prompts, length, steps, threads, micro, warmup, ckpt, algo, variant):
    import functools

    from igrpo_core import trainer as T
    from igrpo_core.config import Config
    if variant == "before":  # the full-logits path everywhere, model.generate, a prefill per sample
        T.sequence_logps = functools.partial(_full_logits, T.sequence_logps)
    cfg = Config(model_name_or_path=model, dataset=prompts, algo=algo, num_generations=8, num_drafts=4,
                 prompts_per_step=16, max_completion_length=length, max_prompt_length=256, beta=0.0,
                 learning_rate=1e-5, temperature=1.0, per_device_train_batch_size=micro, generation_batch_size=128,
                 torch_threads=threads, reward_funcs=["accuracy"], reward_weights=[1.0], save_steps=10 ** 6,
                 max_steps=steps + warmup, output_dir=tempfile.mkdtemp(), run_name="bench", log_completions=False,
                 warmup_ratio=0.0, lr_scheduler_type="constant", draft_template="{question}\nDraft: {draft}",
                 sampler="inverse_cdf" if variant == "fast" else "multinomial", gradient_checkpointing=bool(ckpt))
    tr = T.Trainer(cfg)
    tr.engine.eos_ids = {-1}  # forced full length on both sides: no token ends a completion
    if variant == "before":
        tr.engine.decode = "generate"
    tr.engine.share_prefill = variant == "fast"
    times, gens, toks = [], [], []
    for s in range(1, steps + warmup + 1):  # with warmup, step 1 is not measured
        row = tr.train_step(s)
        if s > warmup:
            times.append(row["step_time_s"]), gens.append(row["gen_time_s"])
            toks.append(row["tokens_per_s"] * row["step_time_s"])
    n_params = sum(p.numel() for p in tr.model.parameters())
    return dict(step_s=times, gen_s=gens, generated_tokens=toks, n_params=n_params, peak_rss_mb=peak_rss_mb())


def demo(steps, threads, algo, micro_tokens="auto"):
    """Steps 2..STEPS+1 of the main job's training (`Config()`'s defaults: the tiny world, completions
    ending at EOS), with each generate call's decode steps and each prompt's longest completion, so
    a run shows how many sequential decode steps iGRPO's two stages cost against GRPO's one, and how
    many a scheduler that starts a question's refinements as soon as its own drafts end would need
    (max over questions of longest draft + longest refinement)."""
    from igrpo_core import trainer as T
    from igrpo_core.config import Config
    cfg = Config(algo=algo, max_steps=steps + 1, torch_threads=threads, output_dir=tempfile.mkdtemp(), run_name="bench",
                 save_steps=10 ** 6, log_completions=False, micro_batch_tokens=micro_tokens)
    tr = T.Trainer(cfg)
    eng, calls = tr.engine, []
    real_decode, real_generate = eng._decode, eng.generate

    def decode(*a, **k):
        new, logps = real_decode(*a, **k)
        calls[-1]["decode_steps"] += new.shape[1]
        return new, logps

    def generate(prompts, params):
        calls.append({"decode_steps": 0})
        out = real_generate(prompts, params)
        longest = [0] * len(prompts)
        for c in out:
            longest[c.prompt_index] = max(longest[c.prompt_index], len(c.ids))
        calls[-1]["longest"] = longest
        return out

    eng._decode, eng.generate = decode, generate
    times, gens, seq, ideal = [], [], [], []
    for s in range(1, steps + 2):
        calls.clear()
        row = tr.train_step(s)
        if s > 1:
            times.append(row["step_time_s"]), gens.append(row["gen_time_s"])
            seq.append(sum(c["decode_steps"] for c in calls))
            # question i is prompt i of every call only when every call had every question (no gating)
            aligned = len({len(c["longest"]) for c in calls}) == 1
            ideal.append(max(sum(x) for x in zip(*(c["longest"] for c in calls))) if aligned else None)
    return dict(step_s=times, gen_s=gens, decode_steps=seq, overlapped_steps=ideal, peak_rss_mb=peak_rss_mb())


def trl(model, prompts, length, steps, threads, micro, warmup, ckpt):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    torch.set_num_threads(threads)
    rows = [json.loads(line) for line in open(prompts)]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["problem"]}]} for r in rows])
    tok = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    times, gens = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    real_generate = policy.generate

    def timed_generate(*a, **k):
        t = time.perf_counter()
        out = real_generate(*a, **k)
        gens.append(time.perf_counter() - t)
        return out

    policy.generate = timed_generate
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=micro,
                      gradient_accumulation_steps=128 // micro, num_generations=8,
                      max_completion_length=length, beta=0.0, learning_rate=1e-5, temperature=1.0,
                      max_steps=steps + warmup, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                      bf16=False, generation_kwargs={"min_new_tokens": length}, seed=0, dataloader_num_workers=0,
                      gradient_checkpointing=bool(ckpt))
    trainer = GRPOTrainer(model=policy, reward_funcs=[lambda completions, **k: [len(str(c)) % 3 for c in completions]],
                          args=args, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    trainer.train()
    n_params = sum(p.numel() for p in policy.parameters())
    return dict(step_s=times[warmup:], gen_s=gens[warmup:], generated_tokens=[128 * length] * (len(times) - warmup),
                n_params=n_params, peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    if sys.argv[1] == "demo":
        steps, threads, algo, *micro = sys.argv[2:]
        print(json.dumps(demo(int(steps), int(threads), algo, *(int(m) if m.isdigit() else m for m in micro))))
        sys.exit(0)
    side, model, prompts, length, steps, threads, micro, warmup, ckpt, *rest = sys.argv[1:]
    fn = ours if side == "ours" else trl
    print(json.dumps(fn(model, prompts, *map(int, (length, steps, threads, micro, warmup, ckpt)), *rest)))
