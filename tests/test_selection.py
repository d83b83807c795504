"""Draft-selection rules (igrpo_core.selection) on hand-made reward vectors: which draft each rule
picks, why, and that "best" is exactly the paper's select_draft (ties and RNG use included)."""
import math
import random

import pytest

from igrpo_core.selection import choose_draft, select_draft

R, W = True, False  # right / wrong draft


@pytest.mark.parametrize("rule, rewards, correct, lengths, tie_break, expected, why", [
    # best: argmax, ties by draft_tie_break
    ("best", [2.0, 1.0, 2.0, 0.0], [R, W, R, W], [5, 1, 3, 1], "first", 0, "best: highest reward"),
    ("best", [2.0, 1.0, 2.0, 0.0], [R, W, R, W], [5, 1, 3, 1], "shortest", 2, "best"),
    # worst: argmin, same tie rules
    ("worst", [0.0, 2.0, 0.0, 1.0], [W, R, W, W], [5, 1, 2, 1], "first", 0, "worst: lowest reward"),
    ("worst", [0.0, 2.0, 0.0, 1.0], [W, R, W, W], [5, 1, 2, 1], "shortest", 2, "worst"),
    ("worst", [-1.0, -0.5, -2.0], [W, W, W], [1, 1, 1], "first", 2, "worst"),
    # near_miss: highest-reward wrong draft when right and wrong are mixed
    ("near_miss", [2.0, 1.0, 1.5, 2.0], [R, W, W, R], [1] * 4, "first", 2, "2 right, 2 wrong"),
    ("near_miss", [2.0, 1.0, 1.0, 0.0], [R, W, W, W], [1, 9, 4, 1], "shortest", 2, "wrong draft"),
    ("near_miss", [2.0, 1.0, 2.0], [R, R, R], [1] * 3, "first", 0, "no mix (3 right, 0 wrong), fell back to best"),
    ("near_miss", [1.0, 0.0, 1.0], [W, W, W], [1] * 3, "first", 0, "fell back to best"),
    # minority: the smaller correctness class, its highest-reward draft
    ("minority", [2.0, 1.0, 1.0, 0.0], [R, W, W, W], [1] * 4, "first", 0, "right draft (1 right, 3 wrong)"),
    ("minority", [2.0, 2.0, 1.0, 2.0], [R, R, W, R], [1] * 4, "first", 2, "wrong draft (3 right, 1 wrong)"),
    ("minority", [2.0, 1.0, 2.0, 1.5], [R, W, R, W], [1] * 4, "first", 3, "wrong draft (2 right, 2 wrong)"),
    ("minority", [1.0, 1.0, 1.0], [W, W, W], [3, 1, 2], "shortest", 1, "no mix"),
])
def test_rules_on_hand_made_rewards(rule, rewards, correct, lengths, tie_break, expected, why):
    pick, reason = choose_draft(rule, rewards, correct, lengths, tie_break, random.Random(0))
    assert pick == expected
    assert reason.startswith(rule) and why in reason


def test_best_is_the_papers_select_draft_including_the_random_tie_break():
    """Same picks and the same RNG draws: a run with draft_selection="best" is the old run."""
    gen = random.Random(5)
    for _ in range(300):
        n = gen.randint(1, 6)
        rewards = [gen.choice([0.0, 1.0, 2.0, math.nan]) for _ in range(n)]
        correct = [r == 2.0 for r in rewards]
        lengths = [gen.randint(1, 4) for _ in range(n)]
        for tb in ("first", "shortest", "random"):
            a, b = random.Random(n), random.Random(n)
            assert choose_draft("best", rewards, correct, lengths, tb, a)[0] == select_draft(rewards, lengths, tb, b)
            assert a.random() == b.random()


def test_random_rule_reaches_every_draft_and_follows_the_seed():
    picks = {choose_draft("random", [2.0, 0.0, 1.0], [R, W, W], [1] * 3, "first", random.Random(s))[0]
             for s in range(50)}
    assert picks == {0, 1, 2}
    assert [choose_draft("random", [1.0] * 5, [W] * 5, [1] * 5, "first", random.Random(9))[0] for _ in range(3)] \
        == [choose_draft("random", [1.0] * 5, [W] * 5, [1] * 5, "first", random.Random(9))[0] for _ in range(3)]


def test_non_finite_rewards_rank_lowest():
    assert choose_draft("near_miss", [math.nan, 0.5, 2.0], [W, W, R], [1] * 3, "first", random.Random(0))[0] == 1
    assert choose_draft("worst", [1.0, math.nan], [W, W], [1, 1], "first", random.Random(0))[0] == 1


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="draft_selection"):
        choose_draft("median", [1.0, 0.0], [R, W], [1, 1], "first", random.Random(0))
