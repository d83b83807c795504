"""The training loop: rollouts -> rewards -> advantages -> clipped policy loss -> AdamW step.

One loop serves GRPO and iGRPO (igrpo.py composes the rollouts; losses.py holds the maths). Each
step: sample `prompts_per_step` questions (x `gradient_accumulation_steps`), collect rollouts, then
`num_iterations` optimizer updates on them. Everything random is derived from (seed, step), and a
checkpoint holds model, optimizer, scheduler and RNG state, so a resumed run continues exactly as an
uninterrupted one would.

Deliberately left out: asynchronous rollouts (processes: distributed.py).
"""
from __future__ import annotations

import contextlib
import copy
import math
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from igrpo_core import attention, distributed, lora, losses, mismatch, nonfinite, provenance, records, trackers
from igrpo_core.config import ABSENT_MEANS, Config
from igrpo_core.engine import SamplingParams
from igrpo_core.igrpo import Rollout, collect_dynamic, collect_grpo, collect_igrpo, trained_tokens
from igrpo_core.options import SUMMED_METRICS
from igrpo_core.data import load_dataset
from igrpo_core.models import (autocast_dtype, context_length, load_model, load_tokenizer, make_engine,
                               resolve_device, setup_threads)
from igrpo_core.logprobs import reference_sequence_logps, sequence_logps  # noqa: F401 (re-exported)
from igrpo_core.prompts import attach_draft, prompt_format, render_prompt
from igrpo_core.rewards import RewardFn, build_reward_fns

Callback = Callable[[int, dict], None]


def lr_lambda(kind: str, total: int, warmup: int, min_rate: float) -> Callable[[int], float]:
    """Linear warmup, then cosine to min_rate (paper: 0.1x), linear to 0, or constant."""
    def f(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        if kind == "linear":
            return 1.0 - progress
        return min_rate + (1 - min_rate) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def check_prompt_budget(tokenizer, examples: list[dict], cfg: Config) -> tuple[list[dict], dict[str, int]]:
    """Every question (plus, for iGRPO, the draft template with an empty draft) must fit the budget.

    Returns (kept examples, {dropped id: prompt tokens}): with `filter_overlong_prompts` (verl's name)
    the over-budget questions are dropped and listed in the run's model.json; without it the first
    one is an error. A question is never cut: a truncated question is a different problem.
    """
    kept, dropped = [], {}
    for ex in examples:
        text = ex["problem"] if cfg.algo == "grpo" else attach_draft(ex["problem"], "[...]", cfg.draft_template)
        n = len(render_prompt(tokenizer, text, cfg.system_prompt))
        if n <= cfg.max_prompt_length:
            kept.append(ex)
        elif cfg.filter_overlong_prompts:
            dropped[ex["id"]] = n
        else:
            raise ValueError(f"problem {ex['id']!r} needs {n} prompt tokens (with the {cfg.algo} template), more "
                             f"than max_prompt_length={cfg.max_prompt_length}; raise it, filter the dataset or "
                             f"set filter_overlong_prompts")
    if not kept:
        raise ValueError(f"no problem of {cfg.dataset!r} fits max_prompt_length={cfg.max_prompt_length}")
    return kept, dropped


def check_context(max_positions: int | None, cfg: Config) -> None:
    """Prompt plus completion budgets must fit the model's positions (read from its config, before
    any weights load): beyond them a model samples from positions it was never trained on."""
    need = cfg.max_prompt_length + cfg.max_completion_length
    if max_positions is not None and need > max_positions:
        raise ValueError(f"max_prompt_length + max_completion_length = {need} tokens exceed the model's "
                         f"{max_positions} positions ({cfg.model_name_or_path}); lower one of them")


def batch_examples(examples: list[dict], step: int, batch_index: int, per_batch: int, per_step: int,
                   seed: int) -> list[dict]:
    """Deterministic data order: epoch e is a seeded permutation; position follows from the step."""
    n = len(examples)
    start = (step - 1) * per_step + batch_index * per_batch
    perms: dict[int, torch.Tensor] = {}
    out = []
    for pos in range(start, start + per_batch):
        epoch, k = divmod(pos, n)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out.append(examples[int(perms[epoch][k])])
    return out


def micro_batch_slices(prompt_lens: list[int], completion_lens: list[int], max_rows: int, max_tokens: int = 0,
                       at_least: int = 0) -> list[slice]:
    """Contiguous micro-batches over a rollout's sequences, in order: each at most `max_rows` sequences
    and, when `max_tokens`, at most `max_tokens` padded tokens, counted as `logprobs._pack` lays them
    out (rows x (longest prompt + longest completion)); a sequence longer than that alone. Greedy:
    a micro-batch takes sequences while both caps hold. `at_least`: then split the micro-batch of
    most padded tokens in two until there are that many (more micro-batches only lower the peak).

    With max_tokens 0 these are the fixed-size slices of `max_rows`. The accumulated gradient is
    the same maths however a batch is cut (losses.accumulation_weight), except "bnpo", which
    normalises by each micro-batch's own token count (as TRL's does)."""
    if len(prompt_lens) != len(completion_lens):
        raise ValueError(f"{len(prompt_lens)} prompts for {len(completion_lens)} completions")
    n, out, start = len(prompt_lens), [], 0
    while start < n:
        end, P, T = start + 1, prompt_lens[start], completion_lens[start]
        while end < n and end - start < max_rows:
            p, t = max(P, prompt_lens[end]), max(T, completion_lens[end])
            if max_tokens and (end - start + 1) * (p + t) > max_tokens:
                break
            P, T, end = p, t, end + 1
        out.append(slice(start, end))
        start = end

    def padded(sl: slice) -> int:
        return (sl.stop - sl.start) * (max(prompt_lens[sl]) + max(completion_lens[sl]))

    while len(out) < at_least:
        splittable = [k for k, sl in enumerate(out) if sl.stop - sl.start > 1]
        if not splittable:
            raise ValueError(f"{n} sequences cannot make {at_least} micro-batches (another process needs that "
                             f"many under micro_batch_tokens={max_tokens}); raise micro_batch_tokens")
        k = max(splittable, key=lambda k: padded(out[k]))
        sl = out[k]
        mid = (sl.start + sl.stop) // 2
        out[k: k + 1] = [slice(sl.start, mid), slice(mid, sl.stop)]
    return out


def token_cap(setting: int | str, max_rows: int, question_tokens: int, completion_lens: list[int]) -> int:
    """The padded-token cap of a rollout's micro-batches for Config.micro_batch_tokens (0: none).

    "auto" is what a GRPO micro-batch of the step's questions can hold: max_rows x (longest question
    prompt + longest completion). A GRPO rollout never reaches it (its prompts are the questions), so
    GRPO keeps its micro-batches; iGRPO's stage-2 prompts carry a draft as well, and cutting them
    to this cap keeps its update's activations, which grow with padded tokens, at GRPO's size."""
    if setting != "auto":
        return setting
    if not question_tokens or not completion_lens:   # a rollout that does not know its questions: no cap
        return 0
    return max_rows * (question_tokens + max(completion_lens))


class Trainer:
    """Holds the state of one run: model, optimizer, scheduler, engine, run directory."""

    def __init__(self, cfg: Config, callbacks: list[Callback] | None = None,
                 custom_rewards: dict[str, tuple[RewardFn, float]] | None = None):
        self.cfg, self.callbacks = cfg, callbacks or []
        setup_threads(cfg.torch_threads)
        self.device = resolve_device(cfg.device)
        self.dist = distributed.setup(self.device)   # one process unless started by `accelerate launch`
        if self.dist.world > 1:
            self.device = self.dist.accelerator.device
            self.dist.check(cfg)                       # an uneven split (or FSDP limit) is an error now, not at step 1
        self.amp = autocast_dtype(cfg.dtype, self.device)
        run_name = cfg.run_name or f"{cfg.algo}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.cfg = cfg = cfg.replace(run_name=run_name)
        self.run_dir = Path(cfg.output_dir) / run_name
        self.trackers = trackers.Trackers(cfg.report_to, self.run_dir, cfg.to_dict(), main=self.dist.is_main)
        # Everything that can be checked without the model is checked before it loads.
        self.examples = load_dataset(cfg.dataset, tiny_num_problems=cfg.tiny_num_problems, limit=cfg.dataset_limit)
        self.tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.gguf_file)
        self.examples, self.overlong_dropped = check_prompt_budget(self.tokenizer, self.examples, cfg)
        check_context(context_length(cfg.model_name_or_path, cfg.gguf_file), cfg)
        self.judge = None
        if "judge" in cfg.reward_funcs:  # generative judge (paper Table 3): drafts and advantages use it
            from igrpo_core.judge import build_judge
            self.judge = build_judge(cfg)
        self.reward_fns = build_reward_fns(cfg, judge=self.judge, custom=custom_rewards)
        torch.manual_seed(cfg.seed)
        self.model, self.ref_model = self._load_policy()
        if self.dist.is_main:  # one process writes the records
            records.init_run_dir(self.run_dir, cfg.to_dict(), absent_means=ABSENT_MEANS)
            records.append_provenance(self.run_dir, provenance.collect(
                model=cfg.model_name_or_path, gguf_file=cfg.gguf_file, device=str(self.device), dtype=cfg.dtype,
                datasets={cfg.dataset: self.examples}))
            # chat template or plain text (base models), and what trains: part of the run's evidence
            records.write_json(self.run_dir / "model.json", {
                "prompt_format": prompt_format(self.tokenizer), **lora.parameter_counts(self.model),
                "processes": self.dist.world, "fsdp": self.dist.fsdp,
                "overlong_prompts_dropped": self.overlong_dropped,
                "peft": {k: getattr(cfg, k) for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}
                if cfg.use_peft else None})
        self.dist.barrier()
        opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2))
        # train_model: what the loss runs through (DDP/FSDP-wrapped under accelerate); self.model: the
        # plain module the engine samples with and checkpoints save (the same parameters).
        self.train_model, self.opt = self.dist.prepare(self.model, opt)
        updates = cfg.max_steps * cfg.num_iterations
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(
            cfg.lr_scheduler_type, updates, int(cfg.warmup_ratio * updates), cfg.min_lr_rate))
        self.engine = make_engine(cfg, self.tokenizer, self.model)
        self.step = 0

    def _load_policy(self):
        """(policy, frozen reference or None). fp32 master weights and AdamW state; cfg.dtype is only
        the autocast compute dtype (self.amp): an lr-1e-6 update of a bf16 weight would round away.
        With LoRA the reference is the policy with adapters disabled, so no copy is made."""
        cfg = self.cfg
        model = load_model(cfg.model_name_or_path, self.tokenizer, device=self.device, dtype=torch.float32,
                           gguf_file=cfg.gguf_file)
        ref = None
        if cfg.beta > 0 and not cfg.use_peft:  # k3 KL needs the initial policy frozen beside the trained one
            ref = copy.deepcopy(model).eval().requires_grad_(False)
        if cfg.gradient_checkpointing:  # non-reentrant: works with frozen inputs and no_grad scoring
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
            if cfg.use_peft:  # frozen embeddings: checkpointed blocks need inputs that require grad
                model.enable_input_require_grads()
        if cfg.use_peft:
            model = lora.apply_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                    target_modules=cfg.lora_target_modules)
        return model, ref

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        ckpt = self.run_dir / "checkpoints" / f"step_{self.step:06d}"
        model_state, opt_state = self.dist.state_dicts(self.model, self.opt)  # FSDP: gathered (collective)
        if not self.dist.is_main:   # parameters and optimizer state are identical on every process
            self.dist.barrier()
            return ckpt
        with records.writing(ckpt):   # a full or read-only disk: an error naming the checkpoint and errno
            ckpt.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(ckpt / "model", safe_serialization=True, state_dict=model_state)
            self.tokenizer.save_pretrained(ckpt / "model")
            torch.save({"optimizer": opt_state, "scheduler": self.sched.state_dict(),
                        "rng_torch": torch.get_rng_state(), "rng_python": random.getstate(),
                        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                       ckpt / "state.pt")
        records.finish_checkpoint(ckpt, {"step": self.step})  # synced, then trainer_state.json: complete
        records.prune_checkpoints(self.run_dir, self.cfg.save_total_limit)
        self.dist.barrier()
        return ckpt

    def maybe_resume(self) -> None:
        ckpts = records.checkpoint_dirs(self.run_dir)
        if not self.cfg.resume or not ckpts:  # a fresh start: nothing of an earlier attempt may remain
            self.dist.barrier()               # every process has looked before the main one deletes
            if self.dist.is_main:
                records.truncate_after(self.run_dir, 0)
                shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
            self.dist.barrier()
            return
        ckpt = ckpts[-1]
        if self.cfg.use_peft:
            lora.load_adapters(self.model, ckpt / "model")
        else:
            self._load_full_weights(ckpt)
        extra = torch.load(ckpt / "state.pt", weights_only=False)
        self.dist.load_optimizer_state(self.model, self.opt, extra["optimizer"])
        self.sched.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng_torch"])
        random.setstate(extra["rng_python"])
        if extra["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["rng_cuda"])
        self.step = records.read_json(ckpt / "trainer_state.json")["step"]
        self.dist.barrier()
        if self.dist.is_main:
            records.truncate_after(self.run_dir, self.step)
        self.engine.sync_weights(self.model)

    def _load_full_weights(self, ckpt: Path) -> None:
        from safetensors.torch import load_file
        state = {}
        for f in sorted((ckpt / "model").glob("*.safetensors")):
            state.update(load_file(f))
        missing, unexpected = self.dist.load_model_state(self.model, state)   # FSDP: sharded again
        if unexpected or [m for m in missing if "lm_head" not in m]:  # tied lm_head is not stored
            raise RuntimeError(f"checkpoint {ckpt} does not match the model: missing {missing}, unexpected {unexpected}")
        if self.model.config.tie_word_embeddings:
            self.model.tie_weights()

    # --- one step ----------------------------------------------------------------------------
    def collect(self, step: int, batch_index: int) -> Rollout:
        cfg = self.cfg
        collect = collect_igrpo if cfg.algo == "igrpo" else collect_grpo
        per_step = cfg.prompts_per_step * cfg.gradient_accumulation_steps
        part = self.dist.shard(cfg.prompts_per_step)  # this process's prompts; a group never spans processes

        def draw(k: int) -> Rollout:  # k = 0: the step's batch; k >= 1: dynamic sampling's extra batches
            batch = batch_examples(self.examples, step, batch_index, cfg.prompts_per_step, per_step,
                                   cfg.seed + 7_919 * k)
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                    max_new_tokens=cfg.max_completion_length, prompt_offset=part.start,
                                    seed=(cfg.seed * 1_000_003 + step * 101 + batch_index * 7 + k * 7_919) % 2**31)
            return collect(self.engine, self.tokenizer, batch[part], cfg, step, params, self.reward_fns)
        ro = draw(0) if not cfg.dynamic_sampling else collect_dynamic(draw, part.stop - part.start,
                                                                      cfg.max_resample_batches)
        for row in ro.rows:
            row["group_index"] += part.start
        if self.dist.world > 1 and cfg.scale_rewards == "batch":
            self._use_global_batch_std(ro)
        return ro

    def _use_global_batch_std(self, ro: Rollout) -> None:
        """scale_rewards=batch divides by the std of the whole batch's rewards, all processes'. The
        local advantages divide by the local std: rescale them (and their rows) by the ratio."""
        eps = 1e-4   # losses.group_advantages' eps
        local = ro.rewards.double().std().item()
        rewards = [r for part in self.dist.gather(ro.rewards.tolist()) for r in part]
        ratio = (local + eps) / (torch.tensor(rewards, dtype=torch.float64).std().item() + eps)
        ro.adv = ro.adv * ratio
        for row in ro.rows:
            if row.get("advantage") is not None:
                row["advantage"] *= ratio

    def _micro_batches(self, ro: Rollout) -> list[slice]:
        """The rollout's micro-batches (`micro_batch_slices`), decided once per rollout. With a token
        cap and several processes, every process runs as many as the one that needs most: DDP and
        FSDP run collectives in every forward/backward, so the counts must agree."""
        if ro.micro is None:
            cfg = self.cfg
            lens = ([len(p) for p in ro.prompt_ids], [len(c) for c in ro.completion_ids])
            cap = token_cap(cfg.micro_batch_tokens, cfg.per_device_train_batch_size, ro.question_tokens, lens[1])
            ro.micro = micro_batch_slices(*lens, cfg.per_device_train_batch_size, cap)
            if cfg.micro_batch_tokens and self.dist.world > 1:
                most = max(self.dist.gather(len(ro.micro)))
                ro.micro = micro_batch_slices(*lens, cfg.per_device_train_batch_size, cap, at_least=most)
        return ro.micro

    def _unpadded(self, model):
        """Forwards (and their backward) over long sequences without a padding mask (attention.unpadded):
        for models whose attention is plain sdpa; others keep theirs."""
        return attention.unpadded(model) if attention.plain_sdpa(model) else contextlib.nullcontext()

    @torch.no_grad()
    def _frozen_logps(self, model, ro: Rollout) -> list[torch.Tensor]:
        out = []
        with self._unpadded(model):
            for sl in self._micro_batches(ro):
                logp, _, _ = sequence_logps(model, ro.prompt_ids[sl], ro.completion_ids[sl],
                                            pad_id=self.engine.pad_id, device=self.device, amp_dtype=self.amp,
                                            temperature=self.cfg.temperature, chunked=True)
                out.append(logp)
        return out

    def _reference_logps(self, ro: Rollout) -> list[torch.Tensor]:
        if self.cfg.use_peft:  # the base model is the reference: the same weights, adapters off
            with lora.adapters_disabled(self.model):
                return self._frozen_logps(self.model, ro)
        return self._frozen_logps(self.ref_model, ro)

    def update(self, rollouts: list[Rollout], old: list, ref: list) -> dict:
        """One optimizer update over all rollout batches of this step; skipped (or stopped, per
        cfg.nonfinite_policy) when rewards, loss or gradients are not finite (nonfinite.py)."""
        cfg = self.cfg
        problems = nonfinite.rollout_problems(rollouts)
        self.train_model.train()
        total_seqs = sum(len(r.completion_ids) for r in rollouts)
        # DAPO divides by the token count of the whole (all-process) batch (masked completions
        # excluded); DDP then averages the processes' gradients, so each share is scaled back up.
        total_tokens = max(1.0, self.dist.sum(sum(trained_tokens(r) for r in rollouts)))
        dapo_scale = self.dist.world if cfg.loss_type == "dapo" else 1
        n_micro = sum(1 for r in rollouts for _ in self._micro_batches(r))
        sums: dict[str, float] = {}
        meter = mismatch.MismatchMeter()   # engine vs trainer log-probs of the step's completion tokens
        for b, (ro, old_r, ref_r) in enumerate(zip(rollouts, old, ref)):
            for k, sl in enumerate(self._micro_batches(ro)):
                logp, mask, ent = sequence_logps(self.train_model, ro.prompt_ids[sl], ro.completion_ids[sl],
                                                 pad_id=self.engine.pad_id, device=self.device,
                                                 amp_dtype=self.amp, with_entropy=True,
                                                 temperature=cfg.temperature, chunked=True)
                old_logp = old_r[k] if old_r is not None else logp.detach()   # mu = 1: on-policy, ratio 1
                # every completion token (as TRL), so each process has some and the metrics are never null
                is_weight = mismatch.observe(meter, old_logp, None if ro.sampling_logps is None else
                                             ro.sampling_logps[sl], mask, **mismatch.options(cfg))
                if ro.loss_mask is not None:  # mask_truncated_completions: these sequences train nothing
                    mask = mask * ro.loss_mask[sl].to(mask)[:, None]                   # (b, T)
                loss, m = losses.policy_loss(
                    logp, old_logp, ro.adv[sl].to(self.device), mask, loss_type=cfg.loss_type,
                    epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
                    importance_sampling_level=cfg.importance_sampling_level,
                    max_completion_length=cfg.max_completion_length,
                    ref_logp=ref_r[k] if ref_r is not None else None, beta=cfg.beta, num_items=total_tokens,
                    is_weight=is_weight)
                weight = losses.accumulation_weight(cfg.loss_type, micro_seqs=sl.stop - sl.start,
                                                    total_seqs=total_seqs, n_micro=n_micro)
                self.dist.backward(loss * weight * dapo_scale)
                # loss and pg_loss add up as the gradient does (their process average is the batch's);
                # the other metrics are means over sequences
                m["loss"], m["pg_loss"] = loss.item() * weight * dapo_scale, m["pg_loss"] * weight * dapo_scale
                problems += nonfinite.loss_problems(loss.item(), b, k)
                m["entropy_sum"] = (ent * mask).sum().item()
                for key, v in m.items():
                    w = 1.0 if key in ("loss", "pg_loss", "entropy_sum") else (sl.stop - sl.start) / total_seqs
                    sums[key] = sums.get(key, 0.0) + float(v) * w
        grad_norm, grad_problems = nonfinite.clip_grad_norm(self.model.named_parameters(), cfg.max_grad_norm)
        skipped = nonfinite.decide(problems + grad_problems, self.dist, cfg.nonfinite_policy, self.step + 1)
        if skipped is None:   # a skipped update leaves weights, AdamW state and schedule as they were
            self.opt.step()
            self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        sums["entropy"] = self.dist.sum(sums.pop("entropy_sum")) / max(1, total_tokens)
        sums.update(grad_norm=grad_norm, skipped_nonfinite=float(skipped is not None), nonfinite=skipped)
        return {**sums, **meter.result(self.dist.gather)}

    def train_step(self, step: int) -> dict:
        cfg, t0 = self.cfg, time.perf_counter()
        with self.dist.full_weights(self.model):   # FSDP: the engine generates with gathered weights
            rollouts = [self.collect(step, b) for b in range(cfg.gradient_accumulation_steps)]
        gen_time = time.perf_counter() - t0
        old = [self._frozen_logps(self.model, r) if cfg.num_iterations > 1 else None for r in rollouts]
        ref = [self._reference_logps(r) if cfg.beta > 0 else None for r in rollouts]
        lr = self.sched.get_last_lr()[0]
        for _ in range(cfg.num_iterations):
            with self._unpadded(self.model):   # open over the backward too: checkpointed layers recompute there
                upd = self.update(rollouts, old, ref)
            if upd["skipped_nonfinite"]:   # the next update would start from the same weights
                break
        self.engine.sync_weights(self.model)  # no-op for the transformers engine (same model object)
        step_time = time.perf_counter() - t0
        stats = _merge_stats([r.stats for r in rollouts])
        counts = {"trained": sum(len(r.completion_ids) for r in rollouts),
                  "drafts": sum(1 for r in rollouts for row in r.rows if row["stage"] == "draft")}
        row = self.dist.reduce_metrics({"step": step, "lr": lr, **upd, **stats}, counts,
                                       summed=SUMMED_METRICS, pooled_stds=POOLED_STDS)
        tokens = row.pop("generated_tokens")
        row.update(gen_time_s=gen_time, step_time_s=step_time, tokens_per_s=tokens / step_time)
        rows = [r for ro in rollouts for r in ro.rows] if cfg.log_completions else []
        if self.dist.world > 1:   # every process's rows, in the order one process writes them
            rows = sorted((r for part in self.dist.gather(rows) for r in part),
                          key=lambda r: (STAGE_ORDER.get(r["stage"], 9), r["group_index"]))
        if self.dist.is_main:
            if cfg.log_completions:
                records.write_rollouts(self.run_dir, step, rows)
            records.append_metrics(self.run_dir, row)
            self.trackers.log(row)   # report_to: a mirror of the row just written
        return row

    def train(self) -> Path:
        cfg = self.cfg
        self.maybe_resume()
        self._status("running")
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"{cfg.algo} {cfg.run_name}", unit="step",
                   disable=not self.dist.is_main)
        try:
            while self.step < cfg.max_steps:
                row = self.train_step(self.step + 1)
                self.step += 1
                if self.step % cfg.save_steps == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
                self._status("running")
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward_mean']:.3f}", ent=f"{row['entropy']:.2f}")
                for cb in self.callbacks:
                    cb(self.step, row)
        except BaseException as exc:
            state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            self._status(state, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
            self.trackers.close()
        self._status("finished")
        return self.run_dir

    def _status(self, state: str, error: str | None = None) -> None:
        if self.dist.is_main:
            records.write_status(self.run_dir, state, self.step, self.cfg.max_steps, error)


STAGE_ORDER = {"draft": 0, "refine": 1, "grpo": 1}   # rollout rows: drafts first, as collect_igrpo emits
POOLED_STDS = {"reward_std": ("reward_mean", "trained"), "refine_reward_std": ("refine_reward_mean", "trained"),
               "draft_reward_std": ("draft_reward_mean", "drafts")}   # std -> (its mean, its count)


def _merge_stats(stats: list[dict]) -> dict:
    """Average rollout stats over accumulation batches (counts are summed)."""
    summed = set(SUMMED_METRICS)
    out = {}
    for key in stats[0]:
        vals = [s[key] for s in stats if s.get(key) is not None]
        out[key] = (sum(vals) if key in summed else sum(vals) / len(vals)) if vals else None
    return out


def train(cfg: Config, callbacks: list[Callback] | None = None,
          custom_rewards: dict[str, tuple[RewardFn, float]] | None = None) -> Path:
    """Train (or resume) one run; returns its run directory. custom_rewards: {name: (fn, weight)}."""
    return Trainer(cfg, callbacks, custom_rewards).train()
