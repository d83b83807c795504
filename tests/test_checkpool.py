"""The answer-checking pool (igrpo_core/checkpool.py, on pebble): input order, a stuck worker killed
and replaced with its pair recorded as "timeout", dying and segfaulting workers, a check_fn that
raises, tasks in the worker's main thread (SIGALRM works), and a clear error when workers cannot start."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from igrpo_core import checkpool
from igrpo_core.answers import CheckResult, check_answer
from igrpo_core.checkpool import check_many

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("\\boxed{%d}" % i, str(i if i % 3 else i + 1)) for i in range(24)] + [("no answer", "1"), ("\\boxed{1}", "")]


def test_check_many_preserves_order_and_matches_inline():
    inline = check_many(PAIRS, workers=0)
    pooled = check_many(PAIRS, workers=2)
    assert pooled == inline
    assert [r.correct for r in inline] == [i % 3 != 0 for i in range(24)] + [False, False]
    assert [r.status for r in inline[-2:]] == ["no_answer", "error"]


def hang_or_check(completion: str, gold, *, timeout_s: float | None) -> CheckResult:
    """Test hook: "HANG" never returns and ignores the alarm, like a C-level hang; "DIE" exits its
    worker; "SEGV" segfaults it; "RAISE" raises; "THREAD" reports whether it runs in the main thread."""
    if completion == "HANG":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    if completion == "DIE":
        os._exit(3)
    if completion == "SEGV":
        os.kill(os.getpid(), signal.SIGSEGV)
    if completion == "RAISE":
        raise ValueError("boom")
    if completion == "THREAD":
        main = threading.current_thread() is threading.main_thread()
        return CheckResult(main, "ok", None, f"pid {os.getpid()}")
    return check_answer(completion, gold, timeout_s=timeout_s)


def test_check_many_survives_stuck_and_dying_workers(monkeypatch):
    monkeypatch.setattr(checkpool, "GUARD_SLACK_S", 0.5)
    pairs = [("\\boxed{1}", "1"), ("HANG", "1"), ("\\boxed{2}", "3"), ("DIE", "1"), ("\\boxed{4}", "4"),
             ("SEGV", "1"), ("RAISE", "1")] * 2
    t0 = time.monotonic()
    res = check_many(pairs, timeout_s=0.5, workers=2, _check_fn=hang_or_check)
    assert time.monotonic() - t0 < 30
    assert [r.status for r in res] == ["ok", "timeout", "ok", "error", "ok", "error", "error"] * 2
    assert [r.correct for r in res] == [True, False, False, False, True, False, False] * 2
    assert "worker killed" in res[1].detail and "exitcode 3" in res[3].detail
    assert "exitcode -11" in res[5].detail and "ValueError: boom" in res[6].detail


def test_tasks_run_in_the_worker_main_thread():
    """math-verify's (and our) SIGALRM limit needs the main thread: pebble's workers run tasks there."""
    res = check_many([("THREAD", "1")] * 4 + [("\\boxed{9^{9^{9^{9}}}}", "5")], timeout_s=0.5, workers=2,
                     _check_fn=hang_or_check)
    assert all(r.correct for r in res[:4]) and {r.detail for r in res[:4]} != {f"pid {os.getpid()}"}
    assert res[4].status == "timeout" and "CheckTimeout" in res[4].detail  # the in-worker alarm fired


def test_worker_start_failure_is_raised(tmp_path):
    """A script without a __main__ guard re-runs itself in each forkserver child, which then dies in
    bootstrap: check_many must raise, naming the guard, not hang."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from igrpo_core.checkpool import check_many
        print(check_many([("\\\\boxed{{1}}", "1")] * 3, workers=2))
    """))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - t0 < 120
    assert proc.returncode != 0 and "check_many workers failed to start" in proc.stderr, proc.stderr[-2000:]
