"""Rollout engines: turn prompt token ids into sampled completions.

`RolloutEngine` is the Protocol the trainer and evaluator use. `TransformersEngine` samples with the
policy model itself (`generate`, KV cache, left padding), so weight sync is a no-op; it runs on CPU
and GPU. The vLLM engine lives in `engine_vllm.py`, the only module that imports vllm.

Completion conventions (shared by every engine):
- a completion ends at its first EOS, and that EOS is part of the completion (and of the loss);
  everything after it is discarded, so padding is never confused with EOS;
- finish_reason is "stop" when EOS was produced, "length" when max_new_tokens ran out;
- text is decoded with special tokens removed;
- the EOS set is the model's generation config's EOS ids plus the tokenizer's (`merge_eos_ids`);
- sampling uses temperature / top-p / top-k / max new tokens / EOS and nothing else: settings a
  checkpoint ships in its generation_config.json (repetition_penalty, no_repeat_ngram_size,
  min_length, ...) would make the samples come from a policy the loss does not model.

Seeding: every prompt gets its own seed from `prompt_seeds(call seed, global prompt index)`, and
sample k of that prompt its own noise stream. A completion therefore depends only on (seed, prompt,
k) and the weights, never on which other prompts share the batch, the generation batch size, or
which process of a multi-process run samples it: 2 processes produce exactly the rollouts of 1.
The transformers engine samples by the Gumbel-max trick (`SeededSampler`): the distribution is
transformers' own temperature/top-k/top-p warpers, and argmax(log p + Gumbel noise) is an exact
sample from it, with the noise drawn from each row's own generator.

Deliberately left out: beam search, logit processors beyond temperature/top-p/top-k.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Completion:
    prompt_index: int       # index into the prompts list passed to generate
    ids: list[int]          # completion token ids (EOS included when finish_reason == "stop")
    text: str
    finish_reason: str      # "stop" | "length"


@dataclass
class SamplingParams:
    n: int = 1                  # completions per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0              # 0 disables
    max_new_tokens: int = 64
    greedy: bool = False
    seed: int = 0               # call seed; each prompt's own seed is prompt_seeds(seed, offset + j)
    prompt_offset: int = 0      # global index of prompts[0] (a process's shard of a larger batch)


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        """len(prompts) * n completions, grouped by prompt: prompt 0's n samples come first."""

    def sync_weights(self, model) -> None:
        """Make the engine sample from `model`'s current weights."""


def prompt_seeds(call_seed: int, num_prompts: int, offset: int = 0) -> list[int]:
    """One 62-bit seed per prompt: a hash of (call seed, global prompt index offset + j).

    Hashing spreads the seeds of all prompts, stages (call seeds s and s + 1) and steps over 2^62
    values, so no two prompts share a noise stream in practice (vLLM gives sample i seed_j + i).
    """
    return [int.from_bytes(hashlib.blake2b(f"{call_seed}:{offset + j}".encode(), digest_size=8).digest(), "big") >> 2
            for j in range(num_prompts)]


class SeededSampler:
    """A logits processor that turns greedy decoding into exact sampling with per-row noise.

    scores -> transformers' temperature / top-k / top-p warpers (the same distribution `do_sample`
    draws from) -> log-softmax + Gumbel(0, 1) noise from the row's own generator. argmax of the
    result is a sample from the warped softmax (Gumbel-max trick), and row b's noise depends only on
    its generator, i.e. on (prompt seed, sample index).
    """

    def __init__(self, params: SamplingParams, generators: list[torch.Generator]):
        from transformers import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                  TopPLogitsWarper)
        warpers = [TemperatureLogitsWarper(params.temperature)]
        if params.top_k:
            warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
        self.warpers, self.generators = LogitsProcessorList(warpers), generators

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = self.warpers(input_ids, scores.float())                          # (B, V), -inf = removed
        logp = torch.log_softmax(scores, dim=-1)                                  # (B, V)
        u = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])  # (B, V)
        gumbel = -torch.log(-torch.log(u.clamp_(min=torch.finfo(u.dtype).tiny)))  # (B, V)
        return logp + gumbel.to(logp.device)                                      # (B, V)


def row_generators(seeds: list[int], samples: list[int]) -> list[torch.Generator]:
    """One CPU generator per row, seeded by (prompt seed, sample index)."""
    return [torch.Generator().manual_seed((seed + 0x9E3779B97F4A7C15 * (k + 1)) % 2**63)
            for seed, k in zip(seeds, samples)]


def cut_at_eos(ids: list[int], eos_ids: set[int]) -> tuple[list[int], str]:
    """Keep tokens up to and including the first EOS."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1], "stop"
    return ids, "length"


def eos_token_ids(model, tokenizer) -> set[int]:
    return merge_eos_ids(getattr(model, "generation_config", None), tokenizer)


def merge_eos_ids(generation_config, tokenizer) -> set[int]:
    """EOS ids of a generation config (may be None) plus the tokenizer's; one set for every engine."""
    ids = set()
    for src in (generation_config, tokenizer):
        eos = getattr(src, "eos_token_id", None)
        if eos is not None:
            ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    if not ids:
        raise ValueError("model and tokenizer define no eos_token_id; completions could never stop")
    return ids


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def build_generation_config(params: SamplingParams, eos_ids: set[int], pad_id: int):
    """An explicit GenerationConfig holding only our sampling settings (nothing from a checkpoint)."""
    from transformers import GenerationConfig
    common = dict(max_new_tokens=params.max_new_tokens, eos_token_id=sorted(eos_ids), pad_token_id=pad_id,
                  use_cache=True)
    if params.greedy:
        return GenerationConfig(do_sample=False, **common)
    # top_k must be 0, not None: None would fall back to transformers' global default of 50.
    return GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                            top_k=params.top_k, **common)


@contextmanager
def only_generation_config(model, gen_config):
    """Make `gen_config` the model's generation config for one `generate` call.

    Passing generation_config= is not enough: generate fills every field left None (bad_words_ids,
    suppress_tokens, min_new_tokens, ...) from model.generation_config, i.e. from the checkpoint.
    """
    saved = model.generation_config
    model.generation_config = gen_config
    try:
        yield
    finally:
        model.generation_config = saved


class TransformersEngine:
    """Samples with the policy itself through `model.generate`, under the trainer's autocast dtype."""

    def __init__(self, model, tokenizer, batch_size: int = 128, amp_dtype: torch.dtype | None = None):
        self.model, self.tokenizer, self.batch_size, self.amp_dtype = model, tokenizer, batch_size, amp_dtype
        self.eos_ids = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.eos_ids))

    def sync_weights(self, model) -> None:
        self.model = model

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        flat = [(i, p) for i, p in enumerate(prompts) for _ in range(params.n)]
        out: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        # Per-prompt seeds from (call seed, global prompt index): see the module docstring.
        seeds = prompt_seeds(params.seed, len(prompts), params.prompt_offset)
        sample_of = [k for _ in prompts for k in range(params.n)]
        gen_config = build_generation_config(SamplingParams(**{**params.__dict__, "greedy": True}), self.eos_ids,
                                             self.pad_id)  # sampling happens in SeededSampler
        amp = torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)
        for start in range(0, len(flat), self.batch_size):
            chunk = flat[start: start + self.batch_size]
            ids, mask = left_pad([p for _, p in chunk], self.pad_id, device)
            extra = {}
            if not params.greedy:
                gens = row_generators([seeds[pi] for pi, _ in chunk], sample_of[start: start + len(chunk)])
                extra["logits_processor"] = [SeededSampler(params, gens)]
            with only_generation_config(self.model, gen_config), amp:
                gen = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config,
                                          **extra)
            new = gen[:, ids.shape[1]:].tolist()
            for (pi, _), toks in zip(chunk, new):
                toks, reason = cut_at_eos(toks, self.eos_ids)
                text = self.tokenizer.decode(toks, skip_special_tokens=True)
                out.append(Completion(pi, toks, text, reason))
        self.model.train(was_training)
        return out
