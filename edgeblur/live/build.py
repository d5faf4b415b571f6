"""Builds `edgeblur serve` from a validated ServiceConfig: each camera's source, publisher and
sinks, one Detector per group of alike detect sections, one inference worker per group.

Above ``edgeblur.build`` (config → stages) and beside the live objects it wires; a SIGHUP
reload (live/reload.py) calls the same steps to rebuild only what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from edgeblur.build import (
    build_anonymizer,
    build_detector,
    cadence,
    check_settings,
    role_spec,
)
from edgeblur.config import CameraConfig, DetectConfig, RuntimeConfig, ServiceConfig
from edgeblur.core.detect import Detector
from edgeblur.core.step import Checker
from edgeblur.errors import ConfigError
from edgeblur.io.encode import EncodeSettings
from edgeblur.io.preview import PreviewHub, PreviewSink
from edgeblur.io.sink import FileSink, RtspSink
from edgeblur.io.source import Source, SourceSettings
from edgeblur.live.metrics import Metrics
from edgeblur.live.publisher import GuardedSinks, Publisher
from edgeblur.live.schedule import AutoCadence
from edgeblur.live.service import InferenceWorker, Service, group_key
from edgeblur.secrets import SecretUrl

GPU_BATCH = 8  # scheduler.max_batch on a GPU unless set: what a TensorRT engine is built for
DetectorFactory = Callable[[DetectConfig, RuntimeConfig, int], Detector]


Pace = Literal["realtime", "max", "block"]


def build_service(
    cfg: ServiceConfig,
    metrics: Metrics,
    previews: PreviewHub | None,
    *,
    pace: Pace = "realtime",
    detector_factory: DetectorFactory | None = None,
) -> Service:
    """Every camera's source, publisher and sinks, and one inference worker per detector group.

    Seams for benchmarks: ``pace`` "realtime" (the service's own) plays file sources at their
    timestamps as a camera would; "max" decodes them as fast as possible, newest frame wins;
    "block" as fast as the pipeline takes them, dropping none. ``detector_factory`` replaces
    ``build_detector`` (the ``ceiling`` baseline runs no model).
    """
    check_cameras(cfg)
    cameras = {c.name: build_camera(c, cfg, metrics, previews, pace=pace) for c in enabled(cfg)}
    detectors = build_detectors(cfg, {}, detector_factory)
    workers = build_workers(cfg, cameras, metrics, detectors)
    return Service(
        cfg,
        metrics,
        {n: s for n, (s, _p) in cameras.items()},
        {n: p for n, (_s, p) in cameras.items()},
        workers,
    )


def enabled(cfg: ServiceConfig) -> list[CameraConfig]:
    return [cam for cam in cfg.cameras if cam.enabled]


def check_cameras(cfg: ServiceConfig) -> None:
    """What makes a camera list unservable, checked before anything is built or stopped."""
    for cam in enabled(cfg):
        out = cam.output
        if not (out.rtsp or out.file or out.preview):
            raise ConfigError(
                f"Camera '{cam.name}' has no output; set its output.rtsp, output.file or "
                "output.preview."
            )
    if not enabled(cfg):
        raise ConfigError("Every camera is disabled; enable at least one (cameras[].enabled).")


def check_service(cfg: ServiceConfig) -> None:
    """Every check that needs no model loaded: the camera list, and that each role's model file
    is there. Cheap, so serve runs it before its HTTP server starts and a reload before it stops
    anything: a bad file is one sentence, not a half-started service."""
    check_cameras(cfg)
    for cam in enabled(cfg):
        d = cam.detect
        for role, key, det in (("face", "faces", d.faces), ("plate", "plates", d.plates)):
            if det.enabled:
                role_spec(role, det, f"cameras.{cam.name}.detect.{key}")


def build_camera(
    cam: CameraConfig,
    cfg: ServiceConfig,
    metrics: Metrics,
    previews: PreviewHub | None,
    *,
    pace: Pace = "realtime",
) -> tuple[Source, Publisher]:
    """One camera's source and publisher (with its sinks), not started."""
    out = cam.output
    m = metrics.camera(cam.name)
    s = cam.source
    source = Source(
        cam.name,
        SourceSettings(
            url=SecretUrl(cam.url),
            transport=s.transport,
            open_timeout_s=s.open_timeout_s,
            read_timeout_s=s.read_timeout_s,
            backoff_max_s=s.backoff_max_s,
            loop=s.loop,
            realtime=pace == "realtime",
            block=pace == "block",
        ),
        metrics=m,
    )
    e = out.encode
    enc = EncodeSettings(
        codec=e.codec,
        preset=e.preset,
        tune=e.tune,
        bitrate_kbps=e.bitrate_kbps,
        crf=e.crf,
        gop_s=e.gop_s,
    )
    sinks = []
    if out.rtsp:
        sinks.append(RtspSink(cam.name, SecretUrl(out.rtsp), enc, metrics=m))
    if out.file:
        sinks.append(FileSink(cam.name, out.file, enc, metrics=m))
    if out.preview and previews is not None:
        outlines = tuple(
            (z.kind, tuple(z.points)) for z in cam.anonymize.zones if out.preview_zones
        )
        sinks.append(PreviewSink(previews, cam.name, outlines=outlines))
    pub = Publisher(
        cam,
        Checker(list(cadence(cam.detect)), check_settings(cam.track, cam.fail_closed)),
        build_anonymizer(cam.anonymize, cam.name),
        GuardedSinks(cam.name, sinks, m),
        m,
        metrics,
        queue_size=cfg.scheduler.max_batch or GPU_BATCH,  # room for a camera's whole batch
    )
    m.set_queue_depth("source", source.queue.__len__)
    m.set_queue_depth("publish", pub.queue.qsize)
    return source, pub


def build_detectors(
    cfg: ServiceConfig,
    existing: dict[str, tuple[str, Detector]],
    detector_factory: DetectorFactory | None = None,
) -> dict[str, tuple[str, Detector]]:
    """Group key → (group name, Detector) for every detector group of ``cfg``'s cameras.

    ``existing`` holds those already running: a reload passes the old ones, so a group whose
    models did not change is neither loaded nor built again.
    """
    make_detector = detector_factory or build_detector
    first: dict[str, CameraConfig] = {}
    for cam in enabled(cfg):
        first.setdefault(group_key(cam), cam)
    out = {k: existing[k] for k in first if k in existing}
    taken = {name for name, _d in out.values()}
    for i, (key, cam) in enumerate(first.items()):
        if key in out:
            continue
        detector = make_detector(cam.detect, cfg.runtime, cfg.scheduler.max_batch or GPU_BATCH)
        models = [spec.path.stem for spec in detector.roles] or detector.role_names
        name = _group_name("+".join(models), i, taken)
        taken.add(name)
        out[key] = (name, detector)
    return out


def build_workers(
    cfg: ServiceConfig,
    cameras: dict[str, tuple[Source, Publisher]],
    metrics: Metrics,
    detectors: dict[str, tuple[str, Detector]],
) -> list[InferenceWorker]:
    """One inference worker (not started) per detector group of ``cameras``, on the Detectors
    of ``detectors`` (see build_detectors; a group missing there gets a new one)."""
    detectors = build_detectors(cfg, detectors)
    groups: dict[str, list[tuple[Source, Publisher]]] = {}
    detect_of: dict[str, CameraConfig] = {}
    for cam in enabled(cfg):
        if cam.name in cameras:
            groups.setdefault(group_key(cam), []).append(cameras[cam.name])
            detect_of.setdefault(group_key(cam), cam)
    cfgs = {cam.name: cam for cam in cfg.cameras}
    workers = []
    for key, members in groups.items():
        name, detector = detectors[key]
        max_batch = cfg.scheduler.max_batch or (GPU_BATCH if detector.on_gpu else 1)
        cam = detect_of[key]
        base = cadence(cam.detect)
        worker = InferenceWorker(
            name,
            detector,
            members,
            max_batch,
            cfg.scheduler.max_wait_ms,
            metrics,
            cadence=base,
            auto=AutoCadence(base) if cam.detect.auto else None,
            max_unchecked_s={
                pub.name: cfgs[pub.name].fail_closed.max_unchecked_ms / 1000 for _s, pub in members
            },
        )
        for source, _pub in members:
            source.queue.on_put = worker.wake.set  # a new frame wakes the batcher at once
        workers.append(worker)
    return workers


def _group_name(stems: str, index: int, taken: set[str]) -> str:
    # The first group is named by its models alone, later ones get their position; a name a
    # kept group already has (after a reload) is never given twice.
    name = stems if index == 0 else f"{stems}-{index}"
    while name in taken:
        index += 1
        name = f"{stems}-{index}"
    return name
