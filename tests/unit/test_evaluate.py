"""The metrics of `edgeblur eval` on hand-made masks, boxes and region sequences."""

from __future__ import annotations

import numpy as np
import pytest

from edgeblur.core.anonymize import Anonymizer
from edgeblur.errors import ConfigError
from edgeblur.quality.evaluate import ModeResult, compare, parse_mode, targets
from edgeblur.quality.judge import iou_matrix, matched
from edgeblur.quality.scores import (
    Evaluation,
    covered,
    flicker_events,
    labelled_flicker,
    over_blur,
    region_gaps,
    summary,
)
from edgeblur.types import Kind, Reason, Regions


def make_regions(xyxy=(), kind=None, track_id=None) -> Regions:
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    n = len(xyxy)
    return Regions(
        xyxy=xyxy,
        kind=np.full(n, Kind.FACE) if kind is None else kind,
        reason=np.full(n, Reason.DETECTED),
        track_id=np.full(n, -1) if track_id is None else track_id,
        confidence=np.ones(n),
        checked_index=0,
    )


def make_file(kind="video", faces=(0, 0), plates=(0, 0), **extra) -> dict:
    """A per-file result as `eval` stores it (FileScore as a dict)."""
    f = {
        "type": kind,
        "frames": 10,
        "seconds": 1.0,
        "coverage": {
            "faces": list(faces),
            "plates": list(plates),
            "faces_hard": [0, 0],
            "plates_hard": [0, 0],
        },
        "over_blur_sum": 1.0,
        "judge_faces": 0,
        "judge_seen": 0,
        "leak_frames": 0,
        "leaks": 0,
        "leak_at": [],
        "judge_set_aside": 0,
        "flicker": 0,
        "labelled_tracks": 0,
        "gaps": 0,
        "judged": True,
    }
    return f | extra


# -- coverage and over-blur -----------------------------------------------------------------------
def test_covered_needs_80_percent_of_the_box_hidden():
    mask = np.zeros((20, 20), bool)
    mask[0:10, 0:8] = True  # box A (0..10 × 0..10): 80% hidden; box B: 0%
    mask[10:20, 10:17] = True  # box C: 70% hidden
    boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [10, 10, 20, 20]])
    assert covered(mask, boxes).tolist() == [True, False, False]


def test_covered_of_no_boxes_is_empty():
    assert covered(np.ones((4, 4), bool), np.zeros((0, 4))).shape == (0,)


def test_over_blur_is_the_hidden_share_outside_ignore_regions():
    mask = np.zeros((10, 10), bool)
    mask[0:2, :] = True  # 20 of 100 pixels hidden
    assert over_blur(mask, np.zeros((0, 4))) == pytest.approx(0.20)
    # 10 of them lie in an ignore region: they count neither way.
    assert over_blur(mask, np.array([[0, 0, 10, 1]])) == pytest.approx(0.10)
    assert mask.sum() == 20, "the caller's mask must not change"


# -- flicker --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hidden", "events"),
    [
        ("HHHH", 0),
        ("HVH", 1),  # visible on 1 frame between hidden ones
        ("HVVH", 1),  # 2 frames: still flicker
        ("HVVVH", 0),  # 3 frames: a miss, not a flicker
        ("HVHVVH", 2),
        ("VVHH", 0),  # not hidden before: the detector found it late
        ("HHV", 0),  # not hidden again: it left (or was lost)
        ("", 0),
    ],
)
def test_flicker_events_count_short_visible_runs_between_hidden(hidden, events):
    assert flicker_events([c == "H" for c in hidden]) == events


def test_flicker_events_max_gap():
    assert flicker_events([True, False, False, False, True], max_gap=3) == 1


def test_labelled_flicker_chains_faces_by_overlap():
    a, b = [0, 0, 10, 10], [50, 50, 60, 60]
    frames = [
        ([a, b], [True, True]),
        ([[1, 0, 11, 10], b], [False, True]),  # a moved a pixel and shows on this frame
        ([[2, 0, 12, 10], b], [True, True]),
        ([[30, 30, 40, 40]], [True]),  # a and b gone, a new face: a third track
    ]
    assert labelled_flicker(frames) == (1, 3)


def test_labelled_flicker_does_not_chain_across_an_empty_labelled_frame():
    a = [0, 0, 10, 10]
    frames = [([a], [True]), ([], []), ([a], [False]), ([a], [True])]
    assert labelled_flicker(frames) == (0, 2)


def test_region_gaps_count_a_track_that_vanishes_for_one_or_two_frames():
    box = [10, 10, 30, 30]
    on = make_regions([box], track_id=np.array([7]))
    off = make_regions()
    assert region_gaps([on, off, on, on]) == 1
    assert region_gaps([on, off, off, on]) == 1
    assert region_gaps([on, off, off, off, on]) == 0, "3 frames is a gap, not flicker"
    assert region_gaps([on, on, on, on]) == 0


def test_region_gaps_without_tracker_match_by_iou_and_faces_only():
    a = make_regions([[10, 10, 30, 30]])  # track id -1: no tracker
    a_moved = make_regions([[12, 10, 32, 30]])  # IoU 0.82
    elsewhere = make_regions([[100, 100, 120, 120]])
    plate = make_regions([[10, 10, 30, 30]], kind=np.array([Kind.PLATE]))
    assert region_gaps([a, elsewhere, a_moved]) == 1
    assert region_gaps([plate, make_regions(), plate]) == 0


# -- leaks ----------------------------------------------------------------------------------------
def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    assert iou_matrix(a, b)[0] == pytest.approx([1.0, 50 / 150, 0.0, 0.0])


def test_a_leak_needs_iou_of_at_least_0_3_with_an_input_judge_face():
    before = np.array([[0, 0, 100, 100], [200, 0, 300, 100]])
    after_near = np.array([[0, 0, 100, 43]])  # IoU 0.43
    after_off = np.array([[0, 0, 100, 29]])  # IoU 0.29
    after_new = np.array([[400, 0, 500, 100]])  # a face the input did not show
    assert matched(before, after_near) == 1
    assert matched(before, after_off) == 0
    assert matched(before, after_new) == 0
    assert matched(before, np.zeros((0, 4))) == 0
    assert matched(before, np.vstack([after_near, [[200, 0, 300, 100]]])) == 2


class FakeJudge:
    """Finds a "face" in each of ``boxes`` whose centre still has texture (not blurred)."""

    name = "fake"

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, np.float32)

    def faces(self, image):
        def textured(b):
            x1, y1, x2, y2 = (int(v) for v in b)
            w, h = (x2 - x1) // 4, (y2 - y1) // 4
            return image[y1 + h : y2 - h, x1 + w : x2 - w].std() > 20

        return self.boxes[[textured(b) for b in self.boxes]].reshape(-1, 4)


def test_score_counts_leaks_and_sets_aside_judge_boxes_the_labels_call_no_face():
    face, badge = [10, 10, 30, 30], [60, 60, 80, 80]
    checker = (np.indices((100, 100)).sum(axis=0) % 2 * 255).astype(np.uint8)
    frames = [np.repeat(checker[:, :, None], 3, axis=2) for _ in range(3)]
    hide_face = make_regions([face])
    regions = [hide_face, make_regions(), hide_face]  # the face is missed on frame 1
    labels = {"clip.mp4": {"type": "video", "frames": {"0": {"faces": [face], "plates": []}}}}
    worker = type("Worker", (), {"anonymizer": Anonymizer()})
    s = Evaluation(labels, FakeJudge([face, badge]))._score("clip.mp4", frames, regions, worker, 1)
    assert s.coverage["faces"] == [1, 1]
    # Frame 0 is labelled: the badge is no face there. Frames 1, 2 are not: the judge decides.
    assert (s.judge_set_aside, s.judge_seen, s.judge_faces) == (1, 1, 5)
    assert (s.leak_at, s.leaks) == ([1, 2], 3)  # face and badge on 1, the badge on 2
    assert s.gaps == 1 and s.frames == 3


# -- summary, targets, baseline -------------------------------------------------------------------
def test_summary_splits_images_and_videos_and_counts_leaks_on_face_videos_only():
    files = {
        "a.jpg": make_file("image", faces=(3, 4), plates=(1, 1)),
        "v.mp4": make_file(faces=(9, 10), leak_frames=2, judge_faces=5),
        "cartoon.mp4": make_file(leak_frames=4),  # no labelled face: not a face video
    }
    s = summary(files)
    assert s["coverage"]["faces_images"]["share"] == pytest.approx(0.75)
    assert s["coverage"]["faces_videos"]["share"] == pytest.approx(0.9)
    assert s["coverage"]["plates"]["share"] == 1.0
    assert s["coverage"]["faces_hard"]["share"] is None
    assert (s["leaks"]["frames"], s["leaks"]["of_frames"]) == (2, 10)
    assert s["leaks"]["share"] == pytest.approx(0.2)
    assert s["over_blur"] == pytest.approx(3 / 30)
    assert s["fps"] == pytest.approx(10.0)


def _result(name, track, stride, **file) -> ModeResult:
    files = {"a.jpg": make_file("image", faces=(98, 100)), "v.mp4": make_file(**file)}
    return ModeResult(name, track, stride, files, summary(files))


def test_targets_pass_miss_and_not_applicable():
    off = _result("track=off,stride=1", False, 1, faces=(10, 10), leak_frames=4)
    on = _result("track=on,stride=1", True, 1, faces=(9, 10), leak_frames=1)
    got = {(t["target"], t["mode"]): t["pass"] for t in targets([off, on])}
    on1 = "track=on,stride=1"
    assert got["faces covered on images >= 98%", on1] is True
    assert got["faces covered on labelled video frames >= 97%", on1] is False
    assert got["plates covered >= 90%", on1] is None  # no labelled plates
    assert got["face-video frames with a judge leak <= 1%", on1] is False  # 1 of 10 frames
    assert got["face-video frames with a judge leak <= 2%", None] is None  # stride 2 not run
    assert got["leak frames, tracking on / off at stride 1 <= 50%", on1] is True  # 1 vs 4


def test_no_judge_means_no_leak_share():
    files = {"v.mp4": make_file(faces=(1, 1), judged=False)}
    assert summary(files)["leaks"]["share"] is None


def test_baseline_comparison_fails_only_past_the_margin():
    now = [_result("track=on,stride=1", True, 1, faces=(97, 100))]
    same = {"modes": [{"mode": "track=on,stride=1", "files": now[0].files}]}
    assert compare(now, same, margin_pp=1.0)[1] is False
    higher = _result("track=on,stride=1", True, 1, faces=(99, 100))
    stored = {"modes": [{"mode": "track=on,stride=1", "files": higher.files}]}
    assert compare(now, stored, margin_pp=1.0)[1] is True  # 99% -> 97%: 2 points
    assert compare(now, stored, margin_pp=2.5)[1] is False


def test_baseline_compares_only_the_files_both_runs_hold():
    now = [_result("track=on,stride=1", True, 1, faces=(5, 10))]
    stored_files = dict(now[0].files) | {"other.mp4": make_file(faces=(100, 100))}
    stored = {"modes": [{"mode": "track=on,stride=1", "files": stored_files}]}
    assert compare(now, stored, margin_pp=1.0)[1] is False


def test_baseline_without_a_common_mode_is_a_user_error():
    now = [_result("track=on,stride=1", True, 1, faces=(5, 10))]
    with pytest.raises(ConfigError, match="shares no mode"):
        compare(now, {"modes": [{"mode": "track=on,stride=4", "files": now[0].files}]}, 1.0)


# -- modes ----------------------------------------------------------------------------------------
def test_parse_mode_canonical_name_and_flags():
    assert parse_mode("stride=2, track=ON") == ("track=on,stride=2", {"track": True, "stride": 2})
    assert parse_mode("backfill=0") == ("backfill=0", {"backfill": 0})


@pytest.mark.parametrize("text", ["track=maybe", "stride=two", "strides=2", "track", "city.jpg"])
def test_parse_mode_rejects_bad_modes(text):
    with pytest.raises(ConfigError, match="Mode"):
        parse_mode(text)
