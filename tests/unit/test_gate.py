"""The fail-closed rule, frame by frame: what may be published and what never is."""

from __future__ import annotations

import pytest

from edgeblur.core.gate import GateSettings, Verdict, judge

S = GateSettings(max_unchecked_s=0.5, max_latency_s=2.0, tracking=True)


@pytest.mark.parametrize(
    ("case", "kwargs", "expected"),
    [
        (
            "detected now",
            dict(detected=True, failed=False, t_decoded=10.0, last_detected_t=10.0),
            Verdict.PUBLISH,
        ),
        (
            "tracked, detection 0.4 s old",
            dict(detected=False, failed=False, t_decoded=10.4, last_detected_t=10.0),
            Verdict.PUBLISH,
        ),
        (
            "tracked, detection exactly 0.5 s old",
            dict(detected=False, failed=False, t_decoded=10.5, last_detected_t=10.0),
            Verdict.PUBLISH,
        ),
        (
            "tracked, detection 0.6 s old",
            dict(detected=False, failed=False, t_decoded=10.6, last_detected_t=10.0),
            Verdict.UNCHECKED,
        ),
        (
            "never detected",
            dict(detected=False, failed=False, t_decoded=10.0, last_detected_t=None),
            Verdict.UNCHECKED,
        ),
        (
            "detection newer than the frame",
            dict(detected=False, failed=False, t_decoded=9.0, last_detected_t=10.0),
            Verdict.UNCHECKED,
        ),
        (
            "inference failed",
            dict(detected=False, failed=True, t_decoded=10.0, last_detected_t=10.0),
            Verdict.ERROR,
        ),
        (
            "failed wins over detected",
            dict(detected=True, failed=True, t_decoded=10.0, last_detected_t=10.0),
            Verdict.ERROR,
        ),
    ],
)
def test_verdicts(case, kwargs, expected):
    assert judge(S, now=10.7, **kwargs) is expected, case


def test_late_frames_are_dropped_even_if_detected():
    kw = dict(detected=True, failed=False, t_decoded=10.0, last_detected_t=10.0)
    assert judge(S, now=12.0, **kw) is Verdict.PUBLISH
    assert judge(S, now=12.01, **kw) is Verdict.LATE


def test_without_tracking_only_detected_frames_pass():
    s = GateSettings(max_unchecked_s=0.5, max_latency_s=2.0, tracking=False)
    kw = dict(failed=False, t_decoded=10.1, last_detected_t=10.0, now=10.2)
    assert judge(s, detected=False, **kw) is Verdict.UNCHECKED
    assert judge(s, detected=True, **kw) is Verdict.PUBLISH


def test_zero_budget_allows_only_detected_frames():
    s = GateSettings(max_unchecked_s=0.0, max_latency_s=2.0, tracking=True)
    assert (
        judge(s, detected=False, failed=False, t_decoded=10.04, last_detected_t=10.0, now=10.1)
        is Verdict.UNCHECKED
    )
