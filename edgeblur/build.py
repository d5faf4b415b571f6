"""Turns validated configuration into stage objects (Detector, Tracker, Anonymizer).

The one place that knows both the config schema and the stages' own settings, so stages never
import pydantic models and config never imports runtimes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from edgeblur import assets
from edgeblur.config import (
    AnonymizeConfig,
    CameraConfig,
    DetectConfig,
    DetectorConfig,
    FailClosedConfig,
    RuntimeConfig,
    ServiceConfig,
    TrackConfig,
)
from edgeblur.core.anonymize import Anonymizer, AnonymizeSettings, Method, Shape, Zone
from edgeblur.core.detect import Detector, RoleSpec
from edgeblur.core.gate import GateSettings
from edgeblur.core.step import Cadence, Checker, CheckSettings
from edgeblur.core.track import TrackSettings
from edgeblur.errors import ConfigError
from edgeblur.models import ModelSettings
from edgeblur.runtime.base import RuntimeSettings
from edgeblur.secrets import SecretUrl
from edgeblur.types import Kind

if TYPE_CHECKING:
    from edgeblur.io.preview import PreviewHub
    from edgeblur.io.source import Source
    from edgeblur.live.metrics import Metrics
    from edgeblur.live.publisher import Publisher
    from edgeblur.live.service import InferenceWorker, Service

log = logging.getLogger(__name__)

_ROLE_KIND = {"face": Kind.FACE, "plate": Kind.PLATE}


def runtime_settings(cfg: RuntimeConfig, max_batch: int | None = None) -> RuntimeSettings:
    """``max_batch`` (the scheduler's) raises the TensorRT profile's batch when it is larger."""
    return RuntimeSettings(
        providers=tuple(cfg.providers),
        threads=cfg.threads,
        allow_spinning=cfg.allow_spinning,
        backend=cfg.backend,
        fallback=cfg.fallback,
        precision=cfg.precision,
        device=cfg.device,
        max_batch=max(cfg.max_batch, max_batch or 0),
        max_aspect=cfg.max_aspect,
        engine_dir=None if cfg.engine_dir is None else str(cfg.engine_dir),
        int8_calibration_cache=(
            None if cfg.int8_calibration_cache is None else str(cfg.int8_calibration_cache)
        ),
        workspace_mb=cfg.workspace_mb,
    )


def role_spec(role: str, cfg: DetectorConfig, key: str) -> RoleSpec:
    """Resolve one role's model (name, role or file) to a file and a decoder."""
    spec, path = assets.resolve(cfg.model)
    if spec is not None:
        family = cfg.family or spec.family
        kinds = {int(k): _ROLE_KIND[v] for k, v in spec.classes.items() if v in _ROLE_KIND}
    else:
        if cfg.family is None:
            raise ConfigError(
                f"{key}.model is a file ({path.name}) whose decoder is unknown; set {key}.family "
                f"(--{role}-family) to centerface, yolov8 or yolov5_face."
            )
        family = cfg.family
        kinds = {0: _ROLE_KIND[role]}  # a user's single-class model hides what its role says
    settings = ModelSettings(
        kind_of_class=kinds,
        threshold=cfg.threshold,
        nms_iou=cfg.nms_iou,
        input_width=cfg.input_width,
    )
    return RoleSpec(role=role, path=path, family=family, settings=settings, tiles=cfg.tiles)


def build_detector(
    detect: DetectConfig, runtime: RuntimeConfig, max_batch: int | None = None
) -> Detector:
    roles = []
    if detect.faces.enabled:
        roles.append(role_spec("face", detect.faces, "detect.faces"))
    if detect.plates.enabled:
        roles.append(role_spec("plate", detect.plates, "detect.plates"))
    if not roles:
        raise ConfigError("Both detect.faces and detect.plates are disabled; enable at least one.")
    return Detector(roles, runtime_settings(runtime, max_batch=max_batch))


def cadence(detect: DetectConfig) -> dict[str, Cadence]:
    """Each enabled role's schedule on videos (strides, tile rotation)."""
    out = {}
    for role, cfg in (("face", detect.faces), ("plate", detect.plates)):
        if cfg.enabled:
            out[role] = Cadence(
                stride=detect.stride_of(role), tiles=cfg.tiles, tiles_per_run=cfg.tiles_per_run
            )
    return out


def track_settings(cfg: TrackConfig) -> TrackSettings | None:
    if not cfg.enabled:
        return None
    return TrackSettings(
        coast_frames=cfg.coast_frames,
        iou_threshold=cfg.iou_threshold,
        grow_per_frame=cfg.grow_per_frame,
    )


def check_settings(
    track: TrackConfig, fail_closed: FailClosedConfig | None = None
) -> CheckSettings:
    """Tracker and gate of one camera (``fail_closed`` None: files, which have no deadline)."""
    gate = (
        GateSettings(tracking=track.enabled)
        if fail_closed is None
        else GateSettings(
            max_unchecked_s=fail_closed.max_unchecked_ms / 1000,
            max_latency_s=fail_closed.max_latency_ms / 1000,
            tracking=track.enabled,
        )
    )
    return CheckSettings(track=track_settings(track), gate=gate)


def anonymize_settings(cfg: AnonymizeConfig) -> AnonymizeSettings:
    return AnonymizeSettings(
        method=Method(cfg.method),
        strength=cfg.strength,
        face_shape=Shape(cfg.face_shape),
        plate_shape=Shape(cfg.plate_shape),
        face_pad=cfg.face_pad,
        plate_pad=cfg.plate_pad,
        fill_rgb=cfg.fill_rgb,
        zones=tuple(Zone(z.kind, tuple(z.points)) for z in cfg.zones),
    )


def build_anonymizer(cfg: AnonymizeConfig, camera: str = "") -> Anonymizer:
    ignore = sum(z.kind == "ignore" for z in cfg.zones)
    if ignore:
        # Said once at start: an ignore zone deliberately leaves faces visible.
        log.warning(
            "%s%d ignore zone(s): faces and plates centred there are NOT hidden",
            f"{camera}: " if camera else "",
            ignore,
        )
    return Anonymizer(anonymize_settings(cfg))


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
    from edgeblur.live.service import Service

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
    from edgeblur.io.preview import PreviewSink
    from edgeblur.io.sink import EncoderSettings, FileSink, RtspSink
    from edgeblur.io.source import Source, SourceSettings
    from edgeblur.live.publisher import GuardedSinks, Publisher

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
    enc = EncoderSettings(
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
    from edgeblur.live.service import group_key

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
    from edgeblur.live.schedule import AutoCadence
    from edgeblur.live.service import InferenceWorker, group_key

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
