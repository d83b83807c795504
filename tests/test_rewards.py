"""Rewards: table-driven cases for the built-ins, the explicit weighted sum, recorded failures (a raising
or NaN-returning reward), and that building reward sets (and trainers) with different judges touches
no module-level state."""
import math

import pytest
from conftest import small_config

from igrpo_core import judge as J
from igrpo_core import rewards as R
from igrpo_core.config import Config

EX = {"id": "q", "problem": "Compute 2+2.", "answer": "4"}


@pytest.mark.parametrize("completion, expected", [
    ("<think>2+2=4</think><answer>\\boxed{4}</answer>", 1.0),
    ("  <think>a</think>\n<answer>4</answer>\n", 1.0),           # surrounding whitespace is allowed
    ("<think>line 1\nline 2</think> <answer>\n4\n</answer>", 1.0),  # multi-line parts
    ("<think></think><answer></answer>", 1.0),                   # the paper's rule checks shape only
    ("", 0.0),
    ("\\boxed{4}", 0.0),
    ("<answer>4</answer>", 0.0),                                 # no think block
    ("<think>a</think>", 0.0),                                   # no answer block
    ("<answer>4</answer><think>a</think>", 0.0),                 # wrong order
    ("<think>a</think><answer>4</answer> and more", 0.0),        # text after the answer
    ("Sure! <think>a</think><answer>4</answer>", 0.0),           # text before the think block
    ("<think>a<answer>4</answer>", 0.0),                         # unclosed think
])
def test_format_reward(completion, expected):
    assert R.format_reward(completion, EX) == expected


@pytest.mark.parametrize("completion, gold, correct, status, extracted", [
    ("\\boxed{4}", "4", 1.0, "ok", "4"),
    ("<answer>\\boxed{5}</answer>", "4", 0.0, "ok", "5"),
    ("\\boxed{1/2}", "0.5", 1.0, "ok", "1/2"),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0, "ok", "\\frac{1}{2}"),
    ("no answer here", "4", 0.0, "no_answer", None),
])
def test_accuracy_reward_and_its_recorded_status(completion, gold, correct, status, extracted):
    ex = {**EX, "answer": gold}
    assert R.AccuracyReward()(completion, ex) == correct
    s = R.score_one(completion, ex, {"accuracy": R.WeightedReward(R.AccuracyReward(), 1.0)})
    assert (s.total, s.status, s.extracted) == (correct, status, extracted)
    assert not R.is_failure(s.status)  # a wrong or missing answer is not a failed reward


@pytest.mark.parametrize("completion, w_acc, w_fmt, total", [
    ("<think>x</think><answer>\\boxed{4}</answer>", 1.0, 1.0, 2.0),
    ("<think>x</think><answer>\\boxed{4}</answer>", 1.0, 0.5, 1.5),
    ("<think>x</think><answer>\\boxed{5}</answer>", 1.0, 0.5, 0.5),
    ("\\boxed{4}", 2.0, 0.5, 2.0),
    ("\\boxed{4}", 0.0, 1.0, 0.0),
])
def test_total_is_the_explicit_weighted_sum_of_parts(completion, w_acc, w_fmt, total):
    cfg = Config(reward_funcs=["accuracy", "format"], reward_weights=[w_acc, w_fmt])
    s = R.score_one(completion, EX, R.build_reward_fns(cfg))
    assert s.total == pytest.approx(total)
    assert s.total == pytest.approx(w_acc * s.parts["accuracy"] + w_fmt * s.parts["format"])


def _raises(completion, example):
    raise ZeroDivisionError("bad reward")


@pytest.mark.parametrize("name, fn, fragment", [
    ("boom", _raises, "error: boom: ZeroDivisionError: bad reward"),
    ("nan", lambda c, e: float("nan"), "error: nan: non-finite reward nan"),
    ("inf", lambda c, e: float("inf"), "error: inf: non-finite reward inf"),
    ("text", lambda c, e: "high", "error: text: ValueError"),
])
def test_a_failing_reward_is_a_recorded_status_and_a_finite_total(name, fn, fragment):
    fns = {"format": R.WeightedReward(R.format_reward, 1.0), name: R.WeightedReward(fn, 2.0)}
    s = R.score_one("<think>a</think><answer>4</answer>", EX, fns)
    assert s.status.startswith(fragment) and R.is_failure(s.status)
    assert s.parts[name] == 0.0 and math.isfinite(s.total) and s.total == 1.0  # the other part still counts


def test_score_batch_prefetches_batch_capable_rewards_once():
    calls = []

    class Batched:
        def prefetch(self, completions, examples):
            calls.append(list(completions))

        def __call__(self, completion, example):
            return 0.25

    scores = R.score_batch(["a", "b", "c"], [EX] * 3, {"b": R.WeightedReward(Batched(), 4.0)})
    assert calls == [["a", "b", "c"]] and [s.total for s in scores] == [1.0, 1.0, 1.0]


def test_build_reward_fns_names_only_built_ins_and_takes_custom_ones_explicitly():
    cfg = Config(reward_funcs=["format", "accuracy"], reward_weights=[0.5, 1.0])
    mine = lambda c, e: 1.0
    fns = R.build_reward_fns(cfg, custom={"mine": (mine, 3.0)})
    assert list(fns) == ["format", "accuracy", "mine"] and fns["mine"] == (mine, 3.0)
    assert fns["format"].weight == 0.5 and fns["accuracy"].fn.timeout_s == cfg.reward_timeout_s
    with pytest.raises(ValueError, match="clashes"):
        R.build_reward_fns(cfg, custom={"format": (mine, 1.0)})
    with pytest.raises(ValueError, match="unknown reward 'mine'"):
        Config(reward_funcs=["mine"], reward_weights=[1.0])  # config names built-ins only
    judged = Config(reward_funcs=["judge"], reward_weights=[1.0], judge_model="http://x/v1")
    with pytest.raises(ValueError, match="no judge was given"):
        R.build_reward_fns(judged)


def _module_state(*modules) -> dict:
    """Every module-level mutable value of the project's own, by repr, so an added entry anywhere shows
    up. Not the interpreter's dunders: `__builtins__` is the whole process's builtins dict, which
    other code in the process may touch (one unexplained failure, not reproduced, compared it too)."""
    return {(m.__name__, k): repr(v) for m in modules for k, v in vars(m).items()
            if isinstance(v, (dict, list, set)) and not k.startswith("__")}


def test_two_trainers_with_different_judges_share_no_global_state(tmp_path, tiny_model_path):
    """Regression: the judge used to be registered in rewards._CUSTOM, so a second trainer (or a test)
    saw the first one's judge and reward names leaked between tests."""
    from igrpo_core import config, igrpo
    from igrpo_core import trainer as T
    before = _module_state(R, J, config, igrpo, T)
    local = small_config(tmp_path / "a", reward_funcs=["judge", "accuracy"], reward_weights=[1.0, 1.0],
                         judge_model=tiny_model_path)
    remote = small_config(tmp_path / "b", reward_funcs=["judge"], reward_weights=[1.0],
                          judge_model="http://127.0.0.1:9/v1", judge_model_name="m")  # named: no request made
    ta = T.Trainer(local, custom_rewards={"half": (lambda c, e: 0.5, 1.0)})
    tb = T.Trainer(remote)
    assert isinstance(ta.judge.backend, J.LocalJudgeBackend) and isinstance(tb.judge.backend, J.HTTPJudgeBackend)
    assert ta.reward_fns["judge"].fn is ta.judge and tb.reward_fns["judge"].fn is tb.judge
    assert list(ta.reward_fns) == ["judge", "accuracy", "half"] and list(tb.reward_fns) == ["judge"]
    assert _module_state(R, J, config, igrpo, T) == before
