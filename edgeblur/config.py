"""YAML → validated settings (pydantic v2). One small model per stage; unknown keys are errors.

The same stage sections (runtime, detect, track, anonymize) configure `edgeblur blur` and every
camera of `edgeblur serve`, so a file tuned offline behaves the same live.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeblur.errors import ConfigError
from edgeblur.secrets import SecretUrl
from edgeblur.types import CAMERA_NAME, CAMERA_NAME_RULE

Byte = Annotated[int, Field(ge=0, le=255)]


class Base(BaseModel):
    # extra="forbid": a typo in YAML is an error, never a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeConfig(Base):
    backend: Literal["onnxruntime", "tensorrt", "openvino", "auto"] = Field(
        "auto",
        description="onnxruntime: the providers below. tensorrt: TensorRT, else ONNX Runtime "
        "CUDA, else CPU (each fallback logged). openvino: OpenVINO (x86-64), else ONNX Runtime "
        "CPU. auto: the best one available (GPU, else OpenVINO, else ONNX Runtime).",
    )
    providers: list[str] = Field(
        ["CPUExecutionProvider"],
        description="ONNX Runtime execution providers in order; a missing one is logged.",
    )
    threads: int = Field(0, ge=0, le=256, description="Intra-op threads per model; 0 = all cores.")
    allow_spinning: bool = Field(
        False, description="Spinning threads cut latency a little but starve decode on 2 cores."
    )
    fallback: bool = Field(
        True,
        description="backend tensorrt or openvino: false makes a missing TensorRT, GPU or "
        "OpenVINO an error instead of a slower fallback.",
    )
    precision: Literal["auto", "fp16", "bf16", "fp32", "int8"] = Field(
        "auto",
        description="auto: fp16 on TensorRT; on OpenVINO bf16 where the CPU has it (AMX, "
        "AVX-512-BF16), else fp32. bf16: OpenVINO only. int8: TensorRT only, needs a cache.",
    )
    device: Literal["auto", "CPU", "GPU"] = Field(
        "auto", description="OpenVINO device; auto: an Intel GPU when present, else the CPU."
    )
    int8_calibration_cache: Path | None = Field(
        None,
        validate_default=True,
        description="TensorRT INT8 calibration cache made for this model; required for int8.",
    )
    max_batch: int = Field(
        8,
        ge=1,
        le=64,
        description="Largest batch a TensorRT engine is built for; keep it >= scheduler.max_batch "
        "(larger batches run in parts). Higher costs GPU memory.",
    )
    max_aspect: float = Field(
        1.0,
        gt=0.1,
        le=4.0,
        description="Tallest frame a TensorRT engine accepts, height / width: 1.0 covers 4:3 "
        "and 16:9; 1.8 portrait cameras. Higher costs GPU memory.",
    )
    engine_dir: Path | None = Field(
        None, description="TensorRT engine cache; default <cache>/engines (~/.cache/edgeblur)."
    )
    workspace_mb: int = Field(
        1024, ge=64, le=65536, description="TensorRT builder scratch memory in MiB."
    )

    @field_validator("int8_calibration_cache")
    @classmethod
    def _int8_needs_cache(cls, v: Path | None, info: Any) -> Path | None:
        if v is None and info.data.get("precision") == "int8":
            raise ValueError(
                "is required when runtime.precision is int8 (TensorRT calibration cache made "
                "for this model); or use precision fp16"
            )
        return v


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

    tiles: int = Field(
        1,
        ge=1,
        le=4,
        description="2 or more: also detect on a tiles×tiles grid of overlapping crops at full "
        "resolution; finds smaller faces. Stills run every tile; videos tiles_per_run of them.",
    )
    tiles_per_run: int = Field(
        1,
        ge=0,
        le=16,
        description="Videos: tiles looked at per detection besides the whole frame, in "
        "rotation (each part of the frame is seen at full resolution every tiles²/n runs); "
        "0 = every tile every time.",
    )
    stride: int | None = Field(
        None,
        ge=1,
        le=30,
        description="Detect this role every k-th frame (tracked in between); default "
        "detect.stride.",
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
    # 2: full-resolution tiles in rotation find the 10-40 px faces of crowds and high-mounted
    # cameras that a 640-px pass of the whole frame misses (see benchmarks/README.md).
    tiles: int = Field(2, ge=1, le=4)


class PlateDetectorConfig(DetectorConfig):
    model: str = Field("plate", description="A manifest model name or a path to an .onnx file.")
    threshold: float = Field(0.2, gt=0.0, lt=1.0)
    # 1280: the plate model misses plates under ~25 px wide at 640 (DESIGN.md); frames smaller
    # than this are not enlarged more than 2x, so small clips stay cheap.
    input_width: int = Field(1280, ge=64, le=4096)


# Files with detect.auto (blur, eval): how often each role runs, in seconds of video, when its
# stride is not given. A file has no deadline but a user waiting, and unlike a camera it can look
# ahead: the tracker carries boxes forward between runs, and backward fill and interpolation
# (core/track.Backfill) hide a face on the frames before the run that first found it and on the
# line between two runs. Chosen with `edgeblur eval` (benchmarks/README.md, round 2): faces
# every 0.08 s cover what every frame covers on the shared media and the small-face set; plates
# every 0.12 s cover every moving plate of 25 px and wider that every frame covers (--derived
# moving), where every 0.16-0.24 s lost some on fast ones. build.cadence applies it.
FILE_GAP_S = {"face": 0.08, "plate": 0.12}


class DetectConfig(Base):
    faces: FaceDetectorConfig = FaceDetectorConfig()
    plates: PlateDetectorConfig = PlateDetectorConfig()
    stride: int = Field(
        1, ge=1, le=30, description="Detect every k-th frame, track in between; higher is faster."
    )
    auto: bool = Field(
        True,
        description="serve: when detection cannot keep up with a camera's rate, detect less "
        "often (plates first), never beyond fail_closed.max_unchecked_ms; the strides and "
        "tiles above are the most thorough schedule it uses. blur and eval: a role whose "
        f"stride is not given runs every {FILE_GAP_S['face']:g} s (faces) or "
        f"{FILE_GAP_S['plate']:g} s (plates) of video, tracked "
        "forward and filled backward in between.",
    )

    def stride_of(self, role: Literal["face", "plate"]) -> int:
        cfg = self.faces if role == "face" else self.plates
        return cfg.stride if cfg.stride is not None else self.stride


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
        description="Files only: also hide a track this many frames before it appears (at "
        "least as many as the detection schedule can leave a face unseen).",
    )


class ZoneConfig(Base):
    """A privacy zone: a polygon in fractions of the frame (0..1), so it survives a change of
    resolution."""

    kind: Literal["hide", "ignore"] = Field(
        "hide",
        description="hide: always anonymized, whatever the detector finds. ignore: detections "
        "whose centre lies inside are NOT hidden (a poster); logged as a warning at start.",
    )
    points: list[tuple[float, float]] = Field(
        ..., description="Corners [[x, y], ...], x / width and y / height, at least 3."
    )

    @field_validator("points")
    @classmethod
    def _polygon(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(v) < 3:
            raise ValueError(f"needs at least 3 corners [x, y] to make a polygon, got {len(v)}")
        if not all(0.0 <= c <= 1.0 for p in v for c in p):
            raise ValueError(
                "must be fractions of the frame between 0 and 1 (x / width, y / height), not pixels"
            )
        return v


class AnonymizeConfig(Base):
    method: Literal["gaussian", "pixelate", "fill", "boxes"] = "gaussian"
    strength: float = Field(0.25, gt=0.0, le=1.0, description="Blur sigma / region size; 1/blocks.")
    face_shape: Literal["ellipse", "box"] = "ellipse"
    plate_shape: Literal["ellipse", "box"] = "box"
    face_pad: float = Field(0.2, ge=0.0, le=2.0, description="Padding per side, fraction of box.")
    # 0.3: the plate model boxes the characters; the plate's outline and country band lie outside.
    plate_pad: float = Field(0.3, ge=0.0, le=2.0)
    fill_rgb: tuple[Byte, Byte, Byte] = (0, 0, 0)
    zones: tuple[ZoneConfig, ...] = Field(
        (), description="Privacy zones: hide (always anonymized) or ignore polygons, 0..1."
    )


class EncodeConfig(Base):
    codec: str = Field("libx264", description="FFmpeg encoder name.")
    crf: int = Field(20, ge=0, le=51, description="Quality: lower is better and larger.")
    preset: str = "veryfast"
    metadata: Literal["keep", "strip"] = Field(
        "keep",
        description="Videos: keep the creation time and language tags (GPS, camera make, model "
        "and serials are always dropped) or strip them too. Colour tags are always kept; "
        "images keep no metadata.",
    )


class JobConfig(Base):
    """The stage sections: what `edgeblur blur --config` reads and each camera inherits."""

    runtime: RuntimeConfig = RuntimeConfig()
    detect: DetectConfig = DetectConfig()
    track: TrackConfig = TrackConfig()
    anonymize: AnonymizeConfig = AnonymizeConfig()
    encode: EncodeConfig = EncodeConfig()


# ${VAR} or ${VAR:-default}; the default may itself hold one level of ${OTHER}.
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\$\{[^{}]*\})*))?\}")


def interpolate_env(
    text: str, source: str, env: dict[str, str] | None = None, key: str | None = None
) -> str:
    """Replace ${VAR} and ${VAR:-default}; a missing VAR without default is an error.

    ``key`` names the setting the text belongs to, for the error; without it the line is used.
    """
    env = os.environ if env is None else env

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return interpolate_env(default, source, env, key) if "${" in default else default
        where = f"{source}: '{key}'" if key else f"{source}:{text.count(chr(10), 0, m.start()) + 1}"
        raise ConfigError(
            f"{where}: environment variable {name} is not set; export it or write "
            f"${{{name}:-default}}."
        )

    return _ENV.sub(repl, text)


# A cameras.yaml is a few kB; these bounds only stop a hostile file (a "billion laughs" of nested
# aliases, a self-referencing alias) from exhausting memory or the stack.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000


class _Interpolator:
    """Fills ${VAR} in every string of a parsed YAML tree without expanding aliases.

    A node reached through several aliases is interpolated once and shared (``memo``), so the
    work is linear in the file. Its expanded size, what pydantic and the dump would walk, is
    counted with the same memo and bounded by MAX_VALUES; an alias that contains itself is
    refused instead of recursing until Python's stack gives out.
    """

    def __init__(self, source: str, env: dict[str, str] | None):
        self.source, self.env = source, env
        self.memo: dict[int, tuple[Any, int]] = {}
        self.open: set[int] = set()

    def fill(self, node: Any, key: str, depth: int) -> tuple[Any, int]:
        """(interpolated node, number of values it expands to)."""
        if isinstance(node, str):
            return interpolate_env(node, self.source, self.env, key), 1
        if not isinstance(node, (dict, list)):
            return node, 1
        ident = id(node)
        if ident in self.memo:
            return self.memo[ident]
        where = key or "the top level"
        if ident in self.open:
            raise ConfigError(
                f"{self.source}: '{where}' contains an alias to itself; a config must be a "
                "finite tree, remove the recursive *alias."
            )
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{self.source}: '{where}' is nested more than {MAX_DEPTH} levels deep; flatten it."
            )
        self.open.add(ident)
        size = 1
        out: Any
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                out[k], n = self.fill(v, f"{key}.{k}" if key else str(k), depth + 1)
                size += n
        else:
            out = []
            for i, v in enumerate(node):
                value, n = self.fill(v, f"{key}[{i}]", depth + 1)
                out.append(value)
                size += n
        self.open.discard(ident)
        if size > MAX_VALUES:
            raise ConfigError(
                f"{self.source}: '{where}' expands to more than {MAX_VALUES} values "
                "(aliases nested in aliases); write the values out or use fewer aliases."
            )
        self.memo[ident] = (out, size)
        return out, size


def _interpolate_tree(node: Any, source: str, env: dict[str, str] | None, key: str) -> Any:
    # After parsing, not before: a value such as a password with ' #' or ': ' stays one literal
    # string instead of being re-read as YAML syntax.
    return _Interpolator(source, env).fill(node, key, 0)[0]


def _read_config_text(path: Path) -> str:
    try:
        with Path(path).open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"Config file {path} cannot be read ({exc.strerror}); check the path."
        ) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"Config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; give a YAML "
            "config of a few kB (is this the right file?)."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path} is not UTF-8 text; give a YAML file.") from None


def load_yaml(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    text = _read_config_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax."
        ) from exc
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to read; flatten it to at most {MAX_DEPTH} levels."
        ) from None
    except (ValueError, OverflowError) as exc:
        # The YAML constructors reject a few well-formed scalars (a date with month 13).
        raise ConfigError(f"{path}: a value cannot be read ({exc}); fix it.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(data).__name__}."
        )
    return _interpolate_tree(data, str(path), env, "")


def render_config(cfg: BaseModel) -> str:
    """The resolved config as YAML for `config check`, every URL redacted.

    The URLs are ``SecretUrl`` fields that dump as their redacted form, so no secret is in the
    tree being rendered; a wide width keeps the dumper from folding long values at all.
    """
    return yaml.safe_dump(
        cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=1 << 30
    )


def _bounds(field: Any) -> str:
    lo = hi = None
    strict = False
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        if getattr(m, "gt", None) is not None:
            lo, strict = m.gt, True
        if getattr(m, "le", None) is not None:
            hi = m.le
    if lo is not None and hi is not None:
        return (
            f"must be over {lo:g} and at most {hi:g}"
            if strict
            else f"must be between {lo} and {hi}"
        )
    return "is not valid"


def check_flags(model: type[BaseModel], flags: dict[str, Any]) -> BaseModel:
    """Validate command-line values (``{"--port": 70000}``) against ``model``'s fields.

    A bad value is one sentence naming the flag, not a pydantic traceback.
    """
    data = {f.lstrip("-").replace("-", "_"): v for f, v in flags.items() if v is not None}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        name = str(err.errors()[0]["loc"][0])
        raise ConfigError(
            f"--{name.replace('_', '-')} {_bounds(model.model_fields[name])}, "
            f"got {data.get(name)!r}; see `edgeblur --help`."
        ) from None


def _printable(key: str) -> str:
    """A key as one line of text: a YAML key may hold a newline or a control character."""
    return key if key.isprintable() else repr(key)[1:-1]


def key_path(loc: tuple | list, prefix: str = "") -> str:
    """A key path written as in the file: ``cameras[0].output.rtsp``, ``anonymize.zones[1]``."""
    out = prefix
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            part = _printable(str(part))
            out += f".{part}" if out else part
    return out


def describe_error(
    err: ValidationError,
    source: str,
    model: type[BaseModel],
    prefix: str = "",
    flags: dict[str, str] | None = None,
) -> str:
    """One sentence for the first pydantic error: file, key path, problem, and a suggestion.

    An unknown key is reported before anything else: a typo (``camerass:``) also makes the real
    key missing, and "'cameras' is missing" alone would hide the cause.
    ``flags`` maps key paths set from the command line to their flag, which is named instead.
    """
    errors = err.errors()
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    key = key_path(e["loc"], prefix)
    if e["type"] == "extra_forbidden":
        known = _known_keys(model, e["loc"][:-1])
        close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
        hint = (
            f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(known))}."
        )
        return f"{source}: unknown key '{key}'; {hint}"
    if e["type"] == "missing":
        return f"{source}: '{key}' is missing; add it."
    msg = e["msg"].removeprefix("Value error, ").lower()
    if flags and key in flags:
        return f"{flags[key]}: {msg}; fix that value."
    # Never echo the value: it may be a URL with a password.
    return f"{source}: '{key}' {msg}; fix that value."


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


# Command-line flag (``--plate-size`` as ``plate_size``) → the config key it sets. A flag left
# unset (None) keeps the config file's value; `blur`, `eval` modes and `bench` all go through here.
JOB_FLAGS = {
    "thresh": "detect.faces.threshold",
    "plate_thresh": "detect.plates.threshold",
    "faces": "detect.faces.enabled",
    "plates": "detect.plates.enabled",
    "face_model": "detect.faces.model",
    "face_family": "detect.faces.family",
    "plate_model": "detect.plates.model",
    "plate_family": "detect.plates.family",
    "size": "detect.faces.input_width",
    "tiles": "detect.faces.tiles",
    "plate_size": "detect.plates.input_width",
    "stride": "detect.stride",
    "track": "track.enabled",
    "backfill": "track.backfill_frames",
    "method": "anonymize.method",
    "strength": "anonymize.strength",
    "pad": "anonymize.face_pad",
    "plate_pad": "anonymize.plate_pad",
    "shape": "anonymize.face_shape",
    "quality": "encode.crf",
    "metadata": "encode.metadata",
    "threads": "runtime.threads",
    "spinning": "runtime.allow_spinning",
}


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def job_config(path: Path | None, overrides: dict[str, Any] | None = None) -> JobConfig:
    """The JobConfig of a YAML file (None: the defaults) with flag values laid over it.

    ``overrides`` maps ``JOB_FLAGS`` names to values; None means "not given". A bad value is one
    sentence naming the flag (or the file's key), never a pydantic traceback.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - set(JOB_FLAGS)
    if unknown:  # a caller's bug, not a user's: the CLI only passes known flags
        raise ValueError(f"not job flags: {', '.join(sorted(unknown))}")
    data = load_yaml(path) if path else {}
    for name, value in given.items():
        _set(data, JOB_FLAGS[name], value)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as err:
        flags = {JOB_FLAGS[n]: "--" + n.replace("_", "-") for n in given}
        source = str(path) if path else "command line"
        raise ConfigError(describe_error(err, source, JobConfig, flags=flags)) from None


def default(model: type[BaseModel], path: str) -> str:
    """The default of ``model``'s key ``path`` (``detect.faces.threshold``) as help text shows
    it (``on``/``off`` for booleans): `--help` reads each default here, never a copy of it."""
    value: Any = model()
    for key in path.split("."):
        value = getattr(value, key)
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag_help(text: str, flag: str) -> str:
    """``text`` and the JobConfig default of job flag ``flag`` (a ``JOB_FLAGS`` name)."""
    return f"{text} (default {default(JobConfig, JOB_FLAGS[flag])})."


def load_job_config(path: Path | None) -> JobConfig:
    return job_config(path)


def load_any_config(path: Path | None) -> JobConfig | ServiceConfig:
    """A cameras.yaml (it has ``cameras:``) or a blur config; None: the defaults."""
    if path is None:
        return JobConfig()
    if "cameras" in load_yaml(path):
        return load_service_config(path)
    return job_config(path)


# -- the service: cameras.yaml -------------------------------------------------------------------

SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")
OUTPUT_SCHEMES = ("rtsp", "rtsps")


class SourceConfig(Base):
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport; TCP survives NAT.")
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(
        5.0, gt=0, le=300, description="No frame for this long: close and reconnect."
    )
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between retries.")
    loop: bool = Field(False, description="Files only: start over at the end (demos, tests).")


class OutputEncodeConfig(Base):
    codec: str = "libx264"
    preset: str = "ultrafast"
    tune: str = "zerolatency"
    bitrate_kbps: int | None = Field(None, gt=0, description="None: constant quality (crf).")
    crf: int = Field(23, ge=0, le=51)
    gop_s: float = Field(2.0, gt=0, le=60, description="Keyframe interval: viewers join this fast.")


class OutputConfig(Base):
    rtsp: SecretUrl | None = Field(
        None, description="Push URL, e.g. rtsp://127.0.0.1:8554/<name>; printed redacted."
    )
    file: Path | None = Field(None, description="Also record to this file (renamed when closed).")
    preview: bool = Field(True, description="Low-rate MJPEG preview on the HTTP server.")
    preview_zones: bool = Field(
        False,
        description="Draw the privacy zones' outlines on the preview (never on the stream or the "
        "file), to check where they lie.",
    )
    encode: OutputEncodeConfig = OutputEncodeConfig()

    @field_validator("rtsp")
    @classmethod
    def _rtsp_scheme(cls, v: SecretUrl | None) -> SecretUrl | None:
        if v is not None and v.scheme not in OUTPUT_SCHEMES:
            raise ValueError(f"must be an rtsp:// or rtsps:// URL (scheme one of {OUTPUT_SCHEMES})")
        return v


class FailClosedConfig(Base):
    policy: Literal["drop", "blur_frame"] = Field(
        "drop",
        description="What happens to a frame that could not be checked: never published raw.",
    )
    max_unchecked_ms: int = Field(
        500,
        ge=0,
        le=10_000,
        description="A frame between detections is published (tracked) only if the newest "
        "detection of its camera is at most this much older.",
    )
    max_latency_ms: int = Field(
        2000, ge=50, le=60_000, description="A frame older than this at publish time is dropped."
    )


class CameraConfig(Base):
    """One camera after defaults were merged in."""

    name: str
    url: SecretUrl = Field(
        ..., description="rtsp://, rtsps://, http(s):// or a file path; printed redacted."
    )
    enabled: bool = True
    output: OutputConfig = OutputConfig()
    source: SourceConfig = SourceConfig()
    detect: DetectConfig = DetectConfig()
    track: TrackConfig = TrackConfig()
    anonymize: AnonymizeConfig = AnonymizeConfig()
    fail_closed: FailClosedConfig = FailClosedConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not CAMERA_NAME.match(v):
            raise ValueError(
                f"must be {CAMERA_NAME_RULE} characters (it names the stream path, threads, "
                "logs and metric labels)"
            )
        return v

    @field_validator("anonymize")
    @classmethod
    def _hides(cls, v: AnonymizeConfig) -> AnonymizeConfig:
        # Fail closed: outlines publish every face unhidden; they are for `blur --draw-boxes`.
        if v.method == "boxes":
            raise ValueError(
                "method boxes draws outlines and hides nothing, so a camera may not publish it; "
                "use gaussian, pixelate or fill (or face_shape: box for box-shaped masks)"
            )
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretUrl) -> SecretUrl:
        # str(v) is redacted after '://', so the scheme part can be checked without the secret.
        text = str(v)
        if "://" in text and v.scheme not in SOURCE_SCHEMES:
            raise ValueError(
                f"must use one of the schemes {', '.join(SOURCE_SCHEMES)} or be a path"
            )
        if "://" not in text and text.split(":", 1)[0].lower() in SOURCE_SCHEMES and ":" in text:
            # 'rtsp:/user:pw@host' would be read as a file path and printed whole.
            raise ValueError("must be written scheme://host/..., e.g. rtsp://host/path")
        return v


class SchedulerConfig(Base):
    max_batch: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Frames of all cameras per model call; default 8 on a GPU, 1 on a CPU "
        "(which gains nothing from batching: 1.01x measured, and a big batch delays every "
        "camera in it).",
    )
    max_wait_ms: int = Field(
        10, ge=0, le=1000, description="How long a batch waits to fill; adds that much latency."
    )


class ServeFlags(Base):
    """`edgeblur serve` flags that are not config keys, checked like them (see check_flags)."""

    port: int = Field(9108, ge=0, le=65535)
    # Event.wait overflows past ~1e10 s; a day-long demo is 86400.
    duration: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False)


class HttpConfig(Base):
    bind: str = Field("127.0.0.1", description="0.0.0.0 exposes metrics and previews to the LAN.")
    port: int = Field(9108, ge=0, le=65535)


class CameraDefaults(Base):
    """Sections every camera inherits; a camera's own keys override them key by key."""

    output: dict[str, Any] = {}
    source: dict[str, Any] = {}
    detect: dict[str, Any] = {}
    track: dict[str, Any] = {}
    anonymize: dict[str, Any] = {}
    fail_closed: dict[str, Any] = {}


class ServiceConfig(Base):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    http: HttpConfig = HttpConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    defaults: CameraDefaults = CameraDefaults()
    cameras: list[CameraConfig]

    @field_validator("cameras")
    @classmethod
    def _unique(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for cam in v:
            if cam.name in seen:
                raise ValueError(f"camera name '{cam.name}' is used twice; names must be unique")
            seen.add(cam.name)
        if not v:
            raise ValueError("must list at least one camera")
        _check_recordings(v)
        return v


def _local_path(url: SecretUrl) -> Path | None:
    """The file a camera reads, if it reads one (a bare path or file://), resolved."""
    text = url.reveal()
    if "://" in text:
        if url.scheme != "file":
            return None
        text = unquote(urlsplit(text).path)
    return Path(text).expanduser().resolve()


def _same_file(a: Path, b: Path) -> bool:
    # resolve() sees through symlinks; samefile also catches a hard link or a bind mount.
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_recordings(cameras: list[CameraConfig]) -> None:
    """A recording never replaces a camera's input, nor another camera's recording (at stop, the
    recording is renamed over whatever holds its path)."""
    inputs = [(c.name, p) for c in cameras if (p := _local_path(c.url)) is not None]
    outputs: list[tuple[str, Path]] = []
    for cam in cameras:
        if cam.output.file is None:
            continue
        out = cam.output.file.expanduser().resolve()
        for name, path in inputs:
            if _same_file(out, path):
                whose = "its own input" if name == cam.name else f"the input of camera '{name}'"
                raise ValueError(
                    f"camera '{cam.name}' output.file is {whose}, which recording would "
                    "overwrite; record to another file"
                )
        for name, path in outputs:
            if _same_file(out, path):
                raise ValueError(
                    f"cameras '{name}' and '{cam.name}' record to the same output.file; give "
                    "each camera its own file"
                )
        outputs.append((cam.name, out))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, recursively for mappings; neither input is changed."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _camera_entries(path: Path, cameras: Any) -> list[tuple[str, Any]] | None:
    """(key path prefix, entry) per camera, from a list or a Frigate-style mapping name → camera.

    None when ``cameras`` is neither (the model then says what is wrong with it).
    """
    if isinstance(cameras, list):
        return [(f"cameras[{i}]", cam) for i, cam in enumerate(cameras)]
    if not isinstance(cameras, dict):
        return None
    out = []
    for name, cam in cameras.items():
        where = f"cameras.{name}"
        if cam is None:
            cam = {}
        if isinstance(cam, dict):
            if "name" in cam and cam["name"] != name:
                raise ConfigError(
                    f"{path}: '{where}.name' differs from its key '{name}'; in a mapping of "
                    "cameras the key is the name, remove 'name'."
                )
            cam = {"name": str(name), **cam}
        out.append((where, cam))
    return out


def _fill_name(cam: dict[str, Any]) -> dict[str, Any]:
    """``{name}`` in output.rtsp / output.file → the camera's name, so ``defaults:`` can say
    ``rtsp://127.0.0.1:8554/{name}`` once for every camera."""
    name, out = cam.get("name"), cam.get("output")
    if not isinstance(name, str) or not isinstance(out, dict):
        return cam
    filled = {
        k: v.replace("{name}", name) if k in ("rtsp", "file") and isinstance(v, str) else v
        for k, v in out.items()
    }
    return {**cam, "output": filled}


def load_service_config(path: Path, env: dict[str, str] | None = None) -> ServiceConfig:
    """cameras.yaml → ServiceConfig: ${ENV} filled, defaults merged under each camera, validated.

    ``cameras`` is a list of cameras with a ``name`` or a mapping name → camera. Errors name the
    file and the key path as written there (``cameras[1].source.read_timeout_s``), never a value.
    """
    data = load_yaml(path, env)
    try:
        # Unknown top-level keys first: 'camerass:' must not be answered "'cameras' is missing".
        ServiceConfig.model_validate({**data, "cameras": [{"name": "x", "url": "x"}]})
    except ValidationError as err:
        if any(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in err.errors()):
            raise ConfigError(describe_error(err, str(path), ServiceConfig)) from None
    defaults = data.get("defaults") or {}
    entries = _camera_entries(path, data.get("cameras"))
    if isinstance(defaults, dict) and entries is not None:
        try:
            CameraDefaults.model_validate(defaults)
        except ValidationError as err:
            raise ConfigError(describe_error(err, str(path), CameraDefaults, "defaults")) from None
        merged = []
        for where, cam in entries:
            if not isinstance(cam, dict):
                raise ConfigError(f"{path}: {where} must be a mapping with name and url.")
            cam = _fill_name(deep_merge(defaults, cam))
            name = cam.get("name")
            label = f" (camera '{name}')" if isinstance(name, str) and "[" in where else ""
            try:
                CameraConfig.model_validate(cam)
            except ValidationError as err:
                msg = describe_error(err, str(path), CameraConfig, where)
                raise ConfigError(msg.replace("; ", f"{label}; ", 1) if label else msg) from None
            merged.append(cam)
        data = {**data, "cameras": merged}
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_error(err, str(path), ServiceConfig)) from None
