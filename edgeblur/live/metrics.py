"""Prometheus metrics: one registry per process and a handle of bound children per camera.

Stages never import prometheus_client. ``pipeline.py`` builds one ``Metrics``, asks it for a
``CameraMetrics`` per camera and passes that handle down, so a stage only does
``m.frames["published"].inc()``. The metric names below are what the Grafana dashboard queries:
renaming one breaks it.

Every label value comes from a fixed tuple in this module (``FRAME_RESULTS``, ``STAGES``, …) or
is a camera/model name; a URL is never a label, because camera URLs carry passwords. Rates are
left to PromQL (count, don't gauge fps), and every series of a camera exists from ``camera()``
on, so a camera that never produced a frame reads 0 instead of being absent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics import MetricWrapperBase

from edgeblur import __version__
from edgeblur.types import Kind, Reason

log = logging.getLogger(__name__)

# Decode → published latency and per-stage times: 5 ms resolves one fast stage, 2 s is far past
# any frame a viewer would still call live.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

SOURCE_DROP_REASONS = ("overrun", "decode_error")
# dropped_output: the gate passed the frame but no output took it (every output down).
FRAME_RESULTS = (
    "published",
    "dropped_unchecked",
    "dropped_late",
    "dropped_error",
    "blurred_whole",
    "dropped_output",
)
RECONNECT_STAGES = ("source", "sink")
# Derived from the enums the tracker emits, so a new Kind cannot go uncounted.
KINDS = tuple(k.name.lower() for k in Kind)  # face, plate
REGION_REASONS = tuple(r.name.lower() for r in Reason)  # detected, tracked
STAGES = ("decode", "preprocess", "inference", "postprocess", "track", "anonymize", "encode")
QUEUES = ("source", "publish")
SINKS = ("rtsp", "file")
ROLES = ("face", "plate")  # detector roles, as the schedule gauges label them
RELOAD_RESULTS = ("applied", "unchanged", "failed")
OUTPUTS = ("rtsp", "file", "preview")


def check_label(what: str, value: str) -> str:
    """Refuse anything that could be a URL: a label is exported verbatim to every scraper."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if "://" in value or "@" in value:
        # Do not echo the value: it may hold a password.
        raise ValueError(f"{what} looks like a URL; use the camera's name, never its URL")
    return value


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(eq=False)
class CameraMetrics:
    """The series of one camera, already bound to its label values.

    Counters (``.inc(n)``): source_frames, source_dropped[reason], frames[result],
    unchecked_published, reconnects[stage], detections[kind], regions[(kind, reason)],
    sink_bytes[sink], output_frames[output] (delivered), output_errors[output].
    Gauges (``.set(v)``): up (1 streaming, 0 not), last_publish (unix
    seconds, ``set_to_current_time()``), tracks_active. Histogram (``.observe(seconds)``):
    latency, decode → published. Keys are the tuples at the top of this module.
    """

    name: str
    source_frames: Counter
    source_dropped: dict[str, Counter]
    frames: dict[str, Counter]
    unchecked_published: Counter
    reconnects: dict[str, Counter]
    up: Gauge
    last_publish: Gauge
    detections: dict[str, Counter]
    regions: dict[tuple[str, str], Counter]
    tracks_active: Gauge
    latency: Histogram
    sink_bytes: dict[str, Counter]
    output_frames: dict[str, Counter] = field(default_factory=dict, repr=False)
    output_errors: dict[str, Counter] = field(default_factory=dict, repr=False)
    queue_depth: dict[str, Gauge] = field(default_factory=dict, repr=False)

    def set_queue_depth(self, queue: str, fn: Callable[[], float]) -> None:
        """Read ``fn()`` at every scrape, so the depth is current without a thread polling it.

        ``fn`` runs on the HTTP thread: keep it cheap and lock-free (``Queue.qsize``). If it
        raises, the series reads NaN rather than failing the whole scrape.
        """
        _check_choice("queue", queue, QUEUES)
        camera = self.name

        def read() -> float:
            try:
                return float(fn())
            except Exception:  # a scrape must not die because one queue went away
                log.debug("%s: reading %s queue depth failed", camera, queue, exc_info=True)
                return math.nan

        self.queue_depth[queue].set_function(read)


class Metrics:
    """All metric families of the process, registered on one ``CollectorRegistry``.

    Thread-safe: cameras may be added and removed while the HTTP thread scrapes.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        # A registry per instance (never the global one): tests and embedded uses get
        # clean, independent series.
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # No *_created series: they double the exposition and no dashboard reads them (this is
        # process-wide in prometheus_client, hence here, before any family is made).
        disable_created_metrics()
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ...
        ProcessCollector(registry=r)
        self._lock = threading.Lock()
        self._cameras: dict[str, CameraMetrics] = {}
        self._series: dict[str, list[tuple[MetricWrapperBase, tuple[str, ...]]]] = {}
        self._batches: dict[str, Histogram] = {}

        Info("edgeblur_build", "Version of edgeblur serving these metrics.", registry=r).info(
            {"version": __version__}
        )
        self.source_frames = Counter(
            "edgeblur_source_frames_total",
            "Frames decoded from a camera.",
            ["camera"],
            registry=r,
        )
        self.source_dropped = Counter(
            "edgeblur_source_dropped_frames_total",
            "Frames the source discarded: overrun (consumer too slow, oldest dropped) or "
            "decode_error.",
            ["camera", "reason"],
            registry=r,
        )
        self.frames = Counter(
            "edgeblur_frames_total",
            "Frames leaving the pipeline, by what happened to them.",
            ["camera", "result"],
            registry=r,
        )
        self.unchecked_published = Counter(
            "edgeblur_unchecked_frames_published_total",
            "Frames that reached a sink without a detector check. Must stay 0; alert on any "
            "increase.",
            ["camera"],
            registry=r,
        )
        self.reconnects = Counter(
            "edgeblur_reconnects_total",
            "Reconnect attempts after a failure, by stage (source or sink).",
            ["camera", "stage"],
            registry=r,
        )
        self.up = Gauge(
            "edgeblur_camera_up",
            "1 while the camera's source is streaming, else 0.",
            ["camera"],
            registry=r,
        )
        self.last_publish = Gauge(
            "edgeblur_last_publish_timestamp_seconds",
            "Unix time of the camera's last published frame (0: never).",
            ["camera"],
            registry=r,
        )
        self.detections = Counter(
            "edgeblur_detections_total",
            "Detector boxes, by kind.",
            ["camera", "kind"],
            registry=r,
        )
        self.regions = Counter(
            "edgeblur_regions_hidden_total",
            "Regions hidden, by kind and reason (detected on this frame, or tracked over a gap).",
            ["camera", "kind", "reason"],
            registry=r,
        )
        self.tracks_active = Gauge(
            "edgeblur_tracks_active",
            "Tracks the camera's tracker currently holds.",
            ["camera"],
            registry=r,
        )
        self.latency = Histogram(
            "edgeblur_latency_seconds",
            "Time from decode to publish of a frame.",
            ["camera"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "edgeblur_stage_seconds",
            "Time spent in one pipeline stage. preprocess, inference and postprocess: per batch "
            "of a detector group (group label); decode, track, anonymize and encode: per frame "
            "(group empty).",
            ["stage", "group"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "edgeblur_inference_batch_size",
            "Frames per model call.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.detect_stride = Gauge(
            "edgeblur_detect_stride",
            "Frames between detector runs of a role now (detect.auto may raise it under load).",
            ["group", "role"],
            registry=r,
        )
        self.detect_tiles = Gauge(
            "edgeblur_detect_tiles",
            "Tile grid (tiles x tiles) a role also looks at in rotation now; 1 = none.",
            ["group", "role"],
            registry=r,
        )
        self.detect_width = Gauge(
            "edgeblur_detect_input_width",
            "Network input width a role runs at now (detect.auto's last rungs lower it).",
            ["group", "role"],
            registry=r,
        )
        self.detect_auto_level = Gauge(
            "edgeblur_detect_auto_level",
            "detect.auto's rung: 0 = the configured schedule, higher = detecting less often.",
            ["group"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "edgeblur_queue_depth",
            "Frames waiting in a camera's queue, read at scrape time.",
            ["camera", "queue"],
            registry=r,
        )
        self.sink_bytes = Counter(
            "edgeblur_sink_bytes_total",
            "Encoded bytes written by a sink; bitrate is rate(...) * 8.",
            ["camera", "sink"],
            registry=r,
        )
        self.runtime_info = Gauge(
            "edgeblur_runtime_info",
            "1 per detector group and model: the runtime it actually runs on (tensorrt, "
            "onnxruntime-cuda, onnxruntime-cpu, openvino-cpu, openvino-gpu) and its precision.",
            ["group", "model", "runtime", "precision"],
            registry=r,
        )
        self.reloads = Counter(
            "edgeblur_reloads_total",
            "SIGHUP reloads of the camera file: applied, unchanged (no camera differed) or "
            "failed (the previous configuration kept running).",
            ["result"],
            registry=r,
        )
        self._reloads = {x: self.reloads.labels(result=x) for x in RELOAD_RESULTS}
        # "Published" counts a frame delivered to at least one output; these say which.
        self.output_frames = Counter(
            "edgeblur_output_frames_total",
            "Frames an output took (file: written; rtsp: queued while its server was not known "
            "down; preview: shown).",
            ["camera", "output"],
            registry=r,
        )
        self.output_errors = Counter(
            "edgeblur_output_errors_total",
            "Frames an output failed to take (a write error, e.g. a full disk); alert on any.",
            ["camera", "output"],
            registry=r,
        )
        self._stages = {(s, ""): self.stage_seconds.labels(stage=s, group="") for s in STAGES}

    def camera(self, name: str) -> CameraMetrics:
        """The handle of camera ``name``, creating every one of its series at 0 (idempotent)."""
        check_label("camera name", name)
        with self._lock:
            existing = self._cameras.get(name)
            if existing is not None:
                return existing
            series: list[tuple[MetricWrapperBase, tuple[str, ...]]] = []

            def bind(family: MetricWrapperBase, *values: str) -> Any:
                series.append((family, (name, *values)))
                return family.labels(name, *values)

            handle = CameraMetrics(
                name=name,
                source_frames=bind(self.source_frames),
                source_dropped={x: bind(self.source_dropped, x) for x in SOURCE_DROP_REASONS},
                frames={x: bind(self.frames, x) for x in FRAME_RESULTS},
                unchecked_published=bind(self.unchecked_published),
                reconnects={x: bind(self.reconnects, x) for x in RECONNECT_STAGES},
                up=bind(self.up),
                last_publish=bind(self.last_publish),
                detections={x: bind(self.detections, x) for x in KINDS},
                regions={(k, x): bind(self.regions, k, x) for k in KINDS for x in REGION_REASONS},
                tracks_active=bind(self.tracks_active),
                latency=bind(self.latency),
                sink_bytes={x: bind(self.sink_bytes, x) for x in SINKS},
                output_frames={x: bind(self.output_frames, x) for x in OUTPUTS},
                output_errors={x: bind(self.output_errors, x) for x in OUTPUTS},
                queue_depth={x: bind(self.queue_depth, x) for x in QUEUES},
            )
            self._cameras[name] = handle
            self._series[name] = series
            return handle

    def remove_camera(self, name: str) -> None:
        """Drop every series of ``name`` (a camera removed from the config); no-op if unknown.

        A stage still holding the old handle keeps counting into children nobody exports.
        """
        with self._lock:
            self._cameras.pop(name, None)
            for family, values in self._series.pop(name, []):
                family.remove(*values)

    def cameras(self) -> list[str]:
        """Names with live series, sorted."""
        with self._lock:
            return sorted(self._cameras)

    def set_runtimes(self, runtimes: list[tuple[str, str, str, str]]) -> None:
        """Replace every ``edgeblur_runtime_info`` series by ``(group, model, runtime,
        precision)`` rows, so a group gone after a reload is no longer exported."""
        rows = [tuple(check_label("runtime label", v) for v in row) for row in runtimes]
        with self._lock:
            self.runtime_info.clear()
            for row in rows:
                self.runtime_info.labels(*row).set(1)

    def reloaded(self, result: str) -> None:
        """Count one reload by its result (one of ``RELOAD_RESULTS``)."""
        self._reloads[_check_choice("reload result", result, RELOAD_RESULTS)].inc()

    def stage(self, stage: str, group: str = "") -> Histogram:
        """The ``edgeblur_stage_seconds`` child of ``stage`` (one of ``STAGES``) for detector
        ``group`` (the inference worker's name; empty for the per-frame stages)."""
        key = (_check_choice("stage", stage, STAGES), group)
        child = self._stages.get(key)
        if child is None:
            if group:
                check_label("group name", group)
            with self._lock:
                child = self._stages.setdefault(
                    key, self.stage_seconds.labels(stage=stage, group=group)
                )
        return child

    def schedule(
        self, group: str, level: int, roles: dict[str, tuple[int, int, int | None]]
    ) -> None:
        """The inference group's schedule in force: rung, and (stride, tiles, input width) per
        role (width None: the model's own, not exported)."""
        check_label("group name", group)
        self.detect_auto_level.labels(group=group).set(level)
        for role, (stride, tiles, width) in roles.items():
            self.detect_stride.labels(group=group, role=role).set(stride)
            self.detect_tiles.labels(group=group, role=role).set(tiles)
            if width is not None:
                self.detect_width.labels(group=group, role=role).set(width)

    def remove_group(self, group: str) -> None:
        """Drop the series of an inference group a reload removed: its schedule gauges (a stale
        stride or rung would read as if the group still ran) and its stage_seconds children, so
        nothing is exported under a group that no longer exists."""
        with self._lock:
            stages = [k for k in self._stages if k[1] == group and group]
            for key in stages:
                del self._stages[key]
            for family, values in (
                *(
                    (f, (group, r))
                    for f in (self.detect_stride, self.detect_tiles, self.detect_width)
                    for r in ROLES
                ),
                (self.detect_auto_level, (group,)),
                *((self.stage_seconds, key) for key in stages),
            ):
                with contextlib.suppress(KeyError):
                    family.remove(*values)

    def batch(self, model: str) -> Histogram:
        """The ``edgeblur_inference_batch_size`` child of ``model`` (its config name)."""
        check_label("model name", model)
        with self._lock:
            child = self._batches.get(model)
            if child is None:
                child = self._batches[model] = self.batch_size.labels(model=model)
            return child
