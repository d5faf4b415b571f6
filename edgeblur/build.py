"""Turns validated configuration into stage objects (Detector, Tracker, Anonymizer).

The one place that knows both the config schema and the stages' own settings, so stages never
import pydantic models and config never imports runtimes.
"""

from __future__ import annotations

from edgeblur import assets
from edgeblur.anonymize import Anonymizer, AnonymizeSettings, Method, Shape
from edgeblur.config import AnonymizeConfig, DetectConfig, DetectorConfig, RuntimeConfig
from edgeblur.detect import Detector, RoleSpec
from edgeblur.errors import ConfigError
from edgeblur.models import ModelSettings
from edgeblur.runtime.base import RuntimeSettings
from edgeblur.types import Kind

_ROLE_KIND = {"face": Kind.FACE, "plate": Kind.PLATE}


def runtime_settings(cfg: RuntimeConfig) -> RuntimeSettings:
    return RuntimeSettings(
        providers=tuple(cfg.providers), threads=cfg.threads, allow_spinning=cfg.allow_spinning
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
                "to centerface, yolov8 or yolov5_face."
            )
        family = cfg.family
        kinds = {0: _ROLE_KIND[role]}  # a user's single-class model hides what its role says
    settings = ModelSettings(
        kind_of_class=kinds,
        threshold=cfg.threshold,
        nms_iou=cfg.nms_iou,
        input_width=cfg.input_width,
    )
    return RoleSpec(role=role, path=path, family=family, settings=settings)


def build_detector(detect: DetectConfig, runtime: RuntimeConfig) -> Detector:
    roles = []
    if detect.faces.enabled:
        roles.append(role_spec("face", detect.faces, "detect.faces"))
    if detect.plates.enabled:
        roles.append(role_spec("plate", detect.plates, "detect.plates"))
    if not roles:
        raise ConfigError("Both detect.faces and detect.plates are disabled; enable at least one.")
    return Detector(roles, runtime_settings(runtime))


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
