#!/usr/bin/env bash
# Set everything up, start the real test clusters, lint, and run every test tier.
# Extra arguments go to pytest (e.g. -m 'not integration' for the fast tier alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
