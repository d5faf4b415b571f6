"""Tiled detection: the grid covers the frame with overlap, and duplicates merge back."""

from __future__ import annotations

import numpy as np
import pytest

from edgeblur.core.detect import TILE_OVERLAP, _merge_tiles, tile_windows
from edgeblur.types import Detections, Kind


@pytest.mark.parametrize(("w", "h", "tiles"), [(1280, 720, 2), (1920, 1080, 3), (801, 563, 2)])
def test_grid_covers_every_pixel_with_overlap(w, h, tiles):
    wins = tile_windows(w, h, tiles)
    assert len(wins) == tiles * tiles
    covered = np.zeros((h, w), np.int32)
    for x1, y1, x2, y2 in wins:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert x2 - x1 >= w / tiles and y2 - y1 >= h / tiles
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    # Seams are covered twice: a face on a seam is whole in one tile (overlap ≈ 15% of a tile).
    seam = w // tiles
    band = int(w / tiles * TILE_OVERLAP * 0.4)
    assert covered[h // 2 + 3, seam - band : seam + band].min() >= 2


def test_one_tile_means_no_grid():
    assert tile_windows(1280, 720, 1) == []


def _dets(boxes, kind=Kind.FACE, score=0.9):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(boxes, np.full(len(boxes), score, np.float32), np.full(len(boxes), kind))


def test_tile_detections_are_shifted_and_duplicates_merged():
    full = _dets([[100, 100, 140, 150]])
    tile = _dets([[100 - 60, 100 - 40, 140 - 60, 150 - 40], [5, 5, 25, 30]], score=0.8)
    merged = _merge_tiles([(full, 0, 0), (tile, 60, 40)], iou=0.4)
    assert len(merged) == 2  # the same face once, plus the small one only the tile saw
    assert merged.xyxy.tolist() == [[100, 100, 140, 150], [65, 45, 85, 70]]


def test_merge_keeps_a_plate_and_a_face_at_the_same_place():
    merged = _merge_tiles(
        [(_dets([[0, 0, 50, 20]]), 0, 0), (_dets([[0, 0, 50, 20]], kind=Kind.PLATE), 0, 0)], 0.4
    )
    assert sorted(merged.kind.tolist()) == [Kind.FACE, Kind.PLATE]


def test_a_confident_half_face_from_a_tile_never_replaces_the_whole_face():
    """The leak NMS caused: the tile boxed half a face at 0.9, the frame all of it at 0.5; NMS
    kept the half. The merge keeps a box that covers both."""
    whole = Detections(
        np.array([[100, 100, 160, 170]], np.float32), np.array([0.5], np.float32), [Kind.FACE]
    )
    half = Detections(
        np.array([[0, 0, 30, 70]], np.float32), np.array([0.9], np.float32), [Kind.FACE]
    )
    merged = _merge_tiles([(whole, 0, 0), (half, 100, 100)], iou=0.4)
    assert len(merged) == 1
    x1, y1, x2, y2 = merged.xyxy[0]
    assert (x1, y1, x2, y2) == (100, 100, 160, 170)
    assert merged.confidence[0] == np.float32(0.9)


def test_merge_keeps_separate_faces_and_kinds_apart():
    dets = Detections(
        np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32),
        np.array([0.9, 0.8, 0.7], np.float32),
        [Kind.FACE, Kind.FACE, Kind.PLATE],
    )
    assert len(_merge_tiles([(dets, 0, 0)], iou=0.4)) == 3
