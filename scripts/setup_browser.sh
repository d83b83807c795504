#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/test_dashboard_browser.py). Idempotent.
# We never run `playwright install`: the tests drive /usr/bin/chromium through playwright's python API.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
/usr/bin/chromium --version || true
