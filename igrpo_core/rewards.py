"""Rewards: accuracy (math-verify), the paper's format reward, and their explicit weighted sum.

A reward function is `(completion: str, example: dict) -> float`. The set a run uses is an explicit
value, `{name: (fn, weight)}` in order, built once by `build_reward_fns(cfg, judge=..., custom=...)`
and passed down to `score_batch`; there is no module-level registry. Config.reward_funcs names
built-ins only (BUILTIN_REWARDS); a custom reward is passed from Python
(`Trainer(cfg, custom_rewards={"mine": (fn, 0.5)})`). "judge" is the generative judge (judge.py),
built by the caller and handed in.
A reward that raises or returns a non-finite value, or an answer check that times out, gives 0 for
that part AND a recorded status on the rollout row, so failures are counted (reward_failures),
never swallowed; a weighted sum that overflows gives a total of 0 and a status the same way. No reward path executes model text.

Deliberately left out: learned reward models, length penalties, a name registry for custom rewards
(config files cannot name Python functions; pass them explicitly).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from igrpo_core import answers
from igrpo_core.options import BUILTIN_REWARDS  # the names Config.reward_funcs may use

RewardFn = Callable[[str, dict], float]


class WeightedReward(NamedTuple):
    fn: RewardFn
    weight: float


RewardFns = dict[str, WeightedReward]  # name -> (fn, weight), in reward_funcs order

# Paper format reward: the whole completion is <think>...</think><answer>...</answer>.
FORMAT_RE = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)


def format_reward(completion: str, example: dict) -> float:
    return 1.0 if FORMAT_RE.match(completion) else 0.0


def accuracy_check(completion: str, example: dict, timeout_s: float = 5.0) -> answers.CheckResult:
    # answers.parse_gold caches, so each distinct gold answer is parsed once.
    return answers.check_answer(completion, str(example["answer"]), timeout_s=timeout_s)


class AccuracyReward:
    """1.0 if the final answer is equivalent to the gold answer, else 0.0. `check` also gives the
    checker's status and the extracted answer, which score_one records on the row."""

    def __init__(self, timeout_s: float = 5.0):
        self.timeout_s = timeout_s

    def check(self, completion: str, example: dict) -> answers.CheckResult:
        return accuracy_check(completion, example, self.timeout_s)

    def __call__(self, completion: str, example: dict) -> float:
        return float(self.check(completion, example).correct)


def build_reward_fns(cfg, *, judge: RewardFn | None = None,
                     custom: dict[str, tuple[RewardFn, float]] | None = None) -> RewardFns:
    """The reward set of a run: cfg.reward_funcs (built-ins) with cfg.reward_weights, then `custom`."""
    fns: RewardFns = {}
    for name, weight in zip(cfg.reward_funcs, cfg.reward_weights):
        if name == "accuracy":
            fn = AccuracyReward(cfg.reward_timeout_s)
        elif name == "format":
            fn = format_reward
        elif name == "judge":
            if judge is None:
                raise ValueError("reward 'judge' is configured but no judge was given "
                                 "(build it with judge.build_judge(cfg))")
            fn = judge
        else:
            raise ValueError(f"unknown reward {name!r}; built-in: {list(BUILTIN_REWARDS)} "
                             "(pass custom rewards explicitly)")
        fns[name] = WeightedReward(fn, float(weight))
    for name, (fn, weight) in (custom or {}).items():
        if name in fns or name in BUILTIN_REWARDS:
            raise ValueError(f"custom reward {name!r} clashes with a built-in or configured reward")
        fns[name] = WeightedReward(fn, float(weight))
    return fns


@dataclass
class Score:
    total: float                         # explicit weighted sum of parts
    parts: dict[str, float] = field(default_factory=dict)
    status: str = "ok"                   # accuracy checker status, or "error: <reward>: <exc>"
    extracted: str | None = None         # answer extracted by the accuracy checker


def _call(name: str, fn: RewardFn, completion: str, example: dict) -> tuple[float, str | None]:
    """One reward part and its failure status (None when it succeeded)."""
    try:
        value = float(fn(completion, example))
    except Exception as exc:  # recorded on the row and counted in metrics, not swallowed
        return 0.0, f"error: {name}: {type(exc).__name__}: {exc}"[:300]
    if not math.isfinite(value):  # a NaN would poison the group's advantages; record it instead
        return 0.0, f"error: {name}: non-finite reward {value}"
    return value, None


def score_one(completion: str, example: dict, reward_fns: RewardFns) -> Score:
    """All reward parts of one completion and their weighted sum (the only place rewards are summed)."""
    parts, statuses, extracted = {}, [], None
    for name, (fn, _) in reward_fns.items():
        check = getattr(fn, "check", None)
        if check is not None:  # the accuracy checker: its status and extracted answer go on the row
            res = check(completion, example)
            parts[name], extracted = float(res.correct), res.extracted
            if res.status != "ok":
                statuses.append(res.status if res.status in ("no_answer", "timeout") else f"error: {res.detail}")
            continue
        parts[name], status = _call(name, fn, completion, example)
        if status is not None:
            statuses.append(status)
    total = sum(w * parts[name] for name, (_, w) in reward_fns.items())
    if not math.isfinite(total):  # finite parts whose weighted sum overflows: a failure like a NaN part
        statuses.append(f"error: non-finite weighted reward sum {total}")
        total = 0.0
    return Score(total, parts, "; ".join(statuses) or "ok", extracted)


def score_batch(completions: list[str], examples: list[dict], reward_fns: RewardFns) -> list[Score]:
    """Scores in the calling (main) thread; math-verify's alarm-based time limit needs it."""
    for fn, _ in reward_fns.values():  # batch-capable rewards (the generative judge) score the batch at once
        prefetch = getattr(fn, "prefetch", None)
        if prefetch is not None:
            prefetch(completions, examples)
    return [score_one(c, e, reward_fns) for c, e in zip(completions, examples)]


def is_failure(status: str) -> bool:
    """Statuses that mean the reward could not be computed (as opposed to a wrong/missing answer)."""
    return status != "ok" and status != "no_answer"
