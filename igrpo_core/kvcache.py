"""Decode KV caches for the engine's loop (issue 10): written in place, and a prompt held once.

`buffered`: transformers' DynamicCache whose layers write each step into preallocated buffers
instead of concatenating (DynamicLayer copies the whole cache at every decode step).

`shared_prefix`: the n samples of a prompt (GRPO's group, iGRPO's drafts, and the refinements of one
question + draft) share the prompt's keys and values. Copied into each sample's row, every decode
step reads the prompt n times: at iGRPO's stage 2, where the prompt holds the question and a whole
draft, that is most of the attention's memory traffic and of the cache. This cache keeps the prompt
once, (U, kv heads, P, d) for U distinct prompts, and per row only what the row generated,
(B, kv heads, t, d) with B = U * n; a decode step's attention (`attention`) is

    scores = [q . K_prompt(u)  |  q . K_own(b)] * scaling      (the n * g queries of a prompt in one matmul)
    out    = softmax(scores + mask) @ [V_prompt(u) ; V_own(b)]

the same softmax over the same keys as the copied cache (eager attention's order: float32 softmax,
then the query dtype), with different float rounding than the fused sdpa kernel, so a sample can
differ from the copied cache's only where a uniform lands within ~1e-7 of a token's cdf boundary.
Used only where it is the same maths: the model's attention is transformers' sdpa (the prefill still
runs through it), its cache is plain full attention (no sliding window), no logit soft-capping, and
every prompt has the same number of rows, two or more. `attention.plain_sdpa` says so for the model;
the engine checks the rows; else it copies.
"""
from __future__ import annotations

import functools

import torch

from igrpo_core.attention import switched

NAME = "igrpo_shared_prefix"


def buffered(model, capacity: int):
    """transformers' DynamicCache whose plain layers write into preallocated (B, heads, capacity, d)
    buffers instead of concatenating: DynamicLayer copies the whole cache at every decode step
    (O(length) per step, O(length^2) per completion, and a fresh allocation each time). Untouched
    capacity costs no memory on CPU (pages are mapped when first written)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer
    cache = DynamicCache(config=model.config)
    cache.layers = [_buffered_layer_class()(capacity) if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


@functools.cache
def _buffered_layer_class():
    from transformers.cache_utils import DynamicLayer

    class BufferedLayer(DynamicLayer):
        """keys/values are views [:, :, :length] of buffers; a cache whose tensors were replaced
        (reorder_cache, batch_select_indices) is copied into fresh buffers at its next update."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self._kbuf, self._vbuf = capacity, None, None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = 0 if self.keys is None or self.keys.numel() == 0 else self.keys.shape[-2]
            q, kb = key_states.shape[-2], self._kbuf
            if (kb is None or kb.shape[0] != key_states.shape[0] or n + q > kb.shape[-2]
                    or (n and self.keys.data_ptr() != kb.data_ptr())):
                shape = (*key_states.shape[:2], max(self.capacity, 2 * (n + q)), key_states.shape[-1])
                self._kbuf, self._vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
                if n:
                    self._kbuf[:, :, :n], self._vbuf[:, :, :n] = self.keys, self.values
            self._kbuf[:, :, n: n + q], self._vbuf[:, :, n: n + q] = key_states, value_states
            self.keys, self.values = self._kbuf[:, :, : n + q], self._vbuf[:, :, : n + q]
            return self.keys, self.values

    return BufferedLayer


def shared_prefix(model, capacity: int):
    """A DynamicCache whose layers hold the prefill's keys/values as the shared prompt and write each
    decode step into per-row buffers of `capacity` tokens (pages untouched are never mapped on CPU)."""
    from transformers import DynamicCache
    out = DynamicCache(config=model.config)
    out.layers = [_shared_layer_class()(capacity) for _ in out.layers]
    return out


@functools.cache
def _shared_layer_class():
    from transformers.cache_utils import DynamicLayer

    class SharedPrefixLayer(DynamicLayer):
        """First update (the prefill of the U distinct prompts): kept as the shared prompt and returned
        as is. Later updates (one token for each of the B rows): written into (B, heads, capacity, d)
        buffers; the returned keys carry this layer as `_igrpo_shared` for `attention`."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.prefix, self._kbuf, self._vbuf, self.length = capacity, None, None, None, 0
            self.reads = self.writes = 0      # decode steps written / read by `attention` (`check_read`)

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            if self.prefix is None:                                           # prefill: (U, h, P, d)
                self.prefix = (key_states, value_states)
                return key_states, value_states
            q = key_states.shape[-2]
            if self._kbuf is None:
                shape = (*key_states.shape[:2], self.capacity, key_states.shape[-1])  # (B, h, capacity, d)
                self._kbuf, self._vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
            if self.length + q > self.capacity:
                raise RuntimeError(f"shared-prefix cache full: {self.length} + {q} > capacity {self.capacity}")
            self._kbuf[:, :, self.length: self.length + q] = key_states
            self._vbuf[:, :, self.length: self.length + q] = value_states
            self.length += q
            self.writes += 1
            self.keys, self.values = self._kbuf[:, :, : self.length], self._vbuf[:, :, : self.length]
            self.keys._igrpo_shared = self
            return self.keys, self.values

        def get_seq_length(self) -> int:      # positions and masks count the prompt too
            return 0 if self.prefix is None else self.prefix[0].shape[-2] + self.length

        def reorder_cache(self, beam_idx):
            raise NotImplementedError("a shared-prefix cache cannot be reordered; use the copying cache")

    return SharedPrefixLayer


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
              **kwargs):
    """transformers attention-interface function: the shared-prefix decode step where `key` carries
    a prompt, sdpa everywhere else (the prefill, and any call outside a shared-prefix cache)."""
    layer = getattr(key, "_igrpo_shared", None)
    if layer is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.shape[2] != 1 or dropout:
        raise ValueError("shared-prefix attention decodes one token per row, without dropout")
    layer.reads += 1
    pk, pv = layer.prefix                                               # (U, h, P, d) each
    B, H, _, d = query.shape
    U, h, P, _ = pk.shape
    n, g, t = B // U, H // h, key.shape[-2]
    scaling = d ** -0.5 if scaling is None else scaling
    q = query.reshape(B, h, g, d)                                       # query head j reads kv head j // g
    qp = q.view(U, n, h, g, d).transpose(1, 2).reshape(U, h, n * g, d)  # a prompt's n*g queries together
    sp = torch.matmul(qp, pk.transpose(-1, -2))                         # (U, h, n*g, P)
    sp = sp.view(U, h, n, g, P).transpose(1, 2).reshape(B, h, g, P)
    so = torch.matmul(q, key.transpose(-1, -2))                         # (B, h, g, t)
    scores = torch.cat([sp, so], dim=-1) * scaling                      # (B, h, g, P + t)
    if attention_mask is not None:                                      # (B, 1, 1, P + t)
        mask = attention_mask[..., -(P + t):]
        scores = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    pp = probs[..., :P].reshape(U, n, h, g, P).transpose(1, 2).reshape(U, h, n * g, P)
    op = torch.matmul(pp, pv).view(U, h, n, g, d).transpose(1, 2).reshape(B, h, g, d)
    out = op + torch.matmul(probs[..., P:], value)                      # (B, h, g, d)
    return out.reshape(B, 1, H, d), None                                # (B, q=1, heads, d) like sdpa's


def check_read(cache) -> None:
    """Raise unless every decode step written to a shared-prefix cache was read by `attention`: a
    model whose attention bypassed it would have attended to the rows' own tokens only."""
    bad = [i for i, layer in enumerate(cache.layers) if layer.reads != layer.writes]
    if bad:
        raise RuntimeError(f"layers {bad} of {type(cache).__name__} were decoded without the shared-prefix attention "
                           "(their prompt was never read); set engine.share_prefix_kv = False for this model")


def attending(model):
    """Context: the model's attention is `attention` (masks are sdpa's) on every config its modules read."""
    from transformers.masking_utils import sdpa_mask
    return switched(model, NAME, attention, sdpa_mask)
