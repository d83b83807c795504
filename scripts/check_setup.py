"""Can a new user set this project up on each Python version the README declares (3.10-3.13)?

Per version (interpreters from PATH, `python3.X`, or pyenv's ~/.pyenv/versions/3.X.*):
1. wheels: each line of requirements.txt that applies to that version (its environment marker
   evaluated for it) and torch, alone: `pip install --dry-run --no-deps --only-binary=:all:
   --python-version 3.X` -> the version and wheel file pip would take, or pip's reason there is
   none. Metadata only, nothing downloaded.
2. resolve: the whole set (requirements + torch, dependencies included, wheels only) resolved by that
   version's own pip in a scratch venv -> ok (how many packages; whether torch came with CUDA
   libraries) or pip's first error. Metadata only.
3. --install: scripts/setup.sh (the README's set-up, VENV=scratch, PYTHON=that interpreter), then the
   core tests (CORE_TESTS). Where torch cannot be had for that version (no local wheel, and
   TORCH_INDEX unreachable: this development machine holds a CPU torch for 3.11 only and reaches
   PyPI alone) it installs the resolved set WITHOUT torch and its CUDA libraries (--no-deps) and runs
   the tests that need no torch (TORCH_FREE_TESTS), and says so in the table.

Usage: python scripts/check_setup.py [--versions 3.10 3.12] [--install] [--keep DIR]
Deliberately left out: Windows/macOS (run it there), conda (environment.yml has the same pins).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("3.11", "3.12", "3.13")   # declared (pyproject requires-python); try --versions 3.10
TORCH = os.environ.get("TORCH_VERSION", "2.13.0")
TORCH_INDEX = os.environ.get("TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
# tests that run without torch installed (the tokenizer, the trainer and the judge need it)
TORCH_FREE_TESTS = ["tests/test_config.py", "tests/test_rewards.py", "tests/test_answers.py", "tests/test_selection.py",
                    "tests/test_checkpool.py", "tests/test_wordproblems.py", "tests/test_layering.py",
                    "tests/test_bad_inputs.py", "-k", "not test_two_trainers_with_different_judges and not "
                    "test_trainer_rejects_bad_data"]
CORE_TESTS = ["tests/test_config.py", "tests/test_rewards.py", "tests/test_answers.py", "tests/test_selection.py",
              "tests/test_prompts.py", "tests/test_tinyworld.py", "tests/test_losses.py", "tests/test_records.py",
              "tests/test_nonfinite.py", "tests/test_trainer.py::test_short_run_writes_records_with_the_schema"]
CUDA_PARTS = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")   # what a PyPI torch brings on Linux


def interpreter(version: str) -> str | None:
    """python3.X on PATH, else pyenv's newest 3.X.*: the first that runs (a pyenv shim of a version
    not selected exits 127)."""
    pyenv = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    for cand in [shutil.which(f"python{version}"), *reversed(pyenv)]:
        if cand and subprocess.run([cand, "-c", ""], capture_output=True).returncode == 0:
            return cand
    return None


def full_version(python: str | None, version: str) -> str:
    """3.X.Y of the interpreter (Requires-Python can name a micro version), else 3.X.0."""
    if python is None:
        return f"{version}.0"
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def requirements(version: str) -> list[str]:
    """requirements.txt lines that apply to `version` (3.X.Y; markers evaluated for it), without markers."""
    env = {**default_environment(), "python_version": version.rsplit(".", 1)[0], "python_full_version": version}
    out = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                out.append(f"{req.name}{req.specifier}")
    return out


def pip_error(text: str, pin: str | None = None) -> str:
    """pip's reason in one line: the pinned version's Requires-Python if that is it."""
    why = re.search(rf"(?<![\d.]){re.escape(pin)} Requires-Python [^;\n]+", text) if pin else None
    if why:
        return f"{why.group(0).strip()} (pip: no matching distribution)"
    errs = [ln for ln in text.splitlines() if ln.startswith("ERROR")]
    why = [e for e in errs if "Requires-Python" in e or "Could not find" in e or "No matching" in e]
    text = (why or errs or text.splitlines()[-1:] or ["?"])[0]
    return re.sub(r"\(from versions: .*\)", "", text)[:160]


def wheel_of(req: str, version: str) -> str:
    """The wheel pip would install for `req` on `version` (no deps, metadata only), or why none."""
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                            "--only-binary=:all:", "--python-version", version, "--target", tmp, "--quiet",
                            "--report", f"{tmp}/r.json", req], capture_output=True, text=True, timeout=600)
        if r.returncode:
            return "NO: " + pip_error(r.stderr, req.split("==")[1] if "==" in req else None)
        item = json.loads(Path(f"{tmp}/r.json").read_text())["install"][0]
    return f"{item['metadata']['version']} {item['download_info']['url'].rsplit('/', 1)[-1]}"


def scratch_venv(python: str, where: Path) -> Path:
    if not (where / "bin/python").exists():
        subprocess.run([python, "-m", "venv", str(where)], check=True)
        subprocess.run([where / "bin/python", "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    return where


def resolve(venv: Path) -> tuple[str, list[tuple[str, str]]]:
    """(verdict, [(name, version)]) of requirements + torch resolved by `venv`'s own pip."""
    report = venv / "resolve.json"
    r = subprocess.run([venv / "bin/pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
                        "--quiet", "--report", str(report), "-r", str(ROOT / "requirements.txt"), f"torch=={TORCH}"],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode:
        return "NO: " + pip_error(r.stderr), []
    items = json.loads(report.read_text())["install"]
    pins = [(i["metadata"]["name"], i["metadata"]["version"]) for i in items]
    cuda = [n for n, _ in pins if n.startswith("nvidia-")]
    torch_url = next(i["download_info"]["url"] for i in items if i["metadata"]["name"] == "torch")
    where = "local disk" if torch_url.startswith("file:") else torch_url.split("/")[2]
    return (f"ok: {len(pins)} packages, torch from {where}"
            + (f" WITH {len(cuda)} CUDA libraries" if cuda else " (CPU)")), pins


def torch_obtainable(venv: Path) -> bool:
    """A torch==TORCH wheel on local disk (pip's find-links) or a reachable TORCH_INDEX."""
    r = subprocess.run([venv / "bin/pip", "install", "-q", "--dry-run", "--ignore-installed", "--no-deps",
                        "--no-index", f"torch=={TORCH}"], capture_output=True, text=True)
    if r.returncode == 0:
        return True
    try:
        urllib.request.urlopen(f"{TORCH_INDEX.rstrip('/')}/torch/", timeout=10)
        return True
    except OSError:
        return False


def run_tests(venv: Path, tests: list[str]) -> str:
    r = subprocess.run([venv / "bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    tail = [ln for ln in r.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return ("ok: " if r.returncode == 0 else "FAILED: ") + (tail[-1].strip("= ") if tail else r.stdout[-300:])


def install(python: str, venv: Path, pins: list[tuple[str, str]]) -> tuple[str, str]:
    """(set-up verdict, tests verdict) for one interpreter."""
    t0 = time.time()
    if torch_obtainable(venv):
        target = venv.with_name(venv.name + "-setup")
        r = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "VENV": str(target), "PYTHON": python})
        if r.returncode:
            return f"FAILED ({time.time() - t0:.0f} s): {(r.stderr or r.stdout)[-300:]}", "not run"
        return f"ok: scripts/setup.sh ({time.time() - t0:.0f} s)", run_tests(target, CORE_TESTS)
    rest = [f"{n}=={v}" for n, v in pins if not CUDA_PARTS.match(n)]
    r = subprocess.run([venv / "bin/pip", "install", "-q", "--no-deps", "--only-binary=:all:", *rest],
                       capture_output=True, text=True)
    if r.returncode:
        return f"FAILED ({time.time() - t0:.0f} s): {pip_error(r.stderr)}", "not run"
    return (f"ok WITHOUT torch: {len(rest)} packages ({time.time() - t0:.0f} s); no torch {TORCH} wheel "
            f"for this version on disk and {TORCH_INDEX} unreachable"), run_tests(venv, TORCH_FREE_TESTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", nargs="+", default=list(VERSIONS))
    ap.add_argument("--install", action="store_true", help="also set up and run the core tests")
    ap.add_argument("--keep", default=None, help="scratch folder (default: a temporary one, removed)")
    args = ap.parse_args()
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="check_setup-"))
    pythons = {v: interpreter(v) for v in args.versions}
    full = {v: full_version(pythons[v], v) for v in args.versions}
    reqs = {v: requirements(full[v]) + [f"torch=={TORCH}"] for v in args.versions}
    with cf.ThreadPoolExecutor(8) as pool:   # network-bound: pip waits on the index
        wheels = {(v, q): pool.submit(wheel_of, q, full[v]) for v in args.versions for q in reqs[v]}
        wheels = {k: f.result() for k, f in wheels.items()}
    rows = {}
    for v in args.versions:
        if pythons[v] is None:
            rows[v] = {"resolve": "no interpreter found (PATH python3.X or pyenv)"}
            continue
        venv = scratch_venv(pythons[v], scratch / f"py{v}")
        verdict, pins = resolve(venv)
        rows[v] = {"interpreter": pythons[v], "resolve": verdict}
        if args.install and pins:
            rows[v]["set-up"], rows[v]["tests"] = install(pythons[v], venv, pins)
    print_table(args.versions, reqs, wheels, rows)
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(1 if any(w.startswith("NO") for w in wheels.values())
             or any(str(x).startswith(("NO", "FAILED")) for r in rows.values() for x in r.values()) else 0)


def print_table(versions, reqs, wheels, rows) -> None:
    print("| requirement | " + " | ".join(f"Python {v}" for v in versions) + " |")
    print("|---" * (len(versions) + 1) + "|")
    names = list(dict.fromkeys(Requirement(q).name for v in versions for q in reqs[v]))
    for name in names:
        cells = []
        for v in versions:
            got = [wheels[(v, q)] for q in reqs[v] if Requirement(q).name == name]
            cells.append(got[0] if got else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for key in ("resolve", "set-up", "tests"):
        print(f"| **{key}** | " + " | ".join(rows[v].get(key, "-") for v in versions) + " |")


if __name__ == "__main__":
    main()
