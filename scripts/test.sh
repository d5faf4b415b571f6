#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: system packages for the RTSP test servers (as
# root), the venv and models (scripts/setup.sh), the shared test media, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < .ci/apt-packages.txt
if (( ${#missing[@]} )); then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test: missing system packages; run: sudo apt-get install ${missing[*]}" >&2
    exit 2
  fi
fi
bash scripts/setup.sh
media="${EDGEBLUR_MEDIA:-$HOME/.cache/edgeblur/media}"
shared="${EDGEBLUR_SHARED:-../shared}"
PYTHON=.venv/bin/python bash "$shared/media/fetch.sh" "$media"
.venv/bin/ruff check edgeblur tests benchmarks
.venv/bin/ruff format --check edgeblur tests benchmarks
exec .venv/bin/python -m pytest "$@"
