"""The built-in "tiny world": a synthetic, verifiable arithmetic task and the character tokenizer and
model shape of the tiny causal LM that the project ships (data/models/tiny-arith).

Problems are multi-step integer expressions with + - * and normal precedence ("Compute 7+12*3-4."),
every intermediate value non-negative. Worked solutions use the paper's output format, one step per
operation, multiplications first and then left to right:

    <think>12*3=36 7+36=43 43-4=39</think><answer>\\boxed{39}</answer>

Train and held-out problems are disjoint by construction: an expression belongs to the held-out pool
iff a stable hash (blake2b, not Python's salted hash()) of its text falls in a fixed bucket.

Deliberately left out: the warm-start training loop (scripts/build_tiny_model.py), and answer
checking beyond an exact integer match of the boxed value (the general checker lives in rewards).
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from igrpo_core.answers import last_boxed  # string code only; math-verify is imported lazily there

SOURCE = "tiny"
HELDOUT_BUCKETS = 10  # 1 in HELDOUT_BUCKETS expressions (by stable hash) is held out


@dataclass(frozen=True)
class Difficulty:
    num_ops: tuple[int, int] = (2, 3)      # inclusive range of operator count per problem
    max_operand: int = 20                  # additive operands and first factors drawn from 1..max_operand
    mul_range: tuple[int, int] = (2, 5)    # inclusive range of the right-hand factor of each '*'


DEFAULT = Difficulty()
# The harder level (issue 11): always three operations and right-hand factors up to 7, so products
# and sums run larger. The shipped model was warm-started on DEFAULT only; on 200 held-out problems
# it solves about half as many (README, "Tiny-world levels"), and its wrong answers are often near
# misses (off by a few). Four operations or operands up to 50 were tried and rejected: greedy
# accuracy fell to 2-5% (100 problems), which leaves refinement nothing to work with.
HARD = Difficulty(num_ops=(3, 3), max_operand=20, mul_range=(2, 7))
LEVELS = {"tiny": DEFAULT, "tiny-hard": HARD}  # dataset spec name -> difficulty ("tiny-hard:heldout")

# --------------------------------------------------------------------------- problems and solutions


def _sample_expression(rng: random.Random, d: Difficulty) -> tuple[list[int], list[str]]:
    """Operands and operators of one random expression (no validity check)."""
    n_ops = rng.randint(*d.num_ops)
    ops = [rng.choice("+-*") for _ in range(n_ops)]
    nums = [rng.randint(1, d.max_operand)]
    for op in ops:
        nums.append(rng.randint(*d.mul_range) if op == "*" else rng.randint(1, d.max_operand))
    return nums, ops


def solve_steps(nums: list[int], ops: list[str]) -> list[tuple[int, str, int, int]]:
    """Steps (left, op, right, result): every '*' first (left to right), then + and - left to right."""
    steps, terms, add_ops = [], [nums[0]], []
    for op, x in zip(ops, nums[1:]):
        if op == "*":
            steps.append((terms[-1], "*", x, terms[-1] * x))
            terms[-1] = terms[-1] * x
        else:
            terms.append(x)
            add_ops.append(op)
    acc = terms[0]
    for op, x in zip(add_ops, terms[1:]):
        new = acc + x if op == "+" else acc - x
        steps.append((acc, op, x, new))
        acc = new
    return steps


def format_solution(steps: list[tuple[int, str, int, int]], answer: int | str) -> str:
    chain = " ".join(f"{a}{op}{b}={c}" for a, op, b, c in steps)
    return f"<think>{chain}</think><answer>\\boxed{{{answer}}}</answer>"


def stable_hash(text: str) -> int:
    """A process-independent 64-bit hash of text (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def is_heldout(expression: str) -> bool:
    """Whether an expression belongs to the held-out pool (fixed forever: changing it leaks problems)."""
    return stable_hash(expression) % HELDOUT_BUCKETS == 0


def make_example(rng: random.Random, difficulty: Difficulty = DEFAULT) -> dict:
    """One valid random problem (rejection-sampled until all intermediates are >= 0); id left empty."""
    for _ in range(10_000):
        nums, ops = _sample_expression(rng, difficulty)
        steps = solve_steps(nums, ops)
        if all(c >= 0 for *_, c in steps):
            break
    else:  # pragma: no cover - only reachable with a degenerate Difficulty
        raise ValueError(f"could not sample a problem with non-negative intermediates for {difficulty}")
    expr = "".join(str(n) + op for n, op in zip(nums, ops)) + str(nums[-1])
    value = steps[-1][3]
    return {"id": "", "problem": f"Compute {expr}.", "answer": str(value), "source": SOURCE,
            "solution": format_solution(steps, value), "expression": expr}


def make_split(split: str, n: int, seed: int = 0, difficulty: Difficulty = DEFAULT,
               name: str = SOURCE) -> list[dict]:
    """n distinct problems of one split ("train" or "heldout"), deterministic in (split, n, seed, difficulty).

    The two splits draw from disjoint pools (see is_heldout), so any train set and any held-out set,
    whatever their seeds and levels, share no problem. Ids look like "<name>/heldout/00042"
    (name: the level, "tiny" or "tiny-hard").
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"tinyworld/{split}/{seed}/{difficulty}")
    want_heldout = split == "heldout"
    out, seen = [], set()
    budget = 200 * n + 10_000
    while len(out) < n:
        budget -= 1
        if budget < 0:
            raise ValueError(f"could only find {len(out)} distinct {split} problems of {n} for {difficulty}")
        ex = make_example(rng, difficulty)
        if is_heldout(ex["expression"]) != want_heldout or ex["expression"] in seen:
            continue
        seen.add(ex["expression"])
        ex["id"] = f"{name}/{split}/{len(out):05d}"
        out.append(ex)
    return out


# --------------------------------------------------------------------------- answers and drafts

_STEP = re.compile(r"^(-?\d+)([+\-*])(-?\d+)=(-?\d+)$")


def boxed_answer(text: str) -> str | None:
    """Content of the last \\boxed{...} in text, stripped, or None: answers.last_boxed in its strict
    form (exactly `\\boxed{`, no braces inside), the one the tiny world's reward has always used."""
    return last_boxed(text, strict=True)


def is_correct(completion: str, answer: str) -> bool:
    """Exact integer match of the last boxed value against the reference answer."""
    got = boxed_answer(completion)
    try:
        return got is not None and int(got) == int(answer)
    except ValueError:
        return False


def parse_steps(solution: str) -> list[tuple[int, str, int, int]]:
    """The (left, op, right, result) steps of a solution's <think> chain; malformed steps are skipped."""
    m = re.search(r"<think>(.*?)</think>", solution, re.S)
    steps = []
    for tok in (m.group(1).split() if m else []):
        s = _STEP.match(tok)
        if s:
            steps.append((int(s.group(1)), s.group(2), int(s.group(3)), int(s.group(4))))
    return steps


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _propagate(steps: list[tuple[int, str, int, int]], i: int, wrong: int) -> list[tuple[int, str, int, int]]:
    """Replace step i's result by `wrong` and carry it into the later step that consumes it, recursively."""
    steps = list(steps)
    old = steps[i][3]
    a, op, b, _ = steps[i]
    steps[i] = (a, op, b, wrong)
    for j in range(i + 1, len(steps)):
        a, op, b, c = steps[j]
        if a == old:
            steps[j] = (wrong, op, b, c)
        elif b == old:
            steps[j] = (a, op, wrong, c)
        else:
            continue
        return _propagate(steps, j, _apply(*steps[j][:3]))
    return steps


def corrupt_solution(rng: random.Random, solution: str) -> str:
    """A plausible wrong draft of a correct solution; its final boxed answer always differs.

    One of: a step's result off by a small amount, carried consistently to the final answer (an
    arithmetic slip); the right chain with a wrong final answer; a chain truncated early whose last
    intermediate is reported as the answer (falls back to an arithmetic slip if that equals the truth).
    """
    steps = parse_steps(solution)
    truth = boxed_answer(solution)
    if not steps or truth is None:
        raise ValueError(f"not a tiny-world solution: {solution!r}")
    mode = rng.choice(("slip", "slip", "final", "truncate"))
    if mode == "truncate" and len(steps) > 1:
        k = rng.randint(1, len(steps) - 1)
        if str(steps[k - 1][3]) != truth:
            return format_solution(steps[:k], steps[k - 1][3])
        mode = "slip"
    if mode == "final":
        wrong = int(truth) + rng.choice((-1, 1)) * rng.randint(1, 3)
        return format_solution(steps, wrong if wrong >= 0 else int(truth) + 1)
    for _ in range(100):
        i = rng.randrange(len(steps))
        delta = rng.choice((-1, 1)) * rng.randint(1, 3)
        if steps[i][3] + delta < 0:
            delta = -delta
        bad = _propagate(steps, i, steps[i][3] + delta)
        if str(bad[-1][3]) != truth:
            return format_solution(bad, bad[-1][3])
    return format_solution(steps, int(truth) + 1)  # pragma: no cover - propagation always changes it


# --------------------------------------------------------------------------- tokenizer and model shape

PAD, EOS = "<pad>", "<|eos|>"
FORMAT_TOKENS = ("<think>", "</think>", "<answer>", "</answer>", "\\boxed{")
CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
# Renders: optional system line, "Q: {user}\n", assistant turns "A: {content}{eos}\n", prompt "A: ".
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ m['content'] + '\n' }}"
    "{%- elif m['role'] == 'user' -%}{{ 'Q: ' + m['content'] + '\n' }}"
    "{%- elif m['role'] == 'assistant' -%}{{ 'A: ' + m['content'] + eos_token + '\n' }}"
    "{%- else -%}{{ raise_exception('unknown role: ' + m['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'A: ' }}{%- endif -%}"
)


def build_tokenizer():
    """A character-level PreTrainedTokenizerFast: every printable ASCII char is one token, other text
    falls back to UTF-8 byte tokens (so nothing is ever <unk>), and the five format strings are single
    non-special tokens so they decode. decode(encode(x)) == x exactly."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in CHARS:
        vocab[ch] = len(vocab)
    # No merges and no pre-tokenizer: a BPE model that splits text into single characters.
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, EOS)])
    tk.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=PAD, eos_token=EOS,
                                  padding_side="left", clean_up_tokenization_spaces=False,
                                  model_max_length=512)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def model_config(tok, *, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 2,
                 head_dim: int = 64, intermediate_size: int = 384, max_positions: int = 512):
    """LlamaConfig of the tiny model (~0.9M parameters, float32, tied embeddings)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        head_dim=head_dim, max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        rms_norm_eps=1e-5, rope_theta=10000.0, dtype="float32",
    )


def generation_config(tok):
    """Sampling defaults: plain temperature-1 sampling. top_k must be 0, not None: transformers fills an
    unset top_k with 50, which would silently truncate the distribution RL samples from."""
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                            do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=64)
