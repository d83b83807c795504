"""iGRPO rollout composition with a scripted engine: draft failure handling and selection."""
import math
import random

import pytest

from conftest import small_config
from igrpo_core import rewards
from igrpo_core.engine import Completion, SamplingParams
from igrpo_core.igrpo import collect_igrpo, select_draft
from igrpo_core.prompts import render_prompt

EXAMPLES = [{"id": "a", "problem": "Compute 1+2.", "answer": "3"},
            {"id": "b", "problem": "Compute 2+2.", "answer": "4"}]


class ScriptedEngine:
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
    eng = ScriptedEngine([wrong], ["<think>x</think><answer>\\boxed{3}</answer>"])
    ro = collect_igrpo(eng, tiny_tokenizer, EXAMPLES, cfg, 1, SamplingParams(seed=0))
    assert all(r["reward"] == 1.0 and r["reward_accuracy"] == 0.0 for r in ro.rows if r["stage"] == "draft")
    assert eng.prompts[1] == [render_prompt(tiny_tokenizer, ex["problem"], None) for ex in EXAMPLES]
    # a correct draft is still attached
    right = "<think>ok</think><answer>\\boxed{3}</answer>"
    eng = ScriptedEngine([wrong, right], [right])
    collect_igrpo(eng, tiny_tokenizer, EXAMPLES[:1], cfg, 1, SamplingParams(seed=0))
    assert "\\boxed{3}" in tiny_tokenizer.decode(eng.prompts[1][0])


def test_nan_reward_is_a_recorded_failure_not_an_index_error(tmp_path, tiny_tokenizer, monkeypatch):
    """Bug: a reward returning NaN made draft selection raise IndexError (NaN == max is never true).
    Now a non-finite reward part is a recorded failure (0, status "error: ..."), and selection ranks
    non-finite totals below every finite one."""
    monkeypatch.setitem(rewards._CUSTOM, "flaky", lambda c, e: math.nan if "bad" in c else 0.5)
    cfg = small_config(tmp_path, reward_funcs=["accuracy", "flaky"], reward_weights=[1.0, 1.0])
    eng = ScriptedEngine(["bad draft", "good draft"], ["bad", "fine"])
    ro = collect_igrpo(eng, tiny_tokenizer, EXAMPLES, cfg, 1, SamplingParams(seed=0))
    for r in ro.rows:
        assert math.isfinite(r["reward"])
        assert ("error: flaky: non-finite" in r["reward_status"]) == ("bad" in r["completion"])
    chosen = [r["completion"] for r in ro.rows if r["stage"] == "draft" and r["is_chosen_draft"]]
    assert chosen == ["good draft", "good draft"]
    assert ro.stats["reward_failures"] == 2 * (1 + 1)   # per prompt: one bad draft, one bad refinement
    rng = random.Random(0)
    assert select_draft([math.nan, 0.5, math.inf], [3, 3, 3], "first", rng) == 1
    assert select_draft([math.nan, math.nan], [3, 3], "first", rng) == 0


def test_select_draft_tie_breaks():
    rng = random.Random(0)
    assert select_draft([1.0, 2.0, 2.0], [9, 9, 1], "first", rng) == 1
    assert select_draft([1.0, 2.0, 2.0], [9, 9, 1], "shortest", rng) == 2
    with pytest.raises(ValueError):
        select_draft([1.0], [1], "bogus", rng)
