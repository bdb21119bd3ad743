#!/usr/bin/env bash
# Set up (if needed) and start the app on the embedded default model: http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Server mode (SPADE_VIZ_SERVE=1, or the path of a settings file: README "Serving a class") also sets
# Streamlit's own upload limit and XSRF protection to match.
serve_flags=$(.venv/bin/python -m spade_viz.serve)
# shellcheck disable=SC2086
exec .venv/bin/streamlit run app.py --server.headless true --browser.gatherUsageStats false $serve_flags "$@"
