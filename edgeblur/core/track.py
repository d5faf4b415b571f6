"""Tracker: per-camera gap filling between the detector and the Anonymizer.

Place in the flow: Detector → **Tracker** → Anonymizer. One ``Tracker`` per camera, called on that
camera's ``output:<cam>`` thread for every frame in order (not thread-safe). Its only job is
privacy: it never removes or delays a detection, it only ADDS regions, so that a face the
detector misses for a few frames (or skips because of a detection stride) stays hidden.

Why our own small tracker: supervision's ByteTrack returns only boxes matched to a track and drops
low-score ones, and norfair hides a track until it has been seen ``initialization_delay`` times;
both trade recall for clean identities, the wrong way round for anonymization.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgeblur.models.ops import box_iou
from edgeblur.types import Detections, Reason, Regions

_INF = math.inf
# TrackSettings field: (low, high, low end open, integer)
_RANGES = {
    "coast_frames": (0, _INF, False, True),
    "iou_threshold": (0.0, 1.0, True, False),
    "center_gate": (0.0, _INF, False, False),
    "grow_per_frame": (0.0, 1.0, False, False),
    "max_grow": (0.0, _INF, False, False),
    "max_tracks": (1, _INF, False, True),
    "velocity_smoothing": (0.0, 1.0, True, False),
}


@dataclass(frozen=True, slots=True)
class TrackSettings:
    """Tracker settings; every count is in frames, never in updates.

    Attributes:
        coast_frames: frames a track keeps being hidden after its last detection (12 ≈ 0.5 s at
            25 fps). More hides longer gaps but leaves stale boxes behind a face that left.
        iou_threshold: least IoU between a predicted track box and a detection of the same kind
            to associate them. Low by default: a wrong match costs a velocity, a missed one a track.
        center_gate: centre-distance fallback for small fast boxes that no longer overlap:
            match if the centres are within ``center_gate`` box sizes (√area) per frame since the
            last detection, up to one stride. 0 disables it.
        grow_per_frame: fraction of w and h added per frame without detection.
        max_grow: cap on that growth (0.5: at most 1.5 times the last detected size).
        max_tracks: bound on live tracks; the stalest coasting tracks go first.
        velocity_smoothing: weight of the newest velocity measurement (1: no smoothing).
    """

    coast_frames: int = 12
    iou_threshold: float = 0.1
    center_gate: float = 1.0
    grow_per_frame: float = 0.05
    max_grow: float = 0.5
    max_tracks: int = 256
    velocity_smoothing: float = 0.5

    def __post_init__(self) -> None:
        # NaN fails every comparison, so it is rejected too; bool is no int here.
        for name, (lo, hi, lo_open, integer) in _RANGES.items():
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, int if integer else int | float)
            if not (ok and (lo < v if lo_open else lo <= v) and v <= hi):
                interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi == _INF else ']'}"
                noun = "an int" if integer else "a number"
                raise ValueError(f"TrackSettings.{name} must be {noun} in {interval}, got {v!r}")


def _xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    out = np.empty((len(xyxy), 4), np.float64)
    out[:, 0:2] = (xyxy[:, 0:2] + xyxy[:, 2:4]) / 2
    out[:, 2:4] = xyxy[:, 2:4] - xyxy[:, 0:2]
    return out


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1).astype(np.float32)


class Tracker:
    """Per-camera tracker that fills detection gaps; see the module docstring.

    Rules: every detection is output at once (reason DETECTED, no confirmation delay); a track
    that loses its detection is output at its constant-velocity prediction, grown by
    ``grow_per_frame`` per frame (capped), for ``coast_frames`` frames (reason TRACKED, confidence
    of its last detection), then dropped. Detections only match tracks of the same kind.

    Association is greedy by best score (IoU, then the centre-distance fallback below any IoU
    match), not Hungarian: scipy is not a dependency, boxes of one kind rarely compete for the
    same track, and a wrong pairing only costs a velocity estimate, never a hidden region, since
    every detection is output whatever it matches.
    """

    def __init__(self, config: TrackSettings | None = None) -> None:
        self.config = config or TrackSettings()
        self._next_id = 0  # never reused, not even after reset(): ids stay unique in logs
        self.reset()

    def reset(self) -> None:
        """Forget every track and the last checked frame (shot cut, reconnect, new file)."""
        self._ids = np.zeros(0, np.int32)
        self._kind = np.zeros(0, np.uint8)
        self._box = np.zeros((0, 4), np.float64)  # cx, cy, w, h at the last detection
        self._vel = np.zeros((0, 2), np.float64)  # px per frame
        self._has_vel = np.zeros(0, bool)
        self._conf = np.zeros(0, np.float32)
        self._seen = np.zeros(0, np.int64)  # frame index of the last detection
        self._frame: int | None = None
        self._checked = -1

    @property
    def active_tracks(self) -> int:
        """Number of live tracks (detected or coasting)."""
        return len(self._ids)

    def update(
        self,
        detections: Detections | None,
        frame_index: int,
        period: int | Mapping[int, int] = 1,
    ) -> Regions:
        """Regions to hide on frame ``frame_index``.

        Args:
            detections: the detector's boxes for this frame; ``None`` when the detector did not
                run on it (stride, dropped inference): tracks are only predicted. An empty
                ``Detections`` means it ran and saw nothing, which updates ``checked_index``.
            frame_index: this camera's frame index; never decreases between resets.
            period: detection stride in frames, one for all kinds or one per kind (faces and
                plates may be detected on different frames). A track always survives until the
                next detector run of its kind (budget ``max(coast_frames, period - 1)``), and the
                centre gate widens with it.

        Returns:
            Every detection in input order (DETECTED), then the coasting tracks (TRACKED).
        """
        frame_index = operator.index(frame_index)
        periods = _periods(period)
        if self._frame is not None and frame_index < self._frame:
            raise ValueError(
                f"frame_index went back from {self._frame} to {frame_index}; call reset() first"
            )
        self._frame = frame_index
        track_period = periods[self._kind]
        budget = np.maximum(self.config.coast_frames, track_period - 1)
        if detections is None:
            self._keep(self._seen >= frame_index - budget)
            return self._regions(None, np.zeros(0, np.int32), frame_index)

        self._checked = frame_index
        det_ids = np.full(len(detections), -1, np.int32)
        t_idx, d_idx = self._associate(detections, frame_index, track_period)
        self._absorb(t_idx, d_idx, detections, frame_index)
        det_ids[d_idx] = self._ids[t_idx]

        new = np.setdiff1d(np.arange(len(detections)), d_idx)
        new_ids = np.arange(self._next_id, self._next_id + len(new), dtype=np.int32)
        self._next_id += len(new)
        det_ids[new] = new_ids
        for name, arr in (
            ("_ids", new_ids),
            ("_kind", detections.kind[new]),
            ("_box", _xyxy_to_cxcywh(detections.xyxy[new])),
            ("_vel", np.zeros((len(new), 2))),
            ("_has_vel", np.zeros(len(new), bool)),
            ("_conf", detections.confidence[new]),
            ("_seen", np.full(len(new), frame_index, np.int64)),
        ):
            setattr(self, name, np.concatenate([getattr(self, name), arr]))

        budget = np.maximum(self.config.coast_frames, periods[self._kind] - 1)
        self._keep(self._seen >= frame_index - budget)
        if self.active_tracks > self.config.max_tracks:
            # Stalest first, then least confident; the detections themselves are still output.
            order = np.lexsort((-self._conf, frame_index - self._seen))
            keep = np.zeros(self.active_tracks, bool)
            keep[order[: self.config.max_tracks]] = True
            self._keep(keep)
            det_ids[~np.isin(det_ids, self._ids)] = -1
        return self._regions(detections, det_ids, frame_index)

    def _predict(self, frame_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (M, 4) xyxy boxes of all tracks at ``frame_index``, and frames since seen."""
        k = (frame_index - self._seen).astype(np.float64)
        box = self._box.copy()
        box[:, 0:2] += self._vel * k[:, None]
        grow = np.minimum(self.config.grow_per_frame * k, self.config.max_grow)
        box[:, 2:4] *= (1.0 + grow)[:, None]
        return _cxcywh_to_xyxy(box), k

    def _associate(
        self, dets: Detections, frame_index: int, period: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Greedy one-to-one matching; returns matched track and detection indices."""
        empty = np.zeros(0, np.intp)
        if not self.active_tracks or not len(dets):
            return empty, empty
        cfg = self.config
        pred, k = self._predict(frame_index)
        iou = box_iou(pred.astype(np.float64), dets.xyxy.astype(np.float64))
        pc = (pred[:, :2] + pred[:, 2:]) / 2
        dc = (dets.xyxy[:, :2] + dets.xyxy[:, 2:]) / 2
        dist = np.linalg.norm(pc[:, None, :] - dc[None, :, :], axis=2)
        size_t = np.sqrt(np.prod(pred[:, 2:] - pred[:, :2], axis=1).clip(1.0))
        size_d = np.sqrt(np.prod(dets.xyxy[:, 2:] - dets.xyxy[:, :2], axis=1).clip(1.0))
        # A box moves about one stride's worth of frames between two detector runs.
        steps = np.clip(k, 1, np.maximum(period, 1))[:, None]
        gate = cfg.center_gate * np.maximum(size_t[:, None], size_d[None, :]) * steps
        near = dist <= gate
        # Fallback scores stay in [0, iou_threshold / 2), so any IoU match outranks them.
        fallback = 0.5 * cfg.iou_threshold * (1.0 - dist / np.maximum(gate, 1e-9))
        score = np.where(iou >= cfg.iou_threshold, iou, fallback)
        valid = (self._kind[:, None] == dets.kind[None, :]) & ((iou >= cfg.iou_threshold) | near)
        rows, cols = np.nonzero(valid)
        order = np.argsort(-score[rows, cols], kind="stable")
        used_t = np.zeros(self.active_tracks, bool)
        used_d = np.zeros(len(dets), bool)
        t_out: list[int] = []
        d_out: list[int] = []
        for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
            if used_t[r] or used_d[c]:
                continue
            used_t[r] = used_d[c] = True
            t_out.append(r)
            d_out.append(c)
            if len(t_out) == min(len(used_t), len(used_d)):
                break
        return np.asarray(t_out, np.intp), np.asarray(d_out, np.intp)

    def _absorb(self, t: np.ndarray, d: np.ndarray, dets: Detections, frame_index: int) -> None:
        """Move matched tracks to their detections and update their velocity."""
        if not len(t):
            return
        box = _xyxy_to_cxcywh(dets.xyxy[d])
        k = (frame_index - self._seen[t]).astype(np.float64)
        moved = k > 0  # a second update of the same frame measures no velocity
        meas = (box[:, 0:2] - self._box[t, 0:2]) / np.maximum(k, 1.0)[:, None]
        a = self.config.velocity_smoothing
        smoothed = np.where(self._has_vel[t, None], a * meas + (1 - a) * self._vel[t], meas)
        self._vel[t] = np.where(moved[:, None], smoothed, self._vel[t])
        self._has_vel[t] |= moved
        self._box[t] = box
        self._conf[t] = dets.confidence[d]
        self._seen[t] = frame_index

    def _keep(self, mask: np.ndarray) -> None:
        for name in ("_ids", "_kind", "_box", "_vel", "_has_vel", "_conf", "_seen"):
            setattr(self, name, getattr(self, name)[mask])

    def _regions(self, dets: Detections | None, det_ids: np.ndarray, frame_index: int) -> Regions:
        # Every track without a detection in this call coasts, even one detected by an earlier
        # call for the same frame (face and plate models may report separately).
        pred, _ = self._predict(frame_index)
        coast = ~np.isin(self._ids, det_ids)
        dets = Detections.empty() if dets is None else dets
        n_det, n_coast = len(dets), int(coast.sum())
        return Regions(
            xyxy=np.concatenate([dets.xyxy, pred[coast]]),
            kind=np.concatenate([dets.kind, self._kind[coast]]),
            reason=np.repeat(
                np.array([Reason.DETECTED, Reason.TRACKED], np.uint8), [n_det, n_coast]
            ),
            track_id=np.concatenate([det_ids, self._ids[coast]]),
            confidence=np.concatenate([dets.confidence, self._conf[coast]]),
            checked_index=self._checked,
        )


def _periods(period: int | Mapping[int, int]) -> np.ndarray:
    """Stride per kind as a lookup table indexed by a track's kind (uint8)."""
    items = period.items() if isinstance(period, Mapping) else [(None, period)]
    table = np.ones(256, np.int64)
    for kind, p in items:
        p = operator.index(p)
        if p < 1:
            raise ValueError(f"period must be an int >= 1, got {p}")
        if kind is None:
            table[:] = p
        else:
            table[int(kind)] = p
    return table


class Backfill:
    """What a file can add by looking ahead (files only): backward fill and interpolation.

    Live streams cannot look back; a file can.

    - Backward fill: a face usually enters the picture (small, blurred, half-occluded) a few
      frames before the detector first fires on it. For each ``track_id`` >= 0, the frames
      ``first - frames`` .. ``first - 1`` (not before the shot's first frame) get a region at its
      first box.
    - Interpolation: between two detections of a track at most ``frames`` + 1 frames apart (a
      detection stride), each frame also gets the box on the straight line between them. The
      tracker's forward prediction needs two detections to know the velocity, so a plate that
      moves 12 px a frame outruns it on the frames after its first detection; the line does not.

    Added regions are grown by ``grow_per_frame`` of w and h per frame of distance to the
    nearest detection (capped at ``max_grow``), reason TRACKED, with the detection's kind and
    confidence. Regions with ``track_id`` -1 are left alone; the input is not modified.

    Streaming, so a file's second pass can start before its first ends: ``push`` the frames of
    one shot in order and get each frame back once ``frames`` later frames were seen (the last
    one that could add to it); ``flush`` at a cut or the end returns the rest and starts a shot.
    """

    def __init__(self, frames: int = 6, grow_per_frame: float = 0.05, max_grow: float = 0.5):
        frames = operator.index(frames)
        if frames < 0:
            raise ValueError(f"frames must be an int >= 0, got {frames}")
        self.frames, self.grow_per_frame, self.max_grow = frames, grow_per_frame, max_grow
        self._seen: set[int] = set()
        self._last: dict[int, tuple[int, np.ndarray]] = {}  # track → (frame, box) last detected
        self._n = 0  # frames pushed in this shot
        # Frames not final yet, each with what later frames add: (xyxy, source, row, distance).
        self._pending: deque[tuple[Regions, list[_Extra]]] = deque()

    def push(self, regions: Regions) -> list[Regions]:
        """Take the next frame; return the frames now final (oldest first, at most one)."""
        n = self._n
        detected = regions.reason == Reason.DETECTED
        for j, tid in enumerate(regions.track_id.tolist()):
            if tid < 0:
                continue
            box = regions.xyxy[j].astype(np.float64)
            if tid not in self._seen:
                self._seen.add(tid)
                for distance, (_, extra) in enumerate(reversed(self._pending), start=1):
                    extra.append((box, regions, j, distance))
            if not detected[j]:
                continue
            last = self._last.get(tid)
            if last is not None and 1 < n - last[0] <= len(self._pending) + 1:
                i, before = last
                for m in range(i + 1, n):
                    t = (m - i) / (n - i)
                    _, extra = self._pending[len(self._pending) - (n - m)]
                    extra.append(((1 - t) * before + t * box, regions, j, min(m - i, n - m)))
            self._last[tid] = (n, box)
        self._n += 1
        self._pending.append((regions, []))
        done = []
        while len(self._pending) > self.frames:
            done.append(self._finish(*self._pending.popleft()))
        return done

    def flush(self) -> list[Regions]:
        """The end of a shot: every frame still held, final; the next push starts a new shot."""
        done = [self._finish(*p) for p in self._pending]
        self._pending.clear()
        self._seen.clear()
        self._last.clear()
        self._n = 0
        return done

    def _finish(self, regions: Regions, src: list[_Extra]) -> Regions:
        if not src:
            return regions
        box = _xyxy_to_cxcywh(np.stack([b for b, _, _, _ in src]))
        distance = np.array([d for _, _, _, d in src], np.float64)
        box[:, 2:4] *= 1.0 + np.minimum(self.grow_per_frame * distance, self.max_grow)[:, None]

        def column(name: str) -> np.ndarray:
            return np.concatenate(
                [getattr(regions, name), [getattr(s, name)[j] for _, s, j, _ in src]]
            )

        return Regions(
            xyxy=np.concatenate([regions.xyxy, _cxcywh_to_xyxy(box).astype(regions.xyxy.dtype)]),
            kind=column("kind"),
            reason=np.concatenate([regions.reason, np.full(len(src), Reason.TRACKED)]),
            track_id=column("track_id"),
            confidence=column("confidence"),
            checked_index=regions.checked_index,
        )


# A region a later frame adds to a pending one: box, the Regions and row it comes from, and its
# distance in frames to that detection.
_Extra = tuple[np.ndarray, Regions, int, int]


def backfill(
    regions_per_frame: list[Regions],
    frames: int = 6,
    grow_per_frame: float = 0.05,
    max_grow: float = 0.5,
) -> list[Regions]:
    """``Backfill`` over one shot held whole: one ``Regions`` per consecutive frame, from
    ``Tracker``; returns new ``Regions`` (the backfilled ones appended after the existing)."""
    fill = Backfill(frames, grow_per_frame, max_grow)
    out = [r for regions in regions_per_frame for r in fill.push(regions)]
    return out + fill.flush()
