"""Experiment trackers, TRL's `report_to`: each step's metrics row mirrored to TensorBoard, trackio
or wandb.

The run directory stays the source of truth: `metrics.parquet` is written first, and a tracker gets
the same row afterwards (scalars named `train/<column>`, at x = the optimizer step). Trackers are
optional packages: `Trackers(...)` checks at trainer start, before any model loads, that each asked
for is installed, and names the pip package if not. Only the main process reports. Where each one
writes, by default inside the run directory:
- tensorboard: `<run>/tensorboard/` (torch's SummaryWriter; `tensorboard --logdir <run>/tensorboard`);
- wandb: `<run>/wandb/`, offline unless WANDB_MODE says otherwise (`wandb sync <run>/wandb/offline-run-*`);
- trackio: `<run>/trackio/` unless TRACKIO_DIR is set (`TRACKIO_DIR=<run>/trackio trackio show`).
A resumed run rewinds TensorBoard to its first new step (purge_step), so no step appears twice.

Deliberately left out: "all" (every installed tracker), logging completions or media, online
wandb/trackio set-up (the user's environment variables pass through).
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from igrpo_core.options import report_to_names

PIP_PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}  # name -> pip package


def check_installed(names: list[str]) -> None:
    """A clear error for a tracker whose package is missing (found without importing it)."""
    missing = [n for n in names if importlib.util.find_spec(PIP_PACKAGE[n]) is None]
    if missing:
        pkgs = " ".join(PIP_PACKAGE[n] for n in missing)
        raise RuntimeError(f"report_to={missing} needs the package(s) {pkgs}, which are not installed: "
                           f"pip install {pkgs}  (or pip install 'igrpo-workbench[trackers]'), "
                           f"or leave report_to at 'none'")


def scalars(row: dict) -> dict[str, float]:
    """The numeric columns of a metrics row as tracker scalars (None and non-numbers are skipped)."""
    return {f"train/{k}": float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoard:
    def __init__(self, run_dir: Path, run_name: str, config: dict, first_step: int):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=first_step)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, v in values.items():
            self.writer.add_scalar(key, v, global_step=step)
        self.writer.flush()   # a crash loses at most the step being written

    def close(self) -> None:
        self.writer.close()


class Wandb:
    def __init__(self, run_dir: Path, run_name: str, config: dict, first_step: int):
        import wandb
        self.run = wandb.init(mode=os.environ.get("WANDB_MODE", "offline"), dir=str(run_dir),
                              project=os.environ.get("WANDB_PROJECT", "igrpo"), name=run_name,
                              id=_run_id(run_name), resume="allow", config=config,
                              settings=wandb.Settings(silent=True))

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Trackio:
    def __init__(self, run_dir: Path, run_name: str, config: dict, first_step: int):
        os.environ.setdefault("TRACKIO_DIR", str(run_dir / "trackio"))  # read when trackio is imported
        import trackio
        self.trackio = trackio
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "igrpo"), name=run_name, config=config,
                     resume="allow", embed=False)

    def log(self, values: dict[str, float], step: int) -> None:
        self.trackio.log(values, step=step)

    def close(self) -> None:
        self.trackio.finish()


BACKENDS = {"tensorboard": TensorBoard, "wandb": Wandb, "trackio": Trackio}


def _run_id(run_name: str) -> str:
    """wandb run ids allow letters, digits, '-' and '_'; one run name keeps one id across resumes."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", run_name)[:64]


class Trackers:
    """The trackers `report_to` names, opened at the first logged step (the run directory exists by
    then, and a resumed run knows its first step). A no-op for "none" and on non-main processes."""

    def __init__(self, report_to, run_dir: Path, config: dict, *, main: bool = True):
        self.names = report_to_names(report_to)
        check_installed(self.names)       # every process: the job fails as one, before any model loads
        self.active = main and bool(self.names)
        self.run_dir, self.config, self.open = Path(run_dir), config, []

    def log(self, row: dict) -> None:
        if not self.active:
            return
        step = int(row["step"])
        if not self.open:
            self.open = [BACKENDS[n](self.run_dir, self.run_dir.name, self.config, step) for n in self.names]
        values = scalars(row)
        for tracker in self.open:
            tracker.log(values, step)

    def close(self) -> None:
        for tracker in self.open:
            tracker.close()
        self.open = []
