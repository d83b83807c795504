"""A process that pays torch's and transformers' import once, then forks a fresh child per launch.

tests/test_kill_loops.py kills `igrpo train|eval` dozens of times; paying the ~5-25 s import of torch
and transformers on every relaunch would take minutes. This process imports them (not polars, whose
thread pool would not survive a fork, nor igrpo_core), then serves line-delimited JSON on stdin:
    {"op": "start", "call": "module:function", "args": [...], "env": {...}, "log": path,
     "fsize": bytes or null}           -> {"pid": N}   child: env set, stdout+stderr to log,
                                                        RLIMIT_FSIZE set, own process group,
                                                        exit status = the function's return value
    {"op": "wait", "pid": N}           -> {"rc": code}  negative: killed by that signal
Each child is a real process: the test SIGKILLs it by pid. It runs the very entry point of
`python -m igrpo_core` (igrpo_core.cli:main) with the same argv.
"""
import importlib
import json
import os
import resource
import sys
import traceback

import torch  # noqa: F401  (the point: imported once, before any fork)
import transformers  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
from transformers.models.llama import modeling_llama  # noqa: F401


def child(req: dict) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)   # the test can find (and clean up) any worker the child leaves behind
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ.update(req.get("env") or {})
        # multiprocessing's workers (the answer-check pool) re-import the parent's __main__ file: this
        # one would cost them torch's and transformers' import; `python -m igrpo_core`'s is tiny
        sys.modules["__main__"].__dict__.pop("__file__", None)
        if req.get("fsize"):
            resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], resource.RLIM_INFINITY))
        module, func = req["call"].split(":")
        code = getattr(importlib.import_module(module), func)(*req.get("args", []))
        code = int(code or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 (a child must never return into the serving loop: it reports and exits 1)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "start":
            pid = os.fork()
            if pid == 0:
                child(req)
            reply = {"pid": pid}
        elif req["op"] == "wait":
            _, status = os.waitpid(req["pid"], 0)
            reply = {"rc": os.waitstatus_to_exitcode(status)}
        else:
            break
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
