"""Files with detect.auto: each role's stride from the file's rate, manual strides winning, and
backward fill reaching as far back as the schedule can leave a face unseen; pass 1 on its own
thread hands frames over in order, stops when asked and raises its errors in the caller."""

from __future__ import annotations

import threading

import pytest

from edgeblur.build import blind_frames, cadence
from edgeblur.config import FILE_GAP_S, DetectConfig
from edgeblur.core.step import Cadence
from edgeblur.errors import SourceUnavailable
from edgeblur.files.blur import FirstPass


def test_a_file_runs_each_role_every_so_often_in_video_time():
    at25 = cadence(DetectConfig(), fps=25)
    assert at25["face"].stride == round(FILE_GAP_S["face"] * 25) == 2
    assert at25["plate"].stride == round(FILE_GAP_S["plate"] * 25) == 3
    assert cadence(DetectConfig(), fps=60)["face"].stride == 5
    assert cadence(DetectConfig(), fps=5)["face"].stride == 1  # never below every frame
    # Widths and tiles come from the configuration either way.
    assert at25["plate"].width == 1280 and at25["face"].tiles == 2


def test_given_strides_auto_off_or_no_rate_keep_the_configured_schedule():
    assert cadence(DetectConfig(stride=1), fps=25)["plate"].stride == 1  # --stride 1
    per_role = DetectConfig.model_validate({"plates": {"stride": 3}})
    assert cadence(per_role, fps=25)["plate"].stride == 3
    assert cadence(per_role, fps=25)["face"].stride == 2  # the other role still follows the rate
    assert cadence(DetectConfig(auto=False), fps=25)["face"].stride == 1
    assert cadence(DetectConfig())["face"].stride == 1  # serve: detect.auto eases at run time


def test_backfill_reaches_the_longest_blind_stretch_of_the_schedule():
    # Faces every 2nd frame, one of four tiles per run: a face only a tile finds can wait 8.
    assert blind_frames({"face": Cadence(stride=2, tiles=2, tiles_per_run=1)}) == 8
    assert blind_frames({"face": Cadence(stride=2, tiles=2, tiles_per_run=0)}) == 2
    assert blind_frames({"plate": Cadence(stride=3), "face": Cadence(stride=1)}) == 3


def test_first_pass_hands_frames_over_in_order_and_all_of_them():
    with FirstPass(iter(range(50))) as first:
        assert [first.get(i) for i in range(50)] == list(range(50))
        assert first.get(50) is None  # a frame pass 1 never had: the caller fails closed
        assert first.result() == list(range(50))


def test_first_pass_raises_its_error_in_the_caller():
    def damaged():
        yield 0
        raise SourceUnavailable("clip.mp4 is damaged")

    with FirstPass(damaged()) as first:
        assert first.get(0) == 0
        with pytest.raises(SourceUnavailable, match="damaged"):
            first.get(1)


def test_leaving_early_stops_pass_one_and_closes_its_input():
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    with FirstPass(endless()) as first:
        assert first.get(3) == 3
        thread = first._thread
    assert not thread.is_alive() and closed.is_set()
