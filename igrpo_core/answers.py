"""Answer extraction and equivalence checking for the accuracy reward, on top of math-verify 0.9.0.

- `extract_answer`: pure string code, linear time, never raises on a str. Last complete
  \\boxed{}/\\fbox{}, else the last <answer> block, else a final-answer phrase, else None.
- `check_answer` / `is_equivalent`: math-verify parse + verify under ONE wall-clock limit of ours (a
  re-firing SIGALRM timer: main thread only). math-verify's own alarms are off: nested alarms cancel
  each other, theirs are whole seconds, and they turn a timeout into a silent False.
- `check_many`: the same in worker processes, with a guard that kills a worker stuck where the alarm
  cannot reach (C code holding the interpreter) and records that pair as "timeout".

Equivalence decisions (math-verify's unless said; tests/test_answers.py holds the table):
- Percentages: gold "50\\%" accepts 50, 50\\% and 0.5, and gold 0.5 accepts 50\\%: accuracy rewards
  the number; whether "%" was written is not its business.
- Units, ^\\circ, \\text{}, \\$ and LaTeX spacing are dropped; floats match to 6 decimal places.
- (1,2) vs (2,1) is False (ordered); \\{1,2\\} vs \\{2,1\\} and bare lists "1, 2" vs "2, 1" are sets.
- Ours, before parsing: "1.5e3" -> 1.5\\times 10^{3} (math-verify reads e as Euler's number);
  "1\\,000" / "1{,}000" / "1 000" -> 1000 (math-verify reads 1\\,000 as 1*000 = 0);
  \\varnothing -> \\emptyset. Answers over MAX_ANSWER_CHARS are not parsed (status "error").

Deliberately left out: eval/exec/sympify of model text (math-verify's LaTeX parser is the only
reader); any guard against C-level hangs for inline checks (use check_many with workers >= 2);
sharing SIGALRM with a caller's own timer (ours replaces it for the duration of a check).
"""
from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import re
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from itertools import product
from multiprocessing.connection import wait

from math_verify import LatexExtractionConfig, parse, verify

MAX_ANSWER_CHARS = 4_000  # longer "answers" are recorded as errors, not parsed
GUARD_SLACK_S = 3.0  # check_many kills a worker silent for timeout_s * 2 + this many seconds
WORKER_START_S = 180.0  # a worker process that is not ready by then is a setup error, raised
_LATEX_ONLY = [LatexExtractionConfig()]


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
_HOPE_RE = re.compile(r"(?i)\s*I hope it is correct\.?\s*$")
_MATH_WRAP_RE = re.compile(r"^(?:\$\$(.*)\$\$|\$(.*)\$|\\\((.*)\\\)|\\\[(.*)\\\])$", re.DOTALL)
_SPACES_RE = re.compile(r"\s*")
_BOXED_TOKEN_RE = re.compile(r"[^$\n]*")
_SENTENCE_END_RE = re.compile(r"(?<=\S)\.(?=\s|$)")


def _matching_braces(text: str) -> dict[int, int]:
    """Map each '{' index to its matching '}' in one pass; escaped braces (\\{ \\}) are skipped."""
    match, stack, i = {}, [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            match[stack.pop()] = i
        i += 1
    return match


def _last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...}/\\fbox{...} (or `\\boxed 5`); unclosed ones are skipped."""
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    if not starts:
        return None
    braces = _matching_braces(text)
    for pos in reversed(starts):
        j = _SPACES_RE.match(text, pos).end()
        if j < len(text) and text[j] == "{":
            if j in braces:
                return text[j + 1 : braces[j]].strip()
        elif j > pos:  # "\boxed 5$": MATH's own convention, up to the closing $ or end of line
            token = _BOXED_TOKEN_RE.match(text, j).group(0).strip()
            if token:
                return token
    return None


def _clean_phrase(s: str) -> str:
    s = _HOPE_RE.sub("", s.strip()).strip()
    if not _MATH_WRAP_RE.match(s):  # "5. Then ..." -> "5"; a decimal point is never followed by space
        s = _SENTENCE_END_RE.split(s, maxsplit=1)[0]
    s = s.strip().strip("*").strip()
    m = _MATH_WRAP_RE.match(s)
    if m:
        inner = next(g for g in m.groups() if g is not None)
        if "$" not in inner:
            s = inner.strip()
    return s.rstrip(".").strip()


def _last_phrase(text: str) -> str | None:
    last = None
    for last in _PHRASE_RE.finditer(text):
        pass
    if last is None:
        return None
    return _clean_phrase(_REST_OF_LINE_RE.match(text, last.end()).group(1)) or None


def extract_answer(text: str) -> str | None:
    """Final answer substring of a completion, or None. Linear time; never raises on a str."""
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    start = text.rfind("<answer>")
    if start >= 0:
        end = text.find("</answer>", start)
        content = text[start + len("<answer>") : end if end >= 0 else len(text)].strip()
        if content:
            return _last_phrase(content) or _clean_phrase(content) or content
    return _last_phrase(text)


def answer_start(text: str) -> int | None:
    """Offset where the match `extract_answer` reads begins (its \\boxed, <answer> or phrase), or None.

    Follows extract_answer's precedence, so text[answer_start(text):] extracts the same answer; draft
    truncation keeps the tail from here.
    """
    if _last_boxed(text):
        for m in reversed(list(_BOXED_RE.finditer(text))):  # the last *complete* one
            if _last_boxed(text[m.start():]):
                return m.start()
    start = text.rfind("<answer>")
    if start >= 0:
        end = text.find("</answer>", start)
        if text[start + len("<answer>") : end if end >= 0 else len(text)].strip():
            return start
    last = None
    for last in _PHRASE_RE.finditer(text):
        pass
    return last.start() if last is not None and _last_phrase(text) else None


# --------------------------------------------------------------------------- parse + verify

def _call_with_time_limit(seconds: float | None, fn, *args):
    """fn(*args), raising CheckTimeout in the main thread after `seconds` (float). None: no limit."""
    if seconds is None:
        return fn(*args)

    def on_alarm(signum, frame):
        # Never inside this function's own frame: a raise in the `finally` below would skip
        # switching the timer off. The next re-fire, 0.25 s later, lands in fn instead.
        if frame is None or frame.f_code is not _call_with_time_limit.__code__:
            raise CheckTimeout(f"exceeded {seconds:g}s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    # Re-fire every 0.25 s: a bare `except:` deep in sympy may swallow the first one.
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)


_SCI_RE = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*[eE]\s*([-+]?\d+)\s*$")
# Digit-group separators that math-verify turns into multiplication: "1\,000" parses as 1*000 = 0.
_THOUSANDS_RE = re.compile(r"(?<![\d.])(\d{1,3})((?:(?:\\[,!;: ]|~|\{,\}|,\\!)\d{3})+)(?!\d)")
_THOUSANDS_SEP_RE = re.compile(r"\\[,!;: ]|~|\{,\}|,\\!")
_SPACED_NUMBER_RE = re.compile(r"^\s*-?\d{1,3}(?: \d{3})+(?:\.\d+)?\s*$")
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")


def _to_latex_input(answer: str) -> str:
    """Normalise the few forms math-verify misreads, then wrap so its LaTeX extractor takes it all."""
    answer = _SCI_RE.sub(r"\1\\times 10^{\2}", answer)  # 1.5e3: `e` would be Euler's number
    answer = _THOUSANDS_RE.sub(lambda m: m.group(1) + _THOUSANDS_SEP_RE.sub("", m.group(2)), answer)
    if _SPACED_NUMBER_RE.match(answer):  # "1 000 000", only as the whole answer
        answer = answer.replace(" ", "")
    answer = answer.replace("\\varnothing", "\\emptyset")  # otherwise a Symbol named varnothing
    if "\\boxed" in answer or _UNESCAPED_DOLLAR_RE.search(answer) or "\\(" in answer or "\\[" in answer:
        return answer
    return "\\boxed{" + answer + "}"


@functools.lru_cache(maxsize=4096)
def _parse_gold_cached(answer: str) -> tuple:
    if not isinstance(answer, str) or not answer.strip():
        raise AnswerParseError(f"empty gold answer: {answer!r}")
    parsed = parse(_to_latex_input(answer.strip()), _LATEX_ONLY, parsing_timeout=None, raise_on_error=True)
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
            if verify(g, p, timeout_seconds=None, raise_on_error=True):
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
    extracted = extract_answer(completion)
    if extracted is None:
        return CheckResult(False, "no_answer", None, "no boxed/<answer>/final-answer phrase found")
    if len(extracted) > MAX_ANSWER_CHARS:
        return CheckResult(False, "error", extracted[:200], f"answer longer than {MAX_ANSWER_CHARS} chars; not parsed")
    stage = ["gold"]  # how far _compare got, for the detail of a timeout or error
    try:
        return _call_with_time_limit(timeout_s, _compare, extracted, gold, stage)
    except CheckTimeout as e:
        return CheckResult(False, "timeout", extracted, f"{stage[0]}: CheckTimeout: {e}")
    except Exception as e:
        return CheckResult(False, "error", extracted, f"{stage[0]}: {type(e).__name__}: {e}"[:500])


def _compare(extracted: str, gold, stage: list) -> CheckResult:
    gold_parsed = parse_gold(gold) if isinstance(gold, str) else gold
    stage[0] = "parse"
    pred = parse(_to_latex_input(extracted), _LATEX_ONLY, parsing_timeout=None, raise_on_error=True)
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


# --------------------------------------------------------------------------- worker processes

def _worker_main(conn, check_fn) -> None:
    conn.send(("ready", None))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        timeout_s, items = msg
        for idx, completion, gold in items:
            try:
                res = check_fn(completion, gold, timeout_s=timeout_s)
            except Exception as e:  # a custom check_fn that raises: recorded, the worker lives on
                res = CheckResult(False, "error", None, f"check_fn: {type(e).__name__}: {e}"[:500])
            conn.send((idx, res))


@dataclass
class _Worker:
    proc: mp.process.BaseProcess
    conn: object  # parent end of a duplex Pipe
    ready: bool = False
    started: float = 0.0  # when the process was started
    pending: deque | None = None  # item indices sent and not yet answered, in order
    last_progress: float = 0.0  # when the current head of `pending` started


def _mp_context():
    # forkserver: workers fork from a clean server that has NOT inherited the parent's threads, CUDA
    # state or torch allocator (the hazard of "fork"), yet, unlike "spawn", replacements start in
    # milliseconds because the server has this module (sympy, math-verify) preloaded.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return mp.get_context("spawn")


def _start_worker(ctx, check_fn) -> _Worker:
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_worker_main, args=(child, check_fn), daemon=True)
    proc.start()
    child.close()
    return _Worker(proc, parent, started=time.monotonic(), pending=deque())


def _stop_worker(w: _Worker, kill: bool) -> None:
    if not kill:
        try:
            w.conn.send(None)
        except OSError:
            kill = True
    if kill:
        w.proc.kill()
    w.proc.join(timeout=5)
    if w.proc.is_alive():
        w.proc.kill()
        w.proc.join()
    w.conn.close()


def _fail_head(w: _Worker, st: _RunState, status: str, detail: str) -> None:
    """The worker's current pair gets `status`; the rest of its chunk goes back to the queue."""
    idx = w.pending.popleft()
    st.results[idx] = CheckResult(False, status, extract_answer(st.pairs[idx][0]), detail)
    if w.pending:
        st.todo.appendleft(list(w.pending))
    w.pending.clear()


@dataclass
class _RunState:
    pairs: list  # (completion, gold)
    results: list  # CheckResult | None per pair
    todo: deque  # chunks of pair indices not yet sent
    timeout_s: float | None
    ctx: object  # multiprocessing context
    check_fn: object


def _dispatch(pool: list[_Worker], st: _RunState) -> None:
    for w in pool:
        if w.ready and not w.pending and st.todo:
            chunk = st.todo.popleft()
            w.conn.send((st.timeout_s, [(i, *st.pairs[i]) for i in chunk]))
            w.pending.extend(chunk)
            w.last_progress = time.monotonic()


def _collect(pool: list[_Worker], st: _RunState) -> None:
    """Take in whatever the workers sent in the next 50 ms; replace a worker that died."""
    for conn in wait([w.conn for w in pool], timeout=0.05):
        k = next(k for k, w in enumerate(pool) if w.conn is conn)
        w = pool[k]
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            w.proc.join(timeout=1)
            if not w.ready:
                raise RuntimeError(
                    f"check_many worker failed to start (exitcode {w.proc.exitcode}); a script that calls "
                    "check_many needs an `if __name__ == '__main__':` guard (forkserver/spawn)"
                )
            if w.pending:
                _fail_head(w, st, "error", f"worker process died (exitcode {w.proc.exitcode})")
            pool[k] = _replace(w, st)
            continue
        if msg[0] == "ready":
            w.ready = True
            continue
        idx, res = msg
        st.results[idx] = res
        w.pending.popleft()
        w.last_progress = time.monotonic()


def _enforce_deadlines(pool: list[_Worker], st: _RunState) -> None:
    guard_s = None if st.timeout_s is None else st.timeout_s * 2 + GUARD_SLACK_S
    now = time.monotonic()
    for k, w in enumerate(pool):
        if not w.ready and now - w.started > WORKER_START_S:
            raise RuntimeError(f"check_many worker not ready after {WORKER_START_S:.0f}s")
        if guard_s is not None and w.pending and now - w.last_progress > guard_s:
            detail = f"worker killed: no result after {guard_s:g}s (a hang the alarm could not stop)"
            _fail_head(w, st, "timeout", detail)
            pool[k] = _replace(w, st)


def _replace(w: _Worker, st: _RunState) -> _Worker:
    _stop_worker(w, kill=True)
    return _start_worker(st.ctx, st.check_fn)


def check_many(
    pairs: list[tuple[str, str]],
    *,
    timeout_s: float | None = 5.0,
    workers: int = 2,
    chunksize: int = 16,
    _check_fn=check_answer,
) -> list[CheckResult]:
    """check_answer over (completion, gold) pairs, in worker processes; results in input order.
    Gold may be a string or parse_gold's output (it pickles).

    workers <= 1 runs inline (main thread; no guard against C-level hangs). Otherwise a worker that
    sends nothing for timeout_s * 2 + GUARD_SLACK_S is killed and replaced; the pair it was on is
    "timeout", a worker that dies is "error", and the rest of its chunk is re-queued. timeout_s=None
    disables both the alarm and the guard. Workers live for one call (a fork from the preloaded
    forkserver, tens of ms); a script calling this needs an `if __name__ == "__main__":` guard.
    `_check_fn` (test hook): a picklable module-level function with check_answer's signature, run
    in the workers instead of it.
    """
    if workers <= 1:
        return [_check_fn(c, g, timeout_s=timeout_s) for c, g in pairs]
    step = max(1, chunksize)
    todo = deque(list(range(i, min(i + step, len(pairs)))) for i in range(0, len(pairs), step))
    st = _RunState(list(pairs), [None] * len(pairs), todo, timeout_s, _mp_context(), _check_fn)
    pool = [_start_worker(st.ctx, _check_fn) for _ in range(min(workers, len(todo)))]
    try:
        while st.todo or any(w.pending for w in pool):
            _dispatch(pool, st)
            _collect(pool, st)
            _enforce_deadlines(pool, st)
    finally:
        for w in pool:
            _stop_worker(w, kill=bool(w.pending) or not w.ready)
    return st.results
