"""Which draft iGRPO's stage 2 is conditioned on: the `draft_selection` rules, pure functions.

The paper picks the highest-reward draft ("best"). The workbench also offers rules that study the
question the paper leaves open, whether the best draft is the most useful context:

  best       argmax reward; ties by `draft_tie_break` (the paper; exactly `select_draft`)
  worst      argmin reward; ties by `draft_tie_break` (an outside ablation found it beat best)
  random     a uniformly random draft (seeded per step)
  near_miss  the highest-reward WRONG draft when the group has both right and wrong drafts, else best
  minority   the highest-reward draft whose correctness is the MINORITY of its group, else best
             (see `choose_draft` for why it makes refinements disagree)

"Right" and "wrong" are the correctness part of the reward (accuracy, else judge, else the total:
igrpo.draft_failed), not the total, so a wrong but well-formatted draft counts as wrong. Every rule
returns the index and a short reason that is recorded on the chosen draft's rollout row.

Deliberately left out: rules that look at the refinements (they do not exist yet when we select).
"""
from __future__ import annotations

import math
import random

from igrpo_core.options import DRAFT_SELECTIONS, check_choice


def _pick(keys: dict[int, float], lengths: list[int], tie_break: str, rng: random.Random) -> int:
    """The candidate index with the largest key; ties by lowest index, shortest, or at random."""
    top = max(keys.values())
    tied = [i for i in sorted(keys) if keys[i] == top]
    if tie_break == "first":
        return tied[0]
    if tie_break == "shortest":
        return min(tied, key=lambda i: (lengths[i], i))
    if tie_break == "random":
        return rng.choice(tied)
    raise ValueError(f"unknown draft_tie_break {tie_break!r}")


def _finite(r: float) -> float:
    return r if math.isfinite(r) else -math.inf


def select_draft(rewards: list[float], lengths: list[int], tie_break: str, rng: random.Random) -> int:
    """Index of the best draft; ties broken by lowest index (default), shortest, or at random.

    A non-finite reward (NaN, inf) ranks below every finite one: NaN == max is never true, which
    used to leave no candidate at all (IndexError).
    """
    return _pick({i: _finite(r) for i, r in enumerate(rewards)}, lengths, tie_break, rng)


def choose_draft(rule: str, rewards: list[float], correct: list[bool], lengths: list[int],
                 tie_break: str, rng: random.Random) -> tuple[int, str]:
    """(index of the draft to refine, why), by `rule` (options.DraftSelection).

    rewards, correct, lengths: one entry per draft of the group (N). Non-finite rewards rank lowest.
    "minority" prefers drafts whose refinements will disagree. A refinement mostly either copies
    its draft or reproduces what the policy usually answers (the group's majority). Conditioned on
    a draft of the majority's correctness, both forces give the same verdict and the refinement
    group tends to have zero reward variance (no gradient: the failure measured in issue 11);
    conditioned on a minority draft they pull apart, so some refinements are right and some wrong.
    So: the highest-reward draft of the smaller correctness class; on an even split the wrong
    class (then it equals near_miss: fixing a wrong draft is the skill iGRPO trains); a group
    with no mix (all right or all wrong) falls back to best.
    """
    check_choice("draft_selection", rule, DRAFT_SELECTIONS)
    keys = {i: _finite(r) for i, r in enumerate(rewards)}
    right = [i for i, c in enumerate(correct) if c]
    wrong = [i for i, c in enumerate(correct) if not c]
    mix = f"{len(right)} right, {len(wrong)} wrong"
    if rule == "best":
        return select_draft(rewards, lengths, tie_break, rng), "best: highest reward"
    if rule == "worst":
        return _pick({i: -k for i, k in keys.items()}, lengths, tie_break, rng), "worst: lowest reward"
    if rule == "random":
        return rng.randrange(len(rewards)), "random: uniform draw"
    if not right or not wrong:
        fallback = select_draft(rewards, lengths, tie_break, rng)
        return fallback, f"{rule}: no mix ({mix}), fell back to best"
    if rule == "near_miss":
        return _pick({i: keys[i] for i in wrong}, lengths, tie_break, rng), \
            f"near_miss: highest-reward wrong draft ({mix})"
    side, name = (right, "right") if len(right) < len(wrong) else (wrong, "wrong")
    return _pick({i: keys[i] for i in side}, lengths, tie_break, rng), \
        f"minority: highest-reward {name} draft ({mix})"
