"""Turns validated configuration into stage objects (Detector, Tracker, Anonymizer).

The one place that knows both the config schema and the stages' own settings, so stages never
import pydantic models and config never imports runtimes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from edgeblur import assets
from edgeblur.config import (
    FILE_GAP_S,
    AnonymizeConfig,
    DetectConfig,
    DetectorConfig,
    FailClosedConfig,
    JobConfig,
    RuntimeConfig,
    ServiceConfig,
    TrackConfig,
)
from edgeblur.core.anonymize import Anonymizer, AnonymizeSettings, Method, Shape, Zone
from edgeblur.core.detect import Detector, RoleSpec
from edgeblur.core.gate import GateSettings
from edgeblur.core.step import Cadence, CheckSettings
from edgeblur.core.track import TrackSettings
from edgeblur.errors import ConfigError
from edgeblur.models import ModelSettings
from edgeblur.runtime import tensorrt as trt_runtime
from edgeblur.runtime.base import RuntimeSettings
from edgeblur.types import Kind

log = logging.getLogger(__name__)

_ROLE_KIND = {"face": Kind.FACE, "plate": Kind.PLATE}


def engine_dir(cfg: RuntimeConfig) -> Path:
    """``runtime.engine_dir``, else ``<cache>/engines`` (``$EDGEBLUR_CACHE/engines``)."""
    return cfg.engine_dir if cfg.engine_dir is not None else assets.cache_dir() / "engines"


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
        engine_dir=str(engine_dir(cfg)),
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


def cadence(detect: DetectConfig, fps: float | None = None) -> dict[str, Cadence]:
    """Each enabled role's schedule on videos (strides, tile rotation).

    ``fps``: a file's rate. With ``detect.auto`` a role whose stride was not given (neither its
    own nor ``detect.stride``) then runs every ``FILE_GAP_S`` of video; without it (``serve``,
    where detect.auto eases the schedule at run time) the configured strides are the plan.
    """
    given = "stride" in detect.model_fields_set
    out = {}
    for role, cfg in (("face", detect.faces), ("plate", detect.plates)):
        if not cfg.enabled:
            continue
        stride = detect.stride_of(role)
        if fps and detect.auto and cfg.stride is None and not given:
            stride = max(1, round(FILE_GAP_S[role] * float(fps)))
        out[role] = Cadence(
            stride=stride, tiles=cfg.tiles, tiles_per_run=cfg.tiles_per_run, width=cfg.input_width
        )
    return out


def blind_frames(cadence: dict[str, Cadence]) -> int:
    """The most frames a role's schedule can leave a face unseen before the run that finds it:
    its stride, times the runs a tile waits for its turn when the face is only found in a tile.
    Backward fill of files reaches at least this far back."""
    longest = 0
    for c in cadence.values():
        turns = 1
        if c.tiles > 1 and c.tiles_per_run:
            turns = -(-(c.tiles * c.tiles) // c.tiles_per_run)
        longest = max(longest, c.stride * turns)
    return longest


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


def _roles(config: JobConfig | ServiceConfig) -> list[tuple[str, DetectorConfig, str]]:
    """(role, DetectorConfig, key path) of every enabled detector the config would run."""
    if isinstance(config, ServiceConfig):
        detects = [(f"cameras.{c.name}.detect", c.detect) for c in config.cameras if c.enabled]
    else:
        detects = [("detect", config.detect)]
    out = []
    for where, detect in detects:
        for role, cfg in (("face", detect.faces), ("plate", detect.plates)):
            if cfg.enabled:
                out.append((role, cfg, f"{where}.{'faces' if role == 'face' else 'plates'}"))
    return out


def build_engines(
    config: JobConfig | ServiceConfig,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> list[Path]:
    """Build (or find cached) the TensorRT engine of every model ``config`` runs, on this GPU.

    Uses the same settings as ``edgeblur serve`` / ``blur`` with that config, so the service
    finds these engines instead of building its own. Raises TensorRtUnavailable (a user error)
    where TensorRT or a GPU is missing: engines are built on the machine that runs them.
    """
    scheduler = getattr(config, "scheduler", None)  # a blur JobConfig has no scheduler
    settings = runtime_settings(
        config.runtime, max_batch=scheduler.max_batch if scheduler else None
    )
    settings = trt_runtime.resolve_precision(settings)  # auto: the precision actually built
    seen: set[tuple[Path, int]] = set()
    paths = []
    for role, cfg, where in _roles(config):
        spec = role_spec(role, cfg, where)
        job = (spec.path, spec.settings.input_width)
        if job in seen:
            continue
        seen.add(job)
        started = time.monotonic()
        _data, path, built = trt_runtime.ensure_engine(
            spec.path, settings, spec.settings.input_width, force=force
        )
        what = f"built in {time.monotonic() - started:.0f} s" if built else "ok (cached)"
        progress(
            f"{spec.path.stem} ({spec.settings.input_width} px, {settings.precision}, batch "
            f"1..{settings.max_batch}): {what} -> {path}"
        )
        paths.append(path)
    return paths
