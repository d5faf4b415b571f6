"""Per camera, after inference: Tracker → fail-closed gate → Anonymizer → sinks.

One ``Publisher`` thread per camera (``publish:<camera>``) takes the inference thread's results
in frame order. ``GuardedSinks`` is the last check before pixels leave: only an ``Anonymized``
frame that the gate approved (or one hidden whole) is written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from edgeblur.config import CameraConfig
from edgeblur.core.anonymize import Anonymizer
from edgeblur.core.gate import Verdict
from edgeblur.core.step import Checker, Plan
from edgeblur.io.sink import Sink
from edgeblur.live.metrics import CameraMetrics, Metrics
from edgeblur.types import Anonymized, Detections, Frame, Kind, Reason, Regions

log = logging.getLogger(__name__)

# Frames waiting for a camera's publisher; more is latency, not throughput. It must hold a whole
# inference batch of one camera: with max_batch 8 and a queue of 4, a batch overflowed it and
# 24% of frames were dropped (edgeblur bench, 720p, pace block).
PUBLISH_QUEUE = 4


@dataclass(frozen=True, slots=True)
class Work:
    """One frame on its way to the publisher, with its plan and what the detector said."""

    frame: Frame
    plan: Plan
    detections: Detections | None  # of the roles in plan.due; None: none ran on this frame
    failed: bool = False  # inference of this frame's due roles raised or was lost


class GuardedSinks:
    """The last check before pixels leave: only gate-approved ``Anonymized`` items pass.

    The gate stamps ``meta["verdict"]``; anything else reaching here is a bug, counted in
    ``edgeblur_unchecked_frames_published_total`` (which tests assert stays 0) and not written.
    """

    def __init__(self, camera: str, sinks: list[Sink], metrics: CameraMetrics):
        self.camera = camera
        self.sinks = sinks
        self.metrics = metrics

    def write(self, item: Anonymized) -> bool:
        ok = isinstance(item, Anonymized) and (
            item.whole_frame_hidden or item.meta.get("verdict") is Verdict.PUBLISH
        )
        if not ok:
            self.metrics.unchecked_published.inc()
            log.error(
                "%s: refused to publish an unchecked frame (a bug; please report)", self.camera
            )
            return False
        for sink in self.sinks:
            sink.write(item)
        return True

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # one broken sink must not keep the others open
                log.exception("%s: closing %s failed", self.camera, type(sink).__name__)


@dataclass
class Rate:
    """Events per second over a sliding window, for /status (metrics use counters)."""

    window_s: float = 5.0
    times: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    def tick(self, t: float) -> None:
        self.times.append(t)

    def per_second(self, now: float) -> float:
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
        return len(self.times) / self.window_s


class Publisher:
    """Per camera: tracker, gate, anonymizer and sinks, on one thread ``publish:<camera>``."""

    def __init__(
        self,
        cam: CameraConfig,
        checker: Checker,
        anonymizer: Anonymizer,
        sinks: GuardedSinks,
        metrics: CameraMetrics,
        stage_metrics: Metrics,
        queue_size: int = PUBLISH_QUEUE,
    ):
        self.cam = cam
        self.name = cam.name
        self.anonymizer = anonymizer
        self.sinks = sinks
        self.metrics = metrics
        self.stage_metrics = stage_metrics
        self.checker = checker
        self.queue: queue.Queue[Work] = queue.Queue(maxsize=max(PUBLISH_QUEUE, queue_size))
        self.last_publish_monotonic: float | None = None
        self.last_error: str | None = None
        self.overflows = 0
        self.rate_out = Rate()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish:{self.name}")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def offer(self, work: Work) -> None:
        """Called by the inference thread; never blocks it. A full queue drops the frame."""
        try:
            self.queue.put_nowait(work)
        except queue.Full:
            self.overflows += 1  # detect.auto reads it: the pipeline fell behind
            self.metrics.frames[Verdict.LATE.value].inc()

    # -- the loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                work = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.handle(work)
            except Exception as exc:  # never let one frame kill the camera; it is not published
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s: publishing frame %d failed", self.name, work.frame.index)
                self.metrics.frames[Verdict.ERROR.value].inc()
        self.sinks.close()

    def _regions(self, work: Work) -> Regions:
        dets = None if work.failed else work.detections
        if dets is not None:
            for kind in (Kind.FACE, Kind.PLATE):
                n = int((dets.kind == kind).sum())
                if n:
                    self.metrics.detections[kind.name.lower()].inc(n)
        t0 = time.perf_counter()
        regions = self.checker.regions(work.frame, work.plan, dets, failed=work.failed)
        if self.checker.tracker is not None:
            self.stage_metrics.stage("track").observe(time.perf_counter() - t0)
            self.metrics.tracks_active.set(self.checker.tracker.active_tracks)
        return regions

    def handle(self, work: Work) -> None:
        frame = work.frame
        regions = self._regions(work)
        verdict = self.checker.verdict(frame, work.plan, work.failed, now=time.monotonic())
        if verdict is Verdict.PUBLISH:
            t0 = time.perf_counter()
            try:
                item = self.anonymizer.apply(frame, regions)
            except Exception as exc:
                self.last_error = f"anonymizer: {type(exc).__name__}: {exc}"
                log.exception("%s: anonymizer failed on frame %d", self.name, frame.index)
                verdict = Verdict.ERROR
            else:
                item.meta["verdict"] = verdict
                self.stage_metrics.stage("anonymize").observe(time.perf_counter() - t0)
                self._count_regions(regions)
                self._publish(item, "published")
                return
        self._refuse(frame, regions, verdict)

    def _refuse(self, frame: Frame, regions: Regions, verdict: Verdict) -> None:
        """Fail closed: the frame is dropped, or (policy blur_frame) hidden whole."""
        if self.cam.fail_closed.policy == "blur_frame" and verdict is not Verdict.LATE:
            try:
                self._publish(self.anonymizer.hide_whole(frame, regions), "blurred_whole")
                return
            except Exception:
                log.exception("%s: hiding the whole frame failed; dropping it", self.name)
        self.metrics.frames[verdict.value].inc()

    def _publish(self, item: Anonymized, result: str) -> None:
        t0 = time.perf_counter()
        if not self.sinks.write(item):
            return
        now = time.monotonic()
        self.stage_metrics.stage("encode").observe(time.perf_counter() - t0)
        self.metrics.frames[result].inc()
        self.metrics.latency.observe(now - item.frame.t_decoded)
        self.metrics.last_publish.set(time.time())
        self.last_publish_monotonic = now
        self.rate_out.tick(now)

    def _count_regions(self, regions: Regions) -> None:
        for kind in (Kind.FACE, Kind.PLATE):
            for reason in (Reason.DETECTED, Reason.TRACKED):
                n = int(((regions.kind == kind) & (regions.reason == reason)).sum())
                if n:
                    self.metrics.regions[(kind.name.lower(), reason.name.lower())].inc(n)
