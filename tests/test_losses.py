"""Tests for igrpo_core.losses: hand-computed cases, invariants, reference vs vectorised.

Shape legend: P prompts, G group size, B = P*G sequences, T completion tokens, V vocab.
"""
import itertools
import math

import pytest
import torch

from igrpo_core.losses import (LOSS_TYPES, advantage_stats, group_advantages, masked_mean,
                               normalise, policy_loss, reference_policy_loss,
                               selective_log_softmax, token_entropy)

torch.set_num_threads(1)
D = torch.float64
LEVELS = ["token", "sequence"]
GRID = list(itertools.product(LOSS_TYPES, LEVELS))  # every loss_type x importance level


def tiny_batch():
    """Two sequences, lengths 3 and 1 (T = 3), old_logp = 0 so ratio = exp(logp).

    seq 0, A = +1, ratios 1.1, 1.5, 0.5 ; seq 1, A = -2, ratio 0.5 then two padding tokens.
    """
    ratios = torch.tensor([[1.1, 1.5, 0.5], [0.5, 1.0, 1.0]], dtype=D)  # (B, T)
    logp = ratios.log().requires_grad_()  # (B, T)
    old_logp = torch.zeros(2, 3, dtype=D)  # (B, T)
    adv = torch.tensor([1.0, -2.0], dtype=D)  # (B,)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=D)  # (B, T)
    return logp, old_logp, adv, mask


# Per-token losses at epsilon = 0.2, loss = -min(r*A, clip(r, 0.8, 1.2)*A):
#   seq 0 (A=+1): r=1.1 -> -min(1.1, 1.1) = -1.1 ; r=1.5 -> -min(1.5, 1.2) = -1.2 ;
#                 r=0.5 -> -min(0.5, 0.8) = -0.5          => sum -2.8 over 3 tokens
#   seq 1 (A=-2): r=0.5 -> -min(-1.0, -1.6) = +1.6         => sum +1.6 over 1 token
HAND_CASES = [
    # grpo: per-sequence means, then mean: (-2.8/3 + 1.6/1) / 2 = (2/3) / 2 = 1/3
    ("grpo", {}, 1.0 / 3.0),
    # bnpo / dapo: all tokens / unmasked tokens: (-2.8 + 1.6) / 4 = -0.3
    ("bnpo", {}, -0.3),
    ("dapo", {}, -0.3),
    # dapo with a global token count of 8 (e.g. two micro-batches): -1.2 / 8 = -0.15
    ("dapo", {"num_items": 8}, -0.15),
    # dr_grpo: all tokens / (B * max_completion_length) = -1.2 / (2 * 5) = -0.12
    ("dr_grpo", {"max_completion_length": 5}, -0.12),
]


@pytest.mark.parametrize("loss_type,kwargs,expected", HAND_CASES)
def test_hand_computed_normalisations(loss_type, kwargs, expected):
    logp, old_logp, adv, mask = tiny_batch()
    loss, metrics = policy_loss(logp, old_logp, adv, mask, loss_type=loss_type, epsilon=0.2,
                                **kwargs)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert metrics["pg_loss"] == pytest.approx(expected, abs=1e-12)
    # clipped tokens: r=1.5 with A>0 (high), r=0.5 with A<0 (low); 4 tokens in all
    assert metrics["clip_frac_high"] == pytest.approx(1 / 4)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 4)
    assert metrics["clip_frac"] == pytest.approx(2 / 4)
    assert metrics["ratio_mean"] == pytest.approx((1.1 + 1.5 + 0.5 + 0.5) / 4)
    assert metrics["kl"] == 0.0
    # num_items only affects dapo; the others ignore it so a trainer can always pass it
    if loss_type != "dapo":
        same, _ = policy_loss(logp, old_logp, adv, mask, loss_type=loss_type, num_items=1000,
                              **kwargs)
        assert same.item() == loss.item()
    ref_loss, _ = reference_policy_loss(logp, old_logp, adv, mask, loss_type=loss_type,
                                        epsilon=0.2, **kwargs)
    assert ref_loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("loss_type,level", GRID)
def test_equal_rewards_give_zero_gradient(loss_type, level):
    rewards = torch.tensor([[0.1, 0.1, 0.1, 0.1], [1.0, 1.0, 1.0, 1.0]], dtype=D)  # (P, G)
    adv = group_advantages(rewards).reshape(-1)  # (B,)
    assert torch.equal(adv, torch.zeros(8, dtype=D))
    torch.manual_seed(0)
    logp = (-torch.rand(8, 6, dtype=D)).requires_grad_()  # (B, T)
    old_logp = logp.detach() + 0.3 * torch.randn(8, 6, dtype=D)  # (B, T) off-policy too
    mask = torch.ones(8, 6, dtype=D)  # (B, T)
    mask[::2, 4:] = 0
    loss, _ = policy_loss(logp, old_logp, adv, mask, loss_type=loss_type,
                          importance_sampling_level=level, max_completion_length=6)
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))


def _extra(loss_type, T):
    return {"max_completion_length": T + 2} if loss_type == "dr_grpo" else {}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_on_policy_equals_reinforce(loss_type):
    """On-policy the ratio is 1: the loss value is the normalised -A (REINFORCE written with
    exp(logp - sg(logp)), whose value is 1), and the gradient equals that of -A * logp."""
    torch.manual_seed(1)
    B, T = 4, 5
    logp = (-torch.rand(B, T, dtype=D)).requires_grad_()  # (B, T)
    adv = torch.randn(B, dtype=D)  # (B,)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]],
                        dtype=D)  # (B, T)
    kw = _extra(loss_type, T)
    # old_logp is treated as a constant even when passed undetached (the same tensor as logp)
    for old_logp in (logp.detach().clone(), logp, None):
        loss, metrics = policy_loss(logp, old_logp, adv, mask, loss_type=loss_type, **kw)
        assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-12)
        assert metrics["clip_frac"] == 0.0
        (grad,) = torch.autograd.grad(loss, logp)
        per_token = -adv[:, None] * logp * mask  # (B, T)
        reinforce = normalise(per_token, mask, loss_type=loss_type, **kw)
        (grad_reinforce,) = torch.autograd.grad(reinforce, logp)
        expected_value = normalise(-adv[:, None] * mask, mask, loss_type=loss_type, **kw)
        assert loss.item() == pytest.approx(expected_value.item(), abs=1e-12)
        torch.testing.assert_close(grad, grad_reinforce, rtol=0, atol=1e-12)


def test_clipping_zeroes_gradient_and_uses_epsilon_high():
    # one token per case: r = 1.5 with A = +1, r = 0.7 with A = -1, r = 0.7 with A = +1
    logp = torch.tensor([[math.log(1.5)], [math.log(0.7)], [math.log(0.7)]],
                        dtype=D).requires_grad_()  # (B, T)
    old_logp = torch.zeros(3, 1, dtype=D)  # (B, T)
    adv = torch.tensor([1.0, -1.0, 1.0], dtype=D)  # (B,)
    mask = torch.ones(3, 1, dtype=D)  # (B, T)

    loss, m = policy_loss(logp, old_logp, adv, mask, epsilon=0.2)
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad[0, 0] == 0.0  # 1.5 > 1.2 with A > 0: clipped
    assert grad[1, 0] == 0.0  # 0.7 < 0.8 with A < 0: clipped
    assert grad[2, 0] != 0.0  # 0.7 < 0.8 with A > 0: min picks the unclipped r*A
    assert m["clip_frac_high"] == pytest.approx(1 / 3)
    assert m["clip_frac_low"] == pytest.approx(1 / 3)

    # asymmetric (DAPO clip-higher): 1 + 0.6 admits r = 1.5; the low bound stays 1 - 0.2
    loss, m = policy_loss(logp, old_logp, adv, mask, epsilon=0.2, epsilon_high=0.6)
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad[0, 0] == pytest.approx(-1.5 / 3)  # d(-r*A)/dlogp = -r*A, over B = 3 sequences
    assert grad[1, 0] == 0.0
    assert m["clip_frac_high"] == 0.0
    assert m["clip_frac_low"] == pytest.approx(1 / 3)


def test_gspo_sequence_ratio():
    logp, old_logp, _, mask = tiny_batch()
    adv = torch.tensor([1.0, 1.0], dtype=D)  # (B,)
    # wide epsilon so nothing clips: grpo loss = -mean_i(A_i * s_i)
    loss, m = policy_loss(logp, old_logp, adv, mask, epsilon=10.0,
                          importance_sampling_level="sequence")
    s0 = math.exp((math.log(1.1) + math.log(1.5) + math.log(0.5)) / 3)  # (0.825)^(1/3)
    s1 = 0.5  # one token: its own ratio
    assert loss.item() == pytest.approx(-(s0 + s1) / 2, abs=1e-12)
    assert m["ratio_mean"] == pytest.approx((3 * s0 + s1) / 4, abs=1e-12)
    # GSPO clips the whole sequence: at epsilon 0.2, s1 = 0.5 < 0.8 but A > 0, s0 ~ 0.938 inside
    _, m = policy_loss(logp, old_logp, -adv, mask, epsilon=0.2,
                       importance_sampling_level="sequence")
    assert m["clip_frac_low"] == pytest.approx(1 / 4)  # seq 1's single token


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gspo_on_policy_gradient_is_sequence_mean_reinforce(loss_type):
    torch.manual_seed(2)
    B, T = 4, 6
    logp = (-torch.rand(B, T, dtype=D)).requires_grad_()  # (B, T)
    adv = torch.randn(B, dtype=D)  # (B,)
    mask = (torch.arange(T)[None, :] < torch.tensor([6, 2, 4, 1])[:, None]).to(D)  # (B, T)
    kw = _extra(loss_type, T)
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, loss_type=loss_type,
                          importance_sampling_level="sequence", **kw)
    (grad,) = torch.autograd.grad(loss, logp)
    # sequence-level REINFORCE: -A_i * exp(mean_t logp - sg) broadcast to the sequence's tokens
    seq_mean = masked_mean(logp, mask, dim=-1)  # (B,)
    per_token = (-adv * (seq_mean - seq_mean.detach()).exp())[:, None].expand(B, T)  # (B, T)
    reinforce = normalise(per_token * mask, mask, loss_type=loss_type, **kw)
    (grad_reinforce,) = torch.autograd.grad(reinforce, logp)
    torch.testing.assert_close(grad, grad_reinforce, rtol=0, atol=1e-12)


def test_k3_kl():
    torch.manual_seed(3)
    B, T = 3, 4
    logp = (-torch.rand(B, T, dtype=D)).requires_grad_()  # (B, T)
    old_logp = logp.detach() + 0.1 * torch.randn(B, T, dtype=D)  # (B, T)
    adv = torch.randn(B, dtype=D)  # (B,)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=D)  # (B, T)
    base, m0 = policy_loss(logp, old_logp, adv, mask, loss_type="dapo")

    same, m = policy_loss(logp, old_logp, adv, mask, loss_type="dapo", beta=0.1,
                          ref_logp=logp.detach())
    assert m["kl"] == 0.0 and same.item() == pytest.approx(base.item(), abs=1e-15)

    ref_logp = logp.detach() + 0.5 * torch.randn(B, T, dtype=D)  # (B, T)
    with_kl, m = policy_loss(logp, old_logp, adv, mask, loss_type="dapo", beta=0.1,
                             ref_logp=ref_logp)
    assert m["kl"] > 0.0
    assert m["pg_loss"] == pytest.approx(m0["pg_loss"], abs=1e-15)
    # dapo normalises by unmasked tokens, as the masked-mean kl metric does
    assert with_kl.item() == pytest.approx(base.item() + 0.1 * m["kl"], abs=1e-12)
    d = ref_logp - logp.detach()  # (B, T)
    k3 = d.exp() - d - 1  # (B, T)
    assert bool((k3[mask.bool()] > 0).all())
    # grpo normalises kl per sequence like the policy term
    g0, _ = policy_loss(logp, old_logp, adv, mask)
    g1, _ = policy_loss(logp, old_logp, adv, mask, beta=0.1, ref_logp=ref_logp)
    expected = g0 + 0.1 * ((k3 * mask).sum(-1) / mask.sum(-1)).mean()
    assert g1.item() == pytest.approx(expected.item(), abs=1e-12)


COMBOS = list(itertools.product(LOSS_TYPES, LEVELS, [0.0, 0.04], [None, 0.28]))


@pytest.mark.parametrize("loss_type,level,beta,epsilon_high", COMBOS)
def test_reference_matches_vectorised(loss_type, level, beta, epsilon_high):
    torch.manual_seed(4)
    B, T = 6, 5
    lengths = torch.tensor([5, 3, 1, 0, 4, 2])  # includes an empty completion
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(D)  # (B, T)
    logp = (-2 * torch.rand(B, T, dtype=D)).requires_grad_()  # (B, T)
    old_logp = logp.detach() + 0.3 * torch.randn(B, T, dtype=D)  # (B, T) some tokens clip
    ref_logp = logp.detach() + 0.3 * torch.randn(B, T, dtype=D)  # (B, T)
    adv = torch.randn(B, dtype=D)  # (B,)
    adv[1] = 0.0
    kw = dict(loss_type=loss_type, importance_sampling_level=level, beta=beta,
              epsilon_high=epsilon_high, ref_logp=ref_logp, **_extra(loss_type, T))
    if loss_type == "dapo":
        kw["num_items"] = 23
    loss, m = policy_loss(logp, old_logp, adv, mask, **kw)
    ref, m_ref = reference_policy_loss(logp, old_logp, adv, mask, **kw)
    assert m["clip_frac"] > 0.0  # the clipped branch is exercised
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(loss, logp)
    (grad_ref,) = torch.autograd.grad(ref, logp)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)
    assert m.keys() == m_ref.keys()
    for key in m:
        assert m[key] == pytest.approx(m_ref[key], abs=1e-12), key


@pytest.mark.parametrize("loss_type,level", GRID)
def test_padding_gets_no_gradient_and_does_not_change_loss(loss_type, level):
    torch.manual_seed(5)
    B, T = 3, 5
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    base = -torch.rand(B, T, dtype=D)  # (B, T)
    old_logp = base + 0.2 * torch.randn(B, T, dtype=D)  # (B, T)
    ref_logp = base + 0.2 * torch.randn(B, T, dtype=D)  # (B, T)
    adv = torch.randn(B, dtype=D)  # (B,)
    kw = dict(loss_type=loss_type, importance_sampling_level=level, beta=0.05, ref_logp=ref_logp,
              **_extra(loss_type, T))
    logp = base.clone().requires_grad_()  # (B, T)
    loss, m = policy_loss(logp, old_logp, adv, mask, **kw)
    (grad,) = torch.autograd.grad(loss, logp)
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))
    assert bool((grad[mask] != 0).all())
    for junk in (123.0, float("nan"), float("-inf")):
        changed = base.clone()
        changed[~mask] = junk
        changed.requires_grad_()
        ref_changed = ref_logp.clone()
        ref_changed[~mask] = junk
        kw["ref_logp"] = ref_changed
        loss2, m2 = policy_loss(changed, old_logp, adv, mask, **kw)
        (grad2,) = torch.autograd.grad(loss2, changed)
        assert loss2.item() == loss.item()
        assert torch.equal(grad2, grad)
        assert m2 == m


def test_selective_log_softmax_matches_gather():
    torch.manual_seed(6)
    B, T, V = 3, 4, 11
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(B, T, V, dtype=dtype, requires_grad=True)  # (B, T, V)
        ids = torch.randint(V, (B, T))  # (B, T)
        got = selective_log_softmax(logits, ids)  # (B, T)
        want = logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)  # (B, T)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.autograd.grad(got.sum(), logits)[0],
                                   torch.autograd.grad(want.sum(), logits)[0])
    logits = torch.randn(B, T, V).bfloat16()  # (B, T, V)
    got = selective_log_softmax(logits, ids)  # (B, T)
    assert got.dtype == torch.float32
    want = logits.float().log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)  # (B, T)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError):
        selective_log_softmax(logits, ids[:, :2])


def test_token_entropy():
    torch.manual_seed(7)
    logits = torch.randn(2, 3, 7, dtype=D)  # (B, T, V)
    p = torch.softmax(logits, -1)  # (B, T, V)
    manual = -(p * p.log()).sum(-1)  # (B, T)
    torch.testing.assert_close(token_entropy(logits), manual)
    uniform = torch.zeros(1, 2, 7)  # (B, T, V)
    torch.testing.assert_close(token_entropy(uniform), torch.full((1, 2), math.log(7)))
    peaked = torch.tensor([[[0.0, -1e9, -1e9]]])  # (B, T, V)
    assert token_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)
    assert not token_entropy(logits.requires_grad_()).requires_grad


def test_group_advantages():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])  # (P, G)
    eps = 1e-4
    # group 0: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = sqrt(1/3); group 1: constant -> 0
    group = group_advantages(rewards, scale_rewards="group", eps=eps)
    a = 0.5 / (math.sqrt(1 / 3) + eps)
    torch.testing.assert_close(group, torch.tensor([[a, -a, -a, a], [0.0, 0.0, 0.0, 0.0]]))
    # batch: std over all 8 rewards, mean 0.75: var = (2 * 0.75^2 + 6 * 0.25^2) / 7 = 1.5 / 7
    batch = group_advantages(rewards, scale_rewards="batch", eps=eps)
    b = 0.5 / (math.sqrt(1.5 / 7) + eps)
    torch.testing.assert_close(batch, torch.tensor([[b, -b, -b, b], [0.0, 0.0, 0.0, 0.0]]))
    # none (Dr. GRPO): mean subtraction only
    none = group_advantages(rewards, scale_rewards="none")
    torch.testing.assert_close(none, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4]))
    # all-equal awkward floats and eps = 0: exactly zero, never NaN
    awkward = torch.full((3, 5), 0.1)  # (P, G)
    for scale in ("group", "batch", "none"):
        out = group_advantages(awkward, scale_rewards=scale, eps=0.0)
        assert torch.equal(out, torch.zeros_like(out))
    # integer rewards work
    assert group_advantages(torch.tensor([[1, 0]])).dtype == torch.float32
    stats = advantage_stats(rewards)
    assert stats["frac_zero_std"] == 0.5
    assert stats["reward_mean"] == pytest.approx(0.75)


def test_group_advantages_bad_inputs():
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(torch.zeros(2, 4), scale_rewards="global")
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([[1.0, float("nan")]]))


def test_policy_loss_bad_inputs():
    logp, old_logp, adv, mask = tiny_batch()
    with pytest.raises(ValueError, match="grpo.*bnpo.*dapo.*dr_grpo"):
        policy_loss(logp, old_logp, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="token.*sequence"):
        policy_loss(logp, old_logp, adv, mask, importance_sampling_level="seq")
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(logp, old_logp, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(logp, old_logp[:, :2], adv, mask)
    with pytest.raises(ValueError, match="mask"):
        policy_loss(logp, old_logp, adv, mask[:1])
    with pytest.raises(ValueError, match="adv"):
        policy_loss(logp, old_logp, adv[:, None].expand(2, 3), mask)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old_logp, adv, mask, ref_logp=old_logp[:, :1], beta=0.1)
    with pytest.raises(ValueError, match="needs ref_logp"):
        policy_loss(logp, old_logp, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="num_items"):
        policy_loss(logp, old_logp, adv, mask, loss_type="dapo", num_items=0)
    with pytest.raises(ValueError, match="0 and 1"):
        policy_loss(logp, old_logp, adv, mask * 0.5)
    with pytest.raises(ValueError, match="logp"):
        policy_loss(logp[0], old_logp[0], adv, mask[0])
    with pytest.raises(ValueError, match="ppo"):
        reference_policy_loss(logp, old_logp, adv, mask, loss_type="ppo")
