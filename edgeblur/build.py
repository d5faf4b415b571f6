"""Turns validated configuration into stage objects (Detector, Tracker, Anonymizer).

The one place that knows both the config schema and the stages' own settings, so stages never
import pydantic models and config never imports runtimes.
"""

from __future__ import annotations

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
from edgeblur.core.anonymize import Anonymizer, AnonymizeSettings, Method, Shape
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
    from edgeblur.live.metrics import Metrics
    from edgeblur.live.service import Service

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
    )


def build_anonymizer(cfg: AnonymizeConfig) -> Anonymizer:
    return Anonymizer(anonymize_settings(cfg))


GPU_BATCH = 8  # scheduler.max_batch on a GPU unless set: what a TensorRT engine is built for
DetectorFactory = Callable[[DetectConfig, RuntimeConfig, int], Detector]


def build_service(
    cfg: ServiceConfig,
    metrics: Metrics,
    previews: PreviewHub | None,
    *,
    pace: Literal["realtime", "max", "block"] = "realtime",
    detector_factory: DetectorFactory | None = None,
) -> Service:
    """Every camera's source, publisher and sinks, and one inference worker per detector group.

    Seams for benchmarks: ``pace`` "realtime" (the service's own) plays file sources at their
    timestamps as a camera would; "max" decodes them as fast as possible, newest frame wins;
    "block" as fast as the pipeline takes them, dropping none. ``detector_factory`` replaces
    ``build_detector`` (the ``ceiling`` baseline runs no model).
    """
    make_detector = detector_factory or build_detector
    from edgeblur.io.preview import PreviewSink
    from edgeblur.io.sink import EncoderSettings, FileSink, RtspSink
    from edgeblur.io.source import Source, SourceSettings
    from edgeblur.live.publisher import GuardedSinks, Publisher
    from edgeblur.live.schedule import AutoCadence
    from edgeblur.live.service import InferenceWorker, Service, group_key

    groups: dict[str, list[tuple[Source, Publisher]]] = {}
    detect_of: dict[str, CameraConfig] = {}
    cfgs = {cam.name: cam for cam in cfg.cameras}
    sources, publishers = {}, {}
    for cam in cfg.cameras:
        if not cam.enabled:
            continue
        out = cam.output
        if not (out.rtsp or out.file or out.preview):
            raise ConfigError(
                f"Camera '{cam.name}' has no output; set cameras.{cam.name}.output.rtsp, .file "
                "or .preview."
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
            sinks.append(PreviewSink(previews, cam.name))
        pub = Publisher(
            cam,
            Checker(list(cadence(cam.detect)), check_settings(cam.track, cam.fail_closed)),
            build_anonymizer(cam.anonymize),
            GuardedSinks(cam.name, sinks, m),
            m,
            metrics,
            queue_size=cfg.scheduler.max_batch or GPU_BATCH,  # room for a camera's whole batch
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
        detector = make_detector(
            detect_of[key].detect, cfg.runtime, cfg.scheduler.max_batch or GPU_BATCH
        )
        max_batch = cfg.scheduler.max_batch or (GPU_BATCH if detector.on_gpu else 1)
        models = [spec.path.stem for spec in detector.roles] or detector.role_names
        name = "+".join(models) + ("" if i == 0 else f"-{i}")
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
    return Service(cfg, metrics, sources, publishers, workers)
