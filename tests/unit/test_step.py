"""The per-frame core: which roles run on a frame, tile rotation, tracking across per-role
strides, and the gate judged against the stalest role."""

from __future__ import annotations

import itertools

import numpy as np

from edgeblur.core.gate import GateSettings, Verdict
from edgeblur.core.step import Cadence, Checker, CheckSettings, Planner
from edgeblur.core.track import TrackSettings
from edgeblur.types import Detections, Frame, Kind, Reason

GREY = np.full((72, 128, 3), 128, np.uint8)


def frames(n: int, fps: float = 25.0, image: np.ndarray = GREY):
    return [Frame("cam", i, image, t_decoded=i / fps) for i in range(n)]


def boxes(*items: tuple[Kind, float]) -> Detections:
    xyxy = np.array([[x, 10, x + 20, 30] for _k, x in items], np.float32).reshape(-1, 4)
    return Detections(xyxy, np.full(len(items), 0.9, np.float32), np.array([k for k, _ in items]))


def test_each_role_runs_on_its_own_stride_plates_half_a_stride_later():
    planner = Planner({"face": Cadence(stride=1), "plate": Cadence(stride=3)})
    due = [planner.plan(f.index, f.image).due for f in frames(7)]
    # Frame 0 runs everything (nothing before vouches for it); then plates on (i + 1) % 3 == 0,
    # so faces and plates of a stride do not land on the same frame.
    assert ["plate" in d for d in due] == [True, False, True, False, False, True, False]
    assert all("face" in d for d in due)


def test_cameras_of_a_group_start_at_different_phases():
    a = Planner({"face": Cadence(stride=2)}, phase=0)
    b = Planner({"face": Cadence(stride=2)}, phase=1)
    runs_a = [bool(a.plan(i, None).due) for i in range(5)]
    runs_b = [bool(b.plan(i, None).due) for i in range(5)]
    assert runs_a == [True, False, True, False, True]
    assert runs_b == [True, True, False, True, False]


def test_a_restarted_numbering_runs_every_role():
    planner = Planner({"face": Cadence(stride=4), "plate": Cadence(stride=4)})
    for i in range(3):
        planner.plan(i, None)
    assert planner.plan(0, None).due == {"face", "plate"}


def test_a_shot_cut_makes_every_role_due():
    planner = Planner({"face": Cadence(stride=5), "plate": Cadence(stride=5)})
    dark = np.zeros_like(GREY)
    bright = np.full_like(GREY, 250)
    bright[::4] = 0  # texture, so the cut detector sees a different picture, not a fade
    plans = [planner.plan(i, img) for i, img in enumerate([dark, dark, dark, bright])]
    assert plans[1].due == frozenset() and not plans[1].cut
    assert plans[3].cut and plans[3].due == {"face", "plate"}


def test_tiles_rotate_so_every_tile_is_seen_within_a_cycle():
    planner = Planner({"face": Cadence(stride=1, tiles=3, tiles_per_run=2)})
    seen = [planner.plan(i, None).tiles["face"] for i in range(5)]
    assert all(len(t) == 2 for t in seen)
    assert set().union(*seen) == set(range(9))  # 9 tiles, 2 per run: all within 5 runs
    every = Planner({"face": Cadence(tiles=2, tiles_per_run=0)})
    assert every.plan(0, None).tiles["face"] == (0, 1, 2, 3)


def test_a_plate_track_survives_its_own_stride_while_faces_update_every_frame():
    settings = CheckSettings(track=TrackSettings(coast_frames=0), gate=GateSettings())
    checker = Checker(["face", "plate"], settings)
    planner = Planner({"face": Cadence(stride=1), "plate": Cadence(stride=4)})
    kinds = []
    for f in frames(8):
        plan = planner.plan(f.index, None)
        found = boxes(
            *([(Kind.FACE, 10)] if "face" in plan.due else []),
            *([(Kind.PLATE, 60)] if "plate" in plan.due else []),
        )
        regions = checker.regions(f, plan, found)
        kinds.append(sorted(Kind(int(k)).name for k in regions.kind))
    # coast_frames 0, yet the plate is hidden on every frame between its detections (stride 4).
    assert all(k == ["FACE", "PLATE"] for k in kinds), kinds


def test_gate_uses_the_stalest_role():
    gate = GateSettings(max_unchecked_s=0.1, max_latency_s=10.0)
    checker = Checker(["face", "plate"], CheckSettings(TrackSettings(), gate))
    planner = Planner({"face": Cadence(stride=1), "plate": Cadence(stride=8)})
    verdicts = []
    for f in frames(8, fps=25.0):
        plan = planner.plan(f.index, None)
        checker.regions(f, plan, Detections.empty())
        verdicts.append(checker.verdict(f, plan, failed=False, now=f.t_decoded))
    # Faces run on every frame; plates on frames 0 and 4 (half a stride later than faces).
    # A frame 0.12 s after the last plate run is unchecked although faces ran on it.
    P, U = Verdict.PUBLISH, Verdict.UNCHECKED
    assert verdicts == [P, P, P, U, P, P, P, U]


def test_failed_inference_is_an_error_and_vouches_for_nothing():
    checker = Checker(["face"], CheckSettings(TrackSettings()))
    planner = Planner({"face": Cadence(stride=1)})
    f0, f1 = frames(2)
    p0 = planner.plan(0, None)
    checker.regions(f0, p0, None, failed=True)
    assert checker.verdict(f0, p0, failed=True, now=0.0) is Verdict.ERROR
    p1 = planner.plan(1, None)
    checker.regions(f1, p1, boxes((Kind.FACE, 5)))
    assert checker.verdict(f1, p1, failed=False, now=f1.t_decoded) is Verdict.PUBLISH


def test_a_cut_or_a_restarted_index_forgets_tracks_and_detections():
    checker = Checker(["face"], CheckSettings(TrackSettings(coast_frames=30)))
    planner = Planner({"face": Cadence(stride=10)})
    f = frames(3)
    checker.regions(f[0], planner.plan(0, None), boxes((Kind.FACE, 5)))
    carried = checker.regions(f[1], planner.plan(1, None), None)
    assert list(carried.reason) == [Reason.TRACKED]
    restarted = Frame("cam", 0, GREY, t_decoded=5.0)
    plan = planner.plan(0, None)
    assert len(checker.regions(restarted, plan, Detections.empty())) == 0
    assert checker.last_detected_t == {"face": 5.0}


def test_without_a_tracker_a_skipped_frame_reuses_the_last_detection():
    checker = Checker(["face"], CheckSettings(track=None, gate=GateSettings(tracking=False)))
    planner = Planner({"face": Cadence(stride=2)})
    f = frames(2)
    p0, p1 = planner.plan(0, None), planner.plan(1, None)
    first = checker.regions(f[0], p0, boxes((Kind.FACE, 5)))
    assert checker.regions(f[1], p1, None) is first
    assert checker.verdict(f[1], p1, failed=False, now=f[1].t_decoded) is Verdict.UNCHECKED


def test_frames_dropped_upstream_do_not_stretch_a_stride():
    """The planner sees every 3rd frame (the source dropped the rest): a role with stride 4 must
    run as soon as 4 frames passed, not wait for an index that is a multiple of 4."""
    planner = Planner({"face": Cadence(stride=4)})
    ran = [i for i in range(0, 60, 3) if planner.plan(i, None).due]
    gaps = [b - a for a, b in itertools.pairwise(ran)]
    assert max(gaps) <= 4 + 2, ran  # at most one step of 3 past the stride
