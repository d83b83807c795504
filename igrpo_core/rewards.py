"""Rewards: accuracy (math-verify), the paper's format reward, and their explicit weighted sum.

A reward function is `(completion: str, example: dict) -> float`. Built-ins: "accuracy", "format";
"judge" (a generative judge, see judge.py) is attached by the trainer when configured. Users add
their own with `register_reward`. A reward that raises or returns NaN/inf, or an answer check that
times out, gives 0 for that part AND a recorded status on the rollout row, so failures are counted,
never swallowed.
No reward path executes model text.

Deliberately left out: learned reward models, length penalties.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

from igrpo_core import answers

RewardFn = Callable[[str, dict], float]

# Paper format reward: the whole completion is <think>...</think><answer>...</answer>.
FORMAT_RE = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)


def format_reward(completion: str, example: dict) -> float:
    return 1.0 if FORMAT_RE.match(completion) else 0.0


def accuracy_check(completion: str, example: dict, timeout_s: float = 5.0) -> answers.CheckResult:
    # answers.parse_gold caches, so each distinct gold answer is parsed once.
    return answers.check_answer(completion, str(example["answer"]), timeout_s=timeout_s)


_CUSTOM: dict[str, RewardFn] = {}


def register_reward(name: str, fn: RewardFn) -> None:
    """Make `fn(completion, example) -> float` usable as reward_funcs=[..., name]."""
    if name in ("accuracy", "format"):
        raise ValueError(f"{name!r} is a built-in reward")
    _CUSTOM[name] = fn


def known_rewards() -> set[str]:
    return {"accuracy", "format", "judge", *_CUSTOM}


@dataclass
class Score:
    total: float                         # explicit weighted sum of parts
    parts: dict[str, float] = field(default_factory=dict)
    status: str = "ok"                   # accuracy checker status, or "error: <reward>: <exc>"
    extracted: str | None = None         # answer extracted by the accuracy checker


def score_one(completion: str, example: dict, funcs: list[str], weights: list[float], *,
              timeout_s: float = 5.0) -> Score:
    """All reward parts of one completion and their weighted sum (the only place rewards are summed)."""
    parts, statuses, extracted = {}, [], None
    for name in funcs:
        if name == "accuracy":
            res = accuracy_check(completion, example, timeout_s)
            parts[name], extracted = float(res.correct), res.extracted
            if res.status != "ok":
                statuses.append(res.status if res.status in ("no_answer", "timeout") else f"error: {res.detail}")
            continue
        fn = format_reward if name == "format" else _CUSTOM.get(name)
        if fn is None:
            raise ValueError(f"unknown reward {name!r}; known: {sorted(known_rewards())}")
        try:
            parts[name] = float(fn(completion, example))
        except Exception as exc:  # recorded on the row and counted in metrics, not swallowed
            parts[name] = 0.0
            statuses.append(f"error: {name}: {type(exc).__name__}: {exc}"[:300])
            continue
        if not math.isfinite(parts[name]):  # NaN/inf would poison selection and advantages: a failure
            statuses.append(f"error: {name}: non-finite reward {parts[name]}")
            parts[name] = 0.0
    total = sum(w * parts[n] for n, w in zip(funcs, weights))
    return Score(total, parts, "; ".join(statuses) or "ok", extracted)


def score_batch(completions: list[str], examples: list[dict], funcs: list[str], weights: list[float], *,
                timeout_s: float = 5.0) -> list[Score]:
    """Scores in the calling (main) thread; math-verify's alarm-based time limit needs it."""
    for name in funcs:  # batch-capable rewards (the generative judge) score the whole batch in one call
        prefetch = getattr(_CUSTOM.get(name), "prefetch", None)
        if prefetch is not None:
            prefetch(completions, examples)
    return [score_one(c, e, funcs, weights, timeout_s=timeout_s)
            for c, e in zip(completions, examples)]


def is_failure(status: str) -> bool:
    """Statuses that mean the reward could not be computed (as opposed to a wrong/missing answer)."""
    return status != "ok" and status != "no_answer"
