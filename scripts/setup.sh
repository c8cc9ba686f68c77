#!/usr/bin/env bash
# Create .venv with dgaas-flow, the Triton server wheel, the example's and the tests' packages.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "dgaas-flow needs Python >= 3.11; '$PY' is $("$PY" -V 2>&1). Set PYTHON=/path/to/python3.11+" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,examples]"
# dgaas-flow and Parsl's interchange and worker pools run under `python -O` where its bytecode is cached
# (README, Speed; dgaas_flow/optimized.py). Write it now for what they import: with PYTHONDONTWRITEBYTECODE
# set, Python would not write it, and they would run unoptimized.
htex=parsl.executors.high_throughput
env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -O -c "import dgaas_flow.cli, dgaas_flow.campaign, \
  dgaas_flow.gateway.cli, $htex.interchange, $htex.process_worker_pool, dgaas_flow.apps.tasks, tritonclient.http"
echo "setup: .venv ready ($(.venv/bin/python -V), $(.venv/bin/dgaas-flow --help >/dev/null && echo dgaas-flow ok))"
