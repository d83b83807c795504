#!/usr/bin/env bash
# Idempotent set-up of .venv: torch==2.13.0 (CPU build) FIRST, then pinned requirements, then the
# package itself without dependencies, then a Jupyter kernel "igrpo" for papermill and JupyterLab.
# GPU users: set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.11.0 --index-url <your CUDA wheel index>").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp=.venv/.setup-$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q $TORCH_SPEC
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q --no-deps -e .
.venv/bin/python -m ipykernel install --sys-prefix --name igrpo --display-name "igrpo (.venv)" >/dev/null
rm -f .venv/.setup-*
touch "$stamp"
echo "set-up complete: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
