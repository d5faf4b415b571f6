"""Shot-cut detection on synthetic frames (the real clip's cuts: tests/integration)."""

from __future__ import annotations

import numpy as np

from edgeblur.core.shots import CutDetector


def frame(seed: int, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (18, 32, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((40, 40, 1), np.uint8))  # 720×1280, blocky like a real scene
    return np.ascontiguousarray(np.roll(big, shift, axis=1))


def test_first_frame_is_never_a_cut_and_a_still_scene_never_cuts():
    cuts = CutDetector()
    assert [cuts.is_cut(frame(1)) for _ in range(5)] == [False] * 5


def test_slow_motion_is_not_a_cut_but_a_new_scene_is():
    cuts = CutDetector()
    seq = [frame(1, s) for s in range(0, 12, 3)] + [frame(2)] + [frame(2, 2)]
    assert [cuts.is_cut(f) for f in seq] == [False, False, False, False, True, False]


def test_reset_forgets_the_previous_frame():
    cuts = CutDetector()
    cuts.is_cut(frame(1))
    cuts.reset()
    assert cuts.is_cut(frame(2)) is False
