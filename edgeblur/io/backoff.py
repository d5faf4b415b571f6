"""The wait before the next attempt to reach a camera or a server, for sources and sinks alike."""

from __future__ import annotations

import random


def backoff_s(failures: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row (1 for the first).

    Doubles from ``initial_s`` up to ``max_s``. The jitter is below the base, never above: cameras
    that failed together do not retry in lockstep, and each wait is still longer than the last
    until the cap.
    """
    base = min(max_s, initial_s * 2 ** min(max(failures, 1) - 1, 30))
    return base * random.uniform(0.8, 1.0)
