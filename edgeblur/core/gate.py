"""The fail-closed rule: may this frame be published with the regions it has?

Pure and small on purpose, so the promise "no frame is published unchecked" lives in one place
that unit tests can walk through case by case. The Publisher asks it about every frame; a frame
it refuses is dropped or hidden whole (policy), never published as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    PUBLISH = "publish"  # checked: detected on this frame, or tracked from a recent detection
    UNCHECKED = "dropped_unchecked"  # no detection recent enough
    LATE = "dropped_late"  # older than the latency budget
    ERROR = "dropped_error"  # inference or anonymizer failed on it


@dataclass(frozen=True, slots=True)
class GateSettings:
    """Attributes:
    max_unchecked_s: a frame the detector skipped (stride, or a dropped inference) is
        published only if its camera's newest detection was decoded at most this long before.
    max_latency_s: a frame older than this (since decode) when it would be published is late.
    tracking: without a tracker, a frame is checked only when the detector saw it itself.
    """

    max_unchecked_s: float = 0.5
    max_latency_s: float = 2.0
    tracking: bool = True


def judge(
    settings: GateSettings,
    *,
    detected: bool,
    failed: bool,
    t_decoded: float,
    last_detected_t: float | None,
    now: float,
) -> Verdict:
    """Verdict for one frame.

    Args:
        detected: the detector ran on this very frame and returned.
        failed: inference for this frame raised, or its result was lost.
        t_decoded: when the frame was decoded (monotonic seconds).
        last_detected_t: decode time of the newest frame of this camera the detector saw, or
            None if it has seen none since the camera (re)started.
        now: monotonic seconds.
    """
    if failed:
        return Verdict.ERROR
    if now - t_decoded > settings.max_latency_s:
        return Verdict.LATE
    if detected:
        return Verdict.PUBLISH
    if (
        settings.tracking
        and last_detected_t is not None
        and 0.0 <= t_decoded - last_detected_t <= settings.max_unchecked_s
    ):
        return Verdict.PUBLISH
    return Verdict.UNCHECKED
