"""Hostile completions (issue 12 item 1): the committed corpus tests/data/hostile_completions.jsonl
(built by scripts/build_hostile_completions.py) through extraction, the inline checker and the worker
pool, each against several golds; property-based fuzzing (hypothesis) of extraction and checking.

Bounds held here (TIMEOUT_S = 0.3):
- inline check_answer: extraction and comparison both run under its alarm, so a check uses at most
  TIMEOUT_S + INLINE_SLACK_S of CPU time unless C code holds the interpreter (none in this corpus does
  inline). CPU time, not wall time: on a loaded machine a process waits for a core between re-fires
  (CI, load 3.5: one check took 1.80 s of wall time against a 1.8 s bound);
- pool check_many: a pair ends within its guard, TIMEOUT_S * 2 + GUARD_SLACK_S (3.6 s), after which
  its worker is killed and the pair recorded "timeout";
- nothing executes: every payload would create a file in a fresh directory; none exists afterwards;
- every outcome is a CheckResult with a status in STATUSES and correct=False, except the controls.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igrpo_core import answers, checkpool
from igrpo_core.answers import CheckResult, answer_start, boxed_contents, check_answer, extract_answer, last_boxed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_hostile_completions as corpus  # noqa: E402

GOLDS = ["3", "\\frac{1}{2}", "\\{1,2\\}", "1267650600228229401496703205376"]  # the last: 2^100
TIMEOUT_S = 0.3
INLINE_SLACK_S = 1.5  # the alarm re-fires every 0.25 s; the rest is the handler's way out of sympy
STATUSES = {"ok", "no_answer", "timeout", "error"}
CONTROL_GOLD = dict(zip(["control-00", "control-01", "control-02", "control-03"], GOLDS))
ROWS = [json.loads(line) for line in corpus.OUT.read_text().splitlines()]


@pytest.fixture()
def canary(tmp_path):
    """Where any payload that ran would write; checked empty after each test."""
    d = tmp_path / "canary"
    d.mkdir()
    yield str(d / "PWNED")
    assert list(d.iterdir()) == [], "a payload executed"


def _pairs(canary_path: str) -> list[tuple[str, dict, str]]:
    """(completion, row, gold) for every case and every gold."""
    return [(corpus.expand(r, canary_path), r, g) for r in ROWS for g in GOLDS]


def _assert_recorded(res: CheckResult, row: dict, gold: str) -> None:
    assert isinstance(res, CheckResult) and res.status in STATUSES, (row["id"], res)
    assert res.correct is (CONTROL_GOLD.get(row["id"]) == gold) or row["category"] != "control", (row["id"], res)
    if row["category"] in ("code_payload", "big_set", "matrix", "tower", "factorial", "sum_product"):
        assert res.correct is False, (row["id"], gold, res)


def test_the_corpus_is_what_its_script_builds():
    assert corpus.render(corpus.build()) == corpus.OUT.read_text()
    assert len(ROWS) >= 150 and len({r["id"] for r in ROWS}) == len(ROWS)
    assert set(corpus.CATEGORIES) == {r["category"] for r in ROWS}
    sizes = [len(corpus.expand(r)) for r in ROWS]
    assert max(sizes) >= 1_000_000 and min(sizes) == 0  # megabyte and empty cases are really there


@pytest.mark.slow
def test_extraction_of_every_case_never_raises_and_is_linear():
    """All public extractors on every case; time per case bounded by a per-MB rate that only a
    linear scan meets (the quadratic spots fixed in answers.py took minutes on these inputs)."""
    worst = (0.0, "")
    for r in ROWS:
        text = corpus.expand(r, "/nonexistent/CANARY")
        t0 = time.perf_counter()
        extract_answer(text), answer_start(text), last_boxed(text), last_boxed(text, strict=True)
        boxed_contents(text, strict=True)
        dt = time.perf_counter() - t0
        worst = max(worst, (dt, r["id"]))
        assert dt < 2.0 + 12.0 * len(text) / 1e6, (r["id"], dt, len(text))
    print(f"\nworst extraction: {worst[0]:.2f}s ({worst[1]})")


@pytest.mark.parametrize("make", [
    lambda n: "Answer: a" + " " * n + "b",              # was quadratic (\s* of the Minerva suffix)
    lambda n: "\\boxed{" * n + "1" + "}" * n,           # was quadratic (each nested box sliced)
    lambda n: "\\boxed{1}, " * n,                        # was quadratic (list.insert(0))
    lambda n: "\\boxed{" * n,
    lambda n: "final answer" + " " * n,
], ids=["spaces", "nested", "joined", "runaway", "phrase"])
def test_extraction_time_grows_linearly(make):
    def best(n):
        text = make(n)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            extract_answer(text), answer_start(text)
            runs.append(time.perf_counter() - t0)
        return min(runs)
    small, big = best(4_000), best(32_000)  # 8x the input: linear ~8x, quadratic ~64x
    assert big < 24 * small + 0.05, (small, big)


@pytest.mark.slow
def test_inline_check_of_every_case_and_gold_is_bounded_and_recorded(canary):
    answers.check_answer("\\boxed{1}", "1", timeout_s=None)  # math-verify's one-off set-up, not a case's time
    worst, counts, t_all = (0.0, ""), {}, time.perf_counter()
    for text, row, gold in _pairs(canary):
        t0, c0 = time.perf_counter(), time.process_time()
        res = check_answer(text, gold, timeout_s=TIMEOUT_S)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        worst = max(worst, (dt, f"{row['id']} vs {gold[:12]}"))
        counts[res.status] = counts.get(res.status, 0) + 1
        _assert_recorded(res, row, gold)
        assert cpu < TIMEOUT_S + INLINE_SLACK_S, (row["id"], gold, dt, cpu, res)
    print(f"\ninline: {sum(counts.values())} checks in {time.perf_counter() - t_all:.1f}s, {counts}, "
          f"worst {worst[0]:.2f}s ({worst[1]})")


def timed_check(completion: str, gold, *, timeout_s):
    """Runs in a pool worker: check_answer, its in-worker time put in front of the detail."""
    t0 = time.perf_counter()
    res = check_answer(completion, gold, timeout_s=timeout_s)
    res.detail = f"[{time.perf_counter() - t0:.3f}s] {res.detail}"
    return res


@pytest.mark.slow
def test_pool_check_of_every_case_and_gold_is_bounded_and_recorded(canary):
    pairs = _pairs(canary)
    guard_s = TIMEOUT_S * 2 + checkpool.GUARD_SLACK_S
    t0 = time.perf_counter()
    res = checkpool.check_many([(t, g) for t, _, g in pairs], timeout_s=TIMEOUT_S, workers=2, _check_fn=timed_check)
    wall = time.perf_counter() - t0
    assert len(res) == len(pairs)
    counts, worst = {}, (0.0, "")
    for r, (_, row, gold) in zip(res, pairs):
        _assert_recorded(r, row, gold)
        counts[r.status] = counts.get(r.status, 0) + 1
        t = guard_s if r.detail.startswith("worker killed") else float(r.detail[1:r.detail.index("s]")])
        worst = max(worst, (t, f"{row['id']} vs {gold[:12]}"))
        assert t <= guard_s, (row["id"], r)
    print(f"\npool (2 workers): {len(pairs)} checks in {wall:.1f}s = {len(pairs) / wall:.1f} checks/s, {counts}, "
          f"worst in-worker {worst[0]:.2f}s ({worst[1]})")
    assert wall < len(pairs) * guard_s / 2 + 60  # a deliberately loose cap: no pair waits on another's hang


def test_a_sample_of_the_corpus_through_both_paths_agrees(canary):
    """The fast (non-slow) line: every case once, against one gold in turn, inline and in the pool."""
    pairs = [(corpus.expand(r, canary), r, GOLDS[i % len(GOLDS)]) for i, r in enumerate(ROWS)]
    inline = []
    for text, row, gold in pairs:
        c0 = time.process_time()
        inline.append(check_answer(text, gold, timeout_s=TIMEOUT_S))
        assert time.process_time() - c0 < TIMEOUT_S + INLINE_SLACK_S, row["id"]
        _assert_recorded(inline[-1], row, gold)
    pooled = checkpool.check_many([(t, g) for t, _, g in pairs], timeout_s=TIMEOUT_S, workers=2)
    for a, b, (_, row, gold) in zip(inline, pooled, pairs):
        _assert_recorded(b, row, gold)
        if "timeout" not in (a.status, b.status):  # a timeout is load-dependent; everything else is not
            assert (a.status, a.correct, a.extracted) == (b.status, b.correct, b.extracted), row["id"]


# --------------------------------------------------------------------------- property-based fuzzing

BRACE_BALANCED = st.recursive(
    st.text(alphabet=st.characters(blacklist_characters="{}\\", blacklist_categories=("Cs",)), max_size=20),
    lambda inner: st.builds(lambda a, b, c: a + "{" + b + "}" + c, inner, inner, inner),
    max_leaves=20,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LATEXISH = st.lists(st.sampled_from(list("{}\\$^_()[]0123456789+-*/=, .%x") + [
    "\\boxed{", "\\fbox{", "\\frac", "\\sqrt{", "\\left(", "\\right)", "<answer>", "</answer>", "Final answer:",
    "\\text{", "\\{", "\\}", "!", "e", "\n", "and", "\\quad", "\u202e", "\uff13", "\x00"]), max_size=40).map("".join)


@FUZZ
@given(BRACE_BALANCED.filter(lambda x: x.strip() == x and x != ""))
def test_fuzz_extract_of_a_box_is_its_content(x):
    assert extract_answer("\\boxed{" + x + "}") == x
    assert extract_answer("Some work. $\\boxed{" + x + "}$") == x


@FUZZ
@given(st.text(max_size=300) | LATEXISH)
def test_fuzz_extraction_never_raises(text):
    out = extract_answer(text)
    assert out is None or isinstance(out, str)
    if out:
        assert answer_start(text) is not None
    boxed_contents(text), boxed_contents(text, strict=True), last_boxed(text, skip_unclosed=False)


@FUZZ
@given(st.integers(1, 6), LATEXISH)
def test_fuzz_extraction_time_is_linear_in_repeats(k, unit):
    """A fuzzed unit repeated k*500 times: per-character time stays flat (no quadratic pattern)."""
    text = unit * (k * 500)
    t0 = time.perf_counter()
    extract_answer(text), answer_start(text)
    assert time.perf_counter() - t0 < 0.05 + 6e-6 * len(text) * 10, (unit, k)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LATEXISH, st.sampled_from(GOLDS))
def test_fuzz_check_never_raises_and_records_a_status(text, gold):
    t0 = time.perf_counter()
    res = check_answer(text, gold, timeout_s=TIMEOUT_S)
    assert isinstance(res, CheckResult) and res.status in STATUSES
    assert time.perf_counter() - t0 < TIMEOUT_S + INLINE_SLACK_S
