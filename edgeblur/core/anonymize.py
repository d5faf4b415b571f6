"""Anonymizer: hides regions on a frame it owns (Tracker → Anonymizer → Sink).

Irreversible at every size: the gaussian's sigma scales with the region (a fixed small kernel,
as supervision and many tools use, leaves a large face recognisable and invertible). It is
computed on a down-sampled copy of the region, so a 400-px face costs about what a 40-px one
does. Faces are hidden as ellipses, plates as boxes, both padded. Only this module builds an
``Anonymized``; a sink accepts nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from edgeblur.types import Anonymized, Frame, Kind, Regions


class Method(str, Enum):
    GAUSSIAN = "gaussian"
    PIXELATE = "pixelate"
    FILL = "fill"
    BOXES = (
        "boxes"  # draw outlines instead of hiding: for checking detections, never for publishing
    )


class Shape(str, Enum):
    ELLIPSE = "ellipse"
    BOX = "box"


@dataclass(frozen=True, slots=True)
class AnonymizeSettings:
    """How regions are hidden.

    Attributes:
        method: gaussian, pixelate, fill, or boxes (outlines, for checking).
        strength: 0..1. Gaussian: sigma as a fraction of the region's larger side (0.25 at the
            default keeps nothing but the mean colour and a gradient). Pixelate: 1 / blocks across
            the region (0.125 → 8 blocks).
        face_shape / plate_shape: ellipse or box.
        face_pad / plate_pad: padding added on each side, as a fraction of the box width and height
            (0.2 grows a face box by 40% in each direction; deface's mask scale is 1.3).
        fill_rgb: colour of the fill method.
    """

    method: Method = Method.GAUSSIAN
    strength: float = 0.25
    face_shape: Shape = Shape.ELLIPSE
    plate_shape: Shape = Shape.BOX
    face_pad: float = 0.2
    plate_pad: float = 0.3
    fill_rgb: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        # Accept plain strings ("box") as well as the enums: a typo fails here, not silently.
        for name, enum in (("method", Method), ("face_shape", Shape), ("plate_shape", Shape)):
            object.__setattr__(self, name, enum(getattr(self, name)))
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        for name in ("face_pad", "plate_pad"):
            if not 0.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be in [0, 2], got {getattr(self, name)}")


def padded_boxes(
    regions: Regions, settings: AnonymizeSettings, size_wh: tuple[int, int] | None = None
) -> np.ndarray:
    """Integer (N, 4) boxes padded by kind; clipped to ``size_wh`` if given (then empty ones
    have x2 <= x1)."""
    xyxy = regions.xyxy.astype(np.float32, copy=True)
    pad = np.where(regions.kind == Kind.FACE, settings.face_pad, settings.plate_pad).astype(
        np.float32
    )
    wh = xyxy[:, 2:] - xyxy[:, :2]
    xyxy[:, :2] -= wh * pad[:, None]
    xyxy[:, 2:] += wh * pad[:, None]
    out = np.empty_like(xyxy, dtype=np.int64)
    out[:, :2] = np.floor(np.nan_to_num(xyxy[:, :2], nan=0.0))
    out[:, 2:] = np.ceil(np.nan_to_num(xyxy[:, 2:], nan=0.0))
    if size_wh is not None:
        w, h = size_wh
        np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    return out


def shape_mask(w: int, h: int, shape: Shape) -> np.ndarray | None:
    """Boolean h×w mask of an ellipse inscribed in the box; None means the whole box."""
    if shape is Shape.BOX:
        return None
    y = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (h / 2)
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)
    return (y[:, None] ** 2 + x[None, :] ** 2) <= 1.0


@dataclass(frozen=True, slots=True)
class Window:
    """The visible part of one padded region: frame slice, its mask, and the full box size."""

    x1: int
    y1: int
    x2: int
    y2: int
    kind: int
    mask: np.ndarray | None  # None: the whole window
    full_wh: tuple[int, int]


def windows(
    regions: Regions, settings: AnonymizeSettings, size_wh: tuple[int, int]
) -> list[Window]:
    """Visible windows of the padded regions. The ellipse is fitted to the whole padded box and
    then cut at the frame border, so a face half outside the frame is hidden exactly as much as
    the same face inside it (fitting after clipping would leave its edge visible)."""
    w, h = size_wh
    out = []
    for (bx1, by1, bx2, by2), kind in zip(
        padded_boxes(regions, settings), regions.kind, strict=True
    ):
        x1, y1, x2, y2 = max(bx1, 0), max(by1, 0), min(bx2, w), min(by2, h)
        if x2 <= x1 or y2 <= y1:
            continue
        mask = None
        if _shape_for(kind, settings) is Shape.ELLIPSE:
            # The ellipse of the whole box, evaluated only on the visible rows and columns.
            hw, hh = (bx2 - bx1) / 2, (by2 - by1) / 2
            ys = (np.arange(y1, y2, dtype=np.float32) + 0.5 - (by1 + hh)) / hh
            xs = (np.arange(x1, x2, dtype=np.float32) + 0.5 - (bx1 + hw)) / hw
            mask = (ys[:, None] ** 2 + xs[None, :] ** 2) <= 1.0
        out.append(
            Window(int(x1), int(y1), int(x2), int(y2), int(kind), mask, (bx2 - bx1, by2 - by1))
        )
    return out


def hidden_mask(
    regions: Regions, settings: AnonymizeSettings, size_wh: tuple[int, int]
) -> np.ndarray:
    """Boolean H×W mask of every pixel the anonymizer hides for these regions (for evaluation)."""
    w, h = size_wh
    mask = np.zeros((h, w), dtype=bool)
    for win in windows(regions, settings, size_wh):
        if win.mask is None:
            mask[win.y1 : win.y2, win.x1 : win.x2] = True
        else:
            mask[win.y1 : win.y2, win.x1 : win.x2] |= win.mask
    return mask


def _shape_for(kind: int, settings: AnonymizeSettings) -> Shape:
    return settings.face_shape if kind == Kind.FACE else settings.plate_shape


def _gaussian(roi: np.ndarray, strength: float, full_side: int) -> np.ndarray:
    h, w = roi.shape[:2]
    # Sigma follows the whole region, not its visible part: a face cut by the border is blurred
    # as strongly as the face is large.
    sigma = strength * full_side
    # Blur a copy down-sampled so that sigma is ~3 px there: same look, a fraction of the cost.
    factor = max(1.0, sigma / 3.0)
    sw, sh = max(1, round(w / factor)), max(1, round(h / factor))
    small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _pixelate(roi: np.ndarray, strength: float, full_wh: tuple[int, int]) -> np.ndarray:
    h, w = roi.shape[:2]
    blocks = max(1, round(1.0 / strength))
    # Blocks keep the size they have on the whole region when the region is cut by the border.
    bw = max(1, min(w, round(blocks * w / max(1, full_wh[0]))))
    bh = max(1, min(h, round(blocks * h / max(1, full_wh[1]))))
    small = cv2.resize(roi, (bw, bh), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


class Anonymizer:
    """Hides regions in place on frames this stage owns."""

    def __init__(self, settings: AnonymizeSettings = AnonymizeSettings()):
        self.settings = settings

    def apply(self, frame: Frame, regions: Regions) -> Anonymized:
        """Hide ``regions`` on ``frame.image`` in place and wrap the result for a sink."""
        img = frame.image
        s = self.settings
        for win in windows(regions, s, frame.size_wh):
            roi = img[win.y1 : win.y2, win.x1 : win.x2]
            if s.method is Method.BOXES:
                colour = (255, 0, 0) if win.kind == Kind.FACE else (0, 255, 0)
                cv2.rectangle(img, (win.x1, win.y1), (win.x2 - 1, win.y2 - 1), colour, 2)
                continue
            if s.method is Method.GAUSSIAN:
                hidden = _gaussian(roi, s.strength, max(win.full_wh))
            elif s.method is Method.PIXELATE:
                hidden = _pixelate(roi, s.strength, win.full_wh)
            else:
                hidden = np.empty_like(roi)
                hidden[:] = s.fill_rgb
            if win.mask is None:
                roi[:] = hidden
            else:
                roi[win.mask] = hidden[win.mask]
        return Anonymized(frame=frame, regions=regions)

    def hide_whole(self, frame: Frame, regions: Regions) -> Anonymized:
        """Fail-closed fallback: hide the whole frame (used when it could not be checked)."""
        img = frame.image
        h, w = img.shape[:2]
        img[:] = cv2.resize(
            cv2.resize(img, (max(1, w // 32), max(1, h // 32)), interpolation=cv2.INTER_AREA),
            (w, h),
            interpolation=cv2.INTER_LINEAR,
        )
        return Anonymized(frame=frame, regions=regions, whole_frame_hidden=True)
