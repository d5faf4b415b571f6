"""The one decoder recipe, for camera sources and `blur`'s input files: open with PyAV under a
timeout, take the first video stream with FFmpeg's frame threads, convert frames to RGB.

What a caller does on failure differs (a camera reconnects, a file is a user error), so errors
are left to the caller; the steps themselves are here once.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np

TICKS = 90000  # the 90 kHz clock of RTP and of every Frame's pts


class NoVideo(ValueError):
    """The input opened, and has no video stream."""


def open_input(
    target: str,
    timeout_s: tuple[float, float],
    format: str | None = None,
    options: dict[str, str] | None = None,
) -> av.container.InputContainer:
    """``av.open`` for reading. ``timeout_s`` (open, read) bounds each FFmpeg call through
    PyAV's interrupt callback, so no open or read blocks without end."""
    return av.open(target, format=format, options=options or {}, timeout=timeout_s)


def video_stream(container: av.container.InputContainer) -> Any:
    """The first video stream, decoded on FFmpeg's frame threads (they release the GIL)."""
    if not container.streams.video:
        raise NoVideo("the input has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def frame_rate(stream: Any) -> Fraction | None:
    """The stream's rate as the container states or FFmpeg guesses it; None if neither."""
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as a contiguous H×W×3 uint8 RGB array (what models and encoders take)."""
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def pts_ticks(frame: av.VideoFrame) -> int | None:
    """The frame's pts on the 90 kHz clock; None where the input has no timing."""
    if frame.pts is None or not frame.time_base:
        return None
    return round(frame.pts * Fraction(frame.time_base) * TICKS)
