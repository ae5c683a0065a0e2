#!/usr/bin/env bash
# The main job, fully offline: prepare the host (idempotent), then run the demo
# pipeline: fetch -> overlay -> build in the container -> flash the virtual board -> verify.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
exec rk3576-build demo "$@"
