"""Attention implementations of our own, registered with transformers' attention and mask interfaces (issue 10).

`plain_sdpa(model)`: whether the model's attention is transformers' sdpa over plain full attention (no
sliding window, no logit soft-capping, every module written against the attention interface): the
models for which both implementations here compute sdpa's maths.

`switched(model, name, attention, mask)`: within it, every config the model's modules read names
`name`, so their attention calls `attention` and their masks come from `mask`; restored on exit.
kvcache.py uses it for the decode loop's shared-prompt attention.

`unpadded(model)`: the update's attention without a padding mask. A training forward over
left-padded prompts and right-padded completions (logprobs._pack) needs a (B, 1, L, L) mask; sdpa's
CPU kernels then also build an additive float copy of it, so at B = 8, L = 2,078 the masks are 35 MB
bool + 138 MB float per layer call, and checkpointed layers build them again in backward. Every row's
tokens are one contiguous span [start, end) of its columns, so each row's attention is plain causal
attention over its own span: `attention` runs sdpa with is_causal=True on each group of rows that share
a span (no mask at all, and causal kernels skip the upper triangle), writes zeros at padded positions
(whose outputs no loss reads) and returns the same (B, L, heads, d) as sdpa's forward. The same maths
as the masked kernel, other float rounding (tests/test_attention.py: log-probs and gradients to 1e-5).
The mask function hands the layers a `Spans` object instead of a mask only for sequences of
`UNPADDED_MIN_TOKENS` or more (shorter ones gain little and keep sdpa's exact bits: the tiny world and
its demo are unchanged) and only for the plain causal mask of a forward without cache; otherwise it is
sdpa's mask and sdpa's attention, bit for bit. A `Spans` is no tensor: an sdpa call that received one
(the switch left before a checkpointed layer recomputed, say) fails loudly instead of misreading it.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

UNPADDED = "igrpo_unpadded"
UNPADDED_MIN_TOKENS = 1024   # columns (prompt + completion) from which the update's forward goes unpadded


def _configs(model) -> list:
    """Every distinct config object the model's modules read their attention implementation from
    (one for a plain causal LM; the same one under a peft wrapper; text and vision configs apart)."""
    found = {}
    for m in [model, *model.modules()]:
        c = getattr(m, "config", None)
        if c is not None and hasattr(c, "_attn_implementation"):
            found[id(c)] = c
    return list(found.values())


def plain_sdpa(model) -> bool:
    """Whether the model's attention is sdpa over full attention only (see the module docstring)."""
    from transformers import DynamicCache, PreTrainedModel
    from transformers.cache_utils import DynamicLayer
    if any(c._attn_implementation != "sdpa" or getattr(c, "attn_logit_softcapping", None) for c in _configs(model)):
        return False
    if not all(type(m)._supports_attention_backend for m in model.modules() if isinstance(m, PreTrainedModel)):
        return False   # attention written without transformers' interface would never call ours
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 - a config the cache cannot describe: not plain
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@contextmanager
def switched(model, name: str, attention, mask):
    """Within: `attention` and `mask` (registered under `name` with transformers' attention and mask
    interfaces) on every config the model's modules read. Restored on exit."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, mask)
    saved = [(c, c._attn_implementation) for c in _configs(model)]
    for c, _ in saved:
        c._attn_implementation = name
    try:
        yield
    finally:
        for c, impl in saved:
            c._attn_implementation = impl


class Spans:
    """Each row's tokens as one span of columns: `groups` maps (start, end) to the rows that have it."""

    def __init__(self, mask: torch.Tensor):
        mask = mask.bool()                                                        # (B, L)
        B, L = mask.shape
        n = mask.sum(-1)                                                          # (B,)
        start = torch.where(n > 0, mask.int().argmax(-1), torch.zeros_like(n))    # first valid column
        cols = torch.arange(L, device=mask.device)
        span = (cols >= start[:, None]) & (cols < (start + n)[:, None])           # (B, L)
        if not torch.equal(span, mask):
            raise ValueError("unpadded attention needs each row's tokens in one contiguous span of columns")
        self.shape = (B, L)
        self.groups: dict[tuple[int, int], list[int]] = {}
        for b, (s, k) in enumerate(zip(start.tolist(), n.tolist())):
            if k:
                self.groups.setdefault((s, s + k), []).append(b)


def unpadded_mask(**kw):
    """Mask interface: `Spans` for the plain causal mask of a forward without cache over
    UNPADDED_MIN_TOKENS or more columns; sdpa's mask for everything else."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask
    m, L = kw.get("attention_mask"), kw.get("kv_length")
    if (kw.get("mask_function") is causal_mask_function and isinstance(m, torch.Tensor) and m.ndim == 2
            and not kw.get("kv_offset") and kw.get("q_length", L) == L and m.shape[-1] == L
            and L >= UNPADDED_MIN_TOKENS):
        return Spans(m)
    return sdpa_mask(**kw)


def unpadded_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                       **kwargs):
    """Attention-interface function: causal sdpa per span group when handed `Spans`, sdpa's forward otherwise."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
    if not isinstance(attention_mask, Spans):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    B, H, L, d = query.shape
    if attention_mask.shape != (B, L) or key.shape[2] != L:
        raise ValueError(f"unpadded attention: spans {attention_mask.shape} for query {tuple(query.shape)} "
                         f"and key {tuple(key.shape)} (a forward without cache over whole sequences)")
    if kwargs.get("position_bias") is not None or kwargs.get("s_aux") is not None:
        raise ValueError("unpadded attention has no position bias or attention sinks")
    g = H // key.shape[1]
    out = query.new_zeros((B, L, H, d))                     # padded positions: zeros, read by no loss
    for (s, e), rows in attention_mask.groups.items():
        idx = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] + 1 == len(rows) else torch.tensor(rows)
        q, k, v = query[idx, :, s:e], key[idx, :, s:e], value[idx, :, s:e]     # (n, heads, e - s, d)
        o = torch.nn.functional.scaled_dot_product_attention(
            q, repeat_kv(k, g), repeat_kv(v, g), dropout_p=dropout, is_causal=True, scale=scaling)
        out[idx, s:e] = o.transpose(1, 2)                   # (n, e - s, heads, d)
    return out, None


def unpadded(model):
    """Context: the model's forwards over UNPADDED_MIN_TOKENS or more columns run `unpadded_attention`.
    Keep it open over the backward too: a checkpointed layer recomputes its attention there."""
    return switched(model, UNPADDED, unpadded_attention, unpadded_mask)
