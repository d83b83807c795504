"""What the notebooks call: papermill execution into run directories, parameters -> Config, the
paper's benchmark protocol, and multi-run tables for plotting.

Notebooks stay thin (a `parameters` cell of literals, then calls into this module and friends), so
the same procedure runs from papermill, JupyterLab and Python:

    from igrpo_core.notebooks import execute
    execute("train", {"algo": "grpo", "max_steps": 5, "run_name": "g5"})
    # -> runs/g5/notebooks/train.ipynb

`execute` copies the executed notebook into every directory the notebook announced with
`keep_notebook_in` (the runs it created), so the notebook ends up beside the evidence it produced.

Deliberately left out: plotting (the notebooks build plotly figures from the frames here) and any
model code of its own (training and evaluation are `trainer`, `evaluate` and `experiments`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import polars as pl

from igrpo_core import analysis, config as config_mod, records

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
    config_mod._check_keys(direct, "notebook parameters")
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


def resolve_path(path: str | Path) -> Path:
    """A relative path that does not exist here is tried against the repository root."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
        return REPO_ROOT / p
    return p


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


# --- benchmarks: the paper's protocol --------------------------------------------------------

PAPER_SIX = ["aime24", "aime25", "math500", "amc23", "gsm8k", "minerva"]

# protocol -> Config eval_* settings; eval_num_samples=0 is evaluate's paper rule (k=64 AIME, 8 else)
PROTOCOLS = {
    "paper": dict(eval_num_samples=0, eval_temperature=0.6, eval_top_p=0.95, eval_greedy=False),
    "greedy": dict(eval_num_samples=1, eval_greedy=True),
    "config": {},   # the config's own eval_* values
}


def is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / "status.json").is_file()


def resolve_models(models: list[str], output_dir: str | Path) -> dict[str, tuple[str, Path]]:
    """label -> (model path or hub id, directory for its evaluation outputs).

    A run directory stands for its newest checkpoint and keeps its results in <run>/eval/, as does
    one checkpoint (<run>/checkpoints/step_N/model, labelled run@step_N); a model directory or hub
    id keeps them in <output_dir>/eval-<name>/.
    """
    from igrpo_core.experiments import final_model
    out: dict[str, tuple[str, Path]] = {}
    for m in models:
        p = resolve_path(m)
        if p.is_dir() and is_run_dir(p):
            label, model, root = p.name, str(final_model(p)), p / "eval"
        elif p.is_dir() and p.parent.parent.name == "checkpoints" and is_run_dir(p.parents[2]):
            label, model, root = f"{p.parents[2].name}@{p.parent.name}", str(p), p.parents[2] / "eval"
        else:
            model = str(p) if p.exists() else m   # else a hub id (load_model says if it is missing)
            label = p.name if p.exists() else m
            root = Path(output_dir) / f"eval-{label.replace('/', '_')}"
        base, i = label, 2
        while label in out:
            label, i = f"{base} ({i})", i + 1
        out[label] = (model, root)
    return out


def evaluate_benchmarks(cfg, models: list[str], sets: list[str], protocol: str = "paper",
                        progress: bool = True) -> dict[str, dict]:
    """Evaluate each model (path, hub id or run directory) on `sets`; label -> evaluate's summary.

    Results go to <eval root>/<protocol>-<hash of every setting that changes the samples>/, so
    re-running resumes and changed settings never meet stale samples.
    """
    from igrpo_core.evaluate import evaluate_model
    from igrpo_core.models import load_examples
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    c = cfg.replace(**PROTOCOLS[protocol], eval_dataset=",".join(sets))
    key = {k: getattr(c, k) for k in ("eval_dataset", "eval_num_samples", "eval_temperature", "eval_top_p",
                                       "eval_greedy", "eval_limit", "max_completion_length", "seed",
                                       "system_prompt", "tiny_num_problems", "generation_batch_size")}
    data = {s: load_examples(s, tiny_num_problems=c.tiny_num_problems, limit=c.eval_limit) for s in sets}
    results = {}
    for label, (model, root) in resolve_models(models, cfg.output_dir).items():
        digest = hashlib.sha1(json.dumps({**key, "model": model}, sort_keys=True).encode()).hexdigest()[:8]
        out = root / f"benchmark-{protocol}-{digest}"
        results[label] = {**evaluate_model(c, model, out, datasets=data, progress=progress), "eval_dir": str(out)}
    return results


def benchmark_table(results: dict[str, dict], metric: str = "avg@k") -> pl.DataFrame:
    """Wide table: one row per model, one column per set (in order) plus the macro average."""
    rows = []
    for label, r in results.items():
        row = {"model": label}
        for ds, m in r["metrics"].items():
            row[ds] = m.get(metric)
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def benchmark_details(results: dict[str, dict]) -> pl.DataFrame:
    """Long table: model, set, k, problems, avg@k, pass@1, pass@k, maj@k, no_answer."""
    rows = []
    for label, r in results.items():
        for ds, m in r["metrics"].items():
            if ds == "macro_avg":
                continue
            k = r["protocol"]["num_samples"].get(ds) if isinstance(r["protocol"]["num_samples"], dict) else None
            rows.append({"model": label, "set": ds, "k": k, "problems": m.get("problems"), "avg@k": m.get("avg@k"),
                         "pass@1": m.get("pass@1"), "pass@k": m.get(f"pass@{k}"), "maj@k": m.get("maj@k"),
                         "no_answer": m.get("no_answer"), "skipped_too_long": m.get("skipped_too_long")})
    return pl.DataFrame(rows, infer_schema_length=None)


# --- multi-run tables for the analysis and training notebooks ---------------------------------

def newest_runs(output_dir: str | Path = "runs", n: int = 2) -> list[Path]:
    """The n most recently updated run directories (by status.json, else config.json)."""
    def updated(p: Path) -> float:
        return max((p / f).stat().st_mtime for f in ("config.json", "status.json") if (p / f).exists())
    runs = sorted(records.list_runs(resolve_path(output_dir)), key=updated)
    if not runs:
        raise FileNotFoundError(f"no run directories under {output_dir!r}: run notebooks/quickstart.ipynb "
                                "or `igrpo train` first, or pass run_dirs")
    return runs[-n:]


def pick_runs(run_dirs: list[str], output_dir: str | Path = "runs", newest: int = 2) -> list[Path]:
    """The given run directories (checked), or else the `newest` ones under output_dir."""
    if not run_dirs:
        return newest_runs(output_dir, newest)
    out = [resolve_path(d) for d in run_dirs]
    missing = [str(d) for d in out if not (d / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"not run directories (no config.json): {missing}")
    return out


def run_label(run_dir: Path) -> str:
    cfg = records.read_json(Path(run_dir) / "config.json")
    return f"{Path(run_dir).name} ({cfg.get('algo')})"


def metrics_long(run_dirs) -> pl.DataFrame:
    """All runs' per-step metrics with a `run` column (label) for colouring plots."""
    parts = [records.read_metrics(d).with_columns(pl.lit(run_label(d)).alias("run")) for d in run_dirs]
    parts = [p for p in parts if p.height]
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame({"run": [], "step": []})


def _per_run(run_dirs, table) -> list[pl.DataFrame]:
    """table(rollouts) of each run that yields rows, with a `run` column."""
    parts = []
    for d in run_dirs:
        t = table(records.read_rollouts(d))
        if t.height:
            parts.append(t.with_columns(pl.lit(run_label(d)).alias("run")))
    return parts


def stage_rewards_long(run_dirs) -> pl.DataFrame:
    """analysis.stage_rewards for each run, with a `run` column."""
    parts = _per_run(run_dirs, analysis.stage_rewards)
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame({"run": [], "step": []})


def near_miss_counts_long(run_dirs) -> pl.DataFrame:
    """analysis.near_miss_counts per iGRPO run (GRPO runs have no drafts), with a `run` column."""
    parts = _per_run(run_dirs, analysis.near_miss_counts)
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame({"run": [], "step": []})


def near_misses_long(run_dirs) -> pl.DataFrame:
    """analysis.near_misses of every run, with a `run` column; fixes first."""
    parts = _per_run(run_dirs, analysis.near_misses)
    if not parts:
        return pl.DataFrame({"run": [], "step": [], "direction": []})
    return pl.concat(parts, how="diagonal_relaxed").sort(pl.col("direction") != "fix", "run", "step")


def entropy_drops(metrics: pl.DataFrame, fractions=(0.9, 0.75, 0.5)) -> pl.DataFrame:
    """Per run: start and final entropy, and the first step where entropy < f x its first-step value.

    A later step (or null: never) means entropy collapsed more slowly; the paper reports that iGRPO
    delays the collapse relative to GRPO.
    """
    rows = []
    for (run,), m in metrics.filter(pl.col("entropy").is_not_null()).sort("step").group_by(
            ["run"], maintain_order=True):
        start = m["entropy"][0]
        row = {"run": run, "steps": m.height, "entropy_start": start, "entropy_final": m["entropy"][-1]}
        for f in fractions:
            below = m.filter(pl.col("entropy") < f * start)["step"]
            row[f"first_step_below_{f:g}x"] = int(below[0]) if below.len() else None
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def format_near_misses(nm: pl.DataFrame, n: int = 3, max_chars: int = 400) -> str:
    """A few near-miss rows as plain text (model output is shown as text, never rendered)."""
    def clip(s):
        s = "" if s is None else str(s)
        return s if len(s) <= max_chars else s[:max_chars] + f"... [{len(s) - max_chars} more chars]"
    blocks = []
    for r in nm.head(n).iter_rows(named=True):
        blocks.append("\n".join([
            f"--- {r.get('run', '')} step {r['step']}  group {r['group_index']}  sample {r['sample_index']}  "
            f"{r['direction']}  (gold {r['gold']}, extracted {r['extracted']})",
            f"[draft, accuracy {r['draft_accuracy']}]", clip(r["draft"]),
            f"[refinement, accuracy {r['reward_accuracy']}, advantage {r['advantage']}]", clip(r["completion"])]))
    return "\n\n".join(blocks) if blocks else "(no near misses in these runs)"


# --- command line: python -m igrpo_core.notebooks NAME -p key value ... ----------------------

def _parse_value(raw: str):
    """papermill's -p rules plus YAML lists/dicts: "2" -> 2, "1e-4" -> 1e-4, "None" -> None, "[0, 1]" -> list."""
    import yaml
    if raw in ("None", "none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    try:
        val = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return val if isinstance(val, (bool, list, dict)) else raw


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
    params = {k: _parse_value(v) for k, v in ns.parameter}
    out = execute(ns.name, params, run_dir=ns.run_dir, output=ns.output, kernel=ns.kernel, progress=True)
    print(f"executed notebook: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
