#!/usr/bin/env bash
# Set up (if needed) and start the app on the embedded default model: http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# `spade_viz app` loads the model (in server mode, SPADE_VIZ_SERVE=1 or the path of a settings file,
# every allowed model: README "Serving a class") and analyses a first prompt before the first
# visitor, prints when it is ready, then serves Streamlit in the same process (headless; server
# mode also sets Streamlit's upload limit and XSRF protection). Streamlit flags pass through.
exec .venv/bin/python -m spade_viz app "$@"
