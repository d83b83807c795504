#!/usr/bin/env bash
# Idempotent set-up of a virtual environment (VENV, default .venv): torch FIRST, then the pinned
# requirements, then the package itself without dependencies, then a Jupyter kernel "igrpo" for
# papermill and JupyterLab. Needs Python 3.11-3.13 (PYTHON, default python3) with venv; no root.
#
# torch: pip's default torch on Linux is the CUDA build (a ~6 GB environment), so the CPU build is
# installed explicitly: a torch==TORCH_VERSION wheel already on local disk (pip's find-links, as on
# the development machine) if there is one, else from TORCH_INDEX (default: PyTorch's CPU index).
# GPU users: TORCH_INDEX=https://download.pytorch.org/whl/cu128 (your CUDA), or TORCH_INDEX=pypi
# (PyPI's default build), or the whole pip arguments in TORCH_SPEC (e.g. "torch==2.11.0 --index-url <url>").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
stamp=$VENV/.setup-$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
if [ ! -x "$VENV/bin/python" ]; then
  ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  case "$ver" in
    3.11|3.12|3.13) ;;
    *) echo "Python $ver ($PY): this project needs 3.11-3.13 (its pins have no wheels for 3.10;" \
            "3.14 is untested). Run with PYTHON=python3.12 (or another 3.11-3.13)." >&2; exit 1 ;;
  esac
  "$PY" -m venv "$VENV"
fi
pip="$VENV/bin/pip"
"$pip" install -q --upgrade pip
if [ -n "${TORCH_SPEC:-}" ]; then
  "$pip" install -q $TORCH_SPEC
elif "$pip" install -q --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
  "$pip" install -q "torch==$TORCH_VERSION"   # a local wheel (find-links) or installed: only its dependencies
elif [ "$TORCH_INDEX" = pypi ]; then
  "$pip" install -q "torch==$TORCH_VERSION"
else
  "$pip" install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX"
fi
"$pip" install -q -r requirements.txt
"$pip" install -q --no-deps -e .
"$VENV/bin/python" -m ipykernel install --sys-prefix --name igrpo --display-name "igrpo (.venv)" >/dev/null
rm -f "$VENV"/.setup-*
touch "$stamp"
echo "set-up complete: $("$VENV/bin/python" -c 'import sys, torch, transformers; print("Python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)')"
