"""Kill loops and hostile filesystems (issue 12, items 2 and 4): nothing lost, nothing damaged.

- `igrpo train` SIGKILLed 24 times at seeded random moments and inside write windows (a checkpoint
  written but not yet marked complete, a rollout / metrics record written but not yet renamed),
  relaunched each time with the same command: the final metrics, rollouts and weights equal an
  uninterrupted run's exactly, and after every kill each record reads and each checkpoint marked
  complete loads.
- `igrpo eval` the same (8 kills): the samples and summary equal an uninterrupted evaluation's, and a
  summary.json / samples.parquet present after a kill is never a partial one.
- an ablation grid (4 kills, during training, evaluation and the results write): the table equals an
  uninterrupted grid's; relaunching the finished grid reruns no arm.
- a full disk (tmpfs) and a read-only one (tmpfs remounted ro) at each write window, and a file-size
  limit (RLIMIT_FSIZE, without root): the CLI exits 2 naming the path and ENOSPC / EROFS / EFBIG, no
  checkpoint is marked complete that is not, earlier records stay readable, and once the disk is
  writable again the same command finishes the run as if nothing happened.

Relaunches fork from tests/forkrunner.py, which imported torch and transformers once, and call
igrpo_core.cli.main with the argv of `python -m igrpo_core ...` (a real process, really SIGKILLed).
The windows are reached with the test-only delay IGRPO_TEST_DELAY_IN (igrpo_core/diskio.py).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from igrpo_core import records

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"gen_time_s", "step_time_s", "tokens_per_s"}
MAX_STEPS = 6
TRAIN = ["--run_name", "k", "--max_steps", str(MAX_STEPS), "--save_steps", "2", "--save_total_limit", "2",
         "--prompts_per_step", "2", "--num_generations", "3", "--num_drafts", "1",
         "--max_completion_length", "8", "--tiny_num_problems", "50", "--torch_threads", "1"]
EVAL = ["--eval_dataset", "tiny:heldout", "--eval_limit", "40", "--eval_num_samples", "2", "--tiny_num_problems",
        "300", "--max_completion_length", "12", "--torch_threads", "1", "--workers", "2"]
FINAL_CHECKPOINT = f"checkpoint@step_{MAX_STEPS:06d}:60"   # see the training kill loop
WINDOW_S = 60      # a window the test kills in: the process waits there until killed


class Runner:
    """Client of tests/forkrunner.py."""

    def __init__(self, logs: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "forkrunner.py")], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.logs, self.n = logs, 0
        assert "ready" in json.loads(self.proc.stdout.readline())

    def _ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def start(self, argv: list[str], call="igrpo_core.cli:main", delay: str = "", fsize: int | None = None):
        """Start one launch; returns (pid, log path, marker path)."""
        self.n += 1
        log, marker = self.logs / f"{self.n:03d}.log", self.logs / f"{self.n:03d}.marker"
        env = {"IGRPO_TEST_DELAY_IN": delay, "IGRPO_TEST_DELAY_MARKER": str(marker)} if delay else {}
        pid = self._ask(op="start", call=call, args=[argv], env=env, log=str(log), fsize=fsize)["pid"]
        return pid, log, marker

    def wait(self, pid: int) -> int:
        return self._ask(op="wait", pid=pid)["rc"]

    def run(self, argv, **kw) -> str:
        pid, log, _ = self.start(argv, **kw)
        rc = self.wait(pid)
        assert rc == 0, log.read_text()[-3000:]
        return log.read_text()

    def kill(self, pid: int) -> bool:
        """SIGKILL the launch; False if it had already finished (a random moment after its end)."""
        os.kill(pid, signal.SIGKILL)
        rc = self.wait(pid)
        assert rc in (0, -signal.SIGKILL), rc
        assert_no_orphans(pid)
        return rc == -signal.SIGKILL

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def assert_no_orphans(pgid: int, timeout: float = 30.0) -> None:
    """Workers the killed process started (answer-check pool, its forkserver) must exit on their own."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail(f"processes of the killed launch {pgid} outlived it by {timeout}s")


def wait_for(pred, pid: int, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not pred():
        assert alive(pid), f"the launch ended before {what}"
        assert time.time() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.01)


def marked(marker: Path) -> bool:
    """The pause marker holds a whole line: diskio.test_pause opens it (so it exists) before it writes."""
    return marker.exists() and marker.read_text().endswith("\n")


def alive(pid: int) -> bool:
    """True while the child has not exited (a zombie, not yet reaped by the runner, counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    r = Runner(tmp_path_factory.mktemp("logs"))
    yield r
    r.close()


@pytest.fixture(scope="module")
def straight(runner, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must equal."""
    out = tmp_path_factory.mktemp("straight")
    runner.run(["train", "--output_dir", str(out), *TRAIN])
    return out / "k"


# --------------------------------------------------------------------------- checks

def assert_readable(run: Path) -> None:
    """Every record reads; every checkpoint marked complete loads; status is a valid record."""
    for p in run.rglob("*.parquet"):
        records.read_parquet(p)
    for p in run.rglob("*.json"):
        records.read_json(p)
    for ckpt in records.checkpoint_dirs(run):
        assert records.read_json(ckpt / "trainer_state.json")["step"] == int(ckpt.name[5:])
        load_file(ckpt / "model" / "model.safetensors")
        torch.load(ckpt / "state.pt", weights_only=False)
    if (run / "status.json").exists():
        assert records.read_json(run / "status.json")["state"] in ("running", "failed", "finished")


def assert_same_run(a: Path, b: Path) -> None:
    ma, mb = records.read_metrics(a), records.read_metrics(b)
    cols = [c for c in ma.columns if c not in TIMING]
    assert mb["step"].to_list() == list(range(1, MAX_STEPS + 1))
    assert ma.select(cols).equals(mb.select(cols))
    assert records.read_rollouts(a).equals(records.read_rollouts(b))
    wa = load_file(a / f"checkpoints/step_{MAX_STEPS:06d}/model/model.safetensors")
    wb = load_file(b / f"checkpoints/step_{MAX_STEPS:06d}/model/model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    status = records.read_json(b / "status.json")
    assert (status["state"], status["step"], status["error"]) == ("finished", MAX_STEPS, None)
    assert not list(b.rglob("*.tmp"))
    ckpts = sorted(p.name for p in (b / "checkpoints").iterdir())
    assert ckpts == [p.name for p in records.checkpoint_dirs(b)][-2:] == ckpts[-2:]   # no partial left


# --------------------------------------------------------------------------- item 2: kill loops

TRAIN_KILLS = ["early", "random", "checkpoint", "rollouts", "metrics"] * 4 + ["checkpoint", "rollouts",
                                                                              "random", "random"]


def test_train_killed_24_times_ends_equal_to_an_uninterrupted_run(runner, straight, tmp_path):
    rng = random.Random(12)
    argv = ["train", "--output_dir", str(tmp_path), *TRAIN]
    run = tmp_path / "k"
    kinds = TRAIN_KILLS[:]
    rng.shuffle(kinds)
    killed = 0
    for kind in kinds:
        window = kind not in ("early", "random")
        # a random kill lands anywhere but past the last checkpoint's write: on a fast machine a launch would
        # otherwise finish the run, and every later launch would have nothing left to interrupt
        pid, _, marker = runner.start(argv, delay=f"{kind}:{WINDOW_S}" if window else FINAL_CHECKPOINT)
        if window:
            wait_for(lambda: marked(marker), pid, f"the {kind} window")
        else:
            time.sleep(rng.uniform(0.0, 1.0) if kind == "early" else rng.uniform(0.5, 4.0))
        killed += runner.kill(pid)
        assert_readable(run)
        if kind == "checkpoint":   # killed before trainer_state.json: not complete, not used
            ckpt = Path(marker.read_text().split()[1])
            assert ckpt.is_dir() and ckpt not in records.checkpoint_dirs(run)
        elif window:               # the record's temporary is written, the record itself is not
            path = Path(marker.read_text().split()[1])
            assert path.with_name(path.name + ".tmp").exists()
    runner.run(argv)
    assert_readable(run)
    assert_same_run(straight, run)
    assert killed >= 20


def _eval_out(out: Path) -> tuple[dict, pl.DataFrame]:
    return json.loads((out / "summary.json").read_text()), pl.read_parquet(out / "samples.parquet")


def test_eval_killed_8_times_ends_equal_to_an_uninterrupted_evaluation(runner, tmp_path):
    runner.run(["eval", "--out", str(tmp_path / "a"), *EVAL])
    want_summary, want_samples = _eval_out(tmp_path / "a")
    out = tmp_path / "b"
    argv = ["eval", "--out", str(out), *EVAL]
    rng, killed = random.Random(3), 0
    for kind in ["early", "random", "eval_part", "random", "eval_part", "random", "eval_samples", "eval_summary"]:
        window = kind.startswith("eval_")
        # as in the training loop, no launch may outrun the evaluation's last write: random ones pause in the
        # summary's write, and a window launch whose window is already past (every part on disk) pauses there too
        guard = f"eval_summary:{WINDOW_S}"
        pid, _, marker = runner.start(argv, delay=f"{kind}:{WINDOW_S},{guard}" if window else guard)
        if window:
            wait_for(lambda: marked(marker), pid, f"the {kind} window")
        else:
            time.sleep(rng.uniform(0.0, 1.0) if kind == "early" else rng.uniform(0.5, 4.0))
        killed += runner.kill(pid)
        for p in out.rglob("*.parquet"):
            records.read_parquet(p)
        # what marks an evaluation finished is never present unless it is the finished one
        assert not (out / "summary.json").exists() or _eval_out(out)[0]["metrics"] == want_summary["metrics"]
        assert not (out / "samples.parquet").exists() or pl.read_parquet(out / "samples.parquet").equals(want_samples)
    assert killed >= 6
    runner.run(argv)
    summary, samples = _eval_out(out)
    assert summary["metrics"] == want_summary["metrics"] and summary["protocol"] == want_summary["protocol"]
    assert samples.equals(want_samples)
    assert not list(out.rglob("*.tmp"))


def run_grid(argv: list[str]) -> int:
    """Entry point for forkrunner, argv = [output_dir, tag]: the split family of a tiny ablation (2 arms:
    grpo G3, igrpo N1+G2)."""
    out, tag = argv
    from igrpo_core import ablations
    from igrpo_core.config import Config
    base = Config(output_dir=out, max_steps=2, save_steps=1, prompts_per_step=2, num_generations=3,
                  num_drafts=1, max_completion_length=8, tiny_num_problems=60, eval_dataset="tiny:heldout",
                  eval_limit=8, eval_num_samples=1, torch_threads=1)
    ablations.run_ablation(base, ["split"], seeds=[0], tag=tag, progress=False)
    return 0


def _table(out: Path) -> pl.DataFrame:
    df = records.read_parquet(out / "ablation-g" / "results.parquet")
    return df.drop("train_time_s").with_columns(pl.col("run_dir").map_elements(lambda p: Path(p).name,
                                                                                return_dtype=pl.Utf8))


def _attempts(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): len(records.read_json(p)) for p in out.rglob("provenance.json")}


def test_ablation_grid_killed_mid_arm_ends_with_the_uninterrupted_table(runner, tmp_path):
    runner.run([str(tmp_path / "a"), "g"], call="tests.test_kill_loops:run_grid")
    want = _table(tmp_path / "a")
    assert want.height == 2
    out = tmp_path / "b"
    for kind in ["checkpoint", "eval_part", "ablation_results", "eval_summary"]:
        pid, _, marker = runner.start([str(out), "g"], call="tests.test_kill_loops:run_grid",
                                      delay=f"{kind}:{WINDOW_S}")
        wait_for(lambda: marked(marker), pid, f"the {kind} window")
        assert runner.kill(pid)
        if (out / "ablation-g" / "results.parquet").exists():
            assert _table(out).equals(want.head(_table(out).height))   # rows so far: finished arms only
    runner.run([str(out), "g"], call="tests.test_kill_loops:run_grid")
    assert _table(out).equals(want)
    before = _attempts(out)
    runner.run([str(out), "g"], call="tests.test_kill_loops:run_grid")   # all finished: nothing reruns
    assert _attempts(out) == before and _table(out).equals(want)


# --------------------------------------------------------------------------- item 4: disks

@pytest.fixture
def tmpfs(tmp_path):
    """A 64 MB tmpfs (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI is root); test_file_size_limit covers the non-root case")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave: int = 0) -> Path:
    """Write a filler until the filesystem is full, then give back `leave` bytes."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096):
            try:
                while True:
                    f.write(b"\0" * size)
                    f.flush()
            except OSError:
                pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def fail_in_window(runner, argv, window: str, act, run: Path, symbol: str) -> str:
    """Launch, wait for `window`, act on the filesystem, let the launch go on: it must fail cleanly."""
    pid, log, marker = runner.start(argv, delay=f"{window}:1.5")
    wait_for(lambda: marked(marker), pid, f"the {window} window")
    act()
    assert runner.wait(pid) == 2, log.read_text()[-3000:]
    err = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert err and symbol in err[0] and str(run) in err[0], log.read_text()[-3000:]
    assert_readable(run)
    return err[0]


# (window the disk fills or turns read-only in, bytes left free): the next write fails. With 1 MB left
# the checkpoint's model.safetensors fails (safetensors' error), with 5 MB its state.pt (torch.save's).
FULL = [("rollouts", 0), ("checkpoint", 0), ("metrics", 0), ("metrics", 1 << 20), ("metrics", 5 << 20)]
READ_ONLY = [("rollouts", 0), ("checkpoint", 0), ("metrics", 0)]


@pytest.mark.parametrize("kind", ["full", "read_only"])
def test_full_or_read_only_disk_fails_cleanly_and_the_run_resumes(runner, straight, tmpfs, kind):
    argv = ["train", "--output_dir", str(tmpfs), *TRAIN]
    run = tmpfs / "k"
    def remount(mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(tmpfs)], check=True)

    errors = []
    for window, leave in FULL if kind == "full" else READ_ONLY:
        before = records.checkpoint_dirs(run) if run.exists() else []
        if kind == "full":
            errors.append(fail_in_window(runner, argv, window, lambda leave=leave: fill(tmpfs, leave), run,
                                         "ENOSPC"))
            (tmpfs / "filler").unlink()
        else:
            errors.append(fail_in_window(runner, argv, window, lambda: remount("ro"), run, "EROFS"))
            remount("rw")
        assert set(before) <= set(records.checkpoint_dirs(run))   # nothing earlier lost
    if kind == "full":   # the failing writer was each of polars, json, safetensors and torch.save
        for lib in ("ComputeError", "OSError", "SafetensorError", "RuntimeError"):
            assert any(lib in e for e in errors), (lib, errors)
    runner.run(argv)
    assert_same_run(straight, run)


def test_file_size_limit_fails_cleanly_and_the_run_resumes(runner, straight, tmp_path):
    """RLIMIT_FSIZE (no root needed): 4 MiB lets model.safetensors (3.6 MB) through, not state.pt (7 MB),
    so the first save fails inside torch.save, whose own error names neither the file nor the errno."""
    argv = ["train", "--output_dir", str(tmp_path), *TRAIN]
    pid, log, _ = runner.start(argv, fsize=4 << 20)
    assert runner.wait(pid) == 2, log.read_text()[-3000:]
    err = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert err and "EFBIG" in err[0] and str(tmp_path / "k" / "checkpoints") in err[0], log.read_text()[-3000:]
    assert "RuntimeError" in err[0]   # torch.save's
    assert records.checkpoint_dirs(tmp_path / "k") == []   # the partial checkpoint is not complete
    assert records.read_metrics(tmp_path / "k")["step"].to_list() == [1, 2]
    assert_readable(tmp_path / "k")
    runner.run(argv)
    assert_same_run(straight, tmp_path / "k")
