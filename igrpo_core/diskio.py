"""Writing records so that a kill, a full disk or a read-only filesystem never leaves a damaged file,
or a partial one that looks complete.

- `atomic_write(path, write)`: write <path>.tmp, then rename it over path. A SIGKILL leaves the old
  file or the new one, never a mix (readers skip *.tmp; a resume deletes them); a write that fails
  removes its temporary, so a full disk does not stay full of half files.
- `writing(path)`: a failure of the filesystem while writing `path` becomes a `DiskWriteError` (an
  OSError) that names the path and the errno (ENOSPC, EDQUOT, EROFS, EFBIG, EACCES), whichever
  library raised it: on a full disk torch.save says only "unexpected pos 576 vs 534", polars and
  safetensors "os error 28" without the path, Python's own write "[Errno 28]" without it.
- `sync_tree(directory)`: fsync every file and folder below it; a checkpoint is synced before
  trainer_state.json marks it complete, so that after a power cut "complete" still means complete.
- `test_pause(window, path)`: TEST-ONLY hook, off unless IGRPO_TEST_DELAY_IN is set (one dictionary
  look-up otherwise). IGRPO_TEST_DELAY_IN="checkpoint:2,rollouts:1.5" makes the process sleep that
  many seconds each time it is inside that write window (a checkpoint's files written but not yet
  marked complete; a record's temporary written but not yet renamed), after appending
  "<window> <path>" to the file IGRPO_TEST_DELAY_MARKER, so a test can SIGKILL it there
  (tests/test_kill_loops.py). Windows: checkpoint, rollouts, metrics, status, eval_part,
  eval_samples, eval_summary, ablation_results. "checkpoint@step_000006:60" pauses only in writes
  whose path contains "step_000006".

Deliberately left out: retries (space is the user's to free; the run resumes when rerun), and an
fsync of every small record (a kill does not lose the page cache; only checkpoints, where a resume
starts, are synced).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import time
from pathlib import Path

HINTS = {
    errno.ENOSPC: "the filesystem is full; free space and rerun the same command (it resumes)",
    errno.EDQUOT: "the disk quota is used up; free space and rerun the same command (it resumes)",
    errno.EROFS: "the filesystem is mounted read-only; choose a writable output_dir or remount it",
    errno.EFBIG: "the file exceeds the process's file-size limit (ulimit -f)",
    errno.EACCES: "no permission to write there; choose another output_dir",
}
_ERRNO_IN_TEXT = re.compile(r"os error (\d+)|\[Errno (\d+)\]")


class DiskWriteError(OSError):
    """A record could not be written because of the filesystem; str() names the path and the errno."""


def test_pause(window: str, path: Path | str) -> None:
    """TEST-ONLY: see the module docstring. Off (returns at once) unless IGRPO_TEST_DELAY_IN is set."""
    spec = os.environ.get("IGRPO_TEST_DELAY_IN")
    if not spec:
        return
    for item in spec.split(","):
        name, _, seconds = item.strip().partition(":")
        name, _, in_path = name.partition("@")    # "checkpoint@step_000006": only writes under that path
        if name == window and in_path in str(path):
            marker = os.environ.get("IGRPO_TEST_DELAY_MARKER")
            if marker:
                with open(marker, "a") as f:
                    f.write(f"{window} {path}\n")
            time.sleep(float(seconds or 1.0))


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(path: Path) -> int | None:
    """The filesystem's state after a failed write, for libraries whose errors hide the errno."""
    try:
        st = os.statvfs(_existing(path))
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if st.f_bavail * st.f_frsize < 64 * 1024:
        return errno.ENOSPC
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        files = [p for p in path.rglob("*")] if path.is_dir() else [path, path.with_name(path.name + ".tmp")]
        if any(p.is_file() and p.stat().st_size >= limit for p in files):
            return errno.EFBIG
    return None


def disk_error(exc: BaseException, path: Path | str) -> DiskWriteError | None:
    """`exc` (raised while writing path) as a DiskWriteError, or None when the filesystem is not why."""
    if isinstance(exc, DiskWriteError) or not isinstance(exc, Exception):
        return None
    code = getattr(exc, "errno", None)
    if code is None:
        m = _ERRNO_IN_TEXT.search(str(exc))
        code = int(m.group(1) or m.group(2)) if m else None
    if code not in HINTS:
        code = _probe(Path(path))
    if code is None:
        return None
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return DiskWriteError(code, f"cannot write {path}: {os.strerror(code)} ({errno.errorcode[code]}); "
                                f"{HINTS[code]} [{type(exc).__name__}: {first}]")


@contextlib.contextmanager
def writing(path: Path | str):
    """Raise filesystem failures inside the block as DiskWriteError naming `path` (see disk_error)."""
    try:
        yield
    except Exception as exc:
        err = disk_error(exc, path)
        if err is None:
            raise
        raise err from exc


def atomic_write(path: Path | str, write, window: str | None = None) -> None:
    """write(tmp) then rename tmp over path; `window` names the test_pause window before the rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        if window:
            test_pause(window, path)
        os.replace(tmp, path)
    except BaseException as exc:
        err = disk_error(exc, path)   # before the temporary goes: it may be what filled the disk
        with contextlib.suppress(OSError):   # on a read-only filesystem it cannot go (readers skip it)
            tmp.unlink(missing_ok=True)
        if err is None:
            raise
        raise err from exc


def sync_tree(directory: Path) -> None:
    """fsync every file and folder below `directory`, and the folder itself."""
    for root, dirs, files in os.walk(directory, topdown=False):
        for name in [*files, "."]:   # each folder is "." of its own turn
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
