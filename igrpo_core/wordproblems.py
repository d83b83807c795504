"""Word problems: a small verifiable task sized for a 135M instruct model (SmolLM2) on CPU.

One- or two-operation integer problems in plain English, with gold answers:

    "Tom has 7 apples. He buys 5 more. How many apples does he have now?"   -> "12"

Levels (measured success rates of SmolLM2-135M-Instruct are in the README):
    0: one + or -, single-digit operands (1..9)
    1: one + or -, operands 2..20
    2: one of + - * /, larger operands (+/- up to 99, * and / with factors 2..12)
    3: two operations (a * or +/- step, then a +/- step)

Train and held-out problems are disjoint in their arithmetic, not only their wording: a problem
belongs to the held-out pool iff a stable hash of its arithmetic key (level, operations, operands)
falls in a fixed bucket, so no held-out sum appears in training under another name or object.
Dataset spec strings (see data.load_dataset): "words:train", "words:heldout" (DEFAULT_LEVEL),
"words1:heldout", "words3:train", ...

Deliberately left out: fractions, units, distractor sentences, answer checking (rewards does that).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from igrpo_core.tinyworld import stable_hash

SOURCE = "words"
HELDOUT_BUCKETS = 10
DEFAULT_LEVEL = 0  # SmolLM2-135M (Q4_1 GGUF) at T 0.7, see README for the measured rate
LEVELS = (0, 1, 2, 3)

# How the model is told to answer. Without it SmolLM2 answers in prose and marks no answer. Measured on
# 32 held-out level-0 problems at T 0.7 (2026-12-01): "Reply with only the answer, like \\boxed{5}"
# 5-10% correct with ~60% of replies unmarked (it states the right sum in prose but never boxes it);
# "End your reply with: The answer is N" 3% (16% after one worked example); "then write #### and
# the answer" 3%, and after ONE worked example in GSM8K's "#### N" format 22% with 19% unmarked. So every problem text is
# EXAMPLE + problem + INSTRUCTION (the gold answer is unaffected). The example's sum (3 + 4) is a
# training-pool key, so no held-out problem is shown in a prompt.
EXAMPLE = ("Example:\nMia has 3 shells. She buys 4 more. How many shells does she have now?\n"
           "Mia has 3 + 4 = 7 shells.\n#### 7\n\nNow solve this one:\n")
SYSTEM_PROMPT = "Solve the problem in one line, then write #### and the answer."
INSTRUCTION = "Solve it in one line, then write #### and the answer."
DRAFT_TEMPLATE = ("{question}\n\nHere is a previous attempt. It may be wrong:\n{draft}\n\n"
                  "Check it and solve the problem again in one line, then write #### and the answer.")

PEOPLE = [("Tom", "he", "his"), ("Anna", "she", "her"), ("Ben", "he", "his"), ("Mia", "she", "her"),
          ("Sam", "he", "his"), ("Lily", "she", "her"), ("Max", "he", "his"), ("Emma", "she", "her"),
          ("Leo", "he", "his"), ("Zoe", "she", "her")]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "coins",
         "balloons"]

# One template per step kind; {a} {b} are operands, {x} the running quantity of a two-step problem.
FIRST = {
    "+": "{name} has {a} {item}. {He} buys {b} more.",
    "-": "{name} has {a} {item}. {He} gives {b} of them to a friend.",
    "*": "{name} buys {a} bags of {item} with {b} {item} in each bag.",
    "/": "{name} has {a} {item} and shares them equally among {b} friends.",
}
QUESTION = {
    "+": "How many {item} does {name} have now?",
    "-": "How many {item} does {name} have left?",
    "*": "How many {item} does {name} buy in total?",
    "/": "How many {item} does each friend get?",
}
SECOND = {  # applied to the first step's total
    "+": "Then {his} aunt gives {him} {c} more.",
    "-": "Then {he} loses {c} of them.",
}
FINAL_QUESTION = "How many {item} does {name} have at the end?"


@dataclass(frozen=True)
class Problem:
    ops: tuple[str, ...]
    nums: tuple[int, ...]
    answer: int


def _operands(rng: random.Random, op: str, level: int) -> tuple[int, int, int]:
    """(a, b, a op b) with a non-negative whole result."""
    top = 9 if level == 0 else 20 if level == 1 else 99
    if op == "+":
        lo = 1 if level == 0 else 2
        a, b = rng.randint(lo, top), rng.randint(lo, top)
        return a, b, a + b
    if op == "-":
        a = rng.randint(2 if level == 0 else 3, top)
        b = rng.randint(1, a - 1)
        return a, b, a - b
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return a, b, a * b
    b, q = rng.randint(2, 12), rng.randint(2, 12)  # "/": exact division
    return b * q, b, q


def sample_problem(rng: random.Random, level: int) -> Problem:
    if level in (0, 1):
        op = rng.choice("+-")
        a, b, r = _operands(rng, op, level)
        return Problem((op,), (a, b), r)
    if level == 2:
        op = rng.choice("+-*/")
        a, b, r = _operands(rng, op, level)
        return Problem((op,), (a, b), r)
    if level == 3:
        op1, op2 = rng.choice("+-*"), rng.choice("+-")
        a, b, x = _operands(rng, op1, 1 if op1 != "*" else 2)
        c = rng.randint(2, 20) if op2 == "+" else rng.randint(1, max(1, x - 1))
        return Problem((op1, op2), (a, b, c), x + c if op2 == "+" else x - c)
    raise ValueError(f"word-problem level must be one of {LEVELS}, got {level!r}")


def arithmetic_key(level: int, p: Problem) -> str:
    """What makes two problems the same sum, whatever their wording: decides the split."""
    return f"{level}:{','.join(p.ops)}:{','.join(map(str, p.nums))}"


def is_heldout(key: str) -> bool:
    return stable_hash(key) % HELDOUT_BUCKETS == 0


def render(rng: random.Random, p: Problem) -> str:
    """The problem in words, without the answer instruction."""
    name, he, his = rng.choice(PEOPLE)
    f = dict(name=name, He=he.capitalize(), he=he, his=his, him="him" if he == "he" else "her",
             item=rng.choice(ITEMS), a=p.nums[0], b=p.nums[1])
    if len(p.ops) == 1:
        return f"{FIRST[p.ops[0]].format(**f)} {QUESTION[p.ops[0]].format(**f)}"
    f["c"] = p.nums[2]
    return f"{FIRST[p.ops[0]].format(**f)} {SECOND[p.ops[1]].format(**f)} {FINAL_QUESTION.format(**f)}"


def make_split(split: str, n: int, level: int = DEFAULT_LEVEL, seed: int = 0) -> list[dict]:
    """n distinct problems of one split ("train" | "heldout"), deterministic in (split, n, level, seed)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if level not in LEVELS:
        raise ValueError(f"word-problem level must be one of {LEVELS}, got {level!r}")
    rng = random.Random(f"words/{level}/{split}/{seed}")
    out, seen, budget = [], set(), 200 * n + 10_000
    while len(out) < n:
        budget -= 1
        if budget < 0:
            raise ValueError(f"could only find {len(out)} distinct level-{level} {split} problems of {n}")
        p = sample_problem(rng, level)
        key = arithmetic_key(level, p)
        text = render(rng, p)
        if is_heldout(key) != (split == "heldout") or text in seen:
            continue
        seen.add(text)
        out.append({"id": f"words{level}/{split}/{len(out):05d}", "problem": f"{EXAMPLE}{text}\n{INSTRUCTION}",
                    "answer": str(p.answer), "source": SOURCE, "level": level, "key": key, "question": text})
    return out


SPEC_RE = re.compile(r"^words(\d*)(?::(\w+))?$")


def load_spec(spec: str, n: int) -> list[dict]:
    """Rows for "words[LEVEL][:SPLIT]" (split default train, level default DEFAULT_LEVEL)."""
    m = SPEC_RE.match(spec)
    if not m:
        raise ValueError(f"word-problem dataset spec must look like 'words2:heldout', got {spec!r}")
    return make_split(m.group(2) or "train", n, int(m.group(1) or DEFAULT_LEVEL))
