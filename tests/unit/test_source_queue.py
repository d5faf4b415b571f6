"""FrameQueue: the Source's hand-off, where the newest frame wins and a full queue never blocks."""

from __future__ import annotations

import itertools
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from edgeblur.io.source import FrameQueue, _Rebase
from edgeblur.types import Frame


def make_frame(index: int) -> Frame:
    return Frame("cam", index, np.zeros((2, 2, 3), np.uint8), index, Fraction(1, 90000), 0.0)


def test_newest_wins_and_each_drop_is_counted() -> None:
    drops: list[int] = []
    q: FrameQueue[Frame] = FrameQueue(2, on_drop=lambda: drops.append(1))
    for i in range(5):
        q.put(make_frame(i))
    assert len(q) == 2
    assert q.dropped == 3 and len(drops) == 3
    got = [q.get(0), q.get(0)]
    assert [f.index for f in got if f is not None] == [3, 4]  # oldest first of what is left
    assert q.get(0) is None


def test_put_calls_on_put_after_every_frame() -> None:
    q: FrameQueue[Frame] = FrameQueue(1)
    wakes: list[int] = []
    q.on_put = lambda: wakes.append(len(q))
    q.put(make_frame(0))
    q.put(make_frame(1))
    assert wakes == [1, 1]  # called outside the lock, with the frame already in


@pytest.mark.parametrize("timeout_s", [0.0, 0.05, 0.2])
def test_get_waits_at_most_its_timeout(timeout_s: float) -> None:
    q: FrameQueue[Frame] = FrameQueue()
    t0 = time.monotonic()
    assert q.get(timeout_s) is None
    waited = time.monotonic() - t0
    assert timeout_s <= waited + 0.01 and waited < timeout_s + 0.1


def test_get_wakes_when_a_frame_arrives() -> None:
    q: FrameQueue[Frame] = FrameQueue()
    timer = threading.Timer(0.05, q.put, args=(make_frame(7),))
    timer.start()
    t0 = time.monotonic()
    frame = q.get(2.0)
    timer.join()
    assert frame is not None and frame.index == 7
    assert time.monotonic() - t0 < 1.0


def test_rejects_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        FrameQueue(0)


def test_threads_lose_nothing_but_counted_drops() -> None:
    """Smoke: 4 producers and 2 consumers; every frame is either consumed once or dropped."""
    q: FrameQueue[Frame] = FrameQueue(3)
    per_producer = 2000
    consumed: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    def produce(base: int) -> None:
        for i in range(per_producer):
            q.put(make_frame(base + i))

    def consume() -> None:
        mine = []
        while not (done.is_set() and len(q) == 0):
            frame = q.get(0.01)
            if frame is not None:
                mine.append(frame.index)
        with lock:
            consumed.extend(mine)

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    producers = [threading.Thread(target=produce, args=(k * 10_000,)) for k in range(4)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(10)
    done.set()
    for t in consumers:
        t.join(10)
    assert not any(t.is_alive() for t in consumers + producers)
    assert len(consumed) == len(set(consumed))  # nothing handed out twice
    assert len(consumed) + q.dropped == 4 * per_producer


# -- the Source's timestamp rebasing (pure, so tested here beside the queue) -----------------


def test_rebase_keeps_spacing_and_bridges_discontinuities() -> None:
    r = _Rebase()
    r.new_session(Fraction(30000, 1001))
    out = [r(3003 * i + 1_000_000, 0.0 + i / 30) for i in range(5)]
    assert out == [0, 3003, 6006, 9009, 12012]  # starts at 0, keeps the source's steps
    # A file loop: pts start over, 10 ms later: one frame on, not back.
    r.new_session(Fraction(30000, 1001))
    assert r(0, 4 / 30 + 0.01) == 12012 + 3003
    assert r(3003, 5 / 30 + 0.01) == 12012 + 2 * 3003
    # A reconnect 2 s later with a missing first pts (RTSP): the wall-clock gap wins.
    r.new_session(None)
    gap = r(None, 5 / 30 + 2.01)
    assert gap == 12012 + 2 * 3003 + 180_000
    assert r(77, 5 / 30 + 2.05) == gap + 3600  # max(wall gap 40 ms, one step)
    assert r(77 + 3003, 5 / 30 + 2.08) == gap + 3600 + 3003


def test_rebase_never_goes_back_within_a_session() -> None:
    r = _Rebase()
    values = [r(p, t * 0.04) for t, p in enumerate([0, 3600, 7200, 3600, 10800])]
    assert all(b > a for a, b in itertools.pairwise(values))
