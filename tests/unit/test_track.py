"""Tracker behaviour stated in frames: hide at once, coast for coast_frames, then drop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from edgeblur.core.track import Backfill, Tracker, TrackSettings, backfill
from edgeblur.types import Detections, Kind, Reason, Regions

COAST = TrackSettings().coast_frames  # 12


def make_detections(
    xyxy: Sequence[Sequence[float]] = ((100, 100, 140, 150),),
    kind: Kind | Sequence[Kind] = Kind.FACE,
    confidence: float | Sequence[float] = 0.9,
) -> Detections:
    n = len(xyxy)
    kinds = [kind] * n if isinstance(kind, Kind) else list(kind)
    conf = [confidence] * n if isinstance(confidence, float) else list(confidence)
    return Detections(np.asarray(xyxy, np.float32).reshape(-1, 4), conf, kinds)


def face_at(x: float, y: float = 100.0, w: float = 40.0, h: float = 50.0) -> list[float]:
    return [x, y, x + w, y + h]


def centre(xyxy: np.ndarray) -> np.ndarray:
    return (xyxy[:2] + xyxy[2:]) / 2


def test_new_face_is_hidden_on_its_first_frame() -> None:
    regions = Tracker().update(make_detections([face_at(10)], confidence=0.31), frame_index=0)
    assert len(regions) == 1
    np.testing.assert_array_equal(regions.xyxy[0], face_at(10))
    assert regions.reason[0] == Reason.DETECTED
    assert regions.kind[0] == Kind.FACE
    assert regions.confidence[0] == pytest.approx(0.31)
    assert regions.track_id[0] >= 0


def test_every_detection_is_output_even_overlapping_or_over_max_tracks() -> None:
    boxes = [face_at(10), face_at(12), face_at(300), face_at(600)]
    tracker = Tracker(TrackSettings(max_tracks=2))
    regions = tracker.update(make_detections(boxes), frame_index=0)
    np.testing.assert_array_equal(regions.xyxy, np.asarray(boxes, np.float32))
    assert (regions.reason == Reason.DETECTED).all()
    assert tracker.active_tracks == 2
    assert (regions.track_id >= 0).sum() == 2  # ids only for boxes that got a track


def run_moving_face(stride: int, k: int, speed: float = 3.0) -> tuple[Regions, np.ndarray, int]:
    """A face moving +speed px/frame in x is detected on frames 0, s, 2s, 3s (None between);
    then the detector keeps running every s frames and sees nothing. Returns the regions of
    frame 3s + k, the last detected box and its track id."""
    tracker = Tracker()
    last = 3 * stride
    regions = None
    track_id = -1
    for f in range(last + k + 1):
        if f % stride:
            regions = tracker.update(None, f, period=stride)
        elif f <= last:
            regions = tracker.update(make_detections([face_at(10 + speed * f)]), f, period=stride)
            track_id = int(regions.track_id[0])
        else:
            regions = tracker.update(Detections.empty(), f, period=stride)
    return regions, np.asarray(face_at(10 + speed * last), np.float32), track_id


@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize(
    ("k", "hidden"),
    [(1, True), (2, True), (5, True), (COAST - 1, True), (COAST, True), (COAST + 1, False)],
)
def test_missed_face_coasts_for_coast_frames_then_goes(stride: int, k: int, hidden: bool) -> None:
    speed = 3.0
    regions, last_box, track_id = run_moving_face(stride, k, speed)
    if not hidden:
        assert len(regions) == 0
        return
    assert len(regions) == 1
    assert regions.reason[0] == Reason.TRACKED
    assert regions.track_id[0] == track_id
    assert regions.confidence[0] == pytest.approx(0.9)
    box = regions.xyxy[0]
    np.testing.assert_allclose(centre(box), centre(last_box) + np.array([speed * k, 0]), atol=1e-3)
    grow = 1 + min(0.05 * k, 0.5)
    w, h = last_box[2:] - last_box[:2]
    np.testing.assert_allclose(box[2:] - box[:2], [w * grow, h * grow], atol=1e-3)


@pytest.mark.parametrize(
    ("grow_per_frame", "max_grow", "k", "expected_scale"),
    [(0.1, 0.5, 3, 1.3), (0.1, 0.5, 8, 1.5), (0.0, 0.5, 5, 1.0), (0.2, 0.1, 1, 1.1)],
)
def test_coasting_box_growth_is_capped(
    grow_per_frame: float, max_grow: float, k: int, expected_scale: float
) -> None:
    tracker = Tracker(TrackSettings(grow_per_frame=grow_per_frame, max_grow=max_grow))
    tracker.update(make_detections([face_at(100)]), 0)
    regions = tracker.update(None, k)
    np.testing.assert_allclose(
        regions.xyxy[0, 2:] - regions.xyxy[0, :2],
        [40 * expected_scale, 50 * expected_scale],
        rtol=1e-5,
    )


@pytest.mark.parametrize(("coast_frames", "period"), [(2, 5), (0, 3), (4, 8)])
def test_track_survives_until_the_next_detector_run_when_stride_exceeds_coast(
    coast_frames: int, period: int
) -> None:
    tracker = Tracker(TrackSettings(coast_frames=coast_frames))
    tracker.update(make_detections([face_at(100)]), 0, period=period)
    for f in range(1, period):
        assert len(tracker.update(None, f, period=period)) == 1, f"frame {f} not hidden"
    # the detector runs again and misses: coasting continues only within max(coast, period - 1)
    assert len(tracker.update(Detections.empty(), period, period=period)) == 0


def test_second_update_of_the_same_frame_keeps_the_first_one_hidden() -> None:
    tracker = Tracker()
    faces = tracker.update(make_detections([face_at(10)]), 5)
    plates = tracker.update(make_detections([face_at(300)], kind=Kind.PLATE), 5)
    assert plates.kind.tolist() == [Kind.PLATE, Kind.FACE]
    assert plates.reason.tolist() == [Reason.DETECTED, Reason.TRACKED]
    np.testing.assert_array_equal(plates.xyxy[1], faces.xyxy[0])


def test_same_place_face_and_plate_are_separate_tracks() -> None:
    box = face_at(100)
    tracker = Tracker()
    both = tracker.update(make_detections([box, box], kind=[Kind.FACE, Kind.PLATE]), 0)
    face_id, plate_id = both.track_id.tolist()
    assert face_id != plate_id and tracker.active_tracks == 2
    # only the plate is detected next: the face track must not take it, and keeps coasting
    regions = tracker.update(make_detections([box], kind=Kind.PLATE), 1)
    assert regions.track_id.tolist() == [plate_id, face_id]
    assert regions.kind.tolist() == [Kind.PLATE, Kind.FACE]
    assert regions.reason.tolist() == [Reason.DETECTED, Reason.TRACKED]


@pytest.mark.parametrize("dy", [0.0, 10.0])
def test_two_faces_crossing_keep_their_ids(dy: float) -> None:
    tracker = Tracker()
    ids_left_to_right: set[int] = set()
    ids_right_to_left: set[int] = set()
    for f in range(30):
        a = face_at(100 + 10 * f, y=100)  # moving right
        b = face_at(390 - 10 * f, y=100 + dy)  # moving left, crossing around f = 14
        regions = tracker.update(make_detections([a, b]), f)
        assert len(regions) == 2 and (regions.reason == Reason.DETECTED).all()
        ids_left_to_right.add(int(regions.track_id[0]))
        ids_right_to_left.add(int(regions.track_id[1]))
    assert len(ids_left_to_right) == 1 and len(ids_right_to_left) == 1
    assert ids_left_to_right != ids_right_to_left
    assert tracker.active_tracks == 2


def test_small_fast_face_matches_by_centre_distance() -> None:
    tracker = Tracker()
    first = tracker.update(make_detections([face_at(100, w=10, h=10)]), 0)
    # moved 15 px: no overlap with the 10-px box, but within 1 box size per frame, 2 frames
    second = tracker.update(make_detections([face_at(115, w=10, h=10)]), 2, period=2)
    assert second.track_id.tolist() == first.track_id.tolist()
    assert tracker.active_tracks == 1
    far = tracker.update(make_detections([face_at(400, w=10, h=10)]), 4, period=2)
    assert far.track_id[0] != first.track_id[0]  # too far: a new track, the old one coasts
    assert tracker.active_tracks == 2


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        ([(None, 0)], -1),
        ([("face", 3)], 3),
        ([("face", 3), (None, 4), (None, 5)], 3),
        ([("face", 3), (None, 4), ("empty", 8)], 8),
        ([("empty", 2), (None, 3)], 2),
    ],
)
def test_checked_index_is_the_last_frame_a_detector_saw(
    updates: list[tuple[str | None, int]], expected: int
) -> None:
    tracker = Tracker()
    made = {None: None, "face": make_detections(), "empty": Detections.empty()}
    for what, f in updates:
        regions = tracker.update(made[what], f)
    assert regions.checked_index == expected


def test_reset_forgets_tracks_and_checked_index() -> None:
    tracker = Tracker()
    tracker.update(make_detections([face_at(10), face_at(300)]), 5)
    assert tracker.active_tracks == 2
    tracker.reset()
    assert tracker.active_tracks == 0
    regions = tracker.update(None, 0)  # frame indices may restart after a reset
    assert len(regions) == 0 and regions.checked_index == -1


def test_max_tracks_drops_the_stalest_coasting_track() -> None:
    tracker = Tracker(TrackSettings(max_tracks=2))
    ids = [
        int(tracker.update(make_detections([face_at(x)]), f).track_id[0])
        for f, x in enumerate([0, 300, 600])
    ]
    assert sorted(tracker.update(None, 3).track_id.tolist()) == ids[1:]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.update(None, 5, period=0), "period"),
        (lambda t: (t.update(None, 5), t.update(None, 4)), "frame_index"),
    ],
)
def test_update_rejects_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(Tracker())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, None),
        ({"coast_frames": 0, "max_grow": 0.0, "grow_per_frame": 1.0}, None),
        ({"coast_frames": -1}, r"coast_frames must be an int in \[0, inf\)"),
        ({"coast_frames": 2.5}, "coast_frames"),
        ({"iou_threshold": 0.0}, r"iou_threshold must be a number in \(0.0, 1.0\]"),
        ({"iou_threshold": 1.5}, "iou_threshold"),
        ({"iou_threshold": float("nan")}, "iou_threshold"),
        ({"center_gate": -0.1}, "center_gate"),
        ({"grow_per_frame": 1.5}, "grow_per_frame"),
        ({"max_grow": -1.0}, "max_grow"),
        ({"max_tracks": 0}, "max_tracks"),
        ({"max_tracks": True}, "max_tracks"),
        ({"velocity_smoothing": 0.0}, "velocity_smoothing"),
    ],
)
def test_config_validation_names_the_argument(kwargs: dict, error: str | None) -> None:
    if error is None:
        TrackSettings(**kwargs)
    else:
        with pytest.raises(ValueError, match=error):
            TrackSettings(**kwargs)


def track_file(first_seen: int, n_frames: int) -> list[Regions]:
    tracker = Tracker()
    detected = make_detections([face_at(200)], confidence=0.7)
    return [
        tracker.update(detected if f >= first_seen else Detections.empty(), f)
        for f in range(n_frames)
    ]


@pytest.mark.parametrize(
    ("first_seen", "frames", "hidden_from"),
    [(10, 6, 4), (2, 6, 0), (10, 0, 10), (10, 1, 9)],
)
def test_backfill_hides_a_track_before_its_first_detection(
    first_seen: int, frames: int, hidden_from: int
) -> None:
    per_frame = track_file(first_seen, n_frames=first_seen + 3)
    before = [r.xyxy.copy() for r in per_frame]
    filled = backfill(per_frame, frames=frames)
    track_id = int(per_frame[first_seen].track_id[0])
    assert len(filled) == len(per_frame)
    for f, regions in enumerate(filled):
        if f < hidden_from:
            assert len(regions) == 0, f"frame {f} hidden too early"
        elif f < first_seen:
            assert len(regions) == 1, f"frame {f} not hidden"
            assert regions.reason[0] == Reason.TRACKED and regions.track_id[0] == track_id
            assert regions.confidence[0] == pytest.approx(0.7)
            box, first = regions.xyxy[0], np.asarray(face_at(200), np.float32)
            np.testing.assert_allclose(centre(box), centre(first), atol=1e-3)
            grow = 1 + min(0.05 * (first_seen - f), 0.5)  # the backfill defaults
            np.testing.assert_allclose(box[2:] - box[:2], [40 * grow, 50 * grow], rtol=1e-5)
        else:
            assert regions is per_frame[f]  # frames from the first detection on are untouched
        assert regions.checked_index == f
    for r, xyxy in zip(per_frame, before, strict=True):
        np.testing.assert_array_equal(r.xyxy, xyxy)  # input not modified


def test_streamed_backfill_hands_each_frame_over_once_final_and_matches_the_whole_file() -> None:
    # Two tracks appearing at different frames, one shot: the streamed form gives every frame
    # back exactly when no later frame can add to it, with the same regions as the whole list.
    tracker = Tracker(TrackSettings(coast_frames=3))
    per_frame = []
    for f in range(14):
        found = [face_at(100)] if f >= 5 else []
        found += [face_at(300)] if f >= 9 else []
        per_frame.append(tracker.update(make_detections(found, confidence=0.6), f))
    fill = Backfill(frames=4)
    streamed = []
    for f, regions in enumerate(per_frame):
        done = fill.push(regions)
        # Frame f - 4 is final once frame f was seen, never earlier, never later.
        assert len(done) == (1 if f >= 4 else 0)
        streamed += done
    streamed += fill.flush()
    whole = backfill(per_frame, frames=4)
    assert len(streamed) == len(whole) == len(per_frame)
    for s, w in zip(streamed, whole, strict=True):
        np.testing.assert_array_equal(s.xyxy, w.xyxy)
        np.testing.assert_array_equal(s.track_id, w.track_id)
    # Track one from frame 5 (filled back to 1), track two from frame 9 (filled back to 5).
    assert [len(r) for r in streamed] == [0] + [1] * 4 + [2] * 9


def test_streamed_backfill_never_reaches_across_a_flush() -> None:
    tracker = Tracker(TrackSettings())
    fill = Backfill(frames=6)
    out = [r for f in range(3) for r in fill.push(tracker.update(Detections.empty(), f))]
    out += fill.flush()  # a cut: the next shot starts here
    out += fill.push(tracker.update(make_detections([face_at(100)]), 3))
    out += fill.flush()
    assert [len(r) for r in out] == [0, 0, 0, 1]


def test_a_file_fills_the_frames_between_two_detections_on_the_line_between_them() -> None:
    # A plate moving 12 px a frame, detected every 6th frame (a file's plate stride): after its
    # first detection the tracker knows no velocity and coasts in place, falling behind; the
    # streamed fill adds the box on the line between the two detections to every frame between.
    tracker = Tracker(TrackSettings())
    per_frame = []
    for f in range(13):
        found = make_detections([face_at(100 + 12 * f)], kind=Kind.PLATE) if f % 6 == 0 else None
        per_frame.append(tracker.update(found, f, period=6))
    filled = backfill(per_frame, frames=7)
    for f in range(1, 12):
        truth = np.asarray(face_at(100 + 12 * f), np.float64)
        # Some region of the frame is centred on the plate's true place and covers it.
        best = min(filled[f].xyxy, key=lambda b: np.abs(centre(b) - centre(truth)).max())
        np.testing.assert_allclose(centre(best), centre(truth), atol=1e-3)
        assert best[0] <= truth[0] and best[2] >= truth[2]
    # The tracker alone left the first stride uncovered: its coasting box stayed at frame 0.
    coasted = per_frame[5].xyxy[0]
    assert centre(coasted)[0] < centre(np.asarray(face_at(100 + 12 * 5)))[0] - 40
    # Nothing is added past the window: with frames=4 the 6-frame gap is not bridged.
    short = backfill(per_frame, frames=4)
    assert all(len(short[f]) == len(per_frame[f]) for f in range(1, 6))
