"""The GRPO family of losses (GRPO, DAPO/BNPO, Dr. GRPO, GSPO) as small pure functions.

Tensors and keyword scalars in; tensors or `(loss, metrics)` out. Nothing here reads a config,
knows about a model, or knows about iGRPO: iGRPO is rollout composition, and its stage 2 calls
`policy_loss` on refinement tokens exactly as GRPO does (the draft is prompt, so never in `mask`).

Shape legend (used in every trailing comment):
    P prompts, G group size, B = P*G sequences, T completion tokens, V vocab.

Conventions the trainer relies on:
- `mask` is 1 on every completion token *including EOS* and 0 on padding; padded positions are
  excluded with `torch.where`, so NaN/inf log-probs there can neither leak into the loss nor give a
  non-zero gradient.
- `old_logp` and `ref_logp` are treated as constants (detached here); `old_logp=None` means
  on-policy (one optimisation step per rollout batch), i.e. `old_logp = logp.detach()`.
- Group std is the *unbiased* one (`torch.std`, correction=1), as in TRL's GRPOTrainer.
- A group whose rewards are all equal gets an advantage of exactly 0 (set explicitly, not left to
  floating-point `R - mean`).

Deliberately left out: reward computation, token-level advantages, entropy bonuses, computing the
vLLM/trainer importance-sampling weights (mismatch.py; `policy_loss` only applies them), and any
cross-process reduction (the trainer passes `num_items` for DAPO's global token count and scales
micro-batch losses itself).
`reference_policy_loss` is a slow loop version kept only to test `policy_loss` against.
"""
from __future__ import annotations

import torch

from igrpo_core.options import (IMPORTANCE_SAMPLING_LEVELS, LOSS_METRICS, LOSS_TYPES, SCALE_REWARDS,
                                check_choice)


# ----------------------------------------------------------------------------- log-probs, entropy

def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of `ids` under `softmax(logits)`: logits (B, T, V), ids (B, T) -> (B, T).

    float32/float64 logits: gather minus a per-row logsumexp (no (B, T, V) log_softmax copy).
    bf16/fp16 logits: one row at a time upcast to float32, so at most a (T, V) float32 copy exists;
    the result is float32 (low-precision log-probs would make ratios noisy).
    """
    if logits.dim() != 3 or ids.shape != logits.shape[:2]:
        raise ValueError(f"need logits (B, T, V) and ids (B, T); got {tuple(logits.shape)} and "
                         f"{tuple(ids.shape)}")
    ids = ids.long()
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
        lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])  # (B, T)
        return picked - lse  # (B, T)
    rows = []
    for row_logits, row_ids in zip(logits, ids):  # (T, V), (T,)
        row_logp = torch.log_softmax(row_logits.float(), dim=-1)  # (T, V) float32, one row only
        rows.append(row_logp.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1))  # (T,)
    return torch.stack(rows)  # (B, T)


@torch.no_grad()
def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy -sum_v p log p of the softmax at each position: logits (B, T, V) -> (B, T).

    A metric only (no grad); computed row by row in float32 (float64 if given float64).
    """
    if logits.dim() != 3:
        raise ValueError(f"need logits (B, T, V); got {tuple(logits.shape)}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    rows = []
    for row in logits:  # (T, V)
        logp = torch.log_softmax(row.to(dtype), dim=-1)  # (T, V)
        rows.append(-(logp.exp() * logp).sum(-1))  # (T,)
    return torch.stack(rows)  # (B, T)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` where `mask` is non-zero; 0 (not NaN) where nothing is unmasked."""
    keep = mask.bool()
    total = torch.where(keep, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / keep.sum().clamp(min=1)
    return total.sum(dim) / keep.sum(dim).clamp(min=1)


# ----------------------------------------------------------------------------- advantages

def group_advantages(rewards: torch.Tensor, *, scale_rewards: str = "group",
                     eps: float = 1e-4, batch_std: float | None = None) -> torch.Tensor:
    """Group-relative advantages: rewards (P, G) -> adv (P, G).

    "group": (R - mean_group) / (std_group + eps)   GRPO, Shao et al. 2024 (DeepSeekMath)
    "batch": (R - mean_group) / (std_batch + eps)   std over all P*G rewards (TRL's "batch")
    "none" : R - mean_group                         Dr. GRPO, Liu et al. 2025 (no std division)
    std is unbiased (torch.std, correction=1), matching TRL. A group with all-equal rewards gets
    exactly 0. Flatten with `.reshape(-1)` to get the (B,) advantages `policy_loss` takes.
    batch_std: "batch"'s std when the batch is larger than `rewards` (other processes' groups).
    """
    check_choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    _check_rewards(rewards)
    rewards = rewards.float() if not rewards.is_floating_point() else rewards
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G)
    if scale_rewards == "group":
        adv = centred / (rewards.std(dim=1, keepdim=True) + eps)  # (P, G)
    elif scale_rewards == "batch":
        std = rewards.std() if batch_std is None else batch_std
        adv = centred / (std + eps)  # (P, G); a scalar std
    else:
        adv = centred  # (P, G)
    constant = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)  # (P, 1)
    return torch.where(constant, torch.zeros_like(adv), adv)  # (P, G)


@torch.no_grad()
def advantage_stats(rewards: torch.Tensor) -> dict[str, float]:
    """Metrics about a (P, G) reward matrix, as python floats named as in `options`.

    frac_zero_std is the share of groups whose rewards are all equal (std 0): they give no signal.
    """
    _check_rewards(rewards)
    rewards = rewards.double()
    constant = (rewards == rewards[:, :1]).all(dim=1)  # (P,)
    values = torch.stack([constant.double().mean(), rewards.mean(), rewards.std(dim=1).mean()])
    frac, mean, std = values.tolist()
    return {"frac_zero_std": frac, "reward_mean": mean, "reward_std_group": std}


def _check_rewards(rewards: torch.Tensor) -> None:
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (P, G) with G >= 2 (a group of one has no relative "
                         f"advantage); got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards.double()).all():
        raise ValueError("rewards contain NaN or inf")


# ----------------------------------------------------------------------------- policy loss

def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, adv: torch.Tensor,
                mask: torch.Tensor, *, loss_type: str = "grpo", epsilon: float = 0.2,
                epsilon_high: float | None = None, importance_sampling_level: str = "token",
                max_completion_length: int | None = None, ref_logp: torch.Tensor | None = None,
                beta: float = 0.0, num_items: int | float | torch.Tensor | None = None,
                is_weight: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped-surrogate policy loss (+ beta * k3 KL), normalised by `loss_type`.

    logp, old_logp, ref_logp, mask: (B, T); adv: (B,), shared by every token of its sequence.
    Returns a scalar loss differentiable w.r.t. `logp`, and float metrics `options.LOSS_METRICS`.
    `num_items` (global unmasked-token count over the accumulated micro-batches) is used only by
    "dapo" and ignored by the other loss types, as in TRL, so a trainer may always pass it.
    "sequence" level is GSPO (Zheng et al. 2025, arXiv 2507.18071) in its GSPO-token form: each
    token's ratio has the value s_i = exp(masked mean of its sequence's log-ratio), but its gradient
    flows through that token's own logp (sg[s_i] * pi/sg[pi]). With a per-sequence advantage this
    equals TRL's sequence-level loss in value and gradient (the reference computes it that way).
    `is_weight` (B, T) or (B, 1), a constant: TRL's vLLM importance-sampling correction
    (mismatch.importance_weights), multiplying each token's surrogate term before the KL is added.
    """
    eps_low, eps_high = _check_policy_args(logp, old_logp, adv, mask, loss_type, epsilon,
                                           epsilon_high, importance_sampling_level,
                                           max_completion_length, ref_logp, beta, num_items, is_weight)
    keep = mask.bool()  # (B, T)
    zero = torch.zeros_like(logp)  # (B, T)
    old_logp = logp.detach() if old_logp is None else old_logp.detach()
    log_ratio = torch.where(keep, logp - old_logp, zero)  # (B, T); padding can't leak NaN/inf
    if importance_sampling_level == "sequence":
        seq_log_ratio = masked_mean(log_ratio, keep, dim=-1).detach()  # (B,)
        log_ratio = seq_log_ratio[:, None] + (log_ratio - log_ratio.detach())  # (B, T) GSPO-token
    ratio = log_ratio.exp()  # (B, T)
    a = adv.detach().to(logp.dtype)[:, None]  # (B, 1)
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # (B, T)
    per_token = -torch.minimum(ratio * a, clipped * a)  # (B, T)
    if is_weight is not None:
        per_token = per_token * is_weight.detach().to(per_token.dtype)  # (B, T); (B, 1) broadcasts
    pg_loss = normalise(torch.where(keep, per_token, zero), keep, loss_type=loss_type,
                        max_completion_length=max_completion_length, num_items=num_items)
    kl = None
    if ref_logp is not None:
        diff = torch.where(keep, ref_logp.detach() - logp, zero)  # (B, T)
        kl = diff.exp() - diff - 1.0  # (B, T) k3 estimator of KL(pi || pi_ref), Schulman 2020
    loss = pg_loss
    if beta != 0.0:
        loss = pg_loss + beta * normalise(kl, keep, loss_type=loss_type,
                                          max_completion_length=max_completion_length,
                                          num_items=num_items)
    metrics = _loss_metrics(ratio, a, keep, kl, pg_loss, eps_low, eps_high)
    return loss, metrics


def normalise(per_token: torch.Tensor, mask: torch.Tensor, *, loss_type: str,
              max_completion_length: int | None = None,
              num_items: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Reduce a (B, T) per-token loss (already 0 at padding) to a scalar, as `loss_type` says."""
    keep = mask.bool()  # (B, T)
    if loss_type == "grpo":  # 1/G sum_i 1/|o_i| sum_t: DeepSeekMath GRPO, arXiv 2402.03300
        return (per_token.sum(-1) / keep.sum(-1).clamp(min=1)).mean()
    if loss_type == "bnpo":  # token-level over this micro-batch: TRL's BNPO
        return per_token.sum() / keep.sum().clamp(min=1)
    if loss_type == "dapo":  # 1/sum_i |o_i| over all micro-batches: DAPO, arXiv 2503.14476
        count = keep.sum().clamp(min=1) if num_items is None else num_items
        return per_token.sum() / count
    if loss_type == "dr_grpo":  # constant 1/(B * L_max): Dr. GRPO, arXiv 2503.20783
        return per_token.sum() / (per_token.shape[0] * max_completion_length)
    raise ValueError(f"unknown loss_type {loss_type!r}; valid: {LOSS_TYPES}")


def accumulation_weight(loss_type: str, *, micro_seqs: int, total_seqs: int, n_micro: int) -> float:
    """Factor on one micro-batch's loss so that the accumulated gradient equals the full batch's.

    "dapo" already divides by the global token count (`num_items`), so its micro-batch losses add
    up as they are; "bnpo" normalises per micro-batch, so each gets an equal share; "grpo" and
    "dr_grpo" average over sequences, so each micro-batch weighs by its share of the sequences.
    """
    check_choice("loss_type", loss_type, LOSS_TYPES)
    if loss_type == "dapo":
        return 1.0
    if loss_type == "bnpo":
        return 1.0 / n_micro
    return micro_seqs / total_seqs


@torch.no_grad()
def _loss_metrics(ratio, a, keep, kl, pg_loss, eps_low, eps_high) -> dict[str, float]:
    low = (ratio < 1.0 - eps_low) & (a < 0)  # (B, T) clipped branch active, zero gradient
    high = (ratio > 1.0 + eps_high) & (a > 0)  # (B, T)
    kl_mean = masked_mean(kl, keep) if kl is not None else torch.zeros_like(pg_loss)
    values = torch.stack([pg_loss.detach(), kl_mean, masked_mean((low | high).to(ratio.dtype), keep),
                          masked_mean(low.to(ratio.dtype), keep), masked_mean(high.to(ratio.dtype), keep),
                          masked_mean(ratio, keep)]).tolist()
    return dict(zip(LOSS_METRICS, values))


def _check_policy_args(logp, old_logp, adv, mask, loss_type, epsilon, epsilon_high,
                       importance_sampling_level, max_completion_length, ref_logp, beta,
                       num_items, is_weight=None) -> tuple[float, float]:
    """Validate `policy_loss` inputs; return (eps_low, eps_high)."""
    check_choice("loss_type", loss_type, LOSS_TYPES)
    check_choice("importance_sampling_level", importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS)
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, T); got {tuple(logp.shape)}")
    named = {"old_logp": old_logp, "mask": mask, "ref_logp": ref_logp}
    for name, t in named.items():
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if is_weight is not None and (is_weight.dim() != 2 or is_weight.shape[0] != logp.shape[0]
                                  or is_weight.shape[1] not in (1, logp.shape[1])):
        raise ValueError(f"is_weight must be (B, T) or (B, 1) for logp {tuple(logp.shape)}; "
                         f"got {tuple(is_weight.shape)}")
    if adv.shape != logp.shape[:1]:
        raise ValueError(f"adv must be (B,) = {tuple(logp.shape[:1])}; got {tuple(adv.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 and 1")
    if loss_type == "dr_grpo" and (max_completion_length is None or max_completion_length <= 0):
        raise ValueError("loss_type='dr_grpo' needs max_completion_length > 0 (its constant "
                         "normaliser is B * max_completion_length)")
    if num_items is not None and float(num_items) <= 0:
        raise ValueError(f"num_items must be > 0; got {num_items}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if epsilon < 0 or eps_high < 0:
        raise ValueError(f"epsilon and epsilon_high must be >= 0; got {epsilon}, {epsilon_high}")
    return epsilon, eps_high


# ----------------------------------------------------------------------------- reference

def reference_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, adv: torch.Tensor,
                          mask: torch.Tensor, *, loss_type: str = "grpo", epsilon: float = 0.2,
                          epsilon_high: float | None = None,
                          importance_sampling_level: str = "token",
                          max_completion_length: int | None = None,
                          ref_logp: torch.Tensor | None = None, beta: float = 0.0,
                          num_items: int | float | torch.Tensor | None = None,
                          is_weight: torch.Tensor | None = None,
                          ) -> tuple[torch.Tensor, dict[str, float]]:
    """Slow, obviously-correct loops over sequences and tokens; for tests only.

    GSPO here is the plain sequence form: ratio = exp(mean_t(logp - old_logp)), gradient and all.
    """
    eps_low, eps_high = _check_policy_args(logp, old_logp, adv, mask, loss_type, epsilon,
                                           epsilon_high, importance_sampling_level,
                                           max_completion_length, ref_logp, beta, num_items, is_weight)
    old = logp.detach() if old_logp is None else old_logp.detach()
    B, T = logp.shape
    pg, kl, ratios, low, high = [], [], [], 0, 0  # pg, kl: per sequence, a list per token
    for i in range(B):
        tokens = [t for t in range(T) if mask[i, t] != 0]
        pg.append([]), kl.append([])
        if importance_sampling_level == "sequence" and tokens:
            seq_ratio = torch.exp(sum(logp[i, t] - old[i, t] for t in tokens) / len(tokens))
        for t in tokens:
            if importance_sampling_level == "sequence":
                r = seq_ratio
            else:
                r = torch.exp(logp[i, t] - old[i, t])
            r_clip = torch.clamp(r, 1.0 - eps_low, 1.0 + eps_high)
            w = 1.0 if is_weight is None else is_weight[i, t if is_weight.shape[1] > 1 else 0].detach()
            pg[i].append(-torch.minimum(r * adv[i], r_clip * adv[i]) * w)
            if ref_logp is not None:
                d = ref_logp[i, t].detach() - logp[i, t]
                kl[i].append(torch.exp(d) - d - 1.0)
            ratios.append(r.item())
            low += int(r < 1.0 - eps_low and adv[i] < 0)
            high += int(r > 1.0 + eps_high and adv[i] > 0)

    def reduce(per_seq):
        n_tokens = sum(len(s) for s in per_seq)
        total = sum(sum(s) for s in per_seq)
        if loss_type == "grpo":
            out = sum(sum(s) / max(len(s), 1) for s in per_seq) / B
        elif loss_type == "bnpo" or (loss_type == "dapo" and num_items is None):
            out = total / max(n_tokens, 1)
        elif loss_type == "dapo":
            out = total / num_items
        else:  # dr_grpo
            out = total / (B * max_completion_length)
        return out if torch.is_tensor(out) else logp.sum() * 0.0  # all-padding batch

    pg_loss = reduce(pg)
    loss = pg_loss + beta * reduce(kl) if beta != 0.0 else pg_loss
    n = max(len(ratios), 1)
    kl_values = [k.item() for s in kl for k in s]
    metrics = {"clip_frac_low": low / n, "clip_frac_high": high / n,
               "clip_frac": (low + high) / n, "ratio_mean": sum(ratios) / n,
               "kl": sum(kl_values) / n, "pg_loss": pg_loss.item()}
    return loss, metrics
