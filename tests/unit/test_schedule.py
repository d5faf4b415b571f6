"""detect.auto: the ladder of schedules and the controller that walks it (no clocks: time is
passed in)."""

from __future__ import annotations

from edgeblur.core.step import Cadence
from edgeblur.live.schedule import AutoCadence, AutoSettings, ladder, stride_limit

BASE = {"face": Cadence(stride=1, tiles=2), "plate": Cadence(stride=2)}


def test_ladder_eases_plates_first_then_alternates_and_drops_tiles_last():
    rungs = ladder(BASE, limit=4)
    strides = [(r["face"].stride, r["plate"].stride, r["face"].tiles) for r in rungs]
    assert strides == [(1, 2, 2), (1, 3, 2), (2, 3, 2), (2, 4, 2), (3, 4, 2), (4, 4, 2), (4, 4, 1)]


def test_the_last_rung_runs_a_role_configured_wider_than_the_base_at_the_base_width():
    base = {"face": Cadence(stride=1, tiles=2, width=640), "plate": Cadence(stride=1, width=1280)}
    rungs = ladder(base, limit=2)
    # Strides, then tiles, keep the widths; only the very last rung narrows the plates.
    assert [r["plate"].width for r in rungs[:-1]] == [1280] * (len(rungs) - 1)
    assert rungs[-2]["face"].tiles == 1
    assert rungs[-1] == {**rungs[-2], "plate": Cadence(stride=2, width=640)}
    assert all(r["face"].width == 640 for r in rungs)
    # Nothing configured wider than the base: no such rung.
    assert ladder({"plate": Cadence(stride=1, width=640)}, limit=1) == [
        {"plate": Cadence(stride=1, width=640)}
    ]


def test_no_rung_exceeds_the_fail_closed_budget_or_what_the_tracker_carries_per_role():
    # Faces 0.16 s, plates 0.12 s: what the tracker carries (eval, moving plates).
    limit = stride_limit(fps=25.0, max_unchecked_s=0.5)
    assert limit == {"face": 4, "plate": 3}
    assert stride_limit(fps=25.0, max_unchecked_s=0.1) == {"face": 2, "plate": 2}  # 0.08 s
    rungs = ladder(BASE, limit)
    assert all(r[role].stride <= limit[role] for r in rungs for role in r)
    assert rungs[-1]["face"].stride == 4 and rungs[-1]["plate"].stride == 3
    # Rate unknown: detect every frame.
    assert stride_limit(fps=0.0, max_unchecked_s=0.5) == {"face": 1, "plate": 1}


class Load:
    """A detector call every 40 ms on a made-up clock, with a busy share and drops."""

    def __init__(self, auto: AutoCadence):
        self.auto, self.t, self.drops = auto, 100.0, 0

    def run(self, seconds: float, busy_share: float, drops_at: frozenset[int] = frozenset()):
        """Levels after each second."""
        levels = []
        for k in range(round(seconds / 0.04)):
            self.t += 0.04
            self.drops += k in drops_at
            self.auto.observe(0.04 * busy_share, self.drops, self.t)
            if k % 25 == 24:
                levels.append(self.auto.level)
        return levels


def test_overload_climbs_one_rung_per_window_and_comfort_steps_back_after_the_hold():
    auto = AutoCadence(BASE, limit=4, settings=AutoSettings(hold_s=3.0))
    load = Load(auto)
    load.run(3.2, busy_share=1.0)
    assert auto.level == 3  # one rung per 1-s window
    levels = load.run(10.0, busy_share=0.2)
    assert levels[0] == 3  # not at once
    assert levels[-1] < 3  # but after the hold
    assert auto.cadence == auto.rungs[auto.level]


def test_saturated_and_dropping_climbs_two_rungs_per_window():
    drops = frozenset(range(0, 80, 5))
    auto = AutoCadence(BASE, limit=4)
    Load(auto).run(3.1, busy_share=1.0, drops_at=drops)
    assert auto.level == 6
    calm = AutoCadence(BASE, limit=4)
    Load(calm).run(3.1, busy_share=0.6, drops_at=drops)
    assert calm.level == 3  # drops without a saturated detector: one rung at a time


def test_drops_after_a_step_down_double_the_hold():
    auto = AutoCadence(BASE, limit=4, settings=AutoSettings(hold_s=2.0))
    load = Load(auto)
    load.run(2.0, busy_share=1.0)
    load.run(3.5, busy_share=0.2)  # steps down once
    assert auto._hold == 2.0
    load.run(1.0, busy_share=0.6, drops_at=frozenset({5}))  # and frames are dropped again
    assert auto._hold == 4.0


def test_a_busy_but_dropless_middle_band_holds_the_level():
    auto = AutoCadence(BASE, limit=4)
    load = Load(auto)
    load.run(2.0, busy_share=1.0)
    levels = load.run(10.0, busy_share=0.7)
    assert levels[0] > 0 and len(set(levels[1:])) == 1, levels


def test_a_new_limit_keeps_the_cost_and_never_the_base_if_it_was_eased():
    auto = AutoCadence(BASE, limit=1)
    assert auto.cadence == BASE  # rate unknown: the configured schedule
    auto.set_limit(10)
    assert auto.level == 0
    Load(auto).run(3.0, busy_share=1.0)
    before = auto.cadence
    auto.set_limit(6)
    assert sum(c.stride for c in auto.cadence.values()) >= sum(
        min(c.stride, 6) for c in before.values()
    )
