"""Low-rate JPEG previews for operators: the last stage of the flow, beside the RTSP and file sinks.

``PreviewSink.write`` runs on the camera's output thread, after the Anonymizer: it only ever sees
an ``Anonymized`` frame, so a preview cannot show a face the stream would hide. At most
``max_fps`` frames are downscaled and JPEG-encoded (a 640-px JPEG costs a few ms; encoding every
25 fps frame would cost more than the preview is worth). The ``PreviewHub`` keeps only the newest
JPEG per camera, in memory (no pixels on disk), and wakes the HTTP threads that stream it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from edgeblur.types import CAMERA_NAME, CAMERA_NAME_RULE, Anonymized

log = logging.getLogger(__name__)


def _check_camera(camera: str) -> str:
    if not isinstance(camera, str) or not CAMERA_NAME.match(camera):
        # The name ends up in URLs and HTML; never echo something that may be a URL.
        raise ValueError(f"camera name must be {CAMERA_NAME_RULE} characters")
    return camera


class PreviewHub:
    """The newest preview JPEG of every camera, shared by the sinks and the HTTP threads.

    Thread-safe. Sequence numbers are per camera, start at 1 and only grow, so a reader asks for
    "anything newer than what I showed" and never sees the same frame twice.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: dict[str, tuple[int, bytes]] = {}
        self._known: set[str] = set()

    def add(self, camera: str) -> None:
        """List ``camera`` before its first frame (PreviewSink does this), so the index shows it."""
        _check_camera(camera)
        with self._cond:
            self._known.add(camera)

    def remove(self, camera: str) -> None:
        """Forget ``camera`` and its last frame (camera removed); open streams of it end."""
        with self._cond:
            self._known.discard(camera)
            self._latest.pop(camera, None)
            self._cond.notify_all()

    def publish(self, camera: str, jpeg: bytes) -> None:
        """Replace the camera's preview; wakes every waiting stream."""
        _check_camera(camera)
        if not isinstance(jpeg, bytes | bytearray) or not jpeg:
            raise TypeError("jpeg must be non-empty bytes")
        with self._cond:
            self._known.add(camera)
            previous = self._latest.get(camera)
            seq = previous[0] + 1 if previous else 1
            self._latest[camera] = (seq, bytes(jpeg))
            self._cond.notify_all()

    def latest(self, camera: str) -> tuple[int, bytes] | None:
        """(sequence number, JPEG) of the newest preview, or None before the first one."""
        with self._cond:
            return self._latest.get(camera)

    def wait_newer(self, camera: str, seq: int, timeout_s: float) -> tuple[int, bytes] | None:
        """The newest preview with a sequence number above ``seq``, waiting at most ``timeout_s``.

        Returns None on timeout or if the camera is removed meanwhile; callers loop and re-check
        their own stop flag between calls, which is why the wait is always bounded.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                got = self._latest.get(camera)
                if got is not None and got[0] > seq:
                    return got
                if camera not in self._known:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def cameras(self) -> list[str]:
        """Cameras with a preview sink or a published preview, sorted."""
        with self._cond:
            return sorted(self._known)

    def __contains__(self, camera: object) -> bool:
        with self._cond:
            return camera in self._known


class PreviewSink:
    """A Sink that feeds one camera's ``PreviewHub`` slot with rate-limited, downscaled JPEGs.

    ``clock`` is injectable (``time.monotonic`` by default) so tests can drive the rate limit
    deterministically.
    """

    def __init__(
        self,
        hub: PreviewHub,
        camera: str,
        max_fps: float = 2.0,
        width: int = 640,
        quality: int = 70,
        *,
        clock: Callable[[], float] = time.monotonic,
        outlines: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = (),
    ):
        if not max_fps > 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        if width < 16:
            raise ValueError(f"width must be >= 16 pixels, got {width}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality}")
        self.hub = hub
        self.camera = _check_camera(camera)
        self.max_fps = float(max_fps)
        self.width = int(width)
        self.quality = int(quality)
        self._clock = clock
        self._interval = 1.0 / self.max_fps
        self._next_due: float | None = None
        self._closed = False
        # (kind, relative corners) of the privacy zones, drawn on the preview only (never on the
        # stream or the recording) so an operator can check where they lie.
        self.outlines = outlines
        hub.add(camera)

    def write(self, item: Anonymized) -> None:
        """Encode ``item`` into the hub if a preview is due; otherwise return at once."""
        if not isinstance(item, Anonymized):
            # The fail-closed promise: only the Anonymizer's output may leave the box.
            got = type(item).__name__
            raise TypeError(f"PreviewSink accepts only Anonymized frames, got {got}")
        if self._closed:
            raise RuntimeError(f"{self.camera}: preview sink is closed")
        if item.frame.camera != self.camera:
            raise ValueError(
                f"{self.camera}: preview sink got a frame of camera {item.frame.camera!r}"
            )
        now = self._clock()
        if self._next_due is not None and now < self._next_due:
            return
        # Schedule on a grid so 25 fps input yields max_fps exactly, not slightly less; after an
        # idle gap restart the grid instead of allowing a catch-up burst.
        if self._next_due is None or self._next_due + self._interval <= now:
            self._next_due = now + self._interval
        else:
            self._next_due += self._interval
        jpeg = self._encode(item)
        if jpeg is not None:
            self.hub.publish(self.camera, jpeg)

    def _encode(self, item: Anonymized) -> bytes | None:
        image = item.frame.image
        h, w = image.shape[:2]
        if w > self.width:
            size = (self.width, max(1, round(h * self.width / w)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # frames are RGB, OpenCV writes BGR
        if self.outlines:  # on the copy: the frame is shared with the other sinks
            _draw_outlines(bgr, self.outlines)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            log.debug("%s: preview JPEG encoding failed; skipped", self.camera)
            return None
        return buf.tobytes()

    def close(self) -> None:
        """Stop accepting frames. The hub keeps the last preview until ``hub.remove(camera)``."""
        self._closed = True


# BGR: hide zones in amber, ignore zones (faces left visible there) in red.
_OUTLINE_BGR = {"hide": (0, 191, 255), "ignore": (0, 0, 255)}


def _draw_outlines(bgr: np.ndarray, outlines) -> None:
    h, w = bgr.shape[:2]
    for kind, points in outlines:
        xy = np.round(np.asarray(points, np.float64) * (w - 1, h - 1)).astype(np.int32)
        cv2.polylines(bgr, [xy.reshape(-1, 1, 2)], True, _OUTLINE_BGR.get(kind, (255, 255, 255)), 2)
