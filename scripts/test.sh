#!/usr/bin/env bash
# Set everything up, lint, and run every test tier (the SLURM and HTCondor tests start their real
# test clusters themselves). Extra arguments go to pytest (e.g. -m 'not integration' for the fast
# tier alone). Prints one line per phase.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "test: $*"; }
say "setting up .venv (scripts/setup.sh)"
bash scripts/setup.sh
need() {  # need COMMAND PACKAGE: install the Debian package when the command is missing
  command -v "$1" >/dev/null && return
  say "installing $2 (apt-get; $1 is missing)"
  apt-get install -y -q --no-install-recommends "$2" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$2" >/dev/null; }
}
say "checking the Debian tools the tests use (shellcheck, chromium, chromedriver)"
need shellcheck shellcheck           # lints the GlideinWMS scripts (a test asserts it)
need chromium chromium               # the run report's page in a real browser (tests/report)
need chromedriver chromium-driver
say "lint (ruff check .)"
.venv/bin/ruff check .
note=""  # the HTCondor tests' first start on this machine builds the pool (tests/clusters/htcondor)
[ -d "${DGAAS_HTCONDOR_DIR:-/var/lib/dgaas-htcondor}/pool" ] \
  || note=" (the first HTCondor test builds the test pool: about a minute, once per machine)"
say "pytest${*:+ $*}$note"
exec .venv/bin/python -m pytest "$@"
