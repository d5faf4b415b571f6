"""detect.auto: the cadence that keeps every camera of an inference group at its source rate.

The detector is the one stage whose cost the service can choose: how often each role runs
(stride) and how many full-resolution face tiles go with each run. ``AutoCadence`` walks a
ladder of schedules, from the configured one (level 0, the most thorough) to the cheapest one
whose strides still fit the fail-closed ``max_unchecked_ms``, and moves one rung at a time:

- up (cheaper) when the inference thread was busy more than ``high`` of the last window, or
  when frames were dropped because the pipeline fell behind (two rungs when both);
- down (more thorough) after ``hold_s`` of comfortable load (busy under ``low``, no drops). A
  step down that leads to drops again doubles the hold (up to ``max_hold_s``), so a camera that
  sits on the edge does not oscillate and drop a few frames every cycle.

Fail-closed stays the hard limit: no rung has a stride longer than ``max_unchecked_ms`` allows
at the camera's rate (nor longer than the tracker carries safely, ``MAX_GAP_S``), so when even
the cheapest rung cannot keep up, frames are dropped and counted as before, never published
unchecked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from edgeblur.core.step import Cadence


@dataclass(frozen=True, slots=True)
class AutoSettings:
    high: float = 0.85  # busy share of the inference thread above which the schedule is eased
    low: float = 0.5  # busy share under which a more thorough schedule is tried
    window_s: float = 1.0  # measurement window
    hold_s: float = 4.0  # comfortable time before stepping down
    max_hold_s: float = 120.0
    headroom: float = 0.8  # strides use at most this share of max_unchecked_ms


# The input width of detect.auto's last rungs: a role configured wider (plates at 1280) runs
# here when nothing else is left to ease. 4x cheaper at 1280; what it gives up is the plates
# narrower than about 25 px at this width (about 50 px of a 720p frame, too few to read).
BASE_WIDTH = 640


def ladder(
    base: Mapping[str, Cadence], limit: int | Mapping[str, int], base_width: int = BASE_WIDTH
) -> list[dict[str, Cadence]]:
    """Schedules from the configured one to the cheapest, one change per rung.

    Order of sacrifice: plates' stride first (plates are the costlier model and cars are big),
    then faces' and plates' strides by turns up to ``limit`` (the longest stride the fail-closed
    budget allows at the camera's rate; one for all roles or one per role), then the face tiles
    (small faces are what they are for), and last a role configured wider than ``base_width``
    runs at it (the smallest plates).
    """
    limits = per_role(limit, base)
    rungs = [dict(base)]
    cur = dict(base)
    order = ["plate", "face"]
    while True:
        nxt = dict(cur)
        for role in order:
            c = cur.get(role)
            if c is not None and c.stride < limits[role]:
                nxt[role] = replace(c, stride=c.stride + 1)
                order.reverse()  # the other role next
                break
        if nxt == cur:
            break
        rungs.append(nxt)
        cur = nxt
    face = cur.get("face")
    if face is not None and face.tiles > 1:
        cur = {**cur, "face": replace(face, tiles=1)}
        rungs.append(cur)
    for role in ("plate", "face"):
        c = cur.get(role)
        if c is not None and c.width is not None and c.width > base_width:
            cur = {**cur, role: replace(c, width=base_width)}
            rungs.append(cur)
    return rungs


# The longest gap between two detections of a role detect.auto will choose, whatever the
# fail-closed budget allows: the tracker carries a moving face well over a few frames, not over
# half a second (edgeblur eval, labelled video faces: 31/31 at stride 1 and 2, 30/31 at stride
# 4). Plates move with cars: on plates sliding 12 px a frame (eval --derived moving, tracker
# only, as live) every 3rd frame kept the plates of 25 px and wider, every 4th lost some.
MAX_GAP_S = {"face": 0.16, "plate": 0.12}


def stride_limit(fps: float, max_unchecked_s: float, headroom: float = 0.8) -> dict[str, int]:
    """Each role's longest stride whose gap between detections stays inside the fail-closed
    budget and within what the tracker carries safely (``MAX_GAP_S``)."""
    if fps <= 0:
        return dict.fromkeys(MAX_GAP_S, 1)
    # round() for the tracker's bound: a measured 24.9 fps must not cut 4 frames to 3.
    budget = math.floor(max_unchecked_s * headroom * fps)
    return {role: max(1, min(budget, round(gap * fps))) for role, gap in MAX_GAP_S.items()}


def per_role(limit: int | Mapping[str, int], roles: Mapping[str, object]) -> dict[str, int]:
    """``limit`` for each of ``roles``: one number for all, or a mapping (1 where it is silent)."""
    if isinstance(limit, Mapping):
        return {r: max(1, int(limit.get(r, 1))) for r in roles}
    return dict.fromkeys(roles, max(1, int(limit)))


class AutoCadence:
    """One inference group's schedule; ``observe`` after every detector call."""

    def __init__(
        self,
        base: Mapping[str, Cadence],
        limit: int | Mapping[str, int] = 1,
        settings: AutoSettings = AutoSettings(),
    ):
        self.settings = settings
        self.base = dict(base)
        self.limit = per_role(limit, self.base)
        self.rungs = ladder(self.base, limit)
        self.level = 0
        self._window_start: float | None = None
        self._busy = 0.0
        self._drops_seen: int | None = None
        self._comfortable_since: float | None = None
        self._hold = settings.hold_s
        self._stepped_down_at: float | None = None
        self.busy_share = 0.0  # of the last full window, for /status

    @property
    def cadence(self) -> dict[str, Cadence]:
        return self.rungs[self.level]

    def set_limit(self, limit: int | Mapping[str, int]) -> bool:
        """New longest strides (the cameras' rates became known or changed); True if the
        current schedule changed."""
        limit = per_role(limit, self.base)
        if limit == self.limit:
            return False
        before = self.cadence
        self.limit = limit
        self.rungs = ladder(self.base, limit)
        # Keep the same cost where possible: the first rung at least as cheap as before.
        self.level = next(
            (i for i, r in enumerate(self.rungs) if _cost_key(r) >= _cost_key(before)),
            len(self.rungs) - 1,
        )
        return self.cadence != before

    def observe(self, busy_s: float, drops_total: int, now: float) -> bool:
        """Account one detector call; returns True when the level changed."""
        s = self.settings
        if self._window_start is None:  # the window starts when this call did
            self._window_start, self._drops_seen = now - busy_s, drops_total
        self._busy += busy_s
        elapsed = now - self._window_start
        if elapsed < s.window_s:
            return False
        share = self._busy / elapsed
        dropped = drops_total > (self._drops_seen or 0)
        self.busy_share = round(share, 3)
        self._window_start, self._busy, self._drops_seen = now, 0.0, drops_total
        if share > s.high or dropped:
            self._comfortable_since = None
            if (
                dropped
                and self._stepped_down_at is not None
                and now - self._stepped_down_at < 2 * s.hold_s + s.window_s
            ):
                self._hold = min(s.max_hold_s, self._hold * 2)  # that step down cost frames
            self._stepped_down_at = None
            if self.level + 1 < len(self.rungs):
                # Saturated and dropping: far from fitting, so two rungs (four cameras at 720p
                # need eight; one a second left them dropping for most of that).
                step = 2 if dropped and share > s.high else 1
                self.level = min(len(self.rungs) - 1, self.level + step)
                return True
            return False
        if share < s.low and self.level > 0:
            if self._comfortable_since is None:
                self._comfortable_since = now
            elif now - self._comfortable_since >= self._hold:
                self.level -= 1
                self._comfortable_since = now
                self._stepped_down_at = now
                return True
        else:
            self._comfortable_since = None
        return False


def _cost_key(cadence: Mapping[str, Cadence]) -> tuple[int, int, int]:
    """Larger is cheaper: total stride, then fewer tiles, then narrower inputs."""
    return (
        sum(c.stride for c in cadence.values()),
        -sum(c.tiles for c in cadence.values()),
        -sum(c.width or 0 for c in cadence.values()),
    )
