"""Anonymizer: hides regions on a frame it owns (Tracker → Anonymizer → Sink).

Irreversible at every size: the gaussian's sigma scales with the region (a fixed small kernel,
as supervision and many tools use, leaves a large face recognisable and invertible). It is
computed on a down-sampled copy of the region, so a 400-px face costs about what a 40-px one
does. Faces are hidden as ellipses, plates as boxes, both padded. Only this module builds an
``Anonymized``; a sink accepts nothing else.

Privacy zones live here too, so every command that hides (serve, blur, eval, bench) gets them
without touching its frame loop: a ``hide`` zone is hidden on every frame whatever the detector
found, an ``ignore`` zone drops the regions whose centre lies inside it. Zones are polygons in
relative coordinates (0..1) so they survive a change of resolution; their masks are rasterised
once per frame size.
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


class ZoneKind(str, Enum):
    HIDE = "hide"  # always hidden: a neighbour's window, a till
    IGNORE = "ignore"  # detections centred here are not hidden: a poster, a screen


@dataclass(frozen=True, slots=True)
class Zone:
    """A polygon of the frame, corners as (x, y) fractions of width and height (0..1)."""

    kind: ZoneKind
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ZoneKind(self.kind))
        pts = tuple((float(x), float(y)) for x, y in self.points)
        object.__setattr__(self, "points", pts)
        if len(pts) < 3:
            raise ValueError(f"a zone needs at least 3 points, got {len(pts)}")
        if not all(0.0 <= v <= 1.0 for p in pts for v in p):
            raise ValueError("zone points must be fractions of the frame, between 0 and 1")

    def pixels(self, size_wh: tuple[int, int]) -> np.ndarray:
        """(N, 1, 2) int32 corners in pixels of a ``size_wh`` frame, as cv2.fillPoly wants."""
        w, h = size_wh
        xy = np.asarray(self.points, np.float64) * (w, h)
        return np.round(xy).astype(np.int32).reshape(-1, 1, 2)


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
        zones: privacy zones (hide / ignore polygons), applied on every frame.
    """

    method: Method = Method.GAUSSIAN
    strength: float = 0.25
    face_shape: Shape = Shape.ELLIPSE
    plate_shape: Shape = Shape.BOX
    face_pad: float = 0.2
    plate_pad: float = 0.3
    fill_rgb: tuple[int, int, int] = (0, 0, 0)
    zones: tuple[Zone, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "zones", tuple(self.zones))
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
    """Boolean H×W mask of every pixel the anonymizer hides for these regions and the settings'
    zones (for evaluation)."""
    w, h = size_wh
    mask = np.zeros((h, w), dtype=bool)
    wins = []
    if settings.zones:
        zones = rasterise_zones(settings.zones, size_wh)
        regions = outside_ignore(regions, zones.ignore)
        wins = zones.hide
    for win in [*windows(regions, settings, size_wh), *wins]:
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


@dataclass(frozen=True, slots=True)
class ZoneMasks:
    """The zones rasterised for one frame size: a window per hide zone, one ignore mask."""

    hide: list[Window]
    ignore: np.ndarray | None  # H×W bool, None when there is no ignore zone


def rasterise_zones(zones: tuple[Zone, ...], size_wh: tuple[int, int]) -> ZoneMasks:
    w, h = size_wh
    hide: list[Window] = []
    ignore = None
    for zone in zones:
        mask = np.zeros((h, w), np.uint8)
        # fillPoly colours the outline too: a zone's edge pixels are hidden, never left over.
        cv2.fillPoly(mask, [zone.pixels(size_wh)], 1)
        if zone.kind is ZoneKind.IGNORE:
            ignore = mask.astype(bool) if ignore is None else ignore | mask.astype(bool)
            continue
        ys, xs = np.nonzero(mask)
        if not len(xs):
            continue
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        crop = mask[y1:y2, x1:x2].astype(bool)
        hide.append(Window(x1, y1, x2, y2, -1, None if crop.all() else crop, (x2 - x1, y2 - y1)))
    return ZoneMasks(hide, ignore)


def outside_ignore(regions: Regions, ignore: np.ndarray | None) -> Regions:
    """``regions`` without those whose box centre lies in an ignore zone."""
    if ignore is None or not len(regions):
        return regions
    h, w = ignore.shape
    centre = (regions.xyxy[:, :2] + regions.xyxy[:, 2:]) / 2
    cx = np.clip(np.nan_to_num(centre[:, 0]), 0, w - 1).astype(np.int64)
    cy = np.clip(np.nan_to_num(centre[:, 1]), 0, h - 1).astype(np.int64)
    keep = ~ignore[cy, cx]
    if keep.all():
        return regions
    return Regions(
        regions.xyxy[keep],
        regions.kind[keep],
        regions.reason[keep],
        regions.track_id[keep],
        regions.confidence[keep],
        regions.checked_index,
    )


class Anonymizer:
    """Hides regions (and the hide zones) in place on frames this stage owns."""

    def __init__(self, settings: AnonymizeSettings = AnonymizeSettings()):
        self.settings = settings
        # Zone masks per frame size: a camera keeps one size, so this is rasterised once.
        self._zones: dict[tuple[int, int], ZoneMasks] = {}

    def zone_masks(self, size_wh: tuple[int, int]) -> ZoneMasks:
        masks = self._zones.get(size_wh)
        if masks is None:
            if len(self._zones) > 8:  # a source changing size often must not grow this forever
                self._zones.clear()
            masks = self._zones[size_wh] = rasterise_zones(self.settings.zones, size_wh)
        return masks

    def apply(self, frame: Frame, regions: Regions) -> Anonymized:
        """Hide ``regions`` and the hide zones on ``frame.image`` in place and wrap the result
        for a sink; regions centred in an ignore zone are left visible (and dropped)."""
        img = frame.image
        s = self.settings
        zones = self.zone_masks(frame.size_wh) if s.zones else None
        if zones is not None:
            regions = outside_ignore(regions, zones.ignore)
        for win in windows(regions, s, frame.size_wh):
            self._hide(img, win)
        if zones is not None:
            for win in zones.hide:
                self._hide(img, win)
        return Anonymized(frame=frame, regions=regions)

    def _hide(self, img: np.ndarray, win: Window) -> None:
        s = self.settings
        roi = img[win.y1 : win.y2, win.x1 : win.x2]
        if s.method is Method.BOXES:
            colour = {Kind.FACE: (255, 0, 0), Kind.PLATE: (0, 255, 0)}.get(win.kind, (255, 255, 0))
            cv2.rectangle(img, (win.x1, win.y1), (win.x2 - 1, win.y2 - 1), colour, 2)
            return
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
            # copyto with a broadcast mask: several times faster than boolean indexing on the
            # large windows of zones, same pixels.
            np.copyto(roi, hidden, where=win.mask[:, :, None])

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
