"""Rollout composition (igrpo_core.igrpo): draft selection on hand-made rewards, and one iGRPO
collection through a scripted engine, checked by hand: which draft stage 2 sees, which rows get
advantages, and that refinement advantages are computed over refinements only."""
import math
import random

import pytest
import torch

from igrpo_core import losses
from igrpo_core.config import Config
from igrpo_core.engine import Completion, SamplingParams
from igrpo_core.prompts import render_prompt
from igrpo_core.igrpo import collect_grpo, collect_igrpo, select_draft
from igrpo_core.rewards import build_reward_fns
from tests.conftest import small_config


@pytest.mark.parametrize("rewards, lengths, tie_break, expected", [
    ([0.0, 2.0, 1.0, 2.0], [5, 9, 1, 3], "first", 1),       # paper: argmax, lowest index on ties
    ([0.0, 2.0, 1.0, 2.0], [5, 9, 1, 3], "shortest", 3),    # tie between 1 and 3: the shorter
    ([1.0, 1.0, 1.0], [4, 4, 4], "shortest", 0),            # equal lengths too: lowest index
    ([0.0, 0.0], [3, 1], "first", 0),                       # all failed: still a draft (Prop. 3.1)
    ([-1.0, -0.5, -2.0], [1, 1, 1], "first", 1),            # negative rewards: still the max
])
def test_select_draft(rewards, lengths, tie_break, expected):
    assert select_draft(rewards, lengths, tie_break, random.Random(0)) == expected


def test_random_tie_break_picks_only_among_the_tied_and_follows_the_seed():
    picks = {select_draft([2.0, 0.0, 2.0, 2.0], [1] * 4, "random", random.Random(s)) for s in range(40)}
    assert picks == {0, 2, 3}
    a = [select_draft([1.0] * 4, [1] * 4, "random", random.Random(7)) for _ in range(3)]
    assert a == [select_draft([1.0] * 4, [1] * 4, "random", random.Random(7)) for _ in range(3)]


def test_unknown_tie_break_is_an_error():
    with pytest.raises(ValueError, match="draft_tie_break"):
        select_draft([1.0, 0.0], [1, 1], "longest", random.Random(0))


class ScriptedEngine:
    """Returns scripted completion texts: call c, prompt p, sample j -> script[c][p][j]."""

    def __init__(self, script):
        self.script, self.calls, self.pad_id = script, [], 0

    def generate(self, prompts, params: SamplingParams):
        texts = self.script[len(self.calls)]
        self.calls.append((prompts, params))
        return [Completion(pi, [ord(ch) for ch in texts[pi][j]], texts[pi][j], "stop")
                for pi in range(len(prompts)) for j in range(params.n)]

    def sync_weights(self, model):
        pass


def ans(x):
    return f"<think>x</think><answer>\\boxed{{{x}}}</answer>"


EXAMPLES = [{"id": "q0", "problem": "Compute 1+2.", "answer": "3"},
            {"id": "q1", "problem": "Compute 2*5.", "answer": "10"}]


def test_igrpo_conditions_stage_two_on_the_best_draft_and_trains_refinements_only(tiny_tokenizer):
    cfg = Config(algo="igrpo", num_generations=5, num_drafts=2)     # N = 2 drafts, G = 3 refinements
    drafts = [["wrong 4", ans(3)], [ans(7), ans(8)]]                 # q0: draft 1 right; q1: both wrong
    refines = [[ans(3), ans(3), ans(5)], [ans(10), ans(9), ans(9)]]
    engine = ScriptedEngine([drafts, refines])
    ro = collect_igrpo(engine, tiny_tokenizer, EXAMPLES, cfg, step=1, params=SamplingParams(seed=11),
                       reward_fns=build_reward_fns(cfg))

    (d_prompts, d_params), (r_prompts, r_params) = engine.calls
    assert d_params.n == 2 and r_params.n == 3 and r_params.seed != d_params.seed
    q0_refine = tiny_tokenizer.decode(r_prompts[0])
    assert "Compute 1+2." in q0_refine and "\\boxed{3}" in q0_refine            # the right draft, not "wrong 4"
    q1_refine = tiny_tokenizer.decode(r_prompts[1])
    assert "\\boxed{7}" in q1_refine and "\\boxed{8}" not in q1_refine          # all tied at format only: first

    rows = ro.rows
    draft_rows = [r for r in rows if r["stage"] == "draft"]
    refine_rows = [r for r in rows if r["stage"] == "refine"]
    assert len(draft_rows) == 4 and len(refine_rows) == 6
    assert all(r["advantage"] is None for r in draft_rows)
    assert [r["is_chosen_draft"] for r in draft_rows] == [False, True, True, False]
    # Trained sequences are the 6 refinements, with advantages over each group of 3 refinements only.
    assert len(ro.completion_ids) == 6 and ro.rewards.shape == (6,) and ro.group_of == [0, 0, 0, 1, 1, 1]
    expected = losses.group_advantages(ro.rewards.view(2, 3), scale_rewards="group").reshape(-1).float()
    assert torch.allclose(ro.adv, expected)
    assert [r["advantage"] for r in refine_rows] == pytest.approx(expected.tolist())
    assert all(p == r_prompts[i // 3] for i, p in enumerate(ro.prompt_ids))   # draft is context, not target
    assert [r["draft_reward"] for r in refine_rows[:3]] == [2.0] * 3            # accuracy 1 + format 1
    assert ro.stats["best_draft_reward_mean"] == pytest.approx((2.0 + 1.0) / 2)


def test_all_drafts_failed_question_only_sends_the_bare_question(tiny_tokenizer):
    cfg = Config(algo="igrpo", num_generations=4, num_drafts=2, all_drafts_failed="question_only")
    engine = ScriptedEngine([[["no", "nope"], ["x", "y"]], [["a", "b"], ["c", "d"]]])
    collect_igrpo(engine, tiny_tokenizer, EXAMPLES, cfg, step=1, params=SamplingParams(seed=3), reward_fns=build_reward_fns(cfg))
    (d_prompts, _), (r_prompts, _) = engine.calls
    assert r_prompts == d_prompts                                               # no draft attached


def test_grpo_is_one_group_on_the_question(tiny_tokenizer):
    cfg = Config(algo="grpo", num_generations=3)
    engine = ScriptedEngine([[[ans(3), "no", ans(4)], [ans(10)] * 3]])
    ro = collect_grpo(engine, tiny_tokenizer, EXAMPLES, cfg, step=2, params=SamplingParams(seed=1), reward_fns=build_reward_fns(cfg))
    assert len(engine.calls) == 1 and {r["stage"] for r in ro.rows} == {"grpo"}
    assert ro.adv[3:].tolist() == [0.0, 0.0, 0.0]                              # equal rewards: no signal
    assert ro.stats["frac_zero_std"] == 0.5


# --- regression tests (issue 8, item 5) ---------------------------------------------------------

EXAMPLES2 = [{"id": "a", "problem": "Compute 1+2.", "answer": "3"},
             {"id": "b", "problem": "Compute 2+2.", "answer": "4"}]


class CyclingEngine:
    """Returns the same scripted texts (cycled) for every prompt; records the prompts it was given."""

    pad_id = 0

    def __init__(self, drafts: list[str], refinements: list[str]):
        self.script, self.prompts = [drafts, refinements], []

    def generate(self, prompts, params):
        texts = self.script[len(self.prompts)]
        self.prompts.append(prompts)
        return [Completion(i, [5, 1], texts[k % len(texts)], "stop") for i in range(len(prompts))
                for k in range(params.n)]


def test_question_only_tests_the_accuracy_part_not_the_total(tmp_path, tiny_tokenizer):
    """Bug: all_drafts_failed=question_only tested the total reward, so a wrong but well-formatted
    draft (accuracy 0, format 1) never counted as failed and was attached anyway."""
    cfg = small_config(tmp_path, all_drafts_failed="question_only")
    wrong = "<think>guess</think><answer>\\boxed{5}</answer>"
    eng = CyclingEngine([wrong], ["<think>x</think><answer>\\boxed{3}</answer>"])
    ro = collect_igrpo(eng, tiny_tokenizer, EXAMPLES2, cfg, 1, SamplingParams(seed=0), build_reward_fns(cfg))
    assert all(r["reward"] == 1.0 and r["reward_accuracy"] == 0.0 for r in ro.rows if r["stage"] == "draft")
    assert eng.prompts[1] == [render_prompt(tiny_tokenizer, ex["problem"], None) for ex in EXAMPLES2]
    # a correct draft is still attached
    right = "<think>ok</think><answer>\\boxed{3}</answer>"
    eng = CyclingEngine([wrong, right], [right])
    collect_igrpo(eng, tiny_tokenizer, EXAMPLES2[:1], cfg, 1, SamplingParams(seed=0), build_reward_fns(cfg))
    assert "\\boxed{3}" in tiny_tokenizer.decode(eng.prompts[1][0])


def test_nan_reward_is_a_recorded_failure_not_an_index_error(tmp_path, tiny_tokenizer):
    """Bug: a reward returning NaN made draft selection raise IndexError (NaN == max is never true).
    Now a non-finite reward part is a recorded failure (0, status "error: ..."), and selection ranks
    non-finite totals below every finite one."""
    cfg = small_config(tmp_path, reward_funcs=["accuracy"], reward_weights=[1.0])
    fns = build_reward_fns(cfg, custom={"flaky": (lambda c, e: math.nan if "bad" in c else 0.5, 1.0)})
    eng = CyclingEngine(["bad draft", "good draft"], ["bad", "fine"])
    ro = collect_igrpo(eng, tiny_tokenizer, EXAMPLES2, cfg, 1, SamplingParams(seed=0), fns)
    for r in ro.rows:
        assert math.isfinite(r["reward"])
        assert ("error: flaky: non-finite" in r["reward_status"]) == ("bad" in r["completion"])
    chosen = [r["completion"] for r in ro.rows if r["stage"] == "draft" and r["is_chosen_draft"]]
    assert chosen == ["good draft", "good draft"]
    assert ro.stats["reward_failures"] == 2 * (1 + 1)   # per prompt: one bad draft, one bad refinement
    rng = random.Random(0)
    assert select_draft([math.nan, 0.5, math.inf], [3, 3, 3], "first", rng) == 1
    assert select_draft([math.nan, math.nan], [3, 3], "first", rng) == 0
