#!/usr/bin/env bash
# Set up .venv (see scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# --durations: the slowest tests are printed, so the suite can be kept under its 30-minute budget.
exec .venv/bin/python -m pytest --durations=25 "$@"
