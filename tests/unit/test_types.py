"""Values at stage boundaries check their shapes and keep their dtypes (types.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from edgeblur.types import Detections, Frame, Kind, Reason, Regions


def make_detections(
    xyxy: Sequence[Sequence[float]] = ((10, 20, 50, 80), (100, 100, 140, 150), (5, 5, 9, 9)),
    confidence: Sequence[float] = (0.9, 0.3, 0.6),
    kind: Sequence[Kind] = (Kind.FACE, Kind.PLATE, Kind.FACE),
) -> Detections:
    return Detections(np.asarray(xyxy, np.float64).reshape(-1, 4), list(confidence), list(kind))


def rows(dets: Detections) -> list[tuple[list[float], float, int]]:
    """Each box as plain Python values, for readable comparisons."""
    return [
        (b.tolist(), round(float(c), 6), int(k))
        for b, c, k in zip(dets.xyxy, dets.confidence, dets.kind, strict=True)
    ]


# --- Detections ------------------------------------------------------------------------------


def test_detections_coerce_dtypes() -> None:
    dets = make_detections()
    assert dets.xyxy.dtype == np.float32 and dets.xyxy.shape == (3, 4)
    assert dets.confidence.dtype == np.float32 and dets.confidence.shape == (3,)
    assert dets.kind.dtype == np.uint8 and dets.kind.tolist() == [0, 1, 0]
    assert len(dets) == 3


@pytest.mark.parametrize(
    ("confidence", "kind", "field"),
    [
        ([0.9, 0.3], [0, 1, 0], "confidence"),  # one short
        ([0.9, 0.3, 0.6, 0.1], [0, 1, 0], "confidence"),  # one too many
        ([[0.9, 0.3, 0.6]], [0, 1, 0], "confidence"),  # 2-D
        ([0.9, 0.3, 0.6], [0, 1], "kind"),
        ([0.9, 0.3, 0.6], 0, "kind"),  # a scalar
    ],
)
def test_detections_shape_mismatch_names_the_field(
    confidence: object, kind: object, field: str
) -> None:
    xyxy = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=field):
        Detections(xyxy, confidence, kind)  # type: ignore[arg-type]


def test_detections_reject_xyxy_that_is_not_groups_of_four() -> None:
    with pytest.raises(ValueError):
        Detections(np.zeros((2, 3), np.float32), [0.1, 0.2], [0, 0])


def test_detections_reject_xyxy_with_more_than_four_columns() -> None:
    with pytest.raises(ValueError, match="xyxy"):
        Detections(np.zeros((2, 8), np.float32), [0.1] * 4, [0] * 4)


def test_empty_detections() -> None:
    dets = Detections.empty()
    assert len(dets) == 0
    assert dets.xyxy.shape == (0, 4) and dets.xyxy.dtype == np.float32
    assert dets.confidence.shape == (0,) and dets.kind.shape == (0,)


def test_concat_keeps_order_and_skips_empty_parts() -> None:
    a = make_detections([[0, 0, 1, 1]], [0.5], [Kind.FACE])
    b = make_detections([[2, 2, 3, 3], [4, 4, 5, 5]], [0.6, 0.7], [Kind.PLATE, Kind.FACE])
    both = Detections.concat([a, Detections.empty(), b])
    assert rows(both) == [
        ([0, 0, 1, 1], 0.5, Kind.FACE),
        ([2, 2, 3, 3], 0.6, Kind.PLATE),
        ([4, 4, 5, 5], 0.7, Kind.FACE),
    ]


@pytest.mark.parametrize("parts", [[], [Detections.empty(), Detections.empty()]])
def test_concat_of_nothing_is_empty(parts: list[Detections]) -> None:
    out = Detections.concat(parts)
    assert len(out) == 0 and out.xyxy.shape == (0, 4)


def test_boolean_mask_selects_rows() -> None:
    dets = make_detections()
    sure = dets[dets.confidence > 0.5]
    assert rows(sure) == [([10, 20, 50, 80], 0.9, Kind.FACE), ([5, 5, 9, 9], 0.6, Kind.FACE)]
    assert len(dets[dets.kind == Kind.PLATE]) == 1
    assert len(dets[dets.confidence > 1.0]) == 0


@pytest.mark.parametrize(
    ("index", "expected_conf"),
    [(1, [0.3]), (-1, [0.6]), (slice(0, 2), [0.9, 0.3]), ([2, 0], [0.6, 0.9])],
)
def test_index_int_slice_list_return_detections(index: object, expected_conf: list[float]) -> None:
    out = make_detections()[index]  # type: ignore[index]
    assert isinstance(out, Detections)
    assert out.xyxy.shape == (len(expected_conf), 4)
    assert out.confidence.tolist() == pytest.approx(expected_conf)


def test_index_with_a_numpy_integer() -> None:
    dets = make_detections()
    best = dets[np.argmax(dets.confidence)]
    assert len(best) == 1 and best.confidence[0] == pytest.approx(0.9)


def test_indexing_does_not_share_state_with_the_source() -> None:
    dets = make_detections()
    part = dets[[0]]
    part.xyxy[0, 0] = -1
    assert dets.xyxy[0, 0] == 10


# --- Regions ---------------------------------------------------------------------------------


def test_regions_from_detections() -> None:
    dets = make_detections()
    regions = Regions.from_detections(dets, checked_index=41)
    assert len(regions) == 3
    np.testing.assert_array_equal(regions.xyxy, dets.xyxy)
    np.testing.assert_array_equal(regions.kind, [Kind.FACE, Kind.PLATE, Kind.FACE])
    np.testing.assert_array_equal(regions.confidence, dets.confidence)
    assert (regions.reason == Reason.DETECTED).all() and regions.reason.dtype == np.uint8
    assert (regions.track_id == -1).all() and regions.track_id.dtype == np.int32
    assert regions.checked_index == 41


def test_regions_from_no_detections() -> None:
    regions = Regions.from_detections(Detections.empty(), checked_index=0)
    assert len(regions) == 0
    assert regions.xyxy.shape == (0, 4) and regions.track_id.shape == (0,)


@pytest.mark.parametrize("field", ["kind", "reason", "track_id", "confidence"])
def test_regions_shape_mismatch_names_the_field(field: str) -> None:
    values: dict[str, object] = {
        "kind": [0, 0],
        "reason": [0, 0],
        "track_id": [1, 2],
        "confidence": [0.5, 0.5],
    }
    values[field] = [0]
    with pytest.raises(ValueError, match=field):
        Regions(np.zeros((2, 4)), checked_index=0, **values)  # type: ignore[arg-type]


# --- Frame -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 6, 3), np.float32),  # float
        np.zeros((4, 6, 3), np.uint16),  # 16-bit
        np.zeros((4, 6), np.uint8),  # grey
        np.zeros((4, 6, 1), np.uint8),  # one channel
        np.zeros((4, 6, 4), np.uint8),  # RGBA
        np.zeros((2, 4, 6, 3), np.uint8),  # a batch
    ],
)
def test_frame_rejects_anything_but_hxwx3_uint8(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"Frame\.image"):
        Frame("gate", 0, image)


def test_frame_accepts_rgb_and_reports_size_wh() -> None:
    frame = Frame("gate", 3, np.zeros((4, 6, 3), np.uint8))
    assert frame.size_wh == (6, 4)


def test_frame_is_frozen() -> None:
    frame = Frame("gate", 3, np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.index = 4  # type: ignore[misc]
