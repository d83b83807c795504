"""check_many: answers.check_answer over many (completion, gold) pairs in worker processes.

The pool is pebble's ProcessPool (pebble 5.2): each pair is one task with its own deadline. What
this module adds on top, and what it guarantees (tests/test_checkpool.py holds each line):
- Results come back in input order, one CheckResult per pair, whatever happened to it.
- A pair still running timeout_s * 2 + GUARD_SLACK_S after a worker took it (a hang the in-worker
  SIGALRM could not stop: C code holding the interpreter) has its worker killed by pebble
  (SIGTERM, SIGKILL 3 s later) and replaced; the pair is recorded as status "timeout".
- A worker that dies on a pair (os._exit, segfault, OOM kill) is replaced; the pair is "error"
  with the exit code. A check_fn that raises is "error" with the exception. Nothing hangs.
- Workers that cannot start (a script without an `if __name__ == "__main__":` guard re-running
  itself in the child; an import error) raise RuntimeError, as do workers that take none of the
  pairs within WORKER_START_S.
- Tasks run in the worker process's main thread, so check_answer's SIGALRM limit works there.
- Each worker checks one pair while it starts (pebble's initializer), so that math-verify's
  one-off set-up cost (~0.25 s, more under load) does not count against the first real pair.

Deliberately left out: a pool kept across calls (workers are forks of a preloaded forkserver,
tens of ms; evaluation calls this once per benchmark), and batching several pairs per task (a
task's deadline would then cover a whole batch, and a kill would cost all of it).
"""
from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import wait
from concurrent.futures.process import BrokenProcessPool

from pebble import ProcessExpired, ProcessPool

from igrpo_core.answers import CheckResult, check_answer, extract_answer, warm_up

GUARD_SLACK_S = 3.0  # a pair still running timeout_s * 2 + this many seconds has its worker killed
WORKER_START_S = 180.0  # no pair taken by any worker by then: a setup error, raised


def _mp_context():
    # forkserver: workers fork from a clean server that has NOT inherited the parent's threads
    # (pebble's own three among them), CUDA state or torch allocator, yet, unlike "spawn",
    # replacements start in milliseconds because the server has sympy and math-verify preloaded.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, "math_verify"])
        return ctx
    return mp.get_context("spawn")


def _warm_up() -> None:
    """pebble initializer: pay math-verify's first-call cost before the first timed pair."""
    warm_up()


def _call(check_fn, completion, gold, timeout_s):
    """The task body, in a worker: pebble needs a module-level function to pickle."""
    return check_fn(completion, gold, timeout_s=timeout_s)


def _result_of(future, completion: str, guard_s: float | None) -> CheckResult:
    """A finished task's CheckResult; pebble's failures become recorded statuses."""
    try:
        return future.result()
    except TimeoutError:
        detail = f"worker killed: no result after {guard_s:g}s (a hang the alarm could not stop)"
        return CheckResult(False, "timeout", extract_answer(completion), detail)
    except ProcessExpired as e:
        detail = f"worker process died (exitcode {e.exitcode})"
        return CheckResult(False, "error", extract_answer(completion), detail)
    except BrokenProcessPool:
        raise
    except Exception as e:  # a custom check_fn that raised: recorded, the pool lives on
        return CheckResult(False, "error", None, f"check_fn: {type(e).__name__}: {e}"[:500])


def _wait_for_start(futures: list) -> None:
    """Raise if no worker takes a pair within WORKER_START_S (pebble itself would wait forever)."""
    deadline = time.monotonic() + WORKER_START_S
    while not any(f.running() or f.done() for f in futures):
        if time.monotonic() > deadline:
            raise RuntimeError(f"check_many workers took no pair in {WORKER_START_S:.0f}s")
        wait(futures, timeout=0.05)


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

    workers <= 1 runs inline (main thread; no guard against C-level hangs). Otherwise see the module
    docstring: a pair still running after timeout_s * 2 + GUARD_SLACK_S is "timeout" and its worker
    replaced, a worker that dies gives "error". timeout_s=None disables both the alarm and the guard.
    `chunksize` is accepted for callers of the former pool and unused: pebble schedules one pair per
    task, so a kill costs one pair. A script calling this needs an `if __name__ == "__main__":`
    guard. `_check_fn` (test hook): a picklable module-level function with check_answer's
    signature, run in the workers instead of it.
    """
    del chunksize
    if workers <= 1 or not pairs:
        return [_check_fn(c, g, timeout_s=timeout_s) for c, g in pairs]
    guard_s = None if timeout_s is None else timeout_s * 2 + GUARD_SLACK_S
    pool = ProcessPool(max_workers=min(workers, len(pairs)), initializer=_warm_up, context=_mp_context())
    try:
        futures = [pool.schedule(_call, args=(_check_fn, c, g, timeout_s), timeout=guard_s) for c, g in pairs]
        _wait_for_start(futures)
        return [_result_of(f, c, guard_s) for f, (c, _) in zip(futures, pairs)]
    except BrokenProcessPool as e:
        raise RuntimeError(
            f"check_many workers failed to start or all died ({e}); a script that calls check_many "
            "needs an `if __name__ == '__main__':` guard (forkserver/spawn re-import it)"
        ) from e
    finally:
        pool.stop()
        pool.join()
