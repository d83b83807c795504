"""Answer extraction and equivalence checking for the accuracy reward, on top of math-verify 0.9.0.

- `extract_answer`: pure string code, linear time, never raises on a str. Last complete
  \\boxed{}/\\fbox{}, else the last <answer> block, else a final-answer phrase, else None.
- `check_answer` / `is_equivalent`: extraction, math-verify parse + verify under ONE wall-clock limit of
  ours (a re-firing SIGALRM timer: main thread only). math-verify's own alarms are off: nested alarms cancel
  each other, theirs are whole seconds, and they turn a timeout into a silent False.
- `boxed_contents` / `last_boxed`: the project's one \\boxed{} extractor (tinyworld, judge and
  scripts/build_data.py call it); pure string code, so importing this module loads no sympy.
- `check_many` (many pairs in worker processes, on pebble) lives in igrpo_core.checkpool.

Equivalence decisions (math-verify's unless said; tests/test_answers.py holds the table):
- Percentages: gold "50\\%" accepts 50, 50\\% and 0.5, and gold 0.5 accepts 50\\%: accuracy rewards
  the number; whether "%" was written is not its business.
- Units, ^\\circ, \\text{}, \\$ and LaTeX spacing are dropped; floats match to 6 decimal places.
- (1,2) vs (2,1) is False (ordered); \\{1,2\\} vs \\{2,1\\} and bare lists "1, 2" vs "2, 1" are sets.
- Ours, before parsing: "1.5e3" -> 1.5\\times 10^{3} (math-verify reads e as Euler's number);
  "1\\,000" / "1{,}000" / "1 000" -> 1000 (math-verify reads 1\\,000 as 1*000 = 0);
  \\varnothing -> \\emptyset; a bare % -> \\%, \\text{percent} -> \\%. Answers over MAX_ANSWER_CHARS are
  not parsed (status "error").
- Ours, extraction: final boxes joined by separators only are one list "a, b" (a single-value gold
  never equals a list of different values, so several boxes cannot hedge); a % or "percent" right
  after the final box or a phrase's number belongs to the answer. Two inequations (x \\neq 3)
  compare as their equations (math-verify raises KeyError on a pair of sympy Unequality).

Deliberately left out: eval/exec/sympify of model text (math-verify's LaTeX parser is the only
reader); any guard against C-level hangs for inline checks (use check_many with workers >= 2);
sharing SIGALRM with a caller's own timer (ours replaces it for the duration of a check).
"""
from __future__ import annotations

import functools
import gc
import logging
import re
import signal
import sys
import threading
from dataclasses import dataclass
from itertools import product

MAX_ANSWER_CHARS = 4_000  # longer "answers" are recorded as errors, not parsed


class AnswerParseError(ValueError):
    """A gold answer that math-verify cannot parse (or an empty one)."""


class CheckTimeout(BaseException):
    """Raised by our alarm. BaseException so math-verify's `except Exception` cannot swallow it."""


@dataclass
class CheckResult:
    correct: bool
    status: str  # "ok" | "no_answer" | "timeout" | "error"
    extracted: str | None  # what extract_answer found in the completion
    detail: str = ""  # exception type/message, or why nothing was compared


# math-verify warns once that its own timeout is off; ours is on (see _call_with_time_limit).
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(lambda r: not r.getMessage().startswith("Timeout is disabled"))


# --------------------------------------------------------------------------- extraction (strings only)

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Only the phrase is matched, so "Final Answer: The final answer is $5$" yields its last phrase.
_PHRASE_RE = re.compile(
    r"(?i)(?:final\s+answer(?:\s+is)?|the\s+answer\s+is|answer\s+is|answer\s*:)\s*:?|^[ \t]*####",
    re.MULTILINE,
)
_REST_OF_LINE_RE = re.compile(r"\s*([^\n]*)")
_HOPE_RE = re.compile(r"(?i)\s*I hope it is correct\.?$")  # searched in the last 64 chars only
_MATH_WRAP_RE = re.compile(r"^(?:\$\$(.*)\$\$|\$(.*)\$|\\\((.*)\\\)|\\\[(.*)\\\])$", re.DOTALL)
_SPACES_RE = re.compile(r"\s*")
_BOXED_TOKEN_RE = re.compile(r"[^$\n]*")
_STRICT_BOXED_RE = re.compile(r"\\boxed\{")
_BRACE_OR_ESCAPE_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # a backslash pair (\\{ \\} \\\\) is no brace
_BRACE_RE = re.compile(r"[{}]")
# What may stand between boxes that together are one answer: "$\boxed{1}$, $\boxed{2}$",
# "\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}", "x = \boxed{2} or x = \boxed{3}".
_BOX_SEPARATOR_RE = re.compile(
    r"(?:\s|[,;$&]|\\[,;:! ]|\\q?quad\b|\\\\|\\text\{\s*(?:and|or|,|;)?\s*\}|\b(?:and|or)\b"
    r"|\\[()\[\]]|[A-Za-z](?:_\{?\w+\}?)?\s*=)*"
)
_TRAILING_PERCENT_RE = re.compile(r"\$?\s*(?:\\%|%|\\text\{\s*percent\s*\}|percent\b)")
_LEADING_PERCENT_RE = re.compile(r"^\$?([-+]?\d[\d,]*(?:\.\d+)?)\$?\s*(?:\\%|%|percent\b)")
_SENTENCE_END_RE = re.compile(r"(?<=\S)\.(?=\s|$)")


def _matching_braces(text: str, escapes: bool = True) -> tuple[dict[int, int], set[int]]:
    """({'{' index: matching '}' index}, {'{' indices whose pair holds no brace character}), in one
    pass. escapes: LaTeX's \\{ \\} (and any backslash pair) are not braces; without, every brace counts."""
    match, flat, stack, last_brace = {}, set(), [], -1
    for m in (_BRACE_OR_ESCAPE_RE if escapes else _BRACE_RE).finditer(text):  # C-speed over prose
        c, i = m.group(), m.start()
        if c == "{":
            stack.append(i)
            last_brace = i
        elif c == "}":
            if stack:
                start = stack.pop()
                match[start] = i
                if last_brace == start:  # nothing brace-like between the pair
                    flat.add(start)
            last_brace = i
    return match, flat


# A box: (start, end, content_start, content_end); content_start None when it never closes (or a
# brace-less `\\boxed` has no token). Contents are sliced only when read (_content): slicing each
# of 10^4 nested boxes up front would copy the text 10^4 times.
_Box = tuple[int, int, "int | None", "int | None"]


def _content(text: str, box: _Box) -> str | None:
    return None if box[2] is None else text[box[2] : box[3]].strip()


def _boxes(text: str, strict: bool = False) -> list[_Box]:
    """Every box command in text, in order (see _Box). Linear time. See boxed_contents for `strict`."""
    found = list((_STRICT_BOXED_RE if strict else _BOXED_RE).finditer(text))
    if not found:
        return []
    braces, flat = _matching_braces(text, escapes=not strict)
    out = []
    for m in found:
        j = m.end() - 1 if strict else _SPACES_RE.match(text, m.end()).end()
        if j < len(text) and text[j] == "{":
            end = braces.get(j)
            if end is None or (strict and j not in flat):  # strict: what the tiny world's regex never matched
                out.append((m.start(), j + 1 if end is None else end + 1, None, None))
            else:
                out.append((m.start(), end + 1, j + 1, end))
        elif j > m.end():  # "\\boxed 5$": MATH's own convention, up to the closing $ or end of line
            token = _BOXED_TOKEN_RE.match(text, j)
            empty = not token.group(0).strip()
            out.append((m.start(), token.end(), None if empty else j, None if empty else token.end()))
        else:
            out.append((m.start(), m.end(), None, None))
    return out


def boxed_contents(text: str, *, strict: bool = False) -> list[str]:
    """Contents (stripped) of every complete box in text, in order; boxes that never close are skipped.

    Default: \\boxed{...} and \\fbox{...} with nested braces matched (LaTeX's \\{ \\} are not braces),
    spaces allowed before the brace, and MATH's brace-less `\\boxed 5` (up to `$` or end of line).
    strict: only `\\boxed{` written exactly, content without any brace character (backslashes are
    plain characters): the tiny world's format, identical to the regex \\\\boxed\\{([^{}]*)\\}.
    """
    return [_content(text, b) for b in _boxes(text, strict) if b[2] is not None]


def last_boxed(text: str, *, strict: bool = False, skip_unclosed: bool = True) -> str | None:
    """Content of the last complete box (see boxed_contents), or None. skip_unclosed=False: when
    the LAST box never closes, None rather than an earlier box (gold data: no gold, not a wrong one)."""
    boxes = _boxes(text, strict)
    if not skip_unclosed:
        return _content(text, boxes[-1]) if boxes else None
    return next((_content(text, b) for b in reversed(boxes) if b[2] is not None), None)


def _final_group(text: str) -> tuple[int, str] | None:
    """(start offset, answer) of the final answer among the boxes: the last box, or, when the boxes
    before it are joined to it by separators only (`,` `;` "and" "or" \\quad `$` `x =`), all of them
    as one list "a, b".
    Repeats collapse ("3 and 3" is 3). A correction ("\\boxed{2}, no wait, \\boxed{3}") is not
    joined: words other than and/or end the group."""
    boxes = [b for b in _boxes(text) if b[2] is not None]
    if not boxes:
        return None
    group = [boxes[-1]]  # built backwards, from the last box
    for prev in reversed(boxes[:-1]):
        first = group[-1]
        gap = first[0] - prev[1]  # < 0: prev encloses the group (nested boxes are never joined)
        if gap < 0 or gap > 200 or not _content(text, prev) or not _BOX_SEPARATOR_RE.fullmatch(text, prev[1], first[0]):
            break
        group.append(prev)
    group.reverse()
    contents = list(dict.fromkeys(_content(text, b) for b in group))
    answer = ", ".join(contents)
    if len(contents) == 1 and _TRAILING_PERCENT_RE.match(text, group[-1][1]):
        answer += "\\%"  # "\boxed{25}\%" or "\boxed{25} percent": 25 percent, not 25
    return group[0][0], answer


def _drop_hope(s: str) -> str:
    """s without a trailing "I hope it is correct." (MATH's Minerva format). Searched in the tail only:
    `\\s*` searched over the whole string is quadratic in a run of spaces."""
    s = s.rstrip()
    tail = max(0, len(s) - 64)
    m = _HOPE_RE.search(s, tail)
    return (s[: m.start()] if m else s).strip()


def _clean_phrase(s: str) -> str:
    s = _drop_hope(s)
    if not _MATH_WRAP_RE.match(s):  # "5. Then ..." -> "5"; a decimal point is never followed by space
        s = _SENTENCE_END_RE.split(s, maxsplit=1)[0]
    s = s.strip().strip("*").strip()
    m = _MATH_WRAP_RE.match(s)
    if m:
        inner = next(g for g in m.groups() if g is not None)
        if "$" not in inner:
            s = inner.strip()
    pct = _LEADING_PERCENT_RE.match(s)
    if pct:  # "50% of the total" / "50 percent of them": the percentage, not prose after it
        return pct.group(1) + "\\%"
    return s.rstrip(".").strip()


def _last_phrase(text: str) -> str | None:
    last = None
    for last in _PHRASE_RE.finditer(text):
        pass
    if last is None:
        return None
    return _clean_phrase(_REST_OF_LINE_RE.match(text, last.end()).group(1)) or None


def _locate_answer(text: str) -> tuple[int, str] | None:
    """(offset where the match begins, final answer) by the extractor's precedence: the final boxes,
    else the last <answer> block, else the last answer phrase ("The answer is 5", "#### 5")."""
    group = _final_group(text)
    if group and group[1]:
        return group
    start = text.rfind("<answer>")
    if start >= 0:
        end = text.find("</answer>", start)
        content = text[start + len("<answer>") : end if end >= 0 else len(text)].strip()
        if content:
            return start, _last_phrase(content) or _clean_phrase(content) or content
    last = None
    for last in _PHRASE_RE.finditer(text):
        pass
    phrase = _last_phrase(text) if last is not None else None
    return (last.start(), phrase) if phrase else None


def extract_answer(text: str) -> str | None:
    """Final answer substring of a completion, or None. Linear time; never raises on a str.
    Several final boxes joined by separators become one list answer (see _final_group)."""
    found = _locate_answer(text)
    return found[1] if found else None


def answer_start(text: str) -> int | None:
    """Offset where the match `extract_answer` reads begins (its \\boxed, <answer> or phrase), or None:
    text[answer_start(text):] extracts the same answer; draft truncation keeps the tail from here."""
    found = _locate_answer(text)
    return found[0] if found else None


# --------------------------------------------------------------------------- parse + verify

def _call_with_time_limit(seconds: float | None, fn, *args):
    """fn(*args), raising CheckTimeout in the main thread after `seconds` (float). None: no limit."""
    if seconds is None:
        return fn(*args)

    def on_alarm(signum, frame):
        # Never inside this function's own frame (a raise in the `finally` below would skip switching
        # the timer off), nor inside a finaliser (`__del__`) or the unraisable hook
        # that reports what a finaliser raised: Python swallows those raises, and a re-fire landing in
        # the hook broke the hook itself (pytest: "Failed to process unraisable exception"). The next
        # re-fire, 0.25 s later, lands in fn instead.
        if frame is not None and not _in_finaliser(frame) and frame.f_code is not _call_with_time_limit.__code__:
            raise CheckTimeout(f"exceeded {seconds:g}s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    # No cyclic garbage collection inside: the finalisers it runs (e.g. of a finished process pool's
    # connections) would run in fn's time and under its alarm. They run after, as they would have.
    gc_was_on = gc.isenabled()
    gc.disable()
    # Re-fire every 0.25 s: a bare `except:` deep in sympy may swallow the first one.
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if gc_was_on:
            gc.enable()


def _in_finaliser(frame) -> bool:
    """Whether `frame` runs inside a `__del__` or inside sys.unraisablehook (a Python function, or a
    functools.partial of one, as pytest installs), at any depth: there an exception raised is
    swallowed instead of reaching the caller."""
    hook = sys.unraisablehook
    hook = getattr(getattr(hook, "func", hook), "__code__", None)
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code is hook:
            return True
        frame = frame.f_back
    return False


_SCI_RE = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*[eE]\s*([-+]?\d+)\s*$")
# Digit-group separators that math-verify turns into multiplication: "1\,000" parses as 1*000 = 0.
_THOUSANDS_RE = re.compile(r"(?<![\d.])(\d{1,3})((?:(?:\\[,!;: ]|~|\{,\}|,\\!)\d{3})+)(?!\d)")
_THOUSANDS_SEP_RE = re.compile(r"\\[,!;: ]|~|\{,\}|,\\!")
_SPACED_NUMBER_RE = re.compile(r"^\s*-?\d{1,3}(?: \d{3})+(?:\.\d+)?\s*$")
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_PERCENT_WORD_RE = re.compile(r"\s*\\(?:text|mbox|mathrm)\{\s*percent\s*\}")
_BARE_PERCENT_RE = re.compile(r"(?<!\\)%")


def _to_latex_input(answer: str) -> str:
    """Normalise the few forms math-verify misreads, then wrap so its LaTeX extractor takes it all."""
    answer = _SCI_RE.sub(r"\1\\times 10^{\2}", answer)  # 1.5e3: `e` would be Euler's number
    answer = _THOUSANDS_RE.sub(lambda m: m.group(1) + _THOUSANDS_SEP_RE.sub("", m.group(2)), answer)
    if _SPACED_NUMBER_RE.match(answer):  # "1 000 000", only as the whole answer
        answer = answer.replace(" ", "")
    answer = answer.replace("\\varnothing", "\\emptyset")  # otherwise a Symbol named varnothing
    answer = _PERCENT_WORD_RE.sub(r"\\%", answer)  # \text{ percent} is dropped as a unit: 50, not 0.5
    answer = _BARE_PERCENT_RE.sub(r"\\%", answer)  # a bare % starts a LaTeX comment: "12.5%" parses as 12.5
    if "\\boxed" in answer or _UNESCAPED_DOLLAR_RE.search(answer) or "\\(" in answer or "\\[" in answer:
        return answer
    return "\\boxed{" + answer + "}"


def _parse(latex: str) -> list:
    """math-verify's parse, LaTeX extraction only, its own time limit off (ours is on).
    Imported here, not at the top: math-verify brings sympy (~1.5 s), and the tiny world and the
    data builder import this module only for boxed_contents."""
    from math_verify import LatexExtractionConfig, parse

    return parse(latex, [LatexExtractionConfig()], parsing_timeout=None, raise_on_error=True)


def _verify(gold, pred) -> bool:
    """math-verify's verify, except that two inequations (x \\neq 3) are compared as the equations
    they negate: math-verify raises KeyError on a pair of sympy Unequality."""
    from math_verify import verify
    from sympy import Eq, Ne

    if isinstance(gold, Ne) and isinstance(pred, Ne):
        gold, pred = Eq(gold.lhs, gold.rhs, evaluate=False), Eq(pred.lhs, pred.rhs, evaluate=False)
    return verify(gold, pred, timeout_seconds=None, raise_on_error=True)


@functools.lru_cache(maxsize=4096)
def _parse_gold_cached(answer: str) -> tuple:
    if not isinstance(answer, str) or not answer.strip():
        raise AnswerParseError(f"empty gold answer: {answer!r}")
    parsed = _parse(_to_latex_input(answer.strip()))
    if not parsed or all(isinstance(p, str) and not p.strip() for p in parsed):
        raise AnswerParseError(f"math-verify could not parse gold answer {answer!r}")
    return tuple(parsed)


def parse_gold(answer: str) -> list:
    """Parsed gold (math-verify's list: sympy object and/or string fallback). Raises AnswerParseError.

    A string-only result (LaTeX that sympy cannot read, e.g. prose) is accepted: it then matches by
    exact normalised string. No time limit: gold is curated text, parsed once per problem; validate a
    dataset with it at load time.
    """
    try:
        return list(_parse_gold_cached(answer))
    except AnswerParseError:
        raise
    except Exception as e:  # math-verify internals, e.g. a lexer error on malformed LaTeX
        raise AnswerParseError(f"math-verify failed on gold {answer!r}: {type(e).__name__}: {e}") from e


def _verify_all(gold: list, pred: list) -> tuple[bool, str]:
    """Any (gold, pred) combination equal -> True. Errors are collected, not fatal, so one failing
    comparison (say sympy on a matrix) does not hide a string match."""
    errors = []
    for g, p in product(gold, pred):
        try:
            if _verify(g, p):
                return True, ""
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}"[:300])
    return False, "; ".join(errors)


def _require_main_thread(timeout_s: float | None) -> None:
    if timeout_s is not None and threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "check_answer with a time limit uses SIGALRM, which only works in the main thread. "
            "Use check_many (worker processes), or pass timeout_s=None and bound time yourself."
        )


@functools.cache
def warm_up() -> None:
    """Pay math-verify's first-call cost (sympy and the LaTeX grammar load lazily: 1.5 s on a quiet
    core, over 5 s on a loaded one) once per process, outside any time limit, so that the first
    timed check measures the check and not the imports."""
    _verify(_parse("$1$"), _parse("$1$"))


def check_answer(completion: str, gold, *, timeout_s: float | None = 5.0) -> CheckResult:
    """Is the completion's final answer equivalent to gold (a string or parse_gold's output)?

    Never raises on content: a bad gold string, a parse/verify exception or the time limit give
    correct=False with status "error"/"timeout" and the reason in `detail`.
    """
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
    if not isinstance(gold, (str, list, tuple)):
        raise TypeError(f"gold must be a str or parse_gold's list, got {type(gold).__name__}")
    _require_main_thread(timeout_s)
    if timeout_s is not None:
        warm_up()
    stage, found = ["extract"], [None]  # how far _check got, and what it extracted, for a timeout's record
    try:
        return _call_with_time_limit(timeout_s, _check, completion, gold, stage, found)
    except CheckTimeout as e:
        return CheckResult(False, "timeout", found[0], f"{stage[0]}: CheckTimeout: {e}")
    except Exception as e:
        return CheckResult(False, "error", found[0], f"{stage[0]}: {type(e).__name__}: {e}"[:500])


def _check(completion: str, gold, stage: list, found: list) -> CheckResult:
    """Extraction and comparison, both under check_answer's one time limit (extraction is linear, but
    a megabyte of boxes still takes a second or more on a busy core)."""
    extracted = found[0] = extract_answer(completion)
    if extracted is None:
        return CheckResult(False, "no_answer", None, "no boxed/<answer>/final-answer phrase found")
    if len(extracted) > MAX_ANSWER_CHARS:
        return CheckResult(False, "error", extracted[:200], f"answer longer than {MAX_ANSWER_CHARS} chars; not parsed")
    stage[0] = "gold"
    return _compare(extracted, gold, stage)


_PLAIN_INT_RE = re.compile(r"-?[0-9]{1,100}")


def _compare(extracted: str, gold, stage: list) -> CheckResult:
    if isinstance(gold, str) and _PLAIN_INT_RE.fullmatch(gold) and _PLAIN_INT_RE.fullmatch(extracted):
        # Both plain integers (the tiny world's and GSM8K's answers): math-verify's verdict is int equality
        # (tests/test_answers.py compares the two); skipping its parse takes the check from ~1 ms to ~1 us.
        return CheckResult(int(extracted) == int(gold), "ok", extracted)
    gold_parsed = parse_gold(gold) if isinstance(gold, str) else gold
    stage[0] = "parse"
    pred = _parse(_to_latex_input(extracted))
    if not pred:
        return CheckResult(False, "ok", extracted, "prediction did not parse")
    stage[0] = "verify"
    correct, errors = _verify_all(gold_parsed, pred)
    if errors and not correct:
        return CheckResult(False, "error", extracted, f"verify: {errors}")
    return CheckResult(correct, "ok", extracted)


def is_equivalent(pred: str, gold: str, timeout_s: float | None = 5.0) -> bool:
    """Two answer strings (not completions) equivalent? Failures and timeouts count as False."""
    return check_answer("\\boxed{" + pred + "}", gold, timeout_s=timeout_s).correct
