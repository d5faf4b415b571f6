"""TensorRT against ONNX Runtime on the shared labelled stills: the same faces and plates found.

Real models from the cache, real media from ../shared, real TensorRT and CUDA. Runs only where
TensorRT 10, cuda-python and a CUDA GPU exist; everywhere else each test skips and says why.
No GPU was available when these were written, so they have not run yet on real hardware.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edgeblur.runtime.tensorrt import probe

REASON = probe()
pytestmark = pytest.mark.skipif(
    REASON is not None, reason=f"needs TensorRT 10, cuda-python and a CUDA GPU: {REASON}"
)

# A box the CPU run is sure of (score >= SURE) must be found by TensorRT at IoU >= MATCH_IOU.
SURE = 0.4
MATCH_IOU = {"fp32": 0.8, "fp16": 0.6}
MIN_MATCHED = {"fp32": 0.98, "fp16": 0.95}


def _images(labels: dict, media_dir: Path) -> dict[str, np.ndarray]:
    from edgeblur.io.files import read_image

    return {
        name: read_image(media_dir / name).rgb
        for name, entry in labels.items()
        if entry["type"] == "image"
    }


def _detector(runtime: dict):
    from edgeblur.build import build_detector
    from edgeblur.config import JobConfig

    cfg = JobConfig.model_validate({"runtime": runtime})
    return build_detector(cfg.detect, cfg.runtime)


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


def _trt(precision: str, engine_dir: Path):
    # fallback false: a TensorRT failure must fail the test, not compare the CPU with itself.
    return _detector(
        {
            "backend": "tensorrt",
            "fallback": False,
            "precision": precision,
            "engine_dir": str(engine_dir),
            "max_batch": 4,
        }
    )


def _matched(sure, found, iou: float) -> tuple[int, int]:
    from edgeblur.models.ops import box_iou

    want = sure.xyxy[sure.confidence >= SURE]
    if len(want) == 0:
        return 0, 0
    if len(found.xyxy) == 0:
        return 0, len(want)
    best = box_iou(want, found.xyxy).max(axis=1)
    return int((best >= iou).sum()), len(want)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_finds_what_onnxruntime_finds(
    models, labels, media_dir, engine_dir, precision: str
) -> None:
    images = _images(labels, media_dir)
    cpu = _detector({"backend": "onnxruntime"})
    gpu = _trt(precision, engine_dir)
    hit = total = 0
    for name, image in images.items():
        a, b = cpu.detect([image])[0], gpu.detect([image])[0]
        # Both ways: TensorRT finds the CPU's confident boxes and adds none of its own.
        for sure, found in ((a, b), (b, a)):
            h, t = _matched(sure, found, MATCH_IOU[precision])
            hit, total = hit + h, total + t
            assert t - h <= 1, f"{name}: {t - h} confident boxes differ ({precision})"
    assert total > 20, "too few confident boxes to compare; are the models and media there?"
    assert hit / total >= MIN_MATCHED[precision], f"{hit}/{total} boxes matched ({precision})"


def test_tensorrt_batches_match_single_images(models, labels, media_dir, engine_dir) -> None:
    """A batch larger than the engine's max_batch (4) runs in parts and gives the same boxes."""
    images = list(_images(labels, media_dir).values())[:6]
    gpu = _trt("fp32", engine_dir)
    one = [gpu.detect([im])[0] for im in images]
    # Same-size images only, so the batch letterboxes each exactly as alone.
    same = [i for i, im in enumerate(images) if im.shape == images[0].shape]
    order = same * 5  # at least 5 > max_batch
    batch = gpu.detect([images[i] for i in order])
    for k, i in enumerate(order):
        # Batch sizes may pick other kernels: compare confident boxes, not exact order.
        hit, total = _matched(one[i], batch[k], 0.9)
        assert hit == total, f"image {i} in a batch of {len(order)}: {hit}/{total} boxes kept"


def test_second_start_reads_the_engine_cache(
    models, engine_dir, caplog: pytest.LogCaptureFixture
) -> None:
    _trt("fp32", engine_dir)  # built here or by an earlier test
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _trt("fp32", engine_dir)
    assert not any("building TensorRT engine" in r.getMessage() for r in caplog.records)
    assert list(engine_dir.glob("*.engine")) and list(engine_dir.glob("*.engine.json"))


def test_raw_outputs_agree_in_fp32(models, labels, media_dir, engine_dir) -> None:
    from edgeblur.build import role_spec
    from edgeblur.config import JobConfig
    from edgeblur.models import build_model
    from edgeblur.runtime.base import RuntimeSettings
    from edgeblur.runtime.onnxruntime import OnnxRuntime
    from edgeblur.runtime.tensorrt import TensorRtRuntime

    cfg = JobConfig()
    spec = role_spec("face", cfg.detect.faces, "detect.faces")
    cpu = OnnxRuntime(spec.path)
    settings = RuntimeSettings(backend="tensorrt", precision="fp32", engine_dir=str(engine_dir))
    gpu = TensorRtRuntime(spec.path, settings, input_width=spec.settings.input_width)
    model = build_model(spec.family, spec.settings, cpu.input_names[0])
    image = _images(labels, media_dir)["city.jpg"]
    inputs, _meta = model.preprocess([image])
    for a, b in zip(cpu.run(inputs), gpu.run(inputs), strict=True):
        assert a.shape == b.shape
        # TF32 tensor cores (on by default for fp32 in TensorRT) keep about 3 digits.
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)
    gpu.close()
