#!/usr/bin/env bash
# Create .venv with dgaas-flow, the Triton server wheel, the example's and the tests' packages.
# Idempotent: a second run only checks that everything is installed (a few seconds).
# Prints one line per phase, so that the first run (1-3 minutes) is never silent for long.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
say() { echo "setup: $*"; }
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "dgaas-flow needs Python >= 3.11; '$PY' is $("$PY" -V 2>&1). Set PYTHON=/path/to/python3.11+" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv ($("$PY" -V))"
  "$PY" -m venv .venv
fi
if [ -x .venv/bin/dgaas-flow ]; then
  say "checking .venv's packages (pip install -e '.[test,examples]')"
else
  say "installing dgaas-flow and its packages into .venv (pip, quiet; 1-3 minutes the first time)"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,examples]"
echo "setup: .venv ready ($(.venv/bin/python -V), $(.venv/bin/dgaas-flow --help >/dev/null && echo dgaas-flow ok))"
say "done in $((SECONDS - t0)) s"
