"""Shot cuts: when the picture changes wholesale, the tracker's old tracks mean nothing.

A cut (an edited video's next shot, a PTZ camera jumping to a preset, a camera switched over)
leaves coasting tracks hiding empty places in the new picture and, with backward fill, hides
faces of one shot in the frames of the previous one. Callers reset the tracker at a cut and run
the detector on the cut frame itself, so the new shot starts from a fresh detection.

Measured on the shared media (mean absolute difference of 32×18 grey thumbnails, 0-255): the five
cuts of bikes.mp4 score 42.6-80.7, every other frame of bikes, carphone and bigbuckbunny at most
19.0 (medians 0.7-2.9). The threshold sits between.
"""

from __future__ import annotations

import cv2
import numpy as np

CUT_THRESHOLD = 30.0
THUMB_WH = (32, 18)


class CutDetector:
    """Per camera or file; call ``is_cut`` on every frame in order (not thread-safe)."""

    def __init__(self, threshold: float = CUT_THRESHOLD):
        self.threshold = threshold
        self._prev: np.ndarray | None = None

    def is_cut(self, image: np.ndarray) -> bool:
        """True when ``image`` (H×W×3 uint8 RGB) starts a new shot; never for the first frame."""
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(grey, THUMB_WH, interpolation=cv2.INTER_AREA).astype(np.float32)
        prev, self._prev = self._prev, thumb
        if prev is None:
            return False
        return float(np.abs(thumb - prev).mean()) > self.threshold

    def reset(self) -> None:
        self._prev = None
