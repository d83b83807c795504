"""Sampling tricks as pure functions: how the sampling budget is split, how rewards are shaped, which
completions and groups reach the loss.

- `plan_refinements`: the adaptive N/G split (the paper's future work). Drafts are sampled first;
  prompts whose drafts all agree skip refinement and their refinement budget goes to the prompts
  whose drafts disagree, so the step's budget (prompts x num_generations) is unchanged.
- `overlong_penalty`: DAPO's overlong reward shaping (arXiv 2503.14476, eq. 13; verl's
  `overlong_buffer`): a linear penalty over the last `overlong_buffer_len` tokens before the cap.
- `loss_keep`: TRL's `mask_truncated_completions`: a completion that hit the length cap trains nothing.
- `ragged_advantages`: group-relative advantages over groups of unequal size (adaptive split);
  on equal sizes it is exactly `losses.group_advantages`.
- `filter_groups`: DAPO's dynamic sampling (verl `filter_groups`): which sampled groups train,
  given which carry signal; the resampling itself is igrpo.collect_dynamic.

Deliberately left out: anything that generates or touches a model; soft overlong punishment beyond
the cap (our engines never exceed max_completion_length, so DAPO's -1 branch cannot occur).
"""
from __future__ import annotations

import torch

from igrpo_core import losses
from igrpo_core.options import ADAPTIVE_SPLITS, check_choice


def plan_refinements(draft_correct: list[list[bool]], num_refinements: int, rule: str) -> list[int]:
    """Refinements per prompt; their sum is always len(draft_correct) * num_refinements.

    rule "none": every prompt gets num_refinements (the paper's fixed split).
    "agreement": a prompt whose drafts are all right or all wrong gets 0 (its refinement group would
    most likely have zero reward variance: a refinement of an agreed draft copies it); "solved":
    only all-right prompts get 0 (all-wrong prompts keep their chance of a fix). The freed budget is
    shared equally among the other prompts, the remainder one each in prompt order, so every
    refined prompt gets at least num_refinements. When no prompt, or every prompt, would be
    skipped, the fixed split is kept (there is nowhere to move the budget).
    """
    check_choice("adaptive_split", rule, ADAPTIVE_SPLITS)
    P, G = len(draft_correct), num_refinements
    if rule == "none":
        return [G] * P
    skip = [all(c) if rule == "solved" else (all(c) or not any(c)) for c in draft_correct]
    active = [p for p in range(P) if not skip[p]]
    if not active or len(active) == P:
        return [G] * P
    base, extra = divmod(P * G, len(active))
    plan = [0] * P
    for rank, p in enumerate(active):
        plan[p] = base + (1 if rank < extra else 0)
    return plan


def overlong_penalty(length: int, *, max_completion_length: int, overlong_buffer_len: int,
                     overlong_penalty_factor: float) -> float:
    """DAPO's soft overlong punishment for one completion of `length` tokens (EOS included), <= 0.

    0 up to max_completion_length - overlong_buffer_len tokens, then falling linearly to
    -overlong_penalty_factor at max_completion_length (verl: min(-exceed / buffer * factor, 0)).
    A buffer of 0 turns shaping off.
    """
    if overlong_buffer_len <= 0:
        return 0.0
    exceed = length - (max_completion_length - overlong_buffer_len)
    return min(-exceed / overlong_buffer_len * overlong_penalty_factor, 0.0)


def loss_keep(finish_reasons: list[str], mask_truncated_completions: bool) -> list[bool]:
    """Whether each completion reaches the loss: all, or (TRL's option) all but the length-capped."""
    return [not (mask_truncated_completions and f == "length") for f in finish_reasons]


def ragged_advantages(groups: list[list[float]], *, scale_rewards: str) -> list[list[float]]:
    """Group-relative advantages for groups of any sizes >= 2 (same rules as group_advantages).

    "batch" divides by the std of all rewards of all groups; a group with all-equal rewards gets 0.
    """
    if len({len(g) for g in groups}) == 1:  # rectangular: the one implementation the paper path uses
        adv = losses.group_advantages(torch.tensor(groups, dtype=torch.float64), scale_rewards=scale_rewards)
        return adv.tolist()
    flat = torch.tensor([r for g in groups for r in g], dtype=torch.float64)  # (B,)
    out = []
    for g in groups:
        one = losses.group_advantages(torch.tensor([g], dtype=torch.float64),
                                      scale_rewards="none" if scale_rewards == "batch" else scale_rewards)
        if scale_rewards == "batch":
            one = one / (flat.std() + 1e-4)  # the eps group_advantages uses
        out.append(one[0].tolist())
    return out


def has_signal(adv: list[float]) -> bool:
    """Whether a group's (already masked) advantages can move the policy: any non-zero."""
    return any(a != 0 for a in adv)


def filter_groups(signal: list[list[bool]], prompts_per_batch: int) -> dict[str, list[tuple[int, int]]]:
    """Which (batch, prompt) groups train, as DAPO's dynamic sampling keeps them.

    signal[k][p]: whether prompt p of sampled batch k carries signal. Groups with signal are taken
    in sampling order up to prompts_per_batch ("kept"); if fewer exist, zero-signal groups fill the
    rest in sampling order ("padded": they add no policy gradient, but keep the step's shape and
    per-sequence normalisation as without dynamic sampling). Every other zero-signal group is
    "dropped"; signal groups beyond the quota are "surplus" (verl discards them too).
    """
    good = [(k, p) for k, row in enumerate(signal) for p, s in enumerate(row) if s]
    bad = [(k, p) for k, row in enumerate(signal) for p, s in enumerate(row) if not s]
    kept = good[:prompts_per_batch]
    padded = bad[:prompts_per_batch - len(kept)]
    return {"kept": kept, "padded": padded, "dropped": bad[len(padded):], "surplus": good[prompts_per_batch:]}
