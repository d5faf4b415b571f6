"""Values that cross stage boundaries: Frame, Detections, Regions, Anonymized.

This module imports nothing from edgeblur, so every stage can depend on it. Boxes are always
float32 N×4 ``xyxy`` in pixels of the original frame; images are H×W×3 uint8 RGB, contiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from fractions import Fraction

import numpy as np

# Camera names double as MediaMTX paths, thread names, log prefixes, preview URLs and metric
# labels (never a URL): MediaMTX's path characters except '/', and no leading '.', so a name is
# one safe URL segment and file name.
CAMERA_NAME = re.compile(r"^[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,63}$")
CAMERA_NAME_RULE = "letters, digits and _ - . ~ (not starting with '.'), at most 64"


class Kind(IntEnum):
    """What a box hides. Each model maps its own class ids onto these."""

    FACE = 0
    PLATE = 1


class Reason(IntEnum):
    """Why a region is hidden: a detector saw it on this frame, or a track carries it over."""

    DETECTED = 0
    TRACKED = 1


def _check(name: str, arr: np.ndarray, shape: tuple[int | None, ...], n: int | None) -> None:
    if arr.ndim != len(shape) or any(
        s is not None and a != s for a, s in zip(arr.shape, shape, strict=True)
    ):
        raise ValueError(f"{name} must have shape {shape} (None: any), got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows like xyxy, got {arr.shape[0]}")


def _boxes(xyxy: np.ndarray) -> np.ndarray:
    arr = np.asarray(xyxy, dtype=np.float32)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {arr.shape}")
    return arr


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture of one camera or file.

    Attributes:
        camera: camera or file name (``CAMERA_NAME`` for cameras).
        index: per-camera sequence number, 0-based in decode order.
        image: H×W×3 uint8 RGB, C-contiguous.
        pts: presentation timestamp in ``time_base`` units (None for images).
        time_base: PyAV time base of ``pts``.
        t_decoded: ``time.monotonic()`` when decoding finished, seconds.
    """

    camera: str
    index: int
    image: np.ndarray
    pts: int | None = None
    time_base: Fraction | None = None
    t_decoded: float = 0.0

    def __post_init__(self) -> None:
        img = self.image
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"Frame.image must be H×W×3 uint8, got {img.shape} {img.dtype}")

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes from a detector, in original-frame pixels.

    Attributes:
        xyxy: (N, 4) float32 boxes.
        confidence: (N,) float32 scores in 0..1.
        kind: (N,) uint8 values of ``Kind``.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    kind: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", _boxes(self.xyxy))
        n = len(self.xyxy)
        object.__setattr__(self, "confidence", np.asarray(self.confidence, dtype=np.float32))
        object.__setattr__(self, "kind", np.asarray(self.kind, dtype=np.uint8))
        _check("confidence", self.confidence, (None,), n)
        _check("kind", self.kind, (None,), n)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: int | slice | list[int] | np.ndarray) -> Detections:
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(self.xyxy[index], self.confidence[index], self.kind[index])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.uint8))

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.confidence for p in parts]),
            np.concatenate([p.kind for p in parts]),
        )


@dataclass(frozen=True, slots=True)
class Regions:
    """What the Anonymizer must hide on one frame (Tracker → Anonymizer).

    Attributes:
        xyxy: (N, 4) float32 boxes in frame pixels, before padding.
        kind: (N,) uint8 ``Kind``.
        reason: (N,) uint8 ``Reason``.
        track_id: (N,) int32, -1 where no tracker ran.
        confidence: (N,) float32 detector score (of the last detection for tracked regions).
        checked_index: index of the newest frame of this camera that a detector saw; the
            fail-closed gate compares it with the frame being published.
    """

    xyxy: np.ndarray
    kind: np.ndarray
    reason: np.ndarray
    track_id: np.ndarray
    confidence: np.ndarray
    checked_index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", _boxes(self.xyxy))
        n = len(self.xyxy)
        for name, dtype in (
            ("kind", np.uint8),
            ("reason", np.uint8),
            ("track_id", np.int32),
            ("confidence", np.float32),
        ):
            arr = np.asarray(getattr(self, name), dtype=dtype)
            object.__setattr__(self, name, arr)
            _check(name, arr, (None,), n)

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def from_detections(cls, dets: Detections, checked_index: int) -> Regions:
        """Regions for a frame the detector saw, with no tracker in between."""
        n = len(dets)
        return cls(
            dets.xyxy,
            dets.kind,
            np.full(n, Reason.DETECTED, np.uint8),
            np.full(n, -1, np.int32),
            dets.confidence,
            checked_index,
        )


@dataclass(frozen=True, slots=True)
class Anonymized:
    """A frame whose regions were hidden; the only thing a Sink accepts.

    Only ``anonymize.py`` builds one, so a raw frame cannot reach a sink by mistake.
    """

    frame: Frame
    regions: Regions
    whole_frame_hidden: bool = False
    meta: dict = field(default_factory=dict)
