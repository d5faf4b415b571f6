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
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from edgeblur import __version__
from edgeblur.config import CameraConfig, ServiceConfig
from edgeblur.core.detect import Detector
from edgeblur.core.step import Cadence, Planner
from edgeblur.io.source import Source
from edgeblur.live.metrics import CameraMetrics, Metrics
from edgeblur.live.publisher import Publisher, Work
from edgeblur.live.schedule import AutoCadence, stride_limit
from edgeblur.secrets import SecretUrl
from edgeblur.types import Detections, Frame

log = logging.getLogger(__name__)

READY_WINDOW_S = 5.0  # /readyz: every enabled camera published within this long


class InferenceWorker:
    """Batches frames of every camera sharing one detector; one thread ``infer:<group>``.

    Per camera it owns the ``Planner`` (cut detection, which roles and tiles are due), so the
    detector runs only on what is due; with ``auto`` it also owns the group's ``AutoCadence``.
    """

    def __init__(
        self,
        group: str,
        detector: Detector,
        cameras: list[tuple[Source, Publisher]],
        max_batch: int,
        max_wait_ms: int,
        metrics: Metrics,
        cadence: Mapping[str, Cadence] | None = None,
        auto: AutoCadence | None = None,
        max_unchecked_s: Mapping[str, float] | None = None,
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
        base = dict(cadence or {role: Cadence() for role in detector.role_names})
        self.base = base
        self.auto = auto
        self.planners: dict[str, Planner] = {
            pub.name: Planner(base, phase=k) for k, (_src, pub) in enumerate(cameras)
        }
        self._max_unchecked_s = dict(max_unchecked_s or {})
        self._rate: dict[str, tuple[int, float, float]] = {}  # camera → (index, t, fps)

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

    def step(self, batch: list[tuple[Frame, Publisher]]) -> None:
        """Plan, detect what is due, and hand every frame to its publisher (in order)."""
        plans = [self.planners[pub.name].plan(f.index, f.image) for f, pub in batch]
        todo = [k for k, plan in enumerate(plans) if plan.due]
        results: dict[int, Detections] = {}
        failed = False
        busy = 0.0
        if todo:
            t0 = time.monotonic()
            self.busy_since = t0
            try:
                dets = self.detector.detect(
                    [batch[k][0].image for k in todo], [plans[k] for k in todo]
                )
                results = dict(zip(todo, dets, strict=True))
            except Exception as exc:  # every frame of the batch is then unchecked
                failed = True
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s: inference failed for %d frame(s)", self.group, len(todo))
            finally:
                self.busy_since = None
                busy = time.monotonic() - t0
            self.metrics.batch(self.group).observe(len(todo))
            for stage, seconds in self.detector.times.last.items():
                self.metrics.stage(stage, self.group).observe(seconds)
        for k, (frame, pub) in enumerate(batch):
            plan = plans[k]
            pub.offer(Work(frame, plan, results.get(k), failed=failed and bool(plan.due)))
        self._measure_rates(batch)
        if self.auto is not None:
            self._adapt(busy)

    def _run(self) -> None:
        self._export_schedule()
        while not self._stop.is_set():
            batch = self._gather()
            if batch:
                self.step(batch)

    # -- detect.auto -----------------------------------------------------------------------------
    def _measure_rates(self, batch: list[tuple[Frame, Publisher]]) -> None:
        """Each camera's decoded rate, from frame indices (drops do not lower it)."""
        for frame, pub in batch:
            idx, t, fps = self._rate.get(pub.name, (frame.index, frame.t_decoded, 0.0))
            if frame.index > idx and frame.t_decoded - t >= 1.0:
                fps = (frame.index - idx) / (frame.t_decoded - t)
                self._rate[pub.name] = (frame.index, frame.t_decoded, fps)
            elif pub.name not in self._rate or frame.index < idx:
                self._rate[pub.name] = (frame.index, frame.t_decoded, fps)

    def _limit(self, camera: str) -> dict[str, int]:
        fps = self._rate.get(camera, (0, 0.0, 0.0))[2]
        return stride_limit(fps, self._max_unchecked_s.get(camera, 0.5))

    def _drops(self) -> int:
        return sum(src.queue.dropped + pub.overflows for src, pub in self.cameras)

    def _adapt(self, busy_s: float) -> None:
        assert self.auto is not None
        if any(self._rate.get(pub.name, (0, 0.0, 0.0))[2] <= 0 for _s, pub in self.cameras):
            return  # a camera's rate is not known yet, so neither is the longest safe stride
        before = self.auto.level
        limits = [self._limit(pub.name) for _s, pub in self.cameras]
        changed = self.auto.set_limit({r: max(lim[r] for lim in limits) for r in limits[0]})
        changed |= self.auto.observe(busy_s, self._drops(), time.monotonic())
        if changed:
            for _src, pub in self.cameras:
                self.planners[pub.name].set_cadence(self.cadence_of(pub.name))
            # Easing is worth a warning (fewer detections, still fail-closed); easing back is not.
            level = logging.WARNING if self.auto.level > before else logging.INFO
            log.log(
                level, "%s: detect.auto level %d: %s", self.group, self.auto.level, self.describe()
            )
            self._export_schedule()

    @property
    def cadence(self) -> dict[str, Cadence]:
        """The group's schedule in force: detect.auto's rung, else the configured one."""
        return self.auto.cadence if self.auto is not None else self.base

    def _export_schedule(self) -> None:
        cadence = self.cadence
        level = 0 if self.auto is None else self.auto.level
        self.metrics.schedule(
            self.group, level, {r: (c.stride, c.tiles, c.width) for r, c in cadence.items()}
        )

    def cadence_of(self, camera: str) -> dict[str, Cadence]:
        """The schedule in force for one camera: the group's rung, capped by its rate."""
        cadence = self.cadence
        limit = self._limit(camera) if self.auto is not None else None
        if limit is None:
            return dict(cadence)
        return {r: replace(c, stride=min(c.stride, limit.get(r, 1))) for r, c in cadence.items()}

    def describe(self) -> dict[str, Any]:
        """For /status: the schedule per role (strides may differ per camera by its rate)."""
        cadence = self.cadence
        return {
            "auto": self.auto is not None,
            "level": 0 if self.auto is None else self.auto.level,
            "busy_share": None if self.auto is None else self.auto.busy_share,
            "roles": {
                r: {
                    "stride": c.stride,
                    "tiles": c.tiles,
                    "tiles_per_run": c.tiles_per_run,
                    "input_width": c.width,
                }
                for r, c in cadence.items()
            },
        }


def group_key(cam: CameraConfig) -> str:
    # Cameras whose detectors and schedules are configured alike share one session, one batch
    # and one detect.auto ladder.
    return json.dumps(cam.detect.model_dump(), sort_keys=True)


class Service:
    """Owns every thread of `edgeblur serve`; built by live/build.py build_service()."""

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
        self.metrics.set_runtimes(self.runtime_rows())
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

    def runtime_rows(self) -> list[tuple[str, str, str, str]]:
        """(group, model, runtime, precision) per role of every group, for edgeblur_runtime_info."""
        return [(w.group, *row) for w in self.workers for row in runtimes(w.detector)]

    def detectors(self) -> dict[str, tuple[str, Detector]]:
        """Group key → (group name, Detector) of every worker, for a reload to keep."""
        return {group_key(w.cameras[0][1].cam): (w.group, w.detector) for w in self.workers}

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
        """Ready: every camera published recently and none has an output down (a full disk
        stops a recording; the operator must hear of it, not find out at the next replay)."""
        now = time.monotonic()
        cams = {}
        down = {}
        for name, pub in self.publishers.items():
            t = pub.last_publish_monotonic
            outputs_down = pub.sinks.down()
            cams[name] = t is not None and now - t <= READY_WINDOW_S and not outputs_down
            if outputs_down:
                down[name] = outputs_down
        body: dict = {"ready": all(cams.values()), "cameras": cams}
        if down:
            body["outputs_down"] = down
        return all(cams.values()), body

    def status(self) -> dict:
        now = time.monotonic()
        cams = []
        for cam in self.config.cameras:
            if not cam.enabled:
                cams.append({"name": cam.name, "enabled": False})
                continue
            src, pub = self.sources[cam.name], self.publishers[cam.name]
            last = pub.last_publish_monotonic
            down = pub.sinks.down()  # an output down is the news, before any older error
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
                    "last_error": next(iter(down.values()), None)
                    or src.last_error
                    or pub.last_error,
                    "outputs_down": down,
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
                    "schedule": w.describe(),
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


def runtimes(detector: Any) -> list[tuple[str, str, str]]:
    """(model, runtime, precision) per role, from what each runtime says it runs on."""
    return [
        (spec.path.stem, *runtime.describe())
        for spec, _model, runtime in getattr(detector, "_pairs", [])
    ]


def _runtimes(detector: Any) -> list[str]:
    """'model: runtime precision' per role, e.g. 'centerface: onnxruntime-cpu fp32'."""
    return [f"{model}: {runtime} {precision}" for model, runtime, precision in runtimes(detector)]
