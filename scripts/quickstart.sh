#!/usr/bin/env bash
# Set up .venv (see scripts/setup.sh) and run the main job on the embedded default model:
# the quickstart pipeline (annotate -> train CasCoD -> evaluate -> answer through the endpoint).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/ray-cotd pipeline jobs/configs/quickstart.yaml "$@"
