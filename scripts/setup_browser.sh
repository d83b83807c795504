#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/test_dashboard_browser.py). Idempotent.
# We never run `playwright install`: the tests drive IGRPO_CHROMIUM (default /usr/bin/chromium)
# through playwright's python API. Installing needs root or password-less sudo and apt-get; without
# them nothing is installed and the browser tests skip with the reason (so `make test` needs no
# root). Under CI (CI set, as .ci/run sets it) a browser that cannot be had is an error.
set -euo pipefail
CHROMIUM=${IGRPO_CHROMIUM:-/usr/bin/chromium}

cannot() {
  if [ -n "${CI:-}" ]; then
    echo "setup_browser: $1; CI needs Chromium for the browser tests" >&2
    exit 1
  fi
  echo "setup_browser: $1: the browser tests will be skipped (set IGRPO_CHROMIUM to a Chromium binary to run them)"
  exit 0
}

if [ -x "$CHROMIUM" ]; then
  echo "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || cannot "no apt-get to install chromium with (not Debian/Ubuntu)"
if [ "$(id -u)" = "0" ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  cannot "installing chromium needs root or password-less sudo, and this is user $(id -un)"
fi
$SUDO apt-get update -qq || cannot "apt-get update failed"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || cannot "apt-get install chromium failed"
[ -x "$CHROMIUM" ] || cannot "chromium was installed but $CHROMIUM is not there"
"$CHROMIUM" --version || true
