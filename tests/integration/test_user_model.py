"""A user's own ONNX file (a YOLOv5-face layout, traced at a fixed size) through `edgeblur blur`.

No package ships YOLOv5-face weights, so the network here is built with onnx: it ignores its
pixels and always answers two known rows, which makes the expected boxes exact. What is tested is
the user-model path: the fixed input size read from the file, letterboxing, decoding and mapping
back to the original image, and the sidecar.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]


def yolov5_face_file(path: Path, size: int = 320) -> None:
    rows = np.zeros((1, 2, 16), np.float32)
    rows[0, 0, :5] = [160, 80, 40, 60, 0.9]  # cx, cy, w, h, objectness (network pixels)
    rows[0, 0, 15] = 0.9  # class score: confidence 0.81
    rows[0, 1, :5] = [50, 50, 10, 10, 0.1]  # 0.1 x 0.9 = 0.09: under the threshold
    rows[0, 1, 15] = 0.9
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
            helper.make_node("Mul", ["m", "zero"], ["z"]),
            helper.make_node("Add", ["rows", "z"], ["output"]),
        ],
        "yolov5face_fixture",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 16])],
        initializer=[
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
            numpy_helper.from_array(rows, "rows"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_user_yolov5_face_file_runs_at_its_traced_size(media_dir, tmp_path):
    model = tmp_path / "my-yolov5-face.onnx"
    yolov5_face_file(model)
    src = media_dir / "astronaut.png"  # 512×512: letterboxed into 320×320, scale 0.625
    out = tmp_path / "out.png"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeblur",
            "blur",
            str(src),
            "-o",
            str(out),
            "--json",
            "-q",
            "--face-model",
            str(model),
            "--face-family",
            "yolov5_face",
            "--no-plates",
            "--tiles",  # the whole image only: the file's fixed answer would repeat per tile
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    regions = json.loads((tmp_path / "out.png.json").read_text())["frames"][0]["regions"]
    assert len(regions) == 1
    # (160 ± 20, 80 ± 30) in network pixels / 0.625 → original pixels
    assert regions[0]["xyxy"] == [224.0, 80.0, 288.0, 176.0]
    assert regions[0]["kind"] == "face" and abs(regions[0]["confidence"] - 0.81) < 1e-3


def test_user_file_without_family_is_a_clear_error(media_dir, tmp_path):
    model = tmp_path / "mystery.onnx"
    yolov5_face_file(model)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeblur",
            "blur",
            str(media_dir / "astronaut.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--face-model",
            str(model),
            "--no-plates",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2
    assert "detect.faces.family" in r.stderr and "Traceback" not in r.stderr
