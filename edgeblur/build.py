"""Turns validated configuration into stage objects (Detector, Tracker, Anonymizer).

The one place that knows both the config schema and the stages' own settings, so stages never
import pydantic models and config never imports runtimes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgeblur import assets
from edgeblur.config import (
    AnonymizeConfig,
    CameraConfig,
    DetectConfig,
    DetectorConfig,
    RuntimeConfig,
    ServiceConfig,
)
from edgeblur.core.anonymize import Anonymizer, AnonymizeSettings, Method, Shape, Zone
from edgeblur.core.detect import Detector, RoleSpec
from edgeblur.errors import ConfigError
from edgeblur.models import ModelSettings
from edgeblur.runtime.base import RuntimeSettings
from edgeblur.secrets import SecretUrl
from edgeblur.types import Kind

if TYPE_CHECKING:
    from edgeblur.io.preview import PreviewHub
    from edgeblur.live.metrics import Metrics
    from edgeblur.live.service import Service

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


def build_service(cfg: ServiceConfig, metrics: Metrics, previews: PreviewHub | None) -> Service:
    """Every camera's source, publisher and sinks, and one inference worker per detector group."""
    from edgeblur.io.preview import PreviewSink
    from edgeblur.io.sink import EncoderSettings, FileSink, RtspSink
    from edgeblur.io.source import Source, SourceSettings
    from edgeblur.live.publisher import GuardedSinks, Publisher
    from edgeblur.live.service import InferenceWorker, Service, group_key

    groups: dict[str, list[tuple[Source, Publisher]]] = {}
    detect_of: dict[str, CameraConfig] = {}
    sources, publishers = {}, {}
    for cam in cfg.cameras:
        if not cam.enabled:
            continue
        out = cam.output
        if not (out.rtsp or out.file or out.preview):
            raise ConfigError(
                f"Camera '{cam.name}' has no output; set its output.rtsp, output.file or "
                "output.preview."
            )
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
            build_anonymizer(cam.anonymize, cam.name),
            GuardedSinks(cam.name, sinks, m),
            m,
            metrics,
            queue_size=cfg.scheduler.max_batch,  # room for one camera's whole batch
        )
        m.set_queue_depth("source", source.queue.__len__)
        m.set_queue_depth("publish", pub.queue.qsize)
        key = group_key(cam)
        groups.setdefault(key, []).append((source, pub))
        detect_of.setdefault(key, cam)
        sources[cam.name], publishers[cam.name] = source, pub
    if not sources:
        raise ConfigError("Every camera is disabled; enable at least one (cameras[].enabled).")
    workers = []
    for i, (key, members) in enumerate(groups.items()):
        detector = build_detector(detect_of[key].detect, cfg.runtime, cfg.scheduler.max_batch)
        name = "+".join(spec.path.stem for spec in detector.roles) + ("" if i == 0 else f"-{i}")
        worker = InferenceWorker(
            name, detector, members, cfg.scheduler.max_batch, cfg.scheduler.max_wait_ms, metrics
        )
        for source, _pub in members:
            source.queue.on_put = worker.wake.set  # a new frame wakes the batcher at once
        workers.append(worker)
    return Service(cfg, metrics, sources, publishers, workers)
