#!/usr/bin/env bash
# The test command: prepare the host (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
exec python3 -m pytest -ra "$@"
