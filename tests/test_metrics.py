"""Evaluation metrics (igrpo_core.metrics): unbiased pass@k against brute-force enumeration,
majority voting, and a per-set summary computed by hand."""
from itertools import combinations

import polars as pl
import pytest

from igrpo_core import metrics as M



def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c of them correct) that hold a correct one."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_unbiased_pass_at_k_equals_enumeration_over_all_k_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert M.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_1_is_the_fraction_correct_and_bad_arguments_raise():
    assert M.pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    for n, c, k in [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1)]:
        with pytest.raises(ValueError):
            M.pass_at_k(n, c, k)


@pytest.mark.parametrize("extracted, correct, expected", [
    (["3", "3", "4"], [True, True, False], True),             # plain majority
    (["4", "3", "3"], [False, True, True], True),
    (["4", "4", "3"], [False, False, True], False),           # majority wrong although one sample is right
    (["3", "4"], [True, False], True),                        # tie: first seen wins
    (["4", "3"], [False, True], False),
    ([None, None, "5"], [False, False, True], True),          # no-answer samples do not vote
    ([None, None], [False, False], False),                    # nobody answered
    (["1/2", " 1/2 ", "$1/2$", "7"], [True, False, False, False], True),  # normalised votes, any sample of the winner
    (["12", "12.", "13", "13"], [False, False, True, True], False),       # "12." votes with "12": tie -> 12 first
])
def test_majority_vote(extracted, correct, expected):
    assert M.majority_correct(extracted, correct) is expected


def test_summarize_on_a_hand_made_frame():
    rows = []
    # set A: p1 2/4 correct (majority "5" correct), p2 0/4 (majority "9" wrong), p3 4/4
    for pid, ext, cor in [("p1", ["5", "5", "6", None], [1, 1, 0, 0]), ("p2", ["9", "9", "8", "7"], [0, 0, 0, 0]),
                          ("p3", ["1", "1", "1", "1"], [1, 1, 1, 1])]:
        for i, (e, c) in enumerate(zip(ext, cor)):
            rows.append(dict(dataset="A", problem_id=pid, sample_index=i, extracted=e, correct=bool(c),
                             status="no_answer" if e is None else "ok"))
    # set B: one problem, 2 samples, 1 correct, one check timed out
    rows += [dict(dataset="B", problem_id="q", sample_index=0, extracted="2", correct=True, status="ok"),
             dict(dataset="B", problem_id="q", sample_index=1, extracted="3", correct=False, status="timeout")]
    m = M.summarize(pl.DataFrame(rows), ks=[1, 2, 4])
    a, b = m["A"], m["B"]
    assert a["problems"] == 3 and a["samples_per_problem"] == 4
    assert a["avg@k"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert a["pass@1"] == pytest.approx(a["avg@k"])
    assert a["pass@2"] == pytest.approx((1 - 1 / 6 + 0 + 1) / 3)  # p1: 1 - C(2,2)/C(4,2)
    assert a["pass@4"] == pytest.approx(2 / 3)
    assert a["maj@k"] == pytest.approx(2 / 3)
    assert a["no_answer"] == pytest.approx(1 / 12) and a["check_failures"] == 0
    assert b["avg@k"] == 0.5 and b["pass@2"] == 1.0 and "pass@4" not in b and b["check_failures"] == 1
    assert b["maj@k"] == 1.0  # tie between "2" and "3": first seen, which is correct
    assert m["macro_avg"]["avg@k"] == pytest.approx((a["avg@k"] + 0.5) / 2)
    assert m["macro_avg"]["maj@k"] == pytest.approx((2 / 3 + 1) / 2) and m["macro_avg"]["sets"] == 2
