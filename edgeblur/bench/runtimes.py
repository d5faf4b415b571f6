"""`edgeblur bench --runtimes`: the CPU runtimes side by side on this project's models.

For faces at 640 px and plates at 640 and 1280 px, real frames of the bench clip are letterboxed
as edgeblur does, then each runtime (ONNX Runtime FP32 without spinning, the reference; OpenVINO
FP32; OpenVINO bf16 where the CPU has it) runs every frame, round after round, the order of the
runtimes rotated each round so a neighbour's load hits them all alike. A round's figure is its
median ms per frame; the table shows the median of the rounds and their spread (the noise of a
shared machine), and the speed-up against ONNX Runtime FP32. Detections of each runtime are
compared with ONNX Runtime FP32's on the same frames: boxes kept, lost (with the best score a
lost box had there) and extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np

from edgeblur.bench import clips as bc
from edgeblur.build import role_spec
from edgeblur.config import DetectConfig
from edgeblur.models import build_model
from edgeblur.models.ops import box_iou
from edgeblur.runtime.base import Runtime, RuntimeSettings
from edgeblur.runtime.onnxruntime import OnnxRuntime
from edgeblur.types import Detections

log = logging.getLogger(__name__)

CASES = (("faces", "face", 640), ("plates", "plate", 640), ("plates", "plate", 1280))
MATCH_IOU = 0.5


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str
    precision: str


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def variants() -> tuple[list[Variant], str | None]:
    """The runtimes to compare; the second item says why OpenVINO (or its bf16) is left out."""
    out = [Variant("onnxruntime fp32", "onnxruntime", "fp32")]
    try:
        from edgeblur.runtime.openvino import load_openvino

        ov = load_openvino()
    except Exception as exc:  # OpenVinoUnavailable: not installed, not x86-64
        return out, str(exc)
    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" in caps:
        out.append(Variant("openvino bf16", "openvino", "bf16"))
    out.append(Variant("openvino fp32", "openvino", "fp32"))
    return out, None if "BF16" in caps else "this CPU has no bf16 (no AMX, no AVX-512-BF16)"


def open_variant(v: Variant, path: Path, threads: int) -> Runtime:
    settings = RuntimeSettings(
        threads=threads, backend=v.backend, precision=v.precision, device="CPU", fallback=False
    )
    if v.backend == "onnxruntime":
        return OnnxRuntime(path, settings)
    from edgeblur.runtime.openvino import OpenVinoRuntime

    return OpenVinoRuntime(path, settings)


def read_frames(clip: Path, count: int) -> list[np.ndarray]:
    """``count`` RGB frames spread over the clip."""
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    step = max(1, len(frames) // count)
    return frames[::step][:count]


def compare(ref: Detections, other: Detections) -> tuple[int, int, int, float]:
    """(kept, lost, extra, best score of a lost box) of ``other`` against ``ref``."""
    if not len(ref) or not len(other):
        return 0, len(ref), len(other), float(ref.confidence.max()) if len(ref) else 0.0
    iou = box_iou(ref.xyxy, other.xyxy)
    kept_ref = iou.max(axis=1) >= MATCH_IOU
    kept_other = iou.max(axis=0) >= MATCH_IOU
    lost_scores = ref.confidence[~kept_ref]
    best_lost = float(lost_scores.max()) if len(lost_scores) else 0.0
    return int(kept_ref.sum()), int((~kept_ref).sum()), int((~kept_other).sum()), best_lost


def run_case(
    role: str, width: int, frames: list[np.ndarray], vs: list[Variant], repeat: int, threads: int
) -> dict:
    detect = DetectConfig()
    cfg = detect.faces if role == "face" else detect.plates
    spec = role_spec(role, cfg.model_copy(update={"input_width": width}), f"detect.{role}")
    runtimes = {v.name: open_variant(v, spec.path, threads) for v in vs}
    name = next(iter(runtimes.values())).input_names[0]
    model = build_model(spec.family, replace(spec.settings, input_width=width), name)
    # Inputs copied out: the model's letterbox buffer is reused on its next call.
    prepared = []
    for frame in frames:
        inputs, meta = model.preprocess([frame])
        prepared.append(({k: v.copy() for k, v in inputs.items()}, meta))
    found: dict[str, list[Detections]] = {}
    for v in vs:  # warm-up (compiles OpenVINO's shape) and the detections compared
        found[v.name] = [model.postprocess(runtimes[v.name].run(i), m)[0] for i, m in prepared]
    rounds: dict[str, list[float]] = {v.name: [] for v in vs}
    for r in range(repeat):
        order = vs[r % len(vs) :] + vs[: r % len(vs)]
        for v in order:
            rt = runtimes[v.name]
            times = []
            for inputs, _meta in prepared:
                t0 = time.perf_counter()
                rt.run(inputs)
                times.append(time.perf_counter() - t0)
            rounds[v.name].append(statistics.median(times) * 1000)
    ref_name = vs[0].name
    out = {"input": f"{prepared[0][0][name].shape[3]}x{prepared[0][0][name].shape[2]}"}
    ref_ms = statistics.median(rounds[ref_name])
    for v in vs:
        ms = statistics.median(rounds[v.name])
        spread = (max(rounds[v.name]) - min(rounds[v.name])) / ms * 100 if ms else 0.0
        totals = np.array(
            [compare(a, b)[:3] for a, b in zip(found[ref_name], found[v.name], strict=True)]
        ).sum(axis=0)
        best_lost = max(
            (compare(a, b)[3] for a, b in zip(found[ref_name], found[v.name], strict=True)),
            default=0.0,
        )
        out[v.name] = {
            "ms": round(ms, 2),
            "rounds_ms": [round(x, 2) for x in rounds[v.name]],
            "spread_pct": round(spread, 1),
            "speedup": round(ref_ms / ms, 2) if ms else None,
            "precision": runtimes[v.name].describe()[1],
            "boxes_ref": int(sum(len(d) for d in found[ref_name])),
            "kept": int(totals[0]),
            "lost": int(totals[1]),
            "extra": int(totals[2]),
            "best_lost_score": round(best_lost, 3),
            "threshold": spec.settings.threshold,
        }
    return out


def cmd_bench_runtimes(args: argparse.Namespace) -> int:
    """Print the comparison table (and write it as JSON with --json)."""
    clip = Path(args.clip) if Path(args.clip).is_file() else bc.make_clip(args.clip)
    frames = read_frames(clip, 20)
    vs, note = variants()
    threads = args.threads or 0
    repeat = max(args.repeat, 3)
    doc = {
        "cpu": cpu_model(),
        "clip": clip.name,
        "frames": len(frames),
        "frame_wh": [frames[0].shape[1], frames[0].shape[0]],
        "threads": threads,
        "rounds": repeat,
        "note": note,
        "cases": {},
    }
    print(f"CPU: {doc['cpu']}; {len(frames)} frames of {clip.name}; {repeat} interleaved rounds")
    if note:
        print(f"note: {note}")
    header = f"{'runtime':<18}" + "".join(f"{role + ' ' + str(w):>28}" for role, _, w in CASES)
    lines = {v.name: f"{v.name:<18}" for v in vs}
    boxes = {v.name: f"{'':<18}" for v in vs}
    for label, role, width in CASES:
        key = f"{label} {width}"
        case = run_case(role, width, frames, vs, repeat, threads)
        doc["cases"][key] = case
        for v in vs:
            c = case[v.name]
            cell = f"{c['speedup']:.2f}x {c['ms']:.1f}ms ±{c['spread_pct'] / 2:.0f}%"
            lines[v.name] += f"{cell:>28}"
            det = f"{c['kept']}/{c['boxes_ref']} -{c['lost']} +{c['extra']}"
            if c["lost"]:
                det += f" (best lost {c['best_lost_score']:.2f})"
            boxes[v.name] += f"{det:>28}"
    print(header)
    for v in vs:
        print(lines[v.name])
        print(boxes[v.name])
    print(
        "speed-up vs onnxruntime fp32 (no spinning), median ms per frame, ± half the spread of "
        f"the round medians; second line: ORT FP32 boxes kept/total, lost, extra (IoU {MATCH_IOU})"
    )
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0
