"""Rollout engines: turn prompt token ids into sampled completions.

`RolloutEngine` is the Protocol the trainer and evaluator use. `TransformersEngine` samples with the
policy model itself (`generate`, KV cache, left padding), so weight sync is a no-op; it runs on CPU
and GPU. The vLLM engine lives in `engine_vllm.py`, the only module that imports vllm.

Completion conventions (shared by every engine):
- a completion ends at its first EOS, and that EOS is part of the completion (and of the loss);
  everything after it is discarded, so padding is never confused with EOS;
- finish_reason is "stop" when EOS was produced, "length" when max_new_tokens ran out;
- text is decoded with special tokens removed;
- `logprobs` holds each sampled token's log-prob under the distribution it was actually drawn from:
  logits / temperature, then top-k and top-p, renormalised over the kept tokens (vLLM's
  "processed_logprobs", as TRL asks for); the trainer compares them with its own (mismatch.py);
- the EOS set is the model's generation config's EOS ids plus the tokenizer's (`merge_eos_ids`);
- sampling uses temperature / top-p / top-k / max new tokens / EOS and nothing else: settings a
  checkpoint ships in its generation_config.json (repetition_penalty, no_repeat_ngram_size,
  min_length, ...) would make the samples come from a policy the loss does not model.

Seeding: every prompt gets its own seed from `prompt_seeds(call seed, global prompt index)`, and
sample k of that prompt its own random stream (`row_generators`). A completion therefore depends
only on (seed, prompt, k) and the weights, never on which other prompts share the batch, the
generation batch size, or which process of a multi-process run samples it: 2 processes produce
exactly the rollouts of 1.

Decoding: by default our own KV-cached loop (`decode="loop"`) instead of `model.generate`: the same
model calls and exactly transformers' temperature -> top-k -> top-p warpers (`warp_logits`),
without generate's per-step machinery. Samplers, both exact draws from the warped softmax with
each row's own generator: `sampler="inverse_cdf"` (default: one uniform per row and step; block
sums, one block's cumsum, searchsorted) and `sampler="multinomial"` (torch.multinomial row by row,
whose CPU kernel draws one exponential per vocabulary entry: most of decode time at a 49k
vocabulary). `decode="generate"` runs `model.generate` with the same per-row draw inside a logits
processor (`RowSampler`), so it yields the loop's samples token for token. The loop prefills each
distinct prompt once; its n samples then read one copy of the prompt's KV when the prompt has
`share_prefix_min_tokens` (256) or more (kvcache.py: an sdpa model with full attention), else the KV
is copied to each sample's row. bench/sampler.py on 2026-12-02 (128 x 64 tokens, 49k vocabulary,
2 CPU threads): held once 1.12x the copy's tokens/s at 256-token prompts and 1.14x at 512, its KV
cache 24 vs 80 MiB and 32 vs 144 MiB; at 30-100-token prompts the extra kernel launches of its
attention made decode 8-16% slower, hence the threshold.

Deliberately left out: beam search, logit processors beyond temperature/top-p/top-k.
"""
from __future__ import annotations

import contextlib
import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch

from igrpo_core import kvcache
from igrpo_core.attention import plain_sdpa


@dataclass
class Completion:
    prompt_index: int       # index into the prompts list passed to generate
    ids: list[int]          # completion token ids (EOS included when finish_reason == "stop")
    text: str
    finish_reason: str      # "stop" | "length"
    logprobs: list[float] | None = None  # per token: log-prob under the distribution it was sampled from
                                          # (logits / T, top-k, top-p, renormalised); None when greedy


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


def distinct_rows(prompt_of_row: list[int]) -> tuple[list[int], list[int]]:
    """Runs of equal prompt indices -> (the distinct prompt of each run, each row's run number):
    [3, 3, 5, 5, 5] -> ([3, 5], [0, 0, 1, 1, 1])."""
    distinct, rows = [], []
    for i, pi in enumerate(prompt_of_row):
        if not i or pi != prompt_of_row[i - 1]:
            distinct.append(pi)
        rows.append(len(distinct) - 1)
    return distinct, rows


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


def warp_logits(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """transformers' TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper (min_tokens_to_keep
    1), same order and same comparisons: scores (B, V) float32 -> (B, V) with removed tokens at -inf."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        kth = torch.topk(scores, min(top_k, scores.shape[-1]))[0][..., -1, None]   # (B, 1)
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)            # (B, V)
        remove = sorted_logits.softmax(-1).cumsum(-1) <= (1 - top_p)                 # (B, V)
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), -float("inf"))
    return scores


SAMPLERS = ("multinomial", "inverse_cdf")
BLOCK = 256  # inverse CDF: vocabulary blocks of this many tokens


def sample_inverse_cdf(scores: torch.Tensor, u: torch.Tensor | None = None,
                       probs: torch.Tensor | None = None) -> torch.Tensor:
    """One draw per row from softmax(scores) by inverse CDF: scores (B, V) -> ids (B,).

    u ~ U[0, total mass); the block whose cumulative mass first exceeds u (searchsorted, right=True),
    then the token inside it the same way. A zero-probability token has cdf[i] == cdf[i-1] and is
    never that index; float rounding that lands past a block's last token is pulled back to the
    block's last token of positive probability. Costs one softmax, a block sum and a (B, BLOCK)
    cumsum, instead of a (B, V) cumsum (a slow sequential scan) or V exponentials per row.
    `probs`: softmax(scores) when the caller already has it.
    """
    B, V = scores.shape
    probs = torch.softmax(scores, dim=-1) if probs is None else probs                # (B, V)
    nb = -(-V // BLOCK)
    if nb * BLOCK != V:
        probs = torch.nn.functional.pad(probs, (0, nb * BLOCK - V))                  # zero mass
    blocks = probs.view(B, nb, BLOCK)                                                # (B, nb, K)
    bcdf = blocks.sum(-1).cumsum(-1)                                                 # (B, nb)
    if u is None:   # uniforms in [0, 1), one per row (B, 1); default from torch's global generator
        u = torch.rand((B, 1), device=scores.device, dtype=probs.dtype)
    u = u.to(device=scores.device, dtype=probs.dtype) * bcdf[:, -1:]                 # (B, 1)
    bi = torch.searchsorted(bcdf, u, right=True).clamp_(max=nb - 1)                  # (B, 1)
    before = torch.where(bi > 0, bcdf.gather(1, (bi - 1).clamp(min=0)), torch.zeros_like(u))
    inner = blocks[torch.arange(B, device=scores.device), bi[:, 0]]                   # (B, K)
    j = torch.searchsorted(inner.cumsum(-1), u - before, right=True)                  # (B, 1)
    last = BLOCK - 1 - (inner > 0).flip(-1).int().argmax(-1, keepdim=True)           # (B, 1)
    return (bi * BLOCK + torch.minimum(j, last)).squeeze(1)                          # (B,)


def row_uniforms(generators: list[torch.Generator], steps: int) -> torch.Tensor:
    """(B, steps) float64 uniforms, row b's from its own generator: the values `steps` single draws
    would give (the CPU generator fills a float64 tensor element by element from one stream), in B
    calls instead of B per decode step."""
    return torch.stack([torch.rand(steps, generator=g, dtype=torch.float64) for g in generators])


def sample_next(scores: torch.Tensor, sampler: str, generators: list[torch.Generator],
                u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per row from warped scores (B, V), row b with its own generator: (ids (B,), their
    log-probs (B,) float32). The log-prob is the log of the softmax the draw used (removed tokens sit at
    -inf, so it is renormalised over the kept ones): one exp per logit and step instead of a second pass
    for a logsumexp, which was a sixth of decode time at a 49k vocabulary. A drawn token has positive
    probability, so its log-prob is finite. `u` (B, 1): the inverse-CDF sampler's uniforms, already
    drawn from the rows' generators (`row_uniforms`); None draws them here."""
    probs = torch.softmax(scores, dim=-1)                                             # (B, V)
    if sampler == "multinomial":
        rows = probs.cpu()
        ids = torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(rows, generators)])
        ids = ids.to(scores.device)                                                   # (B,)
    else:
        u = row_uniforms(generators, 1) if u is None else u                           # (B, 1)
        ids = sample_inverse_cdf(scores, u, probs=probs)                              # (B,)
    return ids, probs.gather(1, ids[:, None])[:, 0].log()


class RowSampler:
    """Logits processor for `model.generate`: warp, draw each row's token with its own generator,
    and leave only that token finite, so generate's greedy choice is the loop's sample. `logps`
    collects each step's sampled log-probs (B,)."""

    def __init__(self, params: SamplingParams, sampler: str, generators: list[torch.Generator]):
        self.params, self.sampler, self.generators = params, sampler, generators
        self.logps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        p = self.params
        warped = warp_logits(scores.float(), p.temperature, p.top_k, p.top_p)        # (B, V)
        nxt, logp = sample_next(warped, self.sampler, self.generators)               # (B,) each
        self.logps.append(logp)
        out = torch.full_like(scores, -float("inf"))                                  # (B, V)
        return out.scatter(1, nxt[:, None], 0.0)


class TransformersEngine:
    """Samples with the policy itself (our KV-cached decode loop, or `model.generate`), under the
    trainer's autocast dtype."""

    def __init__(self, model, tokenizer, batch_size: int = 128, amp_dtype: torch.dtype | None = None,
                 decode: str = "loop", sampler: str = "inverse_cdf"):
        if decode not in ("loop", "generate") or sampler not in SAMPLERS:
            raise ValueError(f"decode must be 'loop' or 'generate' and sampler one of {SAMPLERS}, "
                             f"got {decode!r}, {sampler!r}")
        self.model, self.tokenizer, self.batch_size, self.amp_dtype = model, tokenizer, batch_size, amp_dtype
        self.decode, self.sampler = decode, sampler
        self.share_prefill = True  # the loop prefills each distinct prompt once (False: once per sample)
        self.share_prefix_kv = True  # ... and its samples' decode steps read that one copy (kvcache.py)
        self.share_prefix_min_tokens = 256  # ... for prompts this long; shorter ones are copied to each row
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
                                             self.pad_id)  # sampling happens in RowSampler
        amp = torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)
        for start in range(0, len(flat), self.batch_size):
            chunk = flat[start: start + self.batch_size]
            # The n samples of a prompt are consecutive rows: the loop prefills each distinct prompt once.
            distinct, rows = distinct_rows([pi for pi, _ in chunk])
            ids, mask = left_pad([prompts[pi] for pi in distinct], self.pad_id, device)          # (U, Tp)
            expand = torch.tensor(rows, device=device)                                         # (B,) -> U
            if self.decode == "generate" or not self.share_prefill:                          # a row per sample
                ids, mask, expand = ids[expand], mask[expand], None
            gens = row_generators([seeds[pi] for pi, _ in chunk], sample_of[start: start + len(chunk)])
            with amp:
                if self.decode == "loop":
                    new, logps = self._decode_loop(ids, mask, params, gens, expand)
                else:
                    new, logps = self._generate(ids, mask, params, gens, gen_config)
            new = new.tolist()
            logps = logps.tolist() if logps is not None else [None] * len(new)
            for (pi, _), toks, lps in zip(chunk, new, logps):
                toks, reason = cut_at_eos(toks, self.eos_ids)
                text = self.tokenizer.decode(toks, skip_special_tokens=True)
                out.append(Completion(pi, toks, text, reason, None if lps is None else lps[:len(toks)]))
        self.model.train(was_training)
        return out

    def _generate(self, ids, mask, params: SamplingParams, generators, gen_config):
        """`model.generate` with RowSampler drawing the tokens: (new tokens (B, T), their log-probs or None)."""
        sampler = None if params.greedy else RowSampler(params, self.sampler, generators)
        extra = {} if sampler is None else {"logits_processor": [sampler]}
        with only_generation_config(self.model, gen_config):
            gen = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config, **extra)
        new = gen[:, ids.shape[1]:]                                                   # (B, T)
        if sampler is None or not sampler.logps:
            return new, None
        return new, torch.stack(sampler.logps, dim=1)[:, :new.shape[1]]               # (B, T)

    def _decode_loop(self, ids: torch.Tensor, mask: torch.Tensor, params: SamplingParams,
                     generators: list[torch.Generator], expand: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """New tokens (B, <= max_new_tokens), as `generate` would feed the model: a KV cache, position
        ids from the attention mask, pad fed after a row's EOS; stops when every row has ended.
        Also each token's sampled log-prob (B, T) (None when greedy; past a row's EOS: meaningless).
        `expand` (B,): row b continues prompt row expand[b] of `ids` (U, Tp): each distinct prompt is
        prefilled once and its KV cache and first logits are copied to its samples' rows, instead of
        prefilling the same prompt n times (None: `ids` already has one row per sample)."""
        model, device = self.model, ids.device
        B = ids.shape[0] if expand is None else expand.shape[0]
        if params.max_new_tokens <= 0:
            return ids.new_zeros((B, 0)), None
        U = ids.shape[0]
        # the prompt held once: samples share it (n >= 2), every prompt has n rows, and the model allows it
        shared = (expand is not None and self.share_prefix_kv and B > U and B % U == 0
                  and ids.shape[1] >= self.share_prefix_min_tokens
                  and torch.equal(expand, torch.arange(U, device=device).repeat_interleave(B // U))
                  and plain_sdpa(model))
        with kvcache.attending(model) if shared else contextlib.nullcontext():
            return self._decode(ids, mask, params, generators, expand, shared, B)

    def _decode(self, ids, mask, params, generators, expand, shared: bool, B: int):
        """`_decode_loop`'s body for its B rows; `shared`: the prompt's KV is held once
        (kvcache.shared_prefix) instead of copied."""
        model, device = self.model, ids.device
        if shared:
            cache = kvcache.shared_prefix(model, params.max_new_tokens)
        else:
            cache = kvcache.buffered(model, ids.shape[1] + params.max_new_tokens)
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)                         # (U, Tp)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1].float()         # (U, V)
        if expand is not None:                                                        # U rows -> B rows
            logits, mask, pos = logits[expand], mask[expand], pos[expand]
            if not shared:
                cache.reorder_cache(expand)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        alive = torch.ones(B, dtype=torch.bool, device=device)                        # (B,)
        Tp, T = mask.shape[1], params.max_new_tokens
        attn = torch.ones((B, Tp + T), dtype=mask.dtype, device=device)               # (B, Tp + T)
        attn[:, :Tp] = mask                      # step s >= 1 feeds attn[:, :Tp + s]: no per-step concat
        uniforms = None                          # inverse CDF: every step's uniforms in B draws
        if not params.greedy and self.sampler == "inverse_cdf":
            uniforms = row_uniforms(generators, T).to(device)                         # (B, T)
        # Outputs written into (B, T) buffers: per-step small tensors kept alive for the whole loop sat
        # between the freed (B, V) temporaries in glibc's heap and grew RSS by GBs on long completions.
        out = torch.full((B, T), self.pad_id, dtype=torch.long, device=device)       # (B, T)
        logps = None if params.greedy else torch.zeros((B, T), dtype=torch.float32, device=device)
        done, inp = T, None                      # inp: the tokens fed at step >= 1 (the last step's draws)
        for step in range(T):
            if step:
                logits = model(input_ids=inp, attention_mask=attn[:, :Tp + step], position_ids=pos,
                               past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
                if shared and step == 1:
                    kvcache.check_read(cache)
            if params.greedy:
                nxt = logits.argmax(-1)                                              # (B,)
            else:
                warped = warp_logits(logits, params.temperature, params.top_k, params.top_p)  # (B, V)
                u = None if uniforms is None else uniforms[:, step: step + 1]        # (B, 1)
                nxt, logps[:, step] = sample_next(warped, self.sampler, generators, u)  # (B,) each
            nxt = torch.where(alive, nxt, torch.full_like(nxt, self.pad_id))
            out[:, step] = nxt
            alive &= ~torch.isin(nxt, eos)
            if not alive.any():
                done = step + 1
                break
            inp, pos = nxt[:, None], pos[:, -1:] + 1
        return out[:, :done], (None if logps is None else logps[:, :done])           # (B, done) each
