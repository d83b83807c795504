"""The update's unpadded attention (attention.py, issue 10): each row's causal attention over its own
span, no (B, 1, L, L) mask, the same maths as sdpa with the padding mask."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from igrpo_core import attention
from igrpo_core import trainer as T
from conftest import small_config

CPU = torch.device("cpu")


def _llama(heads=6, kv_heads=2, vocab=300, ckpt=False):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=16, eos_token_id=1,
                      pad_token_id=0, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).train()
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _batch(vocab=300, prompts=(5, 3, 7, 3, 5), comps=(20, 12, 16, 12, 20)):
    """Left-padded prompts and right-padded completions of different lengths; rows 1 and 3 (and 0
    and 4) share a span, so both the grouped and the single-row paths run."""
    g = torch.Generator().manual_seed(1)
    return ([torch.randint(2, vocab, (n,), generator=g).tolist() for n in prompts],
            [torch.randint(2, vocab, (n,), generator=g).tolist() for n in comps])


def _count_spans(monkeypatch, log: list):
    """Replace attention.Spans by a subclass that appends the threshold in force to `log` whenever one is made."""
    real = attention.Spans

    class Counted(real):
        def __init__(self, mask):
            log.append(attention.UNPADDED_MIN_TOKENS)
            super().__init__(mask)

    monkeypatch.setattr(attention, "Spans", Counted)


def _logps_and_grads(model, prompts, comps, unpadded: bool):
    model.zero_grad()
    ctx = attention.unpadded(model) if unpadded else torch.enable_grad()
    with ctx:
        logp, mask, ent = T.sequence_logps(model, prompts, comps, pad_id=0, device=CPU, amp_dtype=None,
                                           with_entropy=True, chunked=True)
        ((logp * mask).sum() / mask.sum() + (ent * mask).mean()).backward()
    return [logp.detach() * mask, ent * mask] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("heads,kv_heads,ckpt", [(6, 2, False), (4, 4, True), (6, 3, True)])
def test_unpadded_update_equals_the_masked_one(heads, kv_heads, ckpt, monkeypatch):
    """Log-probs, entropies and every parameter's gradient equal the padded forward's (sdpa with the
    padding mask) to float rounding, with grouped-query heads and with checkpointed layers (whose
    recomputation in backward goes through the spans again)."""
    monkeypatch.setattr(attention, "UNPADDED_MIN_TOKENS", 0)
    spans = []
    _count_spans(monkeypatch, spans)
    model = _llama(heads, kv_heads, ckpt=ckpt)
    prompts, comps = _batch()
    ref = _logps_and_grads(model, prompts, comps, unpadded=False)
    assert spans == []
    ours = _logps_and_grads(model, prompts, comps, unpadded=True)
    assert len(spans) == 1                     # one mask for the forward; checkpointing reuses it
    assert model.config._attn_implementation == "sdpa"
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert ref[2].abs().sum() > 0


def test_padded_positions_do_not_leak_into_the_rows():
    """Changing what sits in a row's padding changes none of its outputs."""
    B, H, L, d = 3, 4, 9, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, d, generator=g) for _ in range(3))
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[0, 2:7], mask[1, 0:9], mask[2, 4:9] = True, True, True
    out, none = attention.unpadded_attention(None, q, k, v, attention.Spans(mask), scaling=d ** -0.5)
    assert none is None and out.shape == (B, L, H, d)
    full = torch.ones(L, L, dtype=torch.bool).tril()
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=full & mask[:, None, None, :], scale=d ** -0.5).transpose(1, 2)
    valid = mask[:, :, None, None]
    torch.testing.assert_close(out * valid, ref * valid, atol=1e-6, rtol=1e-5)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))     # padded positions: zeros
    k2, v2 = k.clone(), v.clone()
    k2[0, :, :2], v2[2, :, :4] = 1e3, -1e3
    assert torch.equal(attention.unpadded_attention(None, q, k2, v2, attention.Spans(mask), scaling=d ** -0.5)[0], out)


def test_a_row_with_a_hole_is_refused():
    mask = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="contiguous"):
        attention.Spans(mask)


class _BigAllocations(TorchDispatchMode):
    """Counts results of `numel` elements or more (a (B, 1, L, L) mask is one)."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.count, self.ops = numel, 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.numel() >= self.numel:
                self.count += 1
                self.ops.append(str(func))
        return out


@pytest.mark.parametrize("ckpt", [False, True])
def test_no_quadratic_mask_is_built(ckpt, monkeypatch):
    """Forward and backward of 3 x ~1,000 columns allocate nothing of B * L * L / 2 elements or more under
    the switch; without it the padding mask alone is that large (so the check can fail). The vocabulary
    is small enough for the logits chunk to stay under that size."""
    monkeypatch.setattr(attention, "UNPADDED_MIN_TOKENS", 256)
    model = _llama(4, 4, ckpt=ckpt)
    prompts, comps = _batch(prompts=(5, 9, 7), comps=(1000, 990, 980))
    L = 9 + 1000
    for unpadded, expect_big in ((False, True), (True, False)):
        with _BigAllocations(3 * L * L // 2) as big:
            _logps_and_grads(model, prompts, comps, unpadded=unpadded)
        assert (big.count > 0) == expect_big, (unpadded, big.ops)


def test_short_sequences_keep_sdpas_bits(monkeypatch):
    """Under UNPADDED_MIN_TOKENS columns the switch changes nothing: the same bits as plain sdpa
    (the tiny world and its demo keep their figures)."""
    spans = []
    _count_spans(monkeypatch, spans)
    model = _llama(6, 2)
    prompts, comps = _batch()
    ref = _logps_and_grads(model, prompts, comps, unpadded=False)
    ours = _logps_and_grads(model, prompts, comps, unpadded=True)
    assert spans == [] and attention.UNPADDED_MIN_TOKENS == 1024
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_spans_reaching_sdpa_fail_loudly(monkeypatch):
    """A checkpointed layer recomputed after the switch was left would hand sdpa the spans: it raises
    instead of attending without the mask (the trainer keeps the switch open over the backward)."""
    monkeypatch.setattr(attention, "UNPADDED_MIN_TOKENS", 0)
    model = _llama(4, 4, ckpt=True)
    prompts, comps = _batch()
    with attention.unpadded(model):
        logp, mask, _ = T.sequence_logps(model, prompts, comps, pad_id=0, device=CPU, amp_dtype=None, chunked=True)
    with pytest.raises((TypeError, RuntimeError)):
        (logp * mask).sum().backward()


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_trainer_updates_unpadded_with_the_same_gradient(tmp_path, monkeypatch):
    """A GRPO update of the tiny model with gradient checkpointing: with the threshold at 0 every
    micro-batch goes unpadded, and the gradient equals the padded update's to float rounding."""
    grads, spans = [], []
    _count_spans(monkeypatch, spans)
    for threshold in (10 ** 9, 0):
        monkeypatch.setattr(attention, "UNPADDED_MIN_TOKENS", threshold)
        tr = T.Trainer(small_config(tmp_path / f"t{threshold}", algo="grpo", gradient_checkpointing=True,
                                    per_device_train_batch_size=8))
        ro = tr.collect(1, 0)
        ro.adv[:] = torch.linspace(-1, 1, len(ro.adv))
        captured = {}
        tr.opt.step = lambda: captured.update({n: p.grad.clone() for n, p in tr.model.named_parameters()})
        with tr._unpadded(tr.model):
            tr.update([ro], [None], [None])
        grads.append(captured)
    assert spans and set(spans) == {0}          # only the second run, once per micro-batch forward
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-4)
