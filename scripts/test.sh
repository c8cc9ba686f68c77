#!/usr/bin/env bash
# Set everything up, start the real test clusters, lint, and run every test tier.
# Extra arguments go to pytest (e.g. -m 'not integration' for the fast tier alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
need() {  # need COMMAND PACKAGE: install the Debian package when the command is missing
  command -v "$1" >/dev/null && return
  apt-get install -y -q --no-install-recommends "$2" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$2" >/dev/null; }
}
need shellcheck shellcheck           # lints the GlideinWMS scripts (a test asserts it)
need chromium chromium               # the run report's page in a real browser (tests/report)
need chromedriver chromium-driver
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
