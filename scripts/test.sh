#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, the real-browser test included.
# The browser test drives Debian's chromium; install it when it is missing (needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
