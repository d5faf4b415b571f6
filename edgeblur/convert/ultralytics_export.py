"""Export an Ultralytics YOLO checkpoint (.pt) to a dynamic ONNX file with stable bytes.

Standalone script, run by ``edgeblur.convert`` inside the tools interpreter (torch, ultralytics,
omegaconf, onnx, onnxslim); it never imports ``edgeblur``, whose environment has none of these.

The caller runs it in a throwaway directory: Ultralytics writes the .onnx next to the .pt and
creates a settings directory, so YOLO_CONFIG_DIR should point there too. YOLO_OFFLINE=1 keeps it
from reaching a hub or "auto-updating" packages (it tries to install onnxruntime otherwise).

Two exports of the same checkpoint differ only in the ``date`` metadata entry and in
``graph.value_info`` (shape hints whose order and extent vary between runs; ONNX Runtime and
TensorRT infer shapes themselves). Both are dropped so that the result hashes the same each time.

Usage: python ultralytics_export.py SRC.pt DEST.onnx [--opset N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: it reads it then


def export(src: Path, opset: int) -> Path:
    """Run Ultralytics' exporter; returns the .onnx it wrote next to ``src``."""
    from ultralytics import YOLO  # imported late so that --help works without the tools

    model = YOLO(str(src))
    out = model.export(format="onnx", dynamic=True, simplify=True, opset=opset)
    return Path(out)


def normalise(path: Path, dest: Path) -> None:
    """Drop what changes between runs, check the output layout, and save to ``dest``."""
    import ast

    import onnx

    model = onnx.load(str(path))
    kept = [prop for prop in model.metadata_props if prop.key != "date"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    del model.graph.value_info[:]

    meta = {prop.key: prop.value for prop in model.metadata_props}
    names = ast.literal_eval(meta.get("names", "{}"))
    (output,) = model.graph.output
    dims = [dim.dim_value or dim.dim_param for dim in output.type.tensor_type.shape.dim]
    # Detect heads give [B, 4 + classes, anchors]: cx, cy, w, h, then one score per class.
    if len(dims) != 3 or dims[1] != 4 + len(names):
        raise SystemExit(f"output {output.name}: expected [batch, {4 + len(names)}, N], got {dims}")
    onnx.save(model, str(dest))
    print(f"exported {path.name} -> {dest}: output {output.name} {dims}, classes {names}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--opset", type=int, default=17, help="17 suits TensorRT 8.5 and later")
    args = parser.parse_args(argv)

    # Ultralytics writes next to its input; work on a copy so the source stays untouched.
    work = args.dest.parent / f"{args.src.stem}-export"
    work.mkdir(parents=True, exist_ok=True)
    src = work / args.src.name
    shutil.copyfile(args.src, src)
    normalise(export(src, args.opset), args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
