"""Decode attention over a prompt's KV held once for all its samples (kvcache.py, issue 10)."""
import pytest
import torch

from igrpo_core import kvcache
from igrpo_core.attention import _configs, plain_sdpa
from igrpo_core.engine import SamplingParams, TransformersEngine
from igrpo_core.prompts import render_prompt


def _reference(query, pk, pv, sk, sv, mask):
    """sdpa over the copied cache: each row gets its prompt's keys, then its own; kv heads repeated."""
    B, H = query.shape[:2]
    n, g = B // pk.shape[0], H // pk.shape[1]
    k = torch.cat([pk.repeat_interleave(n, 0), sk], dim=2).repeat_interleave(g, 1)   # (B, H, P + t, d)
    v = torch.cat([pv.repeat_interleave(n, 0), sv], dim=2).repeat_interleave(g, 1)
    return torch.nn.functional.scaled_dot_product_attention(query, k, v, attn_mask=mask).transpose(1, 2)


class _Layer:
    def __init__(self, pk, pv):
        self.prefix, self.reads = (pk, pv), 0


@pytest.mark.parametrize("heads,kv_heads,with_mask", [(2, 2, True), (6, 2, True), (6, 3, False), (4, 1, True)])
def test_shared_prefix_attention_is_sdpa_over_the_copied_cache(heads, kv_heads, with_mask):
    """Same softmax over the same keys: equal to sdpa on each row's own copy of the prompt to float
    rounding, with grouped-query heads (query head j reads kv head j // g) and left-padded prompts."""
    g = torch.Generator().manual_seed(0)
    U, n, P, t, d = 3, 4, 7, 5, 16
    B = U * n
    pk, pv = (torch.randn(U, kv_heads, P, d, generator=g) for _ in range(2))
    sk, sv = (torch.randn(B, kv_heads, t, d, generator=g) for _ in range(2))
    query = torch.randn(B, heads, 1, d, generator=g)
    mask = None
    if with_mask:                                   # prompt u left-padded by u positions: rows of u share it
        mask = torch.ones(B, 1, 1, P + t, dtype=torch.bool)
        for b in range(B):
            mask[b, ..., : b // n] = False
    sk._igrpo_shared = _Layer(pk, pv)
    ours, none = kvcache.attention(None, query, sk, sv, mask, scaling=d ** -0.5)
    ref = _reference(query, pk, pv, sk, sv, mask)
    assert none is None and ours.shape == ref.shape == (B, 1, heads, d)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=1e-5)
    if with_mask:                                   # the padded positions really are ignored
        pk2 = pk.clone()
        pk2[1, :, 0] = 1e3
        sk2 = sk.clone()
        sk2._igrpo_shared = _Layer(pk2, pv)
        assert torch.equal(kvcache.attention(None, query, sk2, sv, mask, scaling=d ** -0.5)[0], ours)


def _prompts(tok, n):
    return [render_prompt(tok, f"Compute {i}+{i * 7}*3 and say why.", None) for i in range(1, n + 1)]


def _llama(heads, kv_heads, vocab):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=16, eos_token_id=1,
                      pad_token_id=0, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("which", ["tiny", "gqa"])
def test_engine_holds_each_prompt_once_with_the_copying_caches_samples(which, tiny_model_path, tiny_tokenizer,
                                                                      monkeypatch):
    """The default loop keeps one copy of each distinct prompt's KV (U rows, not U * n) and samples
    what the copying cache samples: same ids; log-probs to float rounding (the kernels differ).
    The model's attention implementation is sdpa again afterwards."""
    from igrpo_core.models import load_model
    torch.set_num_threads(1)
    model = (load_model(tiny_model_path, tiny_tokenizer, device=torch.device("cpu"), dtype=torch.float32)
             if which == "tiny" else _llama(6, 2, len(tiny_tokenizer)))
    eng = TransformersEngine(model, tiny_tokenizer, batch_size=64)
    eng.share_prefix_min_tokens = 0                            # these prompts are short
    p, params = _prompts(tiny_tokenizer, 6), SamplingParams(n=4, temperature=0.9, max_new_tokens=40, seed=2)
    made, real = [], kvcache.shared_prefix
    monkeypatch.setattr(kvcache, "shared_prefix", lambda m, cap: made.append(real(m, cap)) or made[-1])
    shared = eng.generate(p, params)
    assert model.config._attn_implementation == "sdpa"
    eng.share_prefix_kv = False
    copied = eng.generate(p, params)
    assert len(made) == 1                                      # only the shared run built one
    layer = made[0].layers[0]
    assert layer.prefix[0].shape[0] == 6 and layer._kbuf.shape[0] == 24      # 6 prompts once; 24 rows' own
    assert layer.prefix[0].shape[1] == model.config.num_key_value_heads
    assert [c.ids for c in shared] == [c.ids for c in copied]
    assert len({tuple(c.ids) for c in shared}) > 12                          # it really samples
    diffs = [abs(a - b) for x, y in zip(shared, copied) for a, b in zip(x.logprobs, y.logprobs)]
    assert max(diffs) < 1e-4 and len(diffs) > 200


def test_the_copying_cache_is_kept_where_sharing_would_not_be_the_same_maths(tiny_model_path, tiny_tokenizer,
                                                                            monkeypatch):
    """Prompts under share_prefix_min_tokens, uneven rows per prompt (a prompt's samples split across
    two batches), one sample per prompt, eager attention, or a sliding-window cache: the loop copies
    the prompt per row, as before."""
    torch.set_num_threads(1)
    made, real = [], kvcache.shared_prefix
    monkeypatch.setattr(kvcache, "shared_prefix", lambda m, cap: made.append(1) or real(m, cap))
    model = _llama(3, 3, len(tiny_tokenizer))
    eng = TransformersEngine(model, tiny_tokenizer, batch_size=40)
    eng.generate(_prompts(tiny_tokenizer, 5), SamplingParams(n=4, max_new_tokens=6, seed=1))   # short prompts
    assert made == [] and eng.share_prefix_min_tokens == 256
    eng.share_prefix_min_tokens = 0
    eng.generate(_prompts(tiny_tokenizer, 5), SamplingParams(n=4, max_new_tokens=6, seed=1))
    assert made == [1]                                         # the control: this call does share
    eng.batch_size = 10                                        # n 4: batches of rows 4+4+2 | 2+4+4
    eng.generate(_prompts(tiny_tokenizer, 5), SamplingParams(n=4, max_new_tokens=6, seed=1))
    eng.generate(_prompts(tiny_tokenizer, 5), SamplingParams(n=1, max_new_tokens=6, seed=1))   # nothing to share
    assert made == [1]
    assert plain_sdpa(model)
    model.config._attn_implementation = "eager"
    assert not plain_sdpa(model)
    model.config._attn_implementation = "sdpa"
    model.config.sliding_window, model.config.layer_types = 4, ["sliding_attention"] * 2
    assert not plain_sdpa(model)


def test_attention_outside_a_shared_cache_is_sdpa(tiny_model_path, tiny_tokenizer):
    """The registered function is sdpa for every call that does not carry a shared prompt (the
    prefill, a training forward): the same logits, bit for bit."""
    model = _llama(6, 2, len(tiny_tokenizer))
    ids = torch.tensor([_prompts(tiny_tokenizer, 1)[0]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with kvcache.attending(model):
            assert model.config._attn_implementation == kvcache.NAME
            ours = model(input_ids=ids).logits
    assert torch.equal(plain, ours) and model.config._attn_implementation == "sdpa"


def test_a_model_whose_attention_bypasses_the_shared_prompt_is_stopped_not_trusted(tiny_tokenizer, monkeypatch):
    """If the model's attention never read the shared prompt (here: an attention that ignores it, as
    one written without transformers' interface would), its decode steps would have attended to the
    rows' own tokens only, silently: the first decode step raises instead."""
    def bypass(module, query, key, value, attention_mask, scaling=None, **kwargs):
        key, value = (x.repeat_interleave(query.shape[1] // x.shape[1], 1) for x in (key, value))
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scaling)
        return out.transpose(1, 2), None

    model = _llama(6, 2, len(tiny_tokenizer))
    monkeypatch.setattr(kvcache, "attention", bypass)
    eng = TransformersEngine(model, tiny_tokenizer, batch_size=64)
    eng.share_prefix_min_tokens = 0
    with pytest.raises(RuntimeError, match="without the shared-prefix attention"):
        eng.generate(_prompts(tiny_tokenizer, 2), SamplingParams(n=2, max_new_tokens=5, seed=1))


def test_a_lora_wrapped_policy_shares_the_prompt_too(tiny_tokenizer):
    """Under peft (use_peft) the engine samples with the PeftModel: the switch reaches the base
    model's attention, and the samples are the copying cache's."""
    from igrpo_core.lora import apply_lora
    model = apply_lora(_llama(6, 2, len(tiny_tokenizer)), r=4, alpha=8, dropout=0.0, target_modules=None)
    with torch.no_grad():                                     # non-zero adapters: B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    assert plain_sdpa(model)
    eng = TransformersEngine(model, tiny_tokenizer, batch_size=64)
    eng.share_prefix_min_tokens = 0
    p, params = _prompts(tiny_tokenizer, 3), SamplingParams(n=4, temperature=0.9, max_new_tokens=30, seed=6)
    shared = eng.generate(p, params)
    eng.share_prefix_kv = False
    copied = eng.generate(p, params)
    assert [c.ids for c in shared] == [c.ids for c in copied]
    assert all(c._attn_implementation == "sdpa" for c in _configs(model))
