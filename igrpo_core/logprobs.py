"""Log-probabilities (and entropy) of completion tokens under a model, at the sampling temperature.

`sequence_logps` packs left-padded prompts and right-padded completions so every completion starts
at the same column, with position ids exactly as `generate` computes them, and returns (B, T)
log-probs, mask and entropy. `chunked=True` computes the final hidden states once and the output
layer + log-softmax per chunk with recomputation in backward (chunked.chunked_token_logps), so no
(B, T, V) float32 tensor lives through autograd; `reference_sequence_logps` is the plain full-logits
version kept beside it and tested equal. Within `attention.unpadded(model)` (the trainer's update and
frozen log-probs) sequences of 1,024+ columns run each row's attention over its own span, without the
(B, 1, L, L) padding mask.

Deliberately left out: the loss itself (losses.py) and any knowledge of GRPO or iGRPO.
"""
from __future__ import annotations

import torch

from igrpo_core import losses
from igrpo_core.chunked import chunked_token_logps


def sequence_logps(model, prompt_ids, completion_ids, *, pad_id: int, device, amp_dtype, with_entropy=False,
                   temperature: float = 1.0, chunked: bool = False):
    """Log-probs (and entropy) of each completion token given its prompt, shape (B, T).

    Prompts are left-padded and completions right-padded, so every completion starts at the same
    column; position ids follow the attention mask exactly as `generate` computes them. Logits are
    divided by the sampling temperature (as TRL does), so the log-probs, and every ratio, KL and
    entropy built on them, are those of the policy the rollouts were actually sampled from.
    chunked=True (the trainer's choice): the decoder runs once; the output layer and log-softmax run
    chunk by chunk with recomputation in backward (chunked.chunked_token_logps), so no (B, T, V) logits
    tensor is ever held. Otherwise, and for models whose forward does more than a plain linear head
    (soft-capping, logit scaling, a LoRA'd head): `reference_sequence_logps`, the model's full logits
    (tests/test_chunked.py: equal values and gradients). The default stays the full-logits path for
    callers that inspect the model's logits.
    """
    inner = getattr(model, "module", model)   # a DDP/FSDP wrapper: its module answers the questions,
    head = inner.get_output_embeddings()      # while the forward still goes through the wrapper
    if not (chunked and _plain_output_layer(inner, head)):
        return reference_sequence_logps(model, prompt_ids, completion_ids, pad_id=pad_id, device=device,
                                        amp_dtype=amp_dtype, with_entropy=with_entropy, temperature=temperature)
    ids, attn, pos, Tp = _pack(prompt_ids, completion_ids, pad_id, device)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        hidden = _final_hidden(model, inner, ids, attn, pos)[:, Tp - 1:-1]    # (B, T, H) predicts completion
        logp, ent = chunked_token_logps(hidden, head.weight, head.bias, ids[:, Tp:], temperature=temperature,
                                        with_entropy=with_entropy)   # (B, T) each
    return logp, attn[:, Tp:].float(), ent


def _final_hidden(model, inner, ids, attn, pos) -> torch.Tensor:
    """The decoder's last hidden state (B, Tp+T, H), through model.forward (so wrappers such as DDP,
    hooks and gradient checkpointing apply as usual) with logits for one position only."""
    seen = []
    handle = inner.get_decoder().register_forward_hook(lambda _m, _a, out: seen.append(out.last_hidden_state))
    try:
        model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=1, use_cache=False)
    finally:
        handle.remove()
    return seen[-1]


def _plain_output_layer(model, head) -> bool:
    cfg = getattr(model, "config", None)
    scaled = any(getattr(cfg, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logit_scale",
                                                                         "logits_scaling"))
    return type(head) is torch.nn.Linear and hasattr(model, "get_decoder") and not scaled


def _pack(prompt_ids, completion_ids, pad_id: int, device):
    """Left-padded prompts then right-padded completions: ids, attention mask, positions (B, Tp+T), Tp."""
    B, Tp = len(prompt_ids), max(len(p) for p in prompt_ids)
    T = max(len(c) for c in completion_ids)
    ids = torch.full((B, Tp + T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, Tp + T), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, Tp - len(p): Tp] = torch.tensor(p)
        ids[i, Tp: Tp + len(c)] = torch.tensor(c)
        attn[i, Tp - len(p): Tp + len(c)] = 1
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)                                  # (B, Tp+T)
    return ids, attn, pos, Tp


def reference_sequence_logps(model, prompt_ids, completion_ids, *, pad_id: int, device, amp_dtype,
                             with_entropy=False, temperature: float = 1.0):
    """`sequence_logps` through the model's full (B, T, V) logits: the reference it is tested against."""
    ids, attn, pos, Tp = _pack(prompt_ids, completion_ids, pad_id, device)
    T = ids.shape[1] - Tp
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=T + 1,
                       use_cache=False).logits  # a KV cache is useless here and costs memory
    logits = logits[:, -(T + 1):-1] / temperature                             # (B, T, V) predicts completion
    target = ids[:, Tp:]                                                      # (B, T)
    logp = losses.selective_log_softmax(logits, target)                       # (B, T)
    mask = attn[:, Tp:].float()                                               # (B, T)
    ent = losses.token_entropy(logits.detach()) if with_entropy else None
    return logp, mask, ent
