"""YAML → validated settings (pydantic v2). One small model per stage; unknown keys are errors.

The same stage sections (runtime, detect, track, anonymize) configure `edgeblur blur` and every
camera of `edgeblur serve`, so a file tuned offline behaves the same live.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeblur.errors import ConfigError


class Base(BaseModel):
    # extra="forbid": a typo in YAML is an error, never a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeConfig(Base):
    backend: Literal["onnxruntime"] = Field(
        "onnxruntime", description="Inference engine. TensorRT arrives with the GPU path."
    )
    providers: list[str] = Field(
        ["CPUExecutionProvider"],
        description="ONNX Runtime execution providers in order; a missing one is logged.",
    )
    threads: int = Field(0, ge=0, le=256, description="Intra-op threads per model; 0 = all cores.")
    allow_spinning: bool = Field(
        False, description="Spinning threads cut latency a little but starve decode on 2 cores."
    )


class DetectorConfig(Base):
    enabled: bool = True
    model: str = Field(
        "face",
        description="A manifest model name, a role (face, plate) or a path to an .onnx file.",
    )
    family: Literal["centerface", "yolov8", "yolov5_face"] | None = Field(
        None, description="Decoder of a user .onnx file; manifest models know their own."
    )
    threshold: float = Field(
        0.15, gt=0.0, lt=1.0, description="Lower finds more faces and more false positives."
    )
    nms_iou: float = Field(0.4, gt=0.0, le=1.0)
    input_width: int = Field(
        640,
        ge=64,
        le=4096,
        description="Detection width in pixels; higher finds smaller faces, costs time squared.",
    )

    @field_validator("input_width")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(
                f"must be a multiple of 32 (the models' stride), e.g. {v - v % 32 or 32}"
            )
        return v


class FaceDetectorConfig(DetectorConfig):
    pass


class PlateDetectorConfig(DetectorConfig):
    model: str = Field("plate", description="A manifest model name or a path to an .onnx file.")
    threshold: float = Field(0.2, gt=0.0, lt=1.0)
    # 1280: the plate model misses plates under ~25 px wide at 640 (DESIGN.md); frames smaller
    # than this are not enlarged more than 2x, so small clips stay cheap.
    input_width: int = Field(1280, ge=64, le=4096)


class DetectConfig(Base):
    faces: FaceDetectorConfig = FaceDetectorConfig()
    plates: PlateDetectorConfig = PlateDetectorConfig()
    stride: int = Field(
        1, ge=1, le=30, description="Detect every k-th frame, track in between; higher is faster."
    )


class TrackConfig(Base):
    enabled: bool = True
    coast_frames: int = Field(
        12, ge=0, le=300, description="Frames a lost face stays hidden at its predicted place."
    )
    iou_threshold: float = Field(0.1, gt=0.0, le=1.0)
    grow_per_frame: float = Field(0.05, ge=0.0, le=1.0)
    backfill_frames: int = Field(
        6,
        ge=0,
        le=120,
        description="Files only: also hide a track this many frames before it appears.",
    )


class AnonymizeConfig(Base):
    method: Literal["gaussian", "pixelate", "fill", "boxes"] = "gaussian"
    strength: float = Field(0.25, gt=0.0, le=1.0, description="Blur sigma / region size; 1/blocks.")
    face_shape: Literal["ellipse", "box"] = "ellipse"
    plate_shape: Literal["ellipse", "box"] = "box"
    face_pad: float = Field(0.2, ge=0.0, le=2.0, description="Padding per side, fraction of box.")
    # 0.3: the plate model boxes the characters; the plate's outline and country band lie outside.
    plate_pad: float = Field(0.3, ge=0.0, le=2.0)
    fill_rgb: tuple[int, int, int] = (0, 0, 0)


class EncodeConfig(Base):
    codec: str = Field("libx264", description="FFmpeg encoder name.")
    crf: int = Field(20, ge=0, le=51, description="Quality: lower is better and larger.")
    preset: str = "veryfast"


class JobConfig(Base):
    """The stage sections: what `edgeblur blur --config` reads and each camera inherits."""

    runtime: RuntimeConfig = RuntimeConfig()
    detect: DetectConfig = DetectConfig()
    track: TrackConfig = TrackConfig()
    anonymize: AnonymizeConfig = AnonymizeConfig()
    encode: EncodeConfig = EncodeConfig()


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(text: str, source: str, env: dict[str, str] | None = None) -> str:
    """Replace ${VAR} and ${VAR:-default}; a missing VAR without default is an error."""
    env = os.environ if env is None else env

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        line = text.count("\n", 0, m.start()) + 1
        raise ConfigError(
            f"{source}:{line}: environment variable {name} is not set; export it or write "
            f"${{{name}:-default}}."
        )

    return _ENV.sub(repl, text)


def load_yaml(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(
            f"Config file {path} cannot be read ({exc.strerror}); check the path."
        ) from exc
    text = interpolate_env(text, str(path), env)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax."
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(data).__name__}."
        )
    return data


def describe_error(
    err: ValidationError, source: str, model: type[BaseModel], prefix: str = ""
) -> str:
    """One sentence for the first pydantic error: file, key path, problem, and a suggestion."""
    e = err.errors()[0]
    loc = [str(p) for p in e["loc"]]
    key = ".".join(([prefix] if prefix else []) + loc)
    if e["type"] == "extra_forbidden":
        known = _known_keys(model, e["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = (
            f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(known))}."
        )
        return f"{source}: unknown key '{key}'; {hint}"
    # Never echo the value: it may be a URL with a password.
    return f"{source}: '{key}' {e['msg'].lower()}; fix that value."


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        current = next(
            (a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def load_job_config(path: Path | None) -> JobConfig:
    if path is None:
        return JobConfig()
    data = load_yaml(path)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_error(err, str(path), JobConfig)) from None
