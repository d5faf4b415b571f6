"""The live service: Source → Scheduler → Detector → Tracker → gate → Anonymizer → Sinks.

Threads, all owned here and stopped in flow order:
- ``source:<camera>``  (io/source.py) decodes and hands frames over, newest first;
- ``infer:<group>``    gathers frames of every camera sharing one detector configuration into a
                       batch (up to ``max_batch``, or what arrived within ``max_wait_ms``), runs
                       the detector once for them, and routes results back per camera in order;
- ``publish:<camera>`` tracks, asks the fail-closed gate, anonymizes, and writes to the sinks.

No raw frame can reach a sink: sinks take only ``Anonymized``, which only the Anonymizer makes,
and ``GuardedSinks`` re-checks the gate's stamp before every write.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edgeblur.anonymize import Anonymizer
from edgeblur.config import CameraConfig, ServiceConfig
from edgeblur.detect import Detector
from edgeblur.gate import GateSettings, Verdict, judge
from edgeblur.io.sink import Sink
from edgeblur.io.source import Source
from edgeblur.metrics import CameraMetrics, Metrics
from edgeblur.secrets import redact
from edgeblur.shots import CutDetector
from edgeblur.track import TrackConfig as TrackerSettings
from edgeblur.track import Tracker
from edgeblur.types import Anonymized, Detections, Frame, Kind, Reason, Regions

log = logging.getLogger(__name__)

NO_REGIONS = Regions.from_detections(Detections.empty(), -1)
PUBLISH_QUEUE = 4  # frames waiting for a camera's publisher; more is latency, not throughput
READY_WINDOW_S = 5.0  # /readyz: every enabled camera published within this long


@dataclass(frozen=True, slots=True)
class Work:
    """One frame on its way to the publisher, with what the detector said about it."""

    frame: Frame
    detections: Detections | None  # None: the detector did not run on this frame
    failed: bool = False
    cut: bool = False  # a new shot starts here: old tracks and old detections vouch for nothing


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
        anonymizer: Anonymizer,
        sinks: GuardedSinks,
        metrics: CameraMetrics,
        stage_metrics: Metrics,
    ):
        self.cam = cam
        self.name = cam.name
        self.anonymizer = anonymizer
        self.sinks = sinks
        self.metrics = metrics
        self.stage_metrics = stage_metrics
        t = cam.track
        self.tracker = (
            Tracker(
                TrackerSettings(
                    coast_frames=t.coast_frames,
                    iou_threshold=t.iou_threshold,
                    grow_per_frame=t.grow_per_frame,
                )
            )
            if t.enabled
            else None
        )
        fc = cam.fail_closed
        self.gate = GateSettings(
            max_unchecked_s=fc.max_unchecked_ms / 1000,
            max_latency_s=fc.max_latency_ms / 1000,
            tracking=t.enabled,
        )
        self.queue: queue.Queue[Work] = queue.Queue(maxsize=PUBLISH_QUEUE)
        self.stride = cam.detect.stride
        self.last_detected_t: float | None = None
        self.last_index = -1
        self.last_publish_monotonic: float | None = None
        self.last_error: str | None = None
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
        frame = work.frame
        if work.cut or frame.index < self.last_index:
            # A new shot, or the source restarted its numbering: old tracks mean nothing, and
            # only a detection on this frame or later may vouch for what follows.
            self.last_detected_t = None
            if self.tracker is not None:
                self.tracker.reset()
        self.last_index = frame.index
        dets = None if work.failed else work.detections
        if dets is not None:
            self.last_detected_t = frame.t_decoded
            for kind in (Kind.FACE, Kind.PLATE):
                n = int((dets.kind == kind).sum())
                if n:
                    self.metrics.detections[kind.name.lower()].inc(n)
        if self.tracker is None:
            return Regions.from_detections(dets, frame.index) if dets is not None else NO_REGIONS
        t0 = time.perf_counter()
        regions = self.tracker.update(dets, frame.index, period=self.stride)
        self.stage_metrics.stage("track").observe(time.perf_counter() - t0)
        self.metrics.tracks_active.set(self.tracker.active_tracks)
        return regions

    def handle(self, work: Work) -> None:
        frame = work.frame
        regions = self._regions(work)
        verdict = judge(
            self.gate,
            detected=work.detections is not None and not work.failed,
            failed=work.failed,
            t_decoded=frame.t_decoded,
            last_detected_t=self.last_detected_t,
            now=time.monotonic(),
        )
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


class InferenceWorker:
    """Batches frames of every camera sharing one detector; one thread ``infer:<group>``."""

    def __init__(
        self,
        group: str,
        detector: Detector,
        cameras: list[tuple[Source, Publisher]],
        max_batch: int,
        max_wait_ms: int,
        metrics: Metrics,
    ):
        self.group = group
        self.detector = detector
        self.cameras = cameras
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.metrics = metrics
        self.wake = threading.Event()
        self.busy_since: float | None = None  # monotonic start of the running detector call
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"infer:{group}")
        self._rr = 0  # round-robin start, so no camera is always first into a full batch
        self._cuts: dict[str, CutDetector] = {pub.name: CutDetector() for _src, pub in cameras}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def stalled_for(self, now: float) -> float:
        return 0.0 if self.busy_since is None else now - self.busy_since

    def _gather(self) -> list[tuple[Frame, Publisher]]:
        """Up to max_batch frames; waits at most max_wait_s after the first one arrived."""
        batch: list[tuple[Frame, Publisher]] = []
        first_at: float | None = None
        while not self._stop.is_set():
            self.wake.clear()
            n = len(self.cameras)
            for k in range(n):
                source, pub = self.cameras[(self._rr + k) % n]
                while len(batch) < self.max_batch:
                    frame = source.queue.get(0)
                    if frame is None:
                        break
                    batch.append((frame, pub))
            self._rr = (self._rr + 1) % max(1, n)
            if batch and first_at is None:
                first_at = time.monotonic()
            if len(batch) >= self.max_batch:
                return batch
            if first_at is not None:
                left = self.max_wait_s - (time.monotonic() - first_at)
                if left <= 0:
                    return batch
                self.wake.wait(left)
            else:
                self.wake.wait(0.1)
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._gather()
            if not batch:
                continue
            # A cut frame is always detected, whatever the stride: tracks end at the cut.
            cuts = {id(f): self._cuts[p.name].is_cut(f.image) for f, p in batch}
            todo = [(f, p) for f, p in batch if f.index % p.stride == 0 or cuts[id(f)]]
            results: dict[int, Detections] = {}
            failed = False
            if todo:
                self.busy_since = time.monotonic()
                try:
                    dets = self.detector.detect([f.image for f, _ in todo])
                    for (f, _p), d in zip(todo, dets, strict=True):
                        results[id(f)] = d
                except Exception as exc:  # every frame of the batch is then unchecked
                    failed = True
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("%s: inference failed for %d frame(s)", self.group, len(todo))
                finally:
                    self.busy_since = None
                self.metrics.batch(self.group).observe(len(todo))
                for stage, seconds in self.detector.times.last.items():
                    self.metrics.stage(stage).observe(seconds)
            for frame, pub in batch:
                cut = cuts[id(frame)]
                needs = frame.index % pub.stride == 0 or cut
                pub.offer(
                    Work(frame, results.get(id(frame)), failed=failed and needs, cut=cut)
                    if needs
                    else Work(frame, None)
                )


def group_key(cam: CameraConfig) -> str:
    # Cameras whose detectors are configured alike share one session and one batch.
    d = cam.detect.model_dump(exclude={"stride"})
    return json.dumps(d, sort_keys=True)


class Service:
    """Owns every thread of `edgeblur serve`; built by build.build_service()."""

    def __init__(
        self,
        config: ServiceConfig,
        metrics: Metrics,
        sources: dict[str, Source],
        publishers: dict[str, Publisher],
        workers: list[InferenceWorker],
        stall_s: float = 30.0,
    ):
        self.config = config
        self.metrics = metrics
        self.sources = sources
        self.publishers = publishers
        self.workers = workers
        self.stall_s = stall_s
        self.started_at = time.monotonic()
        self._frames_seen: dict[str, tuple[float, int, float]] = {}  # camera → (t, frames, fps)
        for source in sources.values():
            source.on_decoded = metrics.stage("decode").observe

    def start(self) -> None:
        for w in self.workers:
            w.start()
        for p in self.publishers.values():
            p.start()
        for s in self.sources.values():
            s.start()

    def stop(self) -> None:
        # Flow order: inputs first, so nothing new enters while the rest drains.
        for s in self.sources.values():
            s.stop()
        for w in self.workers:
            w.stop()
        for p in self.publishers.values():
            p.stop()

    def join(self, timeout_s: float) -> list[str]:
        """Waits for every thread, sharing one deadline; returns the names that did not stop."""
        deadline = time.monotonic() + timeout_s
        stuck = []
        owners: list[tuple[str, Any]] = [(f"source:{n}", s) for n, s in self.sources.items()]
        owners += [(f"infer:{w.group}", w) for w in self.workers]
        owners += [(f"publish:{n}", p) for n, p in self.publishers.items()]
        for name, owner in owners:
            if not owner.join(max(0.0, deadline - time.monotonic())):
                stuck.append(name)
        return stuck

    def _fps_in(self, camera: str, frames: int, now: float) -> float:
        """Decoded frames per second since the previous /status call (at least 1 s apart)."""
        t0, f0, fps = self._frames_seen.get(camera, (self.started_at, 0, 0.0))
        if now - t0 >= 1.0:
            fps = (frames - f0) / (now - t0)
            self._frames_seen[camera] = (now, frames, fps)
        return round(fps, 2)

    # -- health ------------------------------------------------------------------------------------
    def alive(self) -> tuple[bool, str]:
        now = time.monotonic()
        for w in self.workers:
            if w.stalled_for(now) > self.stall_s:
                return False, f"inference '{w.group}' stuck for {w.stalled_for(now):.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, dict]:
        now = time.monotonic()
        cams = {}
        for name, pub in self.publishers.items():
            t = pub.last_publish_monotonic
            cams[name] = t is not None and now - t <= READY_WINDOW_S
        return all(cams.values()), {"ready": all(cams.values()), "cameras": cams}

    def status(self) -> dict:
        now = time.monotonic()
        cams = []
        for cam in self.config.cameras:
            if not cam.enabled:
                cams.append({"name": cam.name, "enabled": False})
                continue
            src, pub = self.sources[cam.name], self.publishers[cam.name]
            last = pub.last_publish_monotonic
            cams.append(
                {
                    "name": cam.name,
                    "enabled": True,
                    "url": str(src.settings.url),
                    "state": src.state,
                    "fps_in": self._fps_in(cam.name, src.frames, now),
                    "fps_out": round(pub.rate_out.per_second(now), 2),
                    "frames_in": src.frames,
                    "reconnects": src.reconnects,
                    "last_error": src.last_error or pub.last_error,
                    "last_publish_age_s": None if last is None else round(now - last, 2),
                    "outputs": {
                        "rtsp": _redacted(cam.output.rtsp),
                        "file": str(cam.output.file) if cam.output.file else None,
                        "preview": f"/preview/{cam.name}.mjpg" if cam.output.preview else None,
                    },
                }
            )
        return {
            "uptime_s": round(now - self.started_at, 1),
            "inference": [
                {
                    "group": w.group,
                    "busy_s": round(w.stalled_for(now), 2),
                    "last_error": w.last_error,
                }
                for w in self.workers
            ],
            "cameras": cams,
        }


def _redacted(url: str | None) -> str | None:
    return redact(url) if url else None
