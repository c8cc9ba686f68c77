#!/usr/bin/env bash
# Set everything up, start the real test clusters, lint, and run every test tier.
# Extra arguments go to pytest (e.g. -m 'not integration' for the fast tier alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v shellcheck >/dev/null; then  # lints the GlideinWMS scripts (a test asserts it)
  apt-get install -y -q --no-install-recommends shellcheck >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends shellcheck >/dev/null; }
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
