"""OpenVINO against ONNX Runtime on the shared labelled stills, and runtime selection.

Real OpenVINO (the `openvino` extra, installed by scripts/setup.sh on x86-64), real models from
the cache, real media from ../shared. "Not importable" is simulated by hiding the module, in the
tests whose names say so.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeblur.build import build_detector, role_spec
from edgeblur.config import JobConfig
from edgeblur.models import build_model
from edgeblur.models.ops import box_iou
from edgeblur.runtime import select
from edgeblur.runtime.base import RuntimeSettings
from edgeblur.runtime.onnxruntime import OnnxRuntime
from edgeblur.types import Kind

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed (non-x86-64?)")

from edgeblur.runtime.openvino import (  # noqa: E402  (after the skip: needs openvino)
    CACHE_SIZE,
    OpenVinoRuntime,
    choose_device,
    choose_precision,
)

HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
FACE_STILLS = ["zidane.jpg", "obama2.jpg", "bus.jpg", "biden.jpg"]
PLATE_STILLS = ["alpr_test.jpg", "fast_alpr_test.png", "bus.jpg"]


def _rgb(media_dir: Path, name: str) -> np.ndarray:
    from edgeblur.io.files import read_image

    return read_image(media_dir / name).rgb


def _detect(role: str, settings: RuntimeSettings, images: list[np.ndarray], width: int = 640):
    cfg = JobConfig().detect
    det_cfg = cfg.faces if role == "face" else cfg.plates
    spec = role_spec(role, det_cfg.model_copy(update={"input_width": width}), f"detect.{role}")
    runtime = select.open_runtime(spec.path, settings, input_width=width)
    model = build_model(
        spec.family, replace(spec.settings, input_width=width), runtime.input_names[0]
    )
    out = []
    for img in images:
        inputs, meta = model.preprocess([img])
        out.append(model.postprocess(runtime.run(inputs), meta)[0])
    return out, runtime


@pytest.mark.parametrize(
    ("role", "stills", "width"),
    [("face", FACE_STILLS, 640), ("plate", PLATE_STILLS, 640), ("plate", PLATE_STILLS, 1280)],
)
def test_openvino_fp32_finds_the_same_boxes_as_onnxruntime(
    models, media_dir: Path, role: str, stills: list[str], width: int
) -> None:
    images = [_rgb(media_dir, n) for n in stills]
    ref, _ = _detect(role, RuntimeSettings(backend="onnxruntime"), images, width)
    got, runtime = _detect(
        role, RuntimeSettings(backend="openvino", precision="fp32", fallback=False), images, width
    )
    assert isinstance(runtime, OpenVinoRuntime)
    assert runtime.describe() == ("openvino-cpu", "fp32")
    assert sum(len(d) for d in ref) > 0, "the reference found nothing: the test would be empty"
    for name, a, b in zip(stills, ref, got, strict=True):
        assert len(a) == len(b), name
        if not len(a):
            continue
        iou = box_iou(a.xyxy, b.xyxy)
        assert (iou.max(axis=1) > 0.95).all(), name
        pair = iou.argmax(axis=1)
        np.testing.assert_allclose(b.confidence[pair], a.confidence, atol=0.01, err_msg=name)


def _found(label: list[float], boxes: np.ndarray) -> bool:
    """A detection overlaps the labelled box at IoU >= 0.5 (the mask's padding does the rest)."""
    return bool(len(boxes)) and bool(box_iou(np.array([label], np.float32), boxes).max() >= 0.5)


@pytest.mark.skipif(
    not HAS_BF16, reason="this CPU has no bf16 (neither AMX nor AVX-512-BF16): bf16 cannot run"
)
def test_openvino_bf16_finds_every_labelled_face_and_plate_on_the_stills(
    models, media_dir: Path, labels: dict
) -> None:
    cfg = JobConfig.model_validate({"runtime": {"backend": "openvino", "precision": "bf16"}})
    detector = build_detector(cfg.detect, cfg.runtime)
    assert {rt.describe() for _, _, rt in detector._pairs} == {("openvino-cpu", "bf16")}
    # Stills where ONNX Runtime FP32 finds every label (bus.jpg and obama2.jpg hold one
    # label FP32 misses too; city.jpg: see the eval table in the closing note of issue 12).
    names = ["zidane.jpg", "astronaut.png", "biden.jpg", "alpr_test.jpg", "fast_alpr_test.png"]
    for name in names:
        found = detector.detect([_rgb(media_dir, name)])[0]
        for key, kind in (("faces", Kind.FACE), ("plates", Kind.PLATE)):
            boxes = found.xyxy[found.kind == kind]
            for label in labels[name][key]:
                assert _found(label, boxes), f"{name}: {key[:-1]} {label} not found"


def test_openvino_compiles_each_shape_once_and_keeps_a_bounded_cache(models, media_dir) -> None:
    spec = role_spec("face", JobConfig().detect.faces, "detect.faces")
    runtime = OpenVinoRuntime(spec.path, RuntimeSettings(precision="fp32", threads=1))
    for _ in range(2):
        for h in (64, 96):
            out = runtime.run({"input.1": np.zeros((3, 3, h, 64), np.float32)})
            assert out[0].shape == (3, 1, h // 4, 16)  # a batch of 3 split, joined back
    assert runtime.compiles == 2
    for k in range(CACHE_SIZE + 2):
        runtime.run({"input.1": np.zeros((1, 3, 32 * (k + 1), 32), np.float32)})
    assert len(runtime._compiled) == CACHE_SIZE


@pytest.mark.parametrize(
    ("device", "caps", "wanted", "expected"),
    [
        ("CPU", ["FP32", "BF16", "INT8"], "auto", "bf16"),
        ("CPU", ["FP32", "INT8"], "auto", "fp32"),
        ("CPU", ["FP32", "BF16"], "fp32", "fp32"),
        ("GPU", ["FP32", "FP16"], "auto", "fp16"),
        ("GPU", ["FP32", "FP16"], "fp32", "fp32"),
    ],
)
def test_precision_follows_what_the_device_offers(device, caps, wanted, expected) -> None:
    assert choose_precision(device, caps, wanted) == expected


def test_bf16_on_a_cpu_without_it_names_the_setting() -> None:
    from edgeblur.errors import ConfigError

    with pytest.raises(ConfigError, match=r"runtime\.precision"):
        choose_precision("CPU", ["FP32", "INT8"], "bf16")


def test_an_intel_gpu_is_chosen_when_openvino_lists_one() -> None:
    assert choose_device(["CPU", "GPU.0", "GPU.1"], "auto") == "GPU"
    assert choose_device(["CPU"], "auto") == "CPU"
    assert choose_device(["CPU", "GPU"], "CPU") == "CPU"


# --- selection ---------------------------------------------------------------------------------


def _face_path() -> Path:
    return role_spec("face", JobConfig().detect.faces, "detect.faces").path


def test_auto_picks_openvino_when_importable_and_logs_it_once(
    models, caplog: pytest.LogCaptureFixture
) -> None:
    select._logged.clear()
    caplog.set_level(logging.INFO)
    settings = RuntimeSettings(backend="auto")
    first = select.open_runtime(_face_path(), settings)
    second = select.open_runtime(_face_path(), settings)
    assert isinstance(first, OpenVinoRuntime) and isinstance(second, OpenVinoRuntime)
    expected = "bf16" if HAS_BF16 else "fp32"
    chosen = [r.getMessage() for r in caplog.records if "inference runs on" in r.getMessage()]
    assert chosen == [f"inference runs on openvino-cpu at {expected}"]


def test_auto_with_openvino_not_importable_falls_back_to_onnxruntime_logged_once(
    models, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    select._logged.clear()
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    caplog.set_level(logging.INFO)
    for _ in range(2):
        runtime = select.open_runtime(_face_path(), RuntimeSettings(backend="auto"))
        assert isinstance(runtime, OnnxRuntime)
    steps = [r for r in caplog.records if "openvino package cannot be imported" in r.getMessage()]
    assert len(steps) == 1 and steps[0].levelno == logging.INFO
    assert steps[0].getMessage().endswith("falling back to ONNX Runtime CPU")
    chosen = [r.getMessage() for r in caplog.records if "inference runs on" in r.getMessage()]
    assert chosen == ["inference runs on onnxruntime-cpu at fp32"]


def test_backend_openvino_not_importable_warns_or_fails_when_fallback_is_off(
    models, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from edgeblur.errors import ConfigError

    select._logged.clear()
    monkeypatch.setitem(sys.modules, "openvino", None)
    runtime = select.open_runtime(_face_path(), RuntimeSettings(backend="openvino"))
    assert isinstance(runtime, OnnxRuntime)
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    with pytest.raises(ConfigError, match=r"runtime\.fallback"):
        select.open_runtime(_face_path(), RuntimeSettings(backend="openvino", fallback=False))


def test_the_defaults_reach_the_runtime_settings() -> None:
    from edgeblur.build import runtime_settings

    s = runtime_settings(JobConfig().runtime)
    assert (s.backend, s.precision, s.device) == ("auto", "auto", "auto")
    s = runtime_settings(
        JobConfig.model_validate(
            {"runtime": {"backend": "openvino", "precision": "bf16", "device": "CPU"}}
        ).runtime
    )
    assert (s.backend, s.precision, s.device) == ("openvino", "bf16", "CPU")
