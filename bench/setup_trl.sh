#!/usr/bin/env bash
# Set up bench/.venv-trl: TRL only for the benchmark, never in the project's environment.
# torch==2.13.0 is installed FIRST (pip finds the CPU build already on local disk for Python 3.11),
# then trl and transformers pinned with torch held by a constraint, so nothing can upgrade it.
# Idempotent: an existing venv with trl importable is reused.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${TRL_VENV:-$HERE/.venv-trl}"
PY="${PYTHON:-python3.11}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import trl, torch" 2>/dev/null; then
  echo "$VENV"; exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0 >&2
CONS="$(mktemp)"; trap 'rm -f "$CONS"' EXIT
echo "torch==2.13.0" > "$CONS"
"$VENV/bin/pip" install -q --disable-pip-version-check -c "$CONS" trl==1.16.0 transformers==5.19.0 \
  gguf==0.19.0 psutil >&2
"$VENV/bin/python" -c "import torch, trl, transformers; print(torch.__version__, trl.__version__, transformers.__version__)" >&2
echo "$VENV"
