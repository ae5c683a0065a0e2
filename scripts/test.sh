#!/usr/bin/env bash
# The test command: prepare the host (idempotent), lint, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
python3 -m ruff check .  # rules in pyproject.toml; any finding fails the run
python3 -m mypy          # the package, as pyproject.toml's [tool.mypy] says
exec python3 -m pytest -ra "$@"
