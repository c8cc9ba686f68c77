#!/usr/bin/env bash
# Set everything up, prepare the digits example and run it on the local provider.
# Extra arguments go to `dgaas-flow run` (e.g. --out DIR, --limit N, --provider NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python workflows/digits/prepare.py
exec .venv/bin/dgaas-flow run workflows/digits/workflow.yaml "$@"
