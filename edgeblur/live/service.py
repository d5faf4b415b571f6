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
import math
import threading
import time
from typing import Any

from edgeblur import __version__
from edgeblur.config import CameraConfig, ServiceConfig
from edgeblur.core.detect import Detector
from edgeblur.core.shots import CutDetector
from edgeblur.io.source import Source
from edgeblur.live.metrics import CameraMetrics, Metrics
from edgeblur.live.publisher import Publisher, Work
from edgeblur.secrets import SecretUrl
from edgeblur.types import Detections, Frame

log = logging.getLogger(__name__)

READY_WINDOW_S = 5.0  # /readyz: every enabled camera published within this long


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
                    self.metrics.stage(stage, self.group).observe(seconds)
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
        self._latency_seen: dict[str, tuple[float, dict[float, float], float | None]] = {}
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

    def _latency_p95_ms(self, camera: str, now: float) -> float | None:
        """p95 of decode → publish over the frames since the previous reading (at least 2 s
        apart), from the latency histogram: the upper bound of the bucket holding it."""
        counts = _buckets(self.metrics.camera(camera).latency)
        t0, c0, p95 = self._latency_seen.get(camera, (self.started_at, {}, None))
        if now - t0 >= 2.0:
            window = {le: n - c0.get(le, 0.0) for le, n in counts.items()}
            total = window.get(math.inf, 0.0)
            if total > 0:
                p95 = next(le for le, n in sorted(window.items()) if n >= 0.95 * total)
                p95 = None if math.isinf(p95) else round(p95 * 1000)
            self._latency_seen[camera] = (now, counts, p95)
        return p95

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
                    "latency_p95_ms": self._latency_p95_ms(cam.name, now),
                    "dropped": _dropped(self.metrics.camera(cam.name)),
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
            "version": __version__,
            "uptime_s": round(now - self.started_at, 1),
            "inference": [
                {
                    "group": w.group,
                    "busy_s": round(w.stalled_for(now), 2),
                    "runtime": _runtimes(w.detector),
                    "last_error": w.last_error,
                }
                for w in self.workers
            ],
            "cameras": cams,
        }


def _redacted(url: SecretUrl | None) -> str | None:
    return str(url) if url else None  # SecretUrl prints redacted


def _buckets(histogram: Any) -> dict[float, float]:
    """Cumulative counts of a histogram child by upper bound (inf included)."""
    return {
        float(s.labels["le"]): s.value
        for family in histogram.collect()
        for s in family.samples
        if s.name.endswith("_bucket")
    }


def _dropped(m: CameraMetrics) -> dict[str, int]:
    """Frames not published, by reason: the source's drops and the pipeline's refusals."""
    out = {r: int(_total(c)) for r, c in m.source_dropped.items()}
    out.update({r: int(_total(c)) for r, c in m.frames.items() if r.startswith("dropped_")})
    return out


def _total(counter: Any) -> float:
    return sum(s.value for f in counter.collect() for s in f.samples if s.name.endswith("_total"))


def _runtimes(detector: Any) -> list[str]:
    """'model: runtime' per role, e.g. 'centerface: CPUExecutionProvider'."""
    out = []
    for spec, _model, runtime in getattr(detector, "_pairs", []):
        providers = getattr(runtime, "providers", None)
        what = providers[0] if providers else type(runtime).__name__
        out.append(f"{spec.path.stem}: {what}")
    return out
