"""The per-frame decision, one implementation for `serve`, `blur`, `eval` and `bench`.

Two halves, because the live service splits them across threads:

- ``Planner`` (before inference, needs the pixels): is this frame a shot cut, which detector
  roles are due on it (each role has its own stride: plates move with cars, faces with people),
  and which full-resolution tiles of the frame the face model also looks at (in rotation, so
  every part of a large frame is seen at full resolution every few detections).
- ``Checker`` (after inference): detections of the roles that ran → tracked ``Regions`` for
  every frame, and the fail-closed verdict, which compares the frame with the *stalest* role's
  newest detection: a frame is checked only when every role has vouched for it recently.

Both are plain objects owned by one thread each; nothing here knows threads, files or RTSP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from edgeblur.core.gate import GateSettings, Verdict, judge
from edgeblur.core.shots import CutDetector
from edgeblur.core.track import Tracker, TrackSettings
from edgeblur.types import Detections, Frame, Kind, Regions

ROLE_KIND = {"face": Kind.FACE, "plate": Kind.PLATE}
NO_REGIONS = Regions.from_detections(Detections.empty(), -1)


@dataclass(frozen=True, slots=True)
class Cadence:
    """How often one role runs on a video.

    Attributes:
        stride: detect every k-th frame; the tracker carries the boxes in between.
        tiles: the role's tile grid (tiles × tiles crops); 1 = none.
        tiles_per_run: tiles looked at per detection besides the full frame, taken in rotation;
            0 = all of them every time (stills always run all of them).
        width: the network input width the role runs at; None = its configured one.
    """

    stride: int = 1
    tiles: int = 1
    tiles_per_run: int = 1
    width: int | None = None

    def __post_init__(self) -> None:
        if (
            self.stride < 1
            or self.tiles < 1
            or self.tiles_per_run < 0
            or (self.width is not None and self.width < 32)
        ):
            raise ValueError(f"invalid cadence {self}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What the detector does on one frame.

    Attributes:
        index: the frame's index.
        due: roles that run on this frame.
        cut: a new shot starts here (every role is due; old tracks vouch for nothing).
        tiles: role → indices into its tile grid to run besides the full frame.
        strides: role → stride in force, which the tracker needs to carry boxes far enough.
        widths: role → network input width in force, where the schedule sets one.
    """

    index: int
    due: frozenset[str]
    cut: bool = False
    tiles: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    strides: Mapping[str, int] = field(default_factory=dict)
    widths: Mapping[str, int] = field(default_factory=dict)


ALL_TILES = None  # Detector.detect(..., plans=None): every role, every tile (stills)


class Planner:
    """One camera's or one file's schedule; call ``plan`` for every decoded frame in order."""

    def __init__(self, cadence: Mapping[str, Cadence], cuts: bool = True, phase: int = 0):
        self.cadence = dict(cadence)
        self._cuts = CutDetector() if cuts else None
        self._runs = dict.fromkeys(self.cadence, 0)  # detections so far per role: tile rotation
        # Spreads the detector's work over frames: cameras of one group start at different
        # phases, and plates run half a stride after faces, so no frame carries every model of
        # every camera at once (the same number of runs, smaller latency peaks).
        self.phase = phase
        self._last = -1
        self._ran: dict[str, int] = {}  # role → index of the frame it last ran on

    def set_cadence(self, cadence: Mapping[str, Cadence]) -> None:
        """A new schedule (the auto scheduler's); applies from the next frame."""
        self.cadence = dict(cadence)
        for role in self.cadence:
            self._runs.setdefault(role, 0)

    def reset(self) -> None:
        if self._cuts is not None:
            self._cuts = CutDetector()
        self._last = -1

    def _offset(self, role: str, stride: int) -> int:
        return (self.phase + (stride // 2 if role == "plate" else 0)) % stride

    def plan(self, index: int, image: np.ndarray | None) -> Plan:
        cut = bool(self._cuts is not None and image is not None and self._cuts.is_cut(image))
        # The first frame, and the first after the source restarted its numbering, run every
        # role: nothing before vouches for them.
        start = index <= self._last or self._last < 0
        self._last = index
        if start:
            # The next runs come a phase early, so cameras and roles fall on different frames.
            self._ran = {r: index - self._offset(r, c.stride) for r, c in self.cadence.items()}
        # Due by the frames since the role last ran, not by index % stride: frames the source
        # dropped (a busy machine) never reach the planner, and a role whose turn fell on a
        # dropped frame would wait a whole stride more, past the fail-closed budget.
        due = frozenset(
            role
            for role, c in self.cadence.items()
            if cut or start or index - self._ran.get(role, index - c.stride) >= c.stride
        )
        if not start:  # the start's runs keep the phase set above
            for role in due:
                self._ran[role] = index
        tiles: dict[str, tuple[int, ...]] = {}
        for role in due:
            c = self.cadence[role]
            n = c.tiles * c.tiles
            if n > 1:
                per = n if c.tiles_per_run == 0 else min(n, c.tiles_per_run)
                start = self._runs[role] * per
                tiles[role] = tuple(sorted({(start + k) % n for k in range(per)}))
            self._runs[role] += 1
        strides = {role: c.stride for role, c in self.cadence.items()}
        widths = {role: c.width for role, c in self.cadence.items() if c.width is not None}
        return Plan(index, due, cut, tiles, strides, widths)


@dataclass(frozen=True, slots=True)
class CheckSettings:
    track: TrackSettings | None  # None: no tracker, only detected frames are checked
    gate: GateSettings = field(default_factory=GateSettings)


class Checker:
    """One camera's or one file's tracker and gate state."""

    def __init__(self, roles: list[str], settings: CheckSettings):
        self.roles = list(roles)
        self.settings = settings
        self.tracker = Tracker(settings.track) if settings.track is not None else None
        self.last_detected_t: dict[str, float] = {}  # role → decode time of its newest detection
        self.last_index = -1
        self._last_regions = NO_REGIONS

    def reset(self) -> None:
        """A new shot, a restarted source, a new file: nothing old vouches for what follows."""
        self.last_detected_t.clear()
        self._last_regions = NO_REGIONS
        if self.tracker is not None:
            self.tracker.reset()

    def regions(
        self, frame: Frame, plan: Plan, found: Detections | None, failed: bool = False
    ) -> Regions:
        """What to hide on ``frame``. ``found``: the detections of the roles in ``plan.due``
        (None when none ran, or when inference failed: then only tracks are carried)."""
        if plan.cut or frame.index < self.last_index:
            self.reset()
        self.last_index = frame.index
        dets = None if failed or not plan.due else found
        if dets is not None:
            for role in plan.due:
                self.last_detected_t[role] = frame.t_decoded
        if self.tracker is None:
            if dets is None:
                # No tracker: a frame the detector skipped reuses the last detected boxes (files);
                # live, the gate refuses such a frame anyway.
                return self._last_regions
            self._last_regions = Regions.from_detections(dets, frame.index)
            return self._last_regions
        periods = {int(ROLE_KIND[r]): plan.strides.get(r, 1) for r in self.roles if r in ROLE_KIND}
        return self.tracker.update(dets, frame.index, period=periods or 1)

    def verdict(self, frame: Frame, plan: Plan, failed: bool, now: float) -> Verdict:
        """The fail-closed gate for this frame, judged against the stalest role."""
        detected = not failed and bool(plan.due) and plan.due >= set(self.roles)
        times = [self.last_detected_t.get(r) for r in self.roles]
        known = [t for t in times if t is not None]
        stalest = min(known) if known and len(known) == len(times) else None
        return judge(
            self.settings.gate,
            detected=detected,
            failed=failed,
            t_decoded=frame.t_decoded,
            last_detected_t=stalest,
            now=now,
        )
