"""Model families decode hand-built output tensors into the boxes their formulas promise.

No model file is loaded: each test writes the network's output by hand (one peak, one row) and
derives the expected box from the layout documented in the family's module docstring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeblur.models import build_model
from edgeblur.models.base import ModelSettings
from edgeblur.models.centerface import CenterFace
from edgeblur.models.ops import Letterbox
from edgeblur.models.yolov5_face import YoloV5Face
from edgeblur.models.yolov8 import YoloV8
from edgeblur.types import Kind

# Input 640×384 at scale 0.5: the original frame is 1280×768 (no clipping at 720 to worry about).
LB = Letterbox(scale=0.5, size_wh=(1280, 768), input_wh=(640, 384))


def settings(**overrides: object) -> ModelSettings:
    base: dict[str, object] = {"kind_of_class": {0: Kind.FACE}}
    base.update(overrides)
    return ModelSettings(**base)  # type: ignore[arg-type]


def solid(w: int, h: int, rgb: tuple[int, int, int] = (10, 20, 30)) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rgb
    return img


# --- CenterFace ------------------------------------------------------------------------------


def centerface_outputs(
    peaks: list[tuple[int, int, float, float, float, float, float]],
    input_wh: tuple[int, int] = LB.input_wh,
) -> list[np.ndarray]:
    """CenterFace outputs for one image; a peak is (row, col, score, box_w, box_h, off_x, off_y)."""
    h, w = input_wh[1] // 4, input_wh[0] // 4
    heat = np.zeros((1, 1, h, w), np.float32)
    scale = np.zeros((1, 2, h, w), np.float32)
    offset = np.zeros((1, 2, h, w), np.float32)
    for row, col, score, bw, bh, ox, oy in peaks:
        heat[0, 0, row, col] = score
        scale[0, :, row, col] = (math.log(bh / 4), math.log(bw / 4))  # (h, w)
        offset[0, :, row, col] = (oy, ox)  # (y, x)
    landmarks = np.zeros((1, 10, h, w), np.float32)
    return [heat, scale, offset, landmarks]


def test_centerface_decodes_one_peak_by_the_documented_formula() -> None:
    # cx = (50 + 0.25 + 0.5)·4 = 203, cy = (30 + 0.5 + 0.5)·4 = 124; 40×48 box →
    # input [183, 100, 223, 148] → ÷ 0.5 → original [366, 200, 446, 296].
    outputs = centerface_outputs([(30, 50, 0.9, 40, 48, 0.25, 0.5)])
    (dets,) = CenterFace(settings()).postprocess(outputs, [LB])
    assert len(dets) == 1
    np.testing.assert_allclose(dets.xyxy, [[366, 200, 446, 296]], atol=1e-3)
    assert dets.confidence[0] == pytest.approx(0.9)
    assert dets.kind[0] == Kind.FACE


@pytest.mark.parametrize(("score", "kept"), [(0.15, 0), (0.25, 1)])
def test_centerface_drops_peaks_below_threshold(score: float, kept: int) -> None:
    outputs = centerface_outputs([(30, 50, score, 40, 48, 0.0, 0.0)])
    (dets,) = CenterFace(settings(threshold=0.2)).postprocess(outputs, [LB])
    assert len(dets) == kept


def test_centerface_merges_neighbouring_peaks_keeps_distant_ones() -> None:
    # Two cells side by side with the same 40×48 box: centres 4 px apart, IoU 36/44 → merged;
    # a third peak far away stays.
    outputs = centerface_outputs(
        [
            (30, 50, 0.7, 40, 48, 0.0, 0.0),
            (30, 51, 0.9, 40, 48, 0.0, 0.0),
            (70, 140, 0.5, 40, 48, 0.0, 0.0),
        ]
    )
    (dets,) = CenterFace(settings()).postprocess(outputs, [LB])
    assert dets.confidence.tolist() == pytest.approx([0.9, 0.5])
    # the winner is the col-51 peak: cx = 51.5·4 = 206 → input x1 186 → original 372
    assert dets.xyxy[0, 0] == pytest.approx(372, abs=1e-3)


def test_centerface_clips_boxes_to_the_frame() -> None:
    # Peak at the top-left cell with a 40×40 box: cx = cy = 2 → input [-18, -18, 22, 22] → clipped.
    outputs = centerface_outputs([(0, 0, 0.9, 40, 40, 0.0, 0.0)])
    (dets,) = CenterFace(settings()).postprocess(outputs, [LB])
    np.testing.assert_allclose(dets.xyxy, [[0, 0, 44, 44]], atol=1e-3)


def test_centerface_kind_comes_from_class_zero_mapping() -> None:
    outputs = centerface_outputs([(30, 50, 0.9, 40, 48, 0.0, 0.0)])
    (dets,) = CenterFace(settings(kind_of_class={0: Kind.PLATE})).postprocess(outputs, [LB])
    assert dets.kind.tolist() == [Kind.PLATE]


def test_centerface_preprocess_feeds_rgb_0_255_unnormalised() -> None:
    model = CenterFace(settings(input_width=640))
    inputs, (lb,) = model.preprocess([solid(1280, 720, (10, 20, 30))])
    batch = inputs["input.1"]
    assert batch.shape == (1, 3, 384, 640)  # 360 rounded up to 384
    assert batch.dtype == np.float32
    assert [batch[0, c, 0, 0] for c in range(3)] == [10, 20, 30]  # R, G, B: no swap, no /255
    assert (batch[0, :, 360:] == 0).all()  # padding is black
    assert lb.scale == 0.5


# --- YOLOv8 ----------------------------------------------------------------------------------


def yolov8_rows(rows: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    """[4 + classes, N] for one image; a row is (cx, cy, w, h, class scores)."""
    return np.asarray([[cx, cy, w, h, *scores] for cx, cy, w, h, scores in rows], np.float32).T


def test_yolov8_maps_cxcywh_through_the_letterbox_and_classes_to_kinds() -> None:
    out = yolov8_rows(
        [
            (100, 80, 40, 20, [0.9, 0.1]),  # face → input [80, 70, 120, 90] → ÷0.5
            (300, 200, 60, 30, [0.1, 0.7]),  # plate → input [270, 185, 330, 215] → ÷0.5
        ]
    )[None]
    model = YoloV8(settings(kind_of_class={0: Kind.FACE, 1: Kind.PLATE}))
    (dets,) = model.postprocess([out], [LB])
    np.testing.assert_allclose(dets.xyxy, [[160, 140, 240, 180], [540, 370, 660, 430]], atol=1e-3)
    assert dets.kind.tolist() == [Kind.FACE, Kind.PLATE]
    assert dets.confidence.tolist() == pytest.approx([0.9, 0.7])


def test_yolov8_drops_classes_not_in_the_mapping() -> None:
    out = yolov8_rows(
        [
            (100, 80, 40, 20, [0.9, 0.1, 0.0]),  # class 0: not mapped
            (300, 200, 60, 30, [0.1, 0.7, 0.0]),  # class 1: plate
            (500, 300, 60, 30, [0.0, 0.1, 0.8]),  # class 2: beyond the mapping
        ]
    )[None]
    (dets,) = YoloV8(settings(kind_of_class={1: Kind.PLATE})).postprocess([out], [LB])
    assert dets.kind.tolist() == [Kind.PLATE]
    assert dets.confidence.tolist() == pytest.approx([0.7])


@pytest.mark.parametrize(("threshold", "kept"), [(0.5, [0.9]), (0.2, [0.9, 0.3]), (0.95, [])])
def test_yolov8_threshold(threshold: float, kept: list[float]) -> None:
    out = yolov8_rows([(100, 80, 40, 20, [0.9]), (400, 300, 40, 20, [0.3])])[None]
    (dets,) = YoloV8(settings(threshold=threshold)).postprocess([out], [LB])
    assert dets.confidence.tolist() == pytest.approx(kept)


def test_yolov8_nms_within_a_class_not_across() -> None:
    out = yolov8_rows(
        [
            (100, 100, 40, 40, [0.6, 0.0]),  # face
            (102, 100, 40, 40, [0.8, 0.0]),  # same face, better: wins (IoU 38/42)
            (101, 100, 40, 40, [0.0, 0.7]),  # a plate on the same spot: other class, kept
        ]
    )[None]
    model = YoloV8(settings(kind_of_class={0: Kind.FACE, 1: Kind.PLATE}))
    (dets,) = model.postprocess([out], [LB])
    assert dets.confidence.tolist() == pytest.approx([0.8, 0.7])
    assert dets.kind.tolist() == [Kind.FACE, Kind.PLATE]


def test_yolov8_batch_of_two_with_different_letterbox_scales() -> None:
    row = (100, 80, 40, 20, [0.9])  # input [80, 70, 120, 90]
    out = np.stack([yolov8_rows([row]), yolov8_rows([row])])  # the same row in both images
    lbs = [LB, Letterbox(scale=2.0, size_wh=(320, 192), input_wh=(640, 384))]
    first, second = YoloV8(settings()).postprocess([out], lbs)
    np.testing.assert_allclose(first.xyxy, [[160, 140, 240, 180]], atol=1e-3)
    np.testing.assert_allclose(second.xyxy, [[40, 35, 60, 45]], atol=1e-3)


def test_yolov8_nothing_above_threshold_is_empty() -> None:
    out = yolov8_rows([(100, 80, 40, 20, [0.01])])[None]
    (dets,) = YoloV8(settings()).postprocess([out], [LB])
    assert len(dets) == 0 and dets.xyxy.shape == (0, 4)


def test_yolov8_rejects_a_wrong_output_layout() -> None:
    with pytest.raises(ValueError, match=r"4 \+ classes"):
        YoloV8(settings()).postprocess([np.zeros((1, 4, 10), np.float32)], [LB])


def test_yolov8_preprocess_divides_by_255_and_pads_114() -> None:
    inputs, (lb,) = YoloV8(settings()).preprocess([solid(1280, 720, (0, 51, 255))])
    batch = inputs["images"]
    assert batch.shape == (1, 3, 384, 640)
    np.testing.assert_allclose(batch[0, :, 0, 0], [0.0, 0.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(batch[0, :, 360:], 114 / 255, rtol=1e-6)
    assert lb.scale == 0.5


# --- YOLOv5-face -----------------------------------------------------------------------------


def yolov5_rows(rows: list[tuple[float, float, float, float, float, float]]) -> np.ndarray:
    """[N, 16] for one image; a row is (cx, cy, w, h, objectness, class score)."""
    out = np.zeros((len(rows), 16), np.float32)
    for i, (cx, cy, w, h, obj, cls) in enumerate(rows):
        out[i, :5] = (cx, cy, w, h, obj)
        out[i, 5:15] = 7.0  # landmarks: ignored
        out[i, 15] = cls
    return out


def test_yolov5_face_needs_fixed_input_size() -> None:
    with pytest.raises(ValueError, match="fixed_input_wh"):
        YoloV5Face(settings())


def test_yolov5_face_score_is_objectness_times_class() -> None:
    out = yolov5_rows(
        [
            (100, 80, 40, 20, 0.5, 0.6),  # 0.30: kept
            (300, 200, 40, 20, 0.9, 0.2),  # 0.18: dropped though objectness is high
            (500, 300, 40, 20, 0.3, 0.9),  # 0.27: kept
        ]
    )[None]
    model = YoloV5Face(settings(threshold=0.2, fixed_input_wh=(640, 384)))
    (dets,) = model.postprocess([out], [LB])
    assert dets.confidence.tolist() == pytest.approx([0.30, 0.27])
    np.testing.assert_allclose(dets.xyxy[0], [160, 140, 240, 180], atol=1e-3)
    assert dets.kind.tolist() == [Kind.FACE, Kind.FACE]


def test_yolov5_face_nms_merges_overlaps() -> None:
    out = yolov5_rows([(100, 100, 40, 40, 0.9, 0.5), (102, 100, 40, 40, 0.9, 0.9)])[None]
    model = YoloV5Face(settings(fixed_input_wh=(640, 384)))
    (dets,) = model.postprocess([out], [LB])
    assert dets.confidence.tolist() == pytest.approx([0.81])


def test_yolov5_face_rejects_a_wrong_output_layout() -> None:
    model = YoloV5Face(settings(fixed_input_wh=(640, 384)))
    with pytest.raises(ValueError, match=r"\[B, N, 16\]"):
        model.postprocess([np.zeros((1, 10, 15), np.float32)], [LB])


def test_yolov5_face_preprocess_uses_the_fixed_size() -> None:
    model = YoloV5Face(settings(fixed_input_wh=(640, 640)))
    inputs, (lb,) = model.preprocess([solid(1280, 720, (255, 0, 51))])
    batch = inputs["input"]
    assert batch.shape == (1, 3, 640, 640)  # not 384: the traced size
    np.testing.assert_allclose(batch[0, :, 0, 0], [1.0, 0.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(batch[0, :, 360:], 114 / 255, rtol=1e-6)
    assert lb.scale == 0.5


# --- shared ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["centerface", "yolov8"])
@pytest.mark.parametrize("input_width", [640, 600, 320])
@pytest.mark.parametrize("sizes_wh", [[(1280, 720)], [(333, 777)], [(1000, 1000), (640, 480)]])
def test_preprocess_shapes_are_multiples_of_32(
    family: str, input_width: int, sizes_wh: list[tuple[int, int]]
) -> None:
    model = build_model(family, settings(input_width=input_width))
    inputs, lbs = model.preprocess([solid(w, h) for w, h in sizes_wh])
    batch = inputs[model.input_name]
    n, c, h, w = batch.shape
    assert (n, c) == (len(sizes_wh), 3)
    assert h % 32 == 0 and w % 32 == 0
    assert [lb.size_wh for lb in lbs] == sizes_wh


def test_preprocess_does_not_blow_up_small_frames_past_max_upscale() -> None:
    # 176×144 at input_width 1280, max_upscale 2: width 352 (11·32), height 352·144/176 = 288.
    model = CenterFace(settings(input_width=1280, max_upscale=2.0))
    inputs, (lb,) = model.preprocess([solid(176, 144)])
    assert inputs["input.1"].shape == (1, 3, 288, 352)
    assert lb.scale == 2.0


def test_build_model_rejects_unknown_family() -> None:
    with pytest.raises(ValueError, match="family must be one of"):
        build_model("yolov11", settings())
