#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, the real-browser and container tests included.
# The browser test drives Debian's chromium and the container test Docker (with debootstrap to build
# the base image where Docker Hub is out of reach); install them when missing (needs root or sudo).
# Where chromium is looked for is tests/browser.py's `find_chromium` (SPADE_VIZ_CHROMIUM, else
# `chromium` on PATH), asked here too; SPADE_VIZ_REQUIRE_BROWSER=1 then makes the browser tests fail,
# not skip, if they cannot find it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
missing=()
"$PYTHON" tests/browser.py >/dev/null || missing+=(chromium fonts-dejavu-core)
command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
SPADE_VIZ_CHROMIUM="$("$PYTHON" tests/browser.py)" || {
  echo "error: chromium was installed but tests/browser.py finds none (SPADE_VIZ_CHROMIUM, or chromium on PATH)" >&2
  exit 1
}
export SPADE_VIZ_CHROMIUM SPADE_VIZ_REQUIRE_BROWSER=1
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
