"""Running notebooks: papermill execution into run directories, notebook parameters -> Config, and
the few display helpers every notebook uses.

Notebooks stay thin (a `parameters` cell of literals, then calls into this module and friends), so
the same procedure runs from papermill, JupyterLab and Python:

    from igrpo_core.notebooks import execute
    execute("train", {"algo": "grpo", "max_steps": 5, "run_name": "g5"})
    # -> runs/g5/notebooks/train.ipynb

`execute` copies the executed notebook into every directory the notebook announced with
`keep_notebook_in` (the runs it created), so the notebook ends up beside the evidence it produced.

Deliberately left out: the tables the notebooks plot (analysis.py, benchmarks.py), plotting
itself (plotly, in the notebooks), and any model code (trainer, evaluate, experiments).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import polars as pl

from igrpo_core import config as config_mod

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KEEP_MARKER = "igrpo: keep executed notebook in "   # a printed line that `execute` looks for


# --- notebook set-up and parameters ----------------------------------------------------------

def setup() -> None:
    """Run relative paths from the repository root when JupyterLab starts the kernel in notebooks/.

    Under papermill or Python the working directory is left alone (paths are relative to where
    you launched). Plotly figures are stored as plotly JSON (JupyterLab renders it) with a
    CDN-loaded HTML fallback, so executed notebooks stay small.
    """
    if Path.cwd().resolve() == NOTEBOOK_DIR:
        os.chdir(REPO_ROOT)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings
    warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm falls back to text bars
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()   # per-load weight/shard bars would drown the notebook's output
    import plotly.io as pio
    pio.renderers.default = "plotly_mimetype+notebook_connected"


def config_from_parameters(preset: str | None = None, config_file: str | None = None,
                           overrides: dict | None = None, **fields) -> config_mod.Config:
    """Preset, then config file, then the notebook's direct fields (None = keep), then `overrides`."""
    direct = {k: v for k, v in fields.items() if v is not None}
    config_mod.check_keys(direct, "notebook parameters")
    return config_mod.load(config_file, preset=preset, overrides={**direct, **(overrides or {})})


def show(df: pl.DataFrame, rows: int = 40) -> None:
    """Print a frame in full width as plain text (cells may hold model output: never rendered)."""
    with pl.Config(tbl_cols=-1, tbl_rows=rows, tbl_width_chars=250, fmt_str_lengths=60):
        print(df)


def present(df: pl.DataFrame, cols: list[str]) -> list[str]:
    """The columns of `cols` that df has with at least one value (GRPO runs lack draft columns)."""
    return [c for c in cols if c in df.columns and df[c].null_count() < df.height]


def keep_notebook_in(dirs) -> None:
    """Announce directories (runs) that should receive a copy of this executed notebook."""
    for d in dirs:
        print(f"{KEEP_MARKER}{Path(d).resolve()}")


# --- papermill -------------------------------------------------------------------------------

def check_kernel(kernel: str = "igrpo") -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise RuntimeError(f"Jupyter kernel {kernel!r} is not installed: run scripts/setup.sh, or "
                           f"`python -m ipykernel install --sys-prefix --name {kernel}` inside the venv") from None


def _announced_dirs(nb_path: Path) -> list[Path]:
    import nbformat
    out = []
    for cell in nbformat.read(nb_path, as_version=4).cells:
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")
        out += [Path(line[len(KEEP_MARKER):].strip()) for line in text.splitlines() if line.startswith(KEEP_MARKER)]
    return list(dict.fromkeys(out))


def execute(name: str, parameters: dict | None = None, run_dir: str | Path | None = None,
            output: str | Path | None = None, kernel: str = "igrpo", progress: bool = False) -> Path:
    """Execute notebooks/<name>.ipynb with papermill; returns the executed notebook's path.

    Output: `output`, else <run_dir>/notebooks/<name>.ipynb, else
    <output_dir>/notebooks/<name>-<timestamp>.ipynb. Afterwards (also after a failing cell) a copy
    goes to <dir>/notebooks/<name>.ipynb for every run directory the notebook announced.
    """
    import papermill
    check_kernel(kernel)
    src = NOTEBOOK_DIR / f"{name}.ipynb"
    if not src.is_file():
        known = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
        raise FileNotFoundError(f"no notebook {name!r}; known: {known}")
    parameters = dict(parameters or {})
    if output is None:
        if run_dir is not None:
            output = Path(run_dir) / "notebooks" / f"{name}.ipynb"
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            output = Path(parameters.get("output_dir", "runs")) / "notebooks" / f"{name}-{stamp}.ipynb"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(src), str(output), parameters=parameters, kernel_name=kernel,
                                   progress_bar=progress)
    finally:
        if output.exists():
            for d in _announced_dirs(output):
                dest = d / "notebooks" / f"{name}.ipynb"
                if d.is_dir() and dest.resolve() != output.resolve():
                    dest.parent.mkdir(exist_ok=True)
                    shutil.copyfile(output, dest)
    return output


# --- command line: python -m igrpo_core.notebooks NAME -p key value ... ----------------------

def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m igrpo_core.notebooks", description=execute.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="notebook name: " + ", ".join(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))))
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    ap.add_argument("--run-dir", help="write the executed notebook to <run-dir>/notebooks/<name>.ipynb")
    ap.add_argument("--output", help="executed notebook path")
    ap.add_argument("-k", "--kernel", default="igrpo")
    ns = ap.parse_args(argv)
    params = {k: config_mod.parse_literal(v) for k, v in ns.parameter}
    out = execute(ns.name, params, run_dir=ns.run_dir, output=ns.output, kernel=ns.kernel, progress=True)
    print(f"executed notebook: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
