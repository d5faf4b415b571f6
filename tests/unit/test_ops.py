"""Letterbox, input sizes, box mapping and NMS shared by the model families (models/ops.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from edgeblur.models.ops import (
    Letterbox,
    LetterboxBuffers,
    box_iou,
    cxcywh_to_xyxy,
    input_size_for,
    letterbox_batch,
    nms,
    round_up,
    to_original,
)


def solid(w: int, h: int, rgb: tuple[int, int, int] = (10, 20, 30)) -> np.ndarray:
    """H×W×3 uint8 image of one colour: resizing keeps every pixel at that colour."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rgb
    return img


def boxes(rows: Sequence[Sequence[float]]) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


# --- input_size_for / round_up ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "multiple", "expected"),
    [(0, 32, 0), (1, 32, 32), (32, 32, 32), (33, 32, 64), (359.2, 32, 384), (640, 32, 640)],
)
def test_round_up_to_the_next_multiple(value: float, multiple: int, expected: int) -> None:
    assert round_up(value, multiple) == expected


@pytest.mark.parametrize(
    ("sizes_wh", "width", "expected_wh"),
    [
        # 720/1280 · 640 = 360 → next multiple of 32
        ([(1280, 720)], 640, (640, 384)),
        # 4:3 at 640 is already 480
        ([(640, 480)], 640, (640, 480)),
        # width itself is rounded up: 600 → 608; 1080/1920 · 608 = 342 → 352
        ([(1920, 1080)], 600, (608, 352)),
        # the tallest aspect in the batch wins: 1280/720 · 640 = 1137.8 → 1152
        ([(1280, 720), (720, 1280), (640, 640)], 640, (640, 1152)),
        # a strip image never gets a zero height: at least one multiple
        ([(4000, 10)], 640, (640, 32)),
        # portrait: 1.5 · 320 = 480
        ([(400, 600)], 320, (320, 480)),
        # small frames are enlarged at most max_upscale = 2: 176·2 = 352; 352·144/176 = 288
        ([(176, 144)], 1280, (352, 288)),
        # the widest image of the batch sets that cap: 300·2 = 600 → 608
        ([(176, 144), (300, 100)], 1280, (608, 512)),
    ],
)
def test_input_size_follows_tallest_aspect_in_multiples_of_32(
    sizes_wh: list[tuple[int, int]], width: int, expected_wh: tuple[int, int]
) -> None:
    wh = input_size_for(sizes_wh, width, 32)
    assert wh == expected_wh
    assert wh[0] % 32 == 0 and wh[1] % 32 == 0


# --- letterbox_batch -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_wh", "input_wh", "scale", "placed_wh"),
    [
        # wide: width-limited, 1280·0.5 = 640, 720·0.5 = 360 rows, 24 rows of padding below
        ((1280, 720), (640, 384), 0.5, (640, 360)),
        # tall into a square: height-limited, 640/960 → 320 columns, padding on the right
        ((480, 960), (640, 640), 2 / 3, (320, 640)),
        # small: scaled up 6.4×, fills the input exactly
        ((100, 50), (640, 320), 6.4, (640, 320)),
        # already the input size: copied as is
        ((640, 384), (640, 384), 1.0, (640, 384)),
    ],
)
def test_letterbox_places_image_top_left_at_the_right_scale(
    size_wh: tuple[int, int],
    input_wh: tuple[int, int],
    scale: float,
    placed_wh: tuple[int, int],
) -> None:
    rgb = (10, 20, 30)
    batch, (lb,) = letterbox_batch([solid(*size_wh, rgb)], input_wh, pad_value=-1.0, scale_by=1.0)
    in_w, in_h = input_wh
    nw, nh = placed_wh
    assert batch.shape == (1, 3, in_h, in_w)
    assert batch.dtype == np.float32
    assert lb == Letterbox(scale=pytest.approx(scale), size_wh=size_wh, input_wh=input_wh)
    for c, value in enumerate(rgb):  # channel order kept: RGB in, RGB out
        assert (batch[0, c, :nh, :nw] == value).all()
    pad = np.ones((in_h, in_w), bool)
    pad[:nh, :nw] = False
    assert (batch[0][:, pad] == -1.0).all()


@pytest.mark.parametrize(
    ("scale_by", "pad_value"),
    [(1.0, 0.0), (1 / 255, 114 / 255)],
)
def test_letterbox_scales_pixel_values_and_fills_padding(scale_by: float, pad_value: float) -> None:
    rgb = (0, 128, 255)
    batch, _ = letterbox_batch([solid(640, 320, rgb)], (640, 384), pad_value, scale_by)
    for c, value in enumerate(rgb):
        np.testing.assert_allclose(batch[0, c, :320], value * scale_by, rtol=1e-6)
    np.testing.assert_allclose(batch[0, :, 320:], pad_value, rtol=1e-6)


def test_letterbox_keeps_positions_so_one_division_maps_back() -> None:
    img = np.zeros((720, 1280, 3), np.uint8)
    img[100:300, 200:400] = 255  # a white square, at scale 0.5 → input [100, 50, 200, 150]
    batch, (lb,) = letterbox_batch([img], (640, 384), pad_value=0.0, scale_by=1.0)
    assert (batch[0, :, 55:145, 105:195] == 255).all()
    assert (batch[0, :, :45] == 0).all() and (batch[0, :, :, :95] == 0).all()
    back = to_original(boxes([[100, 50, 200, 150]]), lb)
    np.testing.assert_allclose(back, [[200, 100, 400, 300]])


def noise(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("scale_by", "pad_value"), [(1.0, 0.0), (1 / 255, 114 / 255)])
def test_reused_buffers_give_the_same_batch_as_fresh_ones_when_sizes_change(
    scale_by: float, pad_value: float
) -> None:
    """A slot that held a larger image must be padded again where the smaller one does not reach."""
    buffers = LetterboxBuffers()
    sequence = [
        ([noise(1280, 720, 1), noise(640, 640, 2)], (640, 640)),
        ([noise(480, 960, 3)], (640, 640)),  # slot 0: was 640×360, now 320×640
        ([noise(1280, 720, 4), noise(100, 50, 5), noise(200, 800, 6)], (640, 640)),
        ([noise(1280, 720, 7)], (640, 384)),  # another input size: its own buffer
        ([noise(1280, 720, 8), noise(640, 640, 9)], (640, 640)),
    ]
    for images, wh in sequence:
        fresh, lbs = letterbox_batch(images, wh, pad_value, scale_by)
        reused, lbs2 = letterbox_batch(images, wh, pad_value, scale_by, buffers=buffers)
        assert reused.shape == fresh.shape and reused.dtype == np.float32
        assert reused.flags.c_contiguous
        np.testing.assert_array_equal(reused, fresh)
        assert lbs == lbs2


def test_reused_buffers_allocate_nothing_per_frame_once_sizes_are_known() -> None:
    buffers = LetterboxBuffers()
    frames = [noise(1280, 720, seed) for seed in range(3)]
    first, _ = letterbox_batch(frames[:1], (640, 384), 0.0, 1.0, buffers=buffers)
    made = buffers.allocations
    assert made == 2  # the batch and the resized image
    for frame in frames:
        batch, _ = letterbox_batch([frame], (640, 384), 0.0, 1.0, buffers=buffers)
        assert np.shares_memory(batch, first)
    assert buffers.allocations == made


def test_letterbox_batch_gives_each_image_its_own_scale() -> None:
    images = [solid(1280, 720), solid(320, 320)]
    batch, lbs = letterbox_batch(images, (640, 640), pad_value=0.0, scale_by=1.0)
    assert batch.shape == (2, 3, 640, 640)
    assert [lb.scale for lb in lbs] == [0.5, 2.0]
    assert [lb.size_wh for lb in lbs] == [(1280, 720), (320, 320)]
    assert (batch[0, :, 360:] == 0).all()  # first image padded below
    assert (batch[1, 0] == 10).all()  # second fills the input


# --- to_original / cxcywh --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_box", "expected"),
    [
        ([10, 20, 110, 220], [20, 40, 220, 440]),  # plain division by the scale 0.5
        ([0, 300, 640, 384], [0, 600, 1280, 720]),  # into the padding: clipped to the frame
        ([-5, -8, 20, 30], [0, 0, 40, 60]),  # negative: clipped at 0
        ([700, 10, 800, 20], [1280, 20, 1280, 40]),  # wholly right of the frame: zero width
    ],
)
def test_to_original_divides_by_scale_and_clips(in_box: list[float], expected: list[float]) -> None:
    lb = Letterbox(scale=0.5, size_wh=(1280, 720), input_wh=(640, 384))
    out = to_original(boxes([in_box]), lb)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [expected], atol=1e-4)


def test_cxcywh_to_xyxy() -> None:
    np.testing.assert_allclose(cxcywh_to_xyxy(boxes([[50, 40, 20, 10]])), [[40, 35, 60, 45]])


# --- box_iou ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # sharing an edge only
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),  # half overlap
        ([0, 0, 10, 10], [2, 2, 7, 7], 25 / 100),  # contained
        ([0, 0, 10, 20], [0, 10, 10, 30], 100 / 300),  # vertical overlap
        ([5, 5, 5, 5], [5, 5, 5, 5], 0.0),  # zero-area boxes: no division by zero
    ],
)
def test_box_iou_known_pairs(a: list[float], b: list[float], iou: float) -> None:
    assert box_iou(boxes([a]), boxes([b]))[0, 0] == pytest.approx(iou, abs=1e-6)
    assert box_iou(boxes([b]), boxes([a]))[0, 0] == pytest.approx(iou, abs=1e-6)


def test_box_iou_is_a_matrix_of_every_pair() -> None:
    a = boxes([[0, 0, 10, 10], [100, 100, 110, 110]])
    b = boxes([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]])
    np.testing.assert_allclose(box_iou(a, b), [[1, 1 / 3, 0], [0, 0, 1]], atol=1e-6)


# --- nms -------------------------------------------------------------------------------------


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    # IoU([0,0,10,10], [1,0,11,10]) = 90/110
    kept = nms(boxes([[0, 0, 10, 10], [1, 0, 11, 10]]), np.array([0.5, 0.9]), 0.4)
    assert kept.tolist() == [1]


def test_nms_keeps_disjoint_boxes_best_first() -> None:
    xyxy = boxes([[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 110, 10]])
    kept = nms(xyxy, np.array([0.3, 0.9, 0.6]), 0.4)
    assert kept.tolist() == [1, 2, 0]
    assert kept.dtype == np.int64


@pytest.mark.parametrize(("iou_threshold", "kept"), [(0.5, [0, 1]), (0.3, [0])])
def test_nms_suppresses_only_above_the_threshold(iou_threshold: float, kept: list[int]) -> None:
    xyxy = boxes([[0, 0, 10, 10], [5, 0, 15, 10]])  # IoU 1/3
    assert nms(xyxy, np.array([0.9, 0.8]), iou_threshold).tolist() == kept


def test_nms_is_greedy_a_suppressed_box_suppresses_nothing() -> None:
    # A overlaps B, B overlaps C, A and C disjoint: B goes, C stays.
    xyxy = boxes([[0, 0, 10, 10], [4, 0, 14, 10], [10, 0, 20, 10]])
    assert nms(xyxy, np.array([0.9, 0.8, 0.7]), 0.3).tolist() == [0, 2]


@pytest.mark.parametrize(("classes", "kept"), [([0, 1], [0, 1]), ([1, 1], [0]), (None, [0])])
def test_nms_class_aware_never_suppresses_across_classes(
    classes: list[int] | None, kept: list[int]
) -> None:
    xyxy = boxes([[0, 0, 10, 10], [1, 1, 11, 11]])
    cls = None if classes is None else np.asarray(classes)
    assert nms(xyxy, np.array([0.9, 0.8]), 0.4, classes=cls).tolist() == kept


def test_nms_class_aware_with_negative_coordinates() -> None:
    # Offset = max + 1 = 11: the class-1 box moves to [0, 0, 10, 10], onto the class-0 box.
    xyxy = boxes([[0, 0, 10, 10], [-11, -11, -1, -1]])
    assert nms(xyxy, np.array([0.9, 0.8]), 0.4, classes=np.array([0, 1])).tolist() == [0, 1]


def test_nms_of_nothing_is_an_empty_index() -> None:
    kept = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4)
    assert kept.shape == (0,) and kept.dtype == np.int64
