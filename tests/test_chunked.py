"""Chunked log-probs/entropy (chunked.chunked_token_logps, trainer.sequence_logps) equal the full-logits
reference in values and gradients, and never keep a (B, T, V) tensor for backward."""
import functools

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from igrpo_core import losses
from igrpo_core.chunked import CHUNK_ELEMENTS, _logsumexp_into, chunked_token_logps
from igrpo_core import trainer as T
from igrpo_core.models import load_model
from igrpo_core.prompts import render_prompt

CPU = torch.device("cpu")


def _reference(hidden, weight, bias, target, temperature):
    logits = torch.nn.functional.linear(hidden, weight, bias) / temperature    # (B, T, V)
    return losses.selective_log_softmax(logits, target), losses.token_entropy(logits.detach())


@pytest.mark.parametrize("use_bias,temperature,rows", [(False, 1.0, 4), (True, 0.7, 5), (False, 1.3, 1000)])
def test_chunked_equals_reference_values_and_gradients(use_bias, temperature, rows):
    g = torch.Generator().manual_seed(0)
    B, Tn, H, V = 3, 7, 16, 50
    hidden = torch.randn(B, Tn, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    bias = torch.randn(V, generator=g, requires_grad=True) if use_bias else None
    target = torch.randint(0, V, (B, Tn), generator=g)
    upstream = torch.randn(B, Tn, generator=g)
    params = [hidden, weight] + ([bias] if use_bias else [])
    logp, ent = chunked_token_logps(hidden, weight, bias, target, temperature=temperature,
                                    with_entropy=True, rows=rows)
    grads = torch.autograd.grad((logp * upstream).sum(), params)
    ref_logp, ref_ent = _reference(hidden, weight, bias, target, temperature)
    ref_grads = torch.autograd.grad((ref_logp * upstream).sum(), params)
    torch.testing.assert_close(logp, ref_logp)
    torch.testing.assert_close(ent, ref_ent)
    assert not ent.requires_grad
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_logsumexp_is_atens_to_the_bit():
    """The chunk's logsumexp is computed in place as ATen computes torch.logsumexp, so the trainer's
    log-probs (and the demo's figures) did not move when the buffers came in; -inf rows included."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(37, 1001, generator=g) * 30
    z[5] = -float("inf")
    z[7, ::2] = -float("inf")
    e = torch.empty_like(z)
    lse, total = _logsumexp_into(z.clone(), e)
    assert torch.equal(lse, torch.logsumexp(z, dim=-1))
    torch.testing.assert_close(total, torch.exp(z - z.amax(-1, keepdim=True).nan_to_num(0, 0, 0)).sum(-1))


class _BigAllocations(TorchDispatchMode):
    """Counts op results of at least `numel` elements that are new memory (not an input, not out=)."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs))
                if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() >= self.numel and t.untyped_storage().data_ptr() not in seen:
                self.count += 1
        return out


@pytest.mark.parametrize("with_entropy", [True, False])
def test_forward_and_backward_take_three_chunk_buffers_whatever_the_chunk_count(with_entropy):
    """Two (rows, V) buffers in forward, one in backward, for 12 chunks: fresh chunk-sized tensors per
    chunk (five or six before the buffers) are what glibc kept, up to 4 GB of RSS per GRPO step."""
    g = torch.Generator().manual_seed(2)
    rows, V, H = 8, 3000, 4   # H < rows: the (V, H) weight gradient is smaller than a chunk
    hidden = torch.randn(12 * rows, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    target = torch.randint(0, V, (12 * rows,), generator=g)
    with _BigAllocations(rows * V) as fwd:
        logp, _ = chunked_token_logps(hidden, weight, None, target, with_entropy=with_entropy, rows=rows)
    with _BigAllocations(rows * V) as bwd:
        logp.sum().backward()
    assert (fwd.count, bwd.count) == (2, 1)


def test_chunked_under_bf16_autocast_is_close_to_reference():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 9, 32, generator=g, requires_grad=True)
    weight = torch.randn(64, 32, generator=g, requires_grad=True) * 0.1
    target = torch.randint(0, 64, (2, 9), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, _ = chunked_token_logps(hidden, weight, None, target, temperature=0.9, rows=4)
        ref, _ = _reference(hidden, weight, None, target, 0.9)
    gh, gw = torch.autograd.grad(logp.sum(), [hidden, weight])
    rh, rw = torch.autograd.grad(ref.sum(), [hidden, weight])
    torch.testing.assert_close(logp, ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gh, rh, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(gw, rw, atol=3e-2, rtol=3e-2)


@pytest.fixture(scope="module")
def tiny(tiny_model_path, tiny_tokenizer):
    torch.set_num_threads(1)
    return load_model(tiny_model_path, tiny_tokenizer, device=CPU, dtype=torch.float32)


def _batch(tok):
    prompts = [render_prompt(tok, f"Compute {i}+{i * 3}.", None) for i in range(1, 5)]
    completions = [tok.encode(f" {i} plus {i * 3} is {i * 4}", add_special_tokens=False)[: 3 + 2 * i]
                   for i in range(1, 5)]
    return prompts, completions


def test_sequence_logps_equals_reference(tiny, tiny_tokenizer):
    prompts, comps = _batch(tiny_tokenizer)
    kw = dict(pad_id=tiny_tokenizer.pad_token_id, device=CPU, amp_dtype=None, with_entropy=True, temperature=0.8)
    out, ref = [], []
    chunked = functools.partial(T.sequence_logps, chunked=True)
    for fn, store in ((chunked, out), (T.reference_sequence_logps, ref)):
        tiny.zero_grad()
        logp, mask, ent = fn(tiny, prompts, comps, **kw)
        ((logp * mask).sum() / mask.sum()).backward()
        store += [logp.detach(), mask, ent] + [p.grad.clone() for p in tiny.parameters()]
    tiny.zero_grad()
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _largest_saved(fn, model, prompts, comps) -> int:
    """Numel of the largest tensor autograd saves for backward, parameters aside."""
    params = {p.data_ptr() for p in model.parameters()}
    sizes = [0]

    def pack(t):
        if t.data_ptr() not in params:
            sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(model, prompts, comps, pad_id=0, device=CPU, amp_dtype=None, with_entropy=True)
    return max(sizes)


def test_sequence_logps_keeps_no_full_logits_for_backward():
    """A random Llama with a large vocabulary (4,000) and small everything else: autograd saves nothing
    of (B, T, V) size; the reference saves its logits (so this check can fail)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    V = 4000
    model = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    prompts = [torch.randint(1, V, (n,)).tolist() for n in (5, 3, 7)]
    comps = [torch.randint(1, V, (n,)).tolist() for n in (20, 12, 16)]
    full = len(comps) * 20 * V
    assert _largest_saved(T.reference_sequence_logps, model, prompts, comps) >= full
    chunked = functools.partial(T.sequence_logps, chunked=True)
    assert _largest_saved(chunked, model, prompts, comps) <= CHUNK_ELEMENTS
    assert _largest_saved(chunked, model, prompts, comps) < full // 20   # decoder activations only
    assert _largest_saved(T.sequence_logps, model, prompts, comps) >= full   # default: the model's logits


def test_chunked_prompt_positions_get_zero_gradient(tiny, tiny_tokenizer):
    """As test_trainer's draft-gradient test, for the chunked path: hidden states at positions that
    predict prompt (draft) tokens get exactly zero gradient; completion positions do not."""
    prompts, comps = _batch(tiny_tokenizer)
    seen = []

    def keep(_module, _args, out):
        out.last_hidden_state.retain_grad()
        seen.append(out.last_hidden_state)

    handle = tiny.get_decoder().register_forward_hook(keep)
    try:
        logp, mask, _ = T.sequence_logps(tiny, prompts, comps, pad_id=tiny_tokenizer.pad_token_id, device=CPU,
                                         amp_dtype=None, chunked=True)
        (logp * mask).sum().backward()
    finally:
        handle.remove()
        tiny.zero_grad()
    grad = seen[-1].grad                                                     # (B, Tp+T, H)
    Tp = max(map(len, prompts))
    assert grad[:, : Tp - 1].abs().max().item() == 0.0
    assert grad[:, Tp - 1:].abs().max().item() > 0.0
