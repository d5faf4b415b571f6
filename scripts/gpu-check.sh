#!/usr/bin/env bash
# One command for a CUDA or Jetson box: build the TensorRT engines, run the GPU tests, and bench
# 1, 4 and 16 cameras at 720p on TensorRT, ONNX Runtime CUDA and the CPU, printing one table.
#
#   bash scripts/gpu-check.sh                    # full run (tens of minutes: 9 benches x repeats)
#   DURATION=10 REPEAT=1 bash scripts/gpu-check.sh   # a quicker look
#   CAMERAS="1 4" BACKENDS="tensorrt cpu" bash scripts/gpu-check.sh
#
# Needs the venv (scripts/setup.sh; plus tensorrt and cuda-python, or JetPack's via a
# --system-site-packages venv) and the cached models. Writes everything under $OUT (default
# $TMPDIR/edgeblur-gpu-check-<host>-<date>/): engine build log, pytest log, one bench JSON per run, table.txt.
# A backend that cannot run here (no CUDA provider in this onnxruntime, no TensorRT) is
# reported as "n/a" with the reason, never measured on another backend under its name:
# tensorrt runs with runtime.fallback false, onnxruntime-cuda is checked to keep its provider.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
EB=("$PY" -m edgeblur)
CAMERAS=${CAMERAS:-"1 4 16"}
BACKENDS=${BACKENDS:-"tensorrt onnxruntime-cuda cpu"}
DURATION=${DURATION:-20}
REPEAT=${REPEAT:-3}
OUT=${OUT:-${TMPDIR:-/tmp}/edgeblur-gpu-check-$(hostname -s)-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT/configs"
status=0

echo "== machine" | tee "$OUT/machine.txt"
{
  lscpu | grep -E '^(Model name|CPU\(s\))' || true
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || cat /etc/nv_tegra_release 2>/dev/null || echo "no nvidia-smi and no /etc/nv_tegra_release"
  "$PY" - <<'PY'
import importlib
for name in ("tensorrt", "onnxruntime"):
    try:
        mod = importlib.import_module(name)
        extra = mod.get_available_providers() if name == "onnxruntime" else ""
        print(name, mod.__version__, extra)
    except ImportError as exc:
        print(name, "not importable:", exc)
from edgeblur.runtime.tensorrt import probe
print("tensorrt probe:", probe() or "ok")
PY
} | tee -a "$OUT/machine.txt"

# One bench config per backend. fallback: false, so a run never measures the CPU by accident.
cat > "$OUT/configs/tensorrt.yaml" <<'YAML'
runtime: {backend: tensorrt, fallback: false, precision: fp16, max_batch: 16}
YAML
cat > "$OUT/configs/onnxruntime-cuda.yaml" <<'YAML'
runtime: {backend: onnxruntime, providers: [CUDAExecutionProvider, CPUExecutionProvider]}
YAML
cat > "$OUT/configs/cpu.yaml" <<'YAML'
runtime: {backend: onnxruntime, providers: [CPUExecutionProvider]}
YAML

echo "== engines (first build on this GPU can take minutes)"
if "${EB[@]}" engines build -c "$OUT/configs/tensorrt.yaml" 2>&1 | tee "$OUT/engines.log"; then :; else
  echo "engines: build failed (see $OUT/engines.log)"; status=1
fi

echo "== GPU tests"
if "$PY" -m pytest -q tests/gpu 2>&1 | tee "$OUT/pytest-gpu.log"; then :; else status=1; fi

cuda_ok=$("$PY" -c "import onnxruntime as o; print(int('CUDAExecutionProvider' in o.get_available_providers()))")
declare -A skip=()
[[ $cuda_ok == 1 ]] || skip[onnxruntime-cuda]="this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
"$PY" -c "from edgeblur.runtime.tensorrt import probe; import sys; sys.exit(probe() is not None)" \
  || skip[tensorrt]="$("$PY" -c 'from edgeblur.runtime.tensorrt import probe; print(probe())')"

echo "== bench: 720p, cameras {$CAMERAS}, backends {$BACKENDS}, ${DURATION}s x $REPEAT"
for backend in $BACKENDS; do
  for n in $CAMERAS; do
    json="$OUT/bench-$backend-$n.json"
    if [[ -n ${skip[$backend]:-} ]]; then
      echo "{\"skipped\": \"${skip[$backend]//\"/\'}\"}" > "$json"; continue
    fi
    echo "-- $backend, $n camera(s)"
    if ! "${EB[@]}" bench --clip 720p --cameras "$n" --pace realtime -c "$OUT/configs/$backend.yaml" \
        --max-batch "$(( n < 16 ? n : 16 ))" --duration "$DURATION" --repeat "$REPEAT" \
        --json "$json" > "$OUT/bench-$backend-$n.log" 2>&1; then
      echo "{\"skipped\": \"bench failed, see bench-$backend-$n.log\"}" > "$json"; status=1
    fi
    if [[ $backend == onnxruntime-cuda ]] && grep -q "CUDAExecutionProvider did not start\|falling back" "$OUT/bench-$backend-$n.log"; then
      echo "{\"skipped\": \"ONNX Runtime CUDA fell back to the CPU, see bench-$backend-$n.log\"}" > "$json"
    fi
  done
done

"$PY" - "$OUT" "$CAMERAS" "$BACKENDS" <<'PY' | tee "$OUT/table.txt"
import json, sys
from pathlib import Path
out, cameras, backends = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
def f(v, spec=".1f"):
    return "-" if v is None else format(v, spec)
print(f"\n720p clip, realtime pace, medians of the repeats (machine: {out / 'machine.txt'})")
print(f"{'backend':<18}{'cams':>5}{'fps total':>11}{'fps min cam':>13}{'p50 ms':>9}{'p95 ms':>9}{'infer p50':>11}")
for b in backends:
    for n in cameras:
        doc = json.loads((out / f"bench-{b}-{n}.json").read_text())
        if "skipped" in doc:
            print(f"{b:<18}{n:>5}  n/a: {doc['skipped']}")
            continue
        m = doc["median"]["edgeblur"]
        print(f"{b:<18}{n:>5}{f(m.get('fps_total')):>11}{f(m.get('fps_min')):>13}"
              f"{f(m.get('latency_p50_ms')):>9}{f(m.get('latency_p95_ms')):>9}"
              f"{f(m.get('inference_p50_ms')):>11}")
PY
echo "results in $OUT (exit $status)"
exit $status
