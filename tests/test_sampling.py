"""Sampling tricks (igrpo_core.sampling) on hand-made cases: the adaptive split keeps the step's
budget, overlong shaping values computed by hand, truncation masks, ragged advantages equal to
group_advantages, and dynamic sampling's choice of groups."""
import random

import pytest
import torch

from igrpo_core import losses
from igrpo_core.sampling import filter_groups, loss_keep, overlong_penalty, plan_refinements, ragged_advantages

R, W = True, False


@pytest.mark.parametrize("correct, G, rule, expected", [
    ([[R, R], [W, R], [W, W], [R, W]], 4, "none", [4, 4, 4, 4]),
    ([[R, R], [W, R], [W, W], [R, W]], 4, "agreement", [0, 8, 0, 8]),   # agreed prompts give their 4 away
    ([[R, R], [R, W], [W, R]], 3, "agreement", [0, 5, 4]),              # 9 over 2: remainder to the first
    ([[W, W], [R, R], [R, W]], 2, "solved", [3, 0, 3]),                 # only all-right prompts skip
    ([[W, W], [R, R], [R, W]], 2, "agreement", [0, 0, 6]),
    ([[R, R], [W, W]], 4, "agreement", [4, 4]),                         # everyone agrees: nowhere to move
    ([[R, W], [W, R]], 4, "agreement", [4, 4]),                         # no one agrees: fixed split
])
def test_plan_refinements_hand_made(correct, G, rule, expected):
    plan = plan_refinements(correct, G, rule)
    assert plan == expected and sum(plan) == len(correct) * G


@pytest.mark.parametrize("rule", ["agreement", "solved"])
def test_plan_refinements_always_keeps_the_budget(rule):
    gen = random.Random(0)
    for _ in range(500):
        P, N, G = gen.randint(1, 9), gen.randint(1, 5), gen.randint(2, 7)
        correct = [[gen.random() < 0.5 for _ in range(N)] for _ in range(P)]
        plan = plan_refinements(correct, G, rule)
        assert sum(plan) == P * G                       # drafts P*N + refinements P*G: the budget
        assert all(n == 0 or n >= G for n in plan)      # a refined prompt never gets fewer than G
        assert max(plan) - min(n for n in plan if n) <= 1


@pytest.mark.parametrize("length, buffer, factor, expected", [
    (40, 16, 1.0, 0.0),     # well under L_max - L_cache = 48
    (48, 16, 1.0, 0.0),     # exactly at the start of the buffer
    (52, 16, 1.0, -0.25),   # (48 - 52) / 16
    (56, 16, 1.0, -0.5),
    (64, 16, 1.0, -1.0),    # at the cap: -factor
    (64, 16, 0.5, -0.5),
    (60, 8, 2.0, -1.0),     # (56 - 60) / 8 * 2
    (64, 0, 1.0, 0.0),      # buffer 0: shaping off
])
def test_overlong_penalty_hand_computed(length, buffer, factor, expected):
    got = overlong_penalty(length, max_completion_length=64, overlong_buffer_len=buffer,
                           overlong_penalty_factor=factor)
    assert got == pytest.approx(expected)


def test_loss_keep_masks_only_length_capped_and_only_when_asked():
    assert loss_keep(["stop", "length", "stop"], True) == [True, False, True]
    assert loss_keep(["stop", "length"], False) == [True, True]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_ragged_advantages_equal_group_advantages_on_rectangles(scale):
    rewards = [[1.0, 0.0, 2.0], [1.0, 1.0, 1.0], [0.0, 2.0, 2.0]]
    want = losses.group_advantages(torch.tensor(rewards, dtype=torch.float64), scale_rewards=scale).tolist()
    assert ragged_advantages(rewards, scale_rewards=scale) == want


def test_ragged_advantages_by_hand():
    groups = [[1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 2.0]]
    g = ragged_advantages(groups, scale_rewards="group")
    assert g[0] == pytest.approx([0.5 / (0.5 ** 0.5 + 1e-4), -0.5 / (0.5 ** 0.5 + 1e-4)])
    assert g[1] == pytest.approx([0.5 / ((1 / 3) ** 0.5 + 1e-4)] * 2 + [-0.5 / ((1 / 3) ** 0.5 + 1e-4)] * 2)
    assert g[2] == [0.0, 0.0, 0.0]                                            # constant group: no signal
    flat_std = torch.tensor([r for x in groups for r in x], dtype=torch.float64).std().item()
    b = ragged_advantages(groups, scale_rewards="batch")
    assert b[0] == pytest.approx([0.5 / (flat_std + 1e-4), -0.5 / (flat_std + 1e-4)])
    assert b[2] == [0.0, 0.0, 0.0]
    assert ragged_advantages(groups, scale_rewards="none")[1] == [0.5, 0.5, -0.5, -0.5]


def test_filter_groups_takes_signal_in_order_then_pads():
    plan = filter_groups([[R, W, W, R], [W, R, R, R]], 4)
    assert plan["kept"] == [(0, 0), (0, 3), (1, 1), (1, 2)]
    assert plan["padded"] == [] and plan["dropped"] == [(0, 1), (0, 2), (1, 0)] and plan["surplus"] == [(1, 3)]
    short = filter_groups([[W, R], [W, W]], 2)                   # the cap ran out before 2 signal groups
    assert short["kept"] == [(0, 1)] and short["padded"] == [(0, 0)] and short["dropped"] == [(1, 0), (1, 1)]
