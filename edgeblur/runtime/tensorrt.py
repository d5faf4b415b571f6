"""TensorRT 10 and 11: build an engine from a model's ONNX file once per GPU, then run batches.

The Runtime for NVIDIA GPUs and Jetsons. ``TensorRtRuntime`` is made by ``select.open_runtime``
on the thread that builds the Detector and then used only by its owner, the inference worker
thread. Preprocessing stays on the CPU for now: the model's ``preprocess`` fills a float32 NCHW
batch, which is copied into this runtime's pinned host buffer and sent to the GPU in one
asynchronous copy. A caller that asks ``host_input`` for the pinned buffer and preprocesses
straight into it skips that host copy (GPU resize/letterbox would replace it; docs/gpu.md).

Buffers are sized once for the largest batch and input the engine's profile allows, in pinned
(page-locked) host memory and device memory from ``cuda-python`` (binary wheels on x86_64 and
aarch64; pycuda has none), so a frame allocates nothing on the GPU. Inputs and outputs are bound
by tensor name (``set_input_shape``, ``set_tensor_address``) and the engine is enqueued with
``execute_async_v3`` on this runtime's own CUDA stream.

``tensorrt`` and ``cuda`` are imported when a runtime is made, never at module import, so this
module imports on CPU-only machines and the selector can say why TensorRT is unavailable.

TensorRT 10 (JetPack 6, NGC 24.x) builds reduced precision from builder flags (``FP16``,
``INT8`` with a calibration cache). TensorRT 11 removed those flags and the calibrators: every
network is strongly typed, so an fp16 engine needs an ONNX file whose layers are already fp16.
``nvidia-modelopt``'s AutoCast makes one when it is installed (the mixed-precision file is kept
beside the engines); without it the engine is built in fp32 and a log line says so. INT8 on 11
needs quantize/dequantize nodes in the model, which edgeblur's models do not have, so it is
refused. An attribute TensorRT no longer has (API drift in a version this code has not met) is
turned into ``TensorRtUnavailable``, which the runtime selection falls back from.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeblur.errors import ConfigError, EdgeblurError, ModelMissing
from edgeblur.fs import file_sha256
from edgeblur.runtime.base import RuntimeSettings
from edgeblur.runtime.engines import EngineCache, EngineKey, check_file

log = logging.getLogger(__name__)

ENGINE_FILE_SUFFIXES = (".engine", ".plan")
PRECISIONS = ("fp16", "fp32", "int8")
# The TensorRT major versions whose Python API this module is written against.
SUPPORTED_MAJORS = (10, 11)
# TensorRT 11 and later: strongly typed networks only (no FP16/INT8 builder flags).
STRONGLY_TYPED_FROM = 11
# Every model family here has stride 32; the smallest input preprocess can make is 32 px.
MULTIPLE = 32
# The optimization profile is tuned for 16:9 frames, the usual CCTV shape.
OPT_ASPECT = 9 / 16


class TensorRtUnavailable(EdgeblurError):
    """TensorRT, cuda-python or a CUDA GPU is missing on this machine."""


class EngineBuildError(EdgeblurError):
    """TensorRT could not parse a model or build an engine from it."""


class CudaError(RuntimeError):
    """A CUDA runtime call failed (out of memory, a lost device, ...)."""


def load_modules() -> tuple[Any, Any]:
    """(tensorrt, cuda runtime bindings), or TensorRtUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRtUnavailable(
            f"the tensorrt Python package cannot be imported ({exc}); on a Jetson use JetPack's "
            "python3 (a venv made with --system-site-packages), on x86 the TensorRT wheels or "
            "an NGC TensorRT image"
        ) from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError as exc:
            raise TensorRtUnavailable(
                f"cuda-python cannot be imported ({exc}); pip install 'cuda-python>=12,<13'"
            ) from None
    major = tensorrt_major(trt)
    if major < SUPPORTED_MAJORS[0]:
        raise TensorRtUnavailable(
            f"TensorRT {trt.__version__} is too old; edgeblur needs TensorRT 10 (JetPack 6 or "
            "newer) or 11"
        )
    if major > SUPPORTED_MAJORS[-1]:
        raise TensorRtUnavailable(
            f"TensorRT {trt.__version__} is newer than the versions edgeblur supports (10 and "
            "11); install TensorRT 11 or run on ONNX Runtime"
        )
    return trt, cudart


def tensorrt_major(trt: Any) -> int:
    """The major version of an imported ``tensorrt`` module; 0 when it has none."""
    head = str(getattr(trt, "__version__", "0")).split(".")[0]
    return int(head) if head.isdigit() else 0


@contextlib.contextmanager
def api_drift(trt: Any, what: str) -> Iterator[None]:
    """Turn a missing or changed TensorRT attribute into TensorRtUnavailable.

    TensorRT renames and removes Python APIs between majors (11 dropped ``BuilderFlag.FP16``
    and the calibrators); an AttributeError then must make the runtime selection fall back to
    ONNX Runtime, not kill the service.
    """
    try:
        yield
    except (AttributeError, ImportError) as exc:
        raise TensorRtUnavailable(
            f"TensorRT {getattr(trt, '__version__', '?')} does not have the API edgeblur uses "
            f"to {what} ({exc}); edgeblur supports TensorRT 10 and 11"
        ) from None


def modelopt_available() -> bool:
    """Whether ModelOpt's AutoCast (PyPI ``nvidia-modelopt``) can be imported."""
    try:
        return importlib.util.find_spec("modelopt") is not None
    except (ImportError, ValueError):
        return False


def effective_precision(trt: Any, precision: str) -> str:
    """The precision an engine will really have for a requested one, on this TensorRT.

    TensorRT 11 builds fp16 only from a mixed-precision model (ModelOpt AutoCast); without
    ModelOpt it builds fp32, and says so once per model when it builds. INT8 on 11 needs
    quantize/dequantize nodes in the model: EngineBuildError.
    """
    if tensorrt_major(trt) < STRONGLY_TYPED_FROM:
        return precision
    if precision == "int8":
        raise EngineBuildError(
            f"TensorRT {trt.__version__} builds INT8 engines only from models with explicit "
            "quantize/dequantize nodes, which edgeblur's models do not have; set "
            "runtime.precision to fp16, or use TensorRT 10 for calibrated INT8"
        )
    if precision == "fp16" and not modelopt_available():
        return "fp32"
    return precision


def _call(cudart: Any, result: Any, what: str) -> Any:
    """Unwrap a cuda-python call's ``(error, *values)`` tuple, raising CudaError on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA {what} failed: {getattr(err, 'name', err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_identity(cudart: Any, device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability ``major.minor``) of ``device``, or TensorRtUnavailable."""
    try:
        count = _call(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except CudaError as exc:  # no driver, driver too old, no device node in a container
        raise TensorRtUnavailable(f"no usable CUDA GPU: {exc}") from None
    if not count:
        raise TensorRtUnavailable("no CUDA GPU is visible (CUDA_VISIBLE_DEVICES, --gpus?)")
    props = _call(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes | bytearray):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), f"{props.major}.{props.minor}"


def probe() -> str | None:
    """Why TensorRT cannot run here, or None when it can (modules import and a GPU answers)."""
    try:
        _trt, cudart = load_modules()
        gpu_identity(cudart)
    except (TensorRtUnavailable, CudaError) as exc:
        return str(exc)
    return None


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def profile_wh_max(input_width: int, max_aspect: float) -> tuple[int, int]:
    """The largest (width, height) an engine accepts for a configured input width."""
    width = _round_up(input_width, MULTIPLE)
    return width, max(MULTIPLE, _round_up(width * max_aspect, MULTIPLE))


def profile_shapes(
    dims: tuple[int, ...], max_batch: int, input_width: int, max_aspect: float
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(min, opt, max) shapes for one NCHW input whose dynamic dims are -1; None if all fixed.

    Batch 1..max_batch (opt at max: a busy multi-camera box fills its batches), width
    32..input_width, height 32..input_width·max_aspect (opt 16:9). Fixed dims stay as they are:
    a network traced at one size runs only at that size.
    """
    if all(d >= 0 for d in dims):
        return None
    if len(dims) != 4:
        raise EngineBuildError(
            f"input of shape {dims} is not NCHW; edgeblur builds TensorRT profiles for image "
            "inputs only"
        )
    n, c, h, w = dims
    if c < 0:
        raise EngineBuildError(f"input of shape {dims} has a dynamic channel count")
    w_max, h_max = profile_wh_max(input_width, max_aspect)
    w_opt = w_max
    h_opt = min(h_max, max(MULTIPLE, _round_up(w_max * OPT_ASPECT, MULTIPLE)))
    lo = (1 if n < 0 else n, c, MULTIPLE if h < 0 else h, MULTIPLE if w < 0 else w)
    opt = (max_batch if n < 0 else n, c, h_opt if h < 0 else h, w_opt if w < 0 else w)
    hi = (max_batch if n < 0 else n, c, h_max if h < 0 else h, w_max if w < 0 else w)
    return lo, opt, hi


@functools.cache
def _trt_logger(trt: Any) -> Any:
    """One logger per process (TensorRT wants it to outlive every builder and runtime), sending
    TensorRT's messages to Python logging instead of stderr."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.ERROR,
        severity.ERROR: logging.ERROR,
        # Builds warn about every INT64 weight and unused input: useful, not an alarm.
        severity.WARNING: logging.INFO,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, sev: Any, msg: str) -> None:
            log.log(levels.get(sev, logging.INFO), "tensorrt: %s", msg)

    return _Logger()


def _calibrator(trt: Any, cache_file: Path) -> Any:
    """An INT8 calibrator that only replays a calibration cache made elsewhere: edgeblur ships
    no calibration images, so a cache that misses a tensor fails the build loudly."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no INT8 calibrators; set runtime.precision to fp16"
        )
    data = cache_file.read_bytes()

    class _CacheOnly(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return data

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return _CacheOnly()


def build_engine(
    trt: Any,
    onnx_path: Path,
    settings: RuntimeSettings,
    input_width: int,
    precision: str | None = None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine in ``precision`` (default: the
    settings'); EngineBuildError if TensorRT cannot.

    On TensorRT 11 ``onnx_path`` must already carry the precision (``autocast_fp16``).
    """
    precision = precision or settings.precision
    strongly_typed = tensorrt_major(trt) >= STRONGLY_TYPED_FROM
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    # 10: every network has an explicit batch (flags 0). 11: every network is strongly typed,
    # and the flag that asked for it in 10 is gone, so 0 again.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(
            f"TensorRT cannot parse {onnx_path.name} ({errors or 'no reason given'}); export the "
            "model with opset 17 or run it on ONNX Runtime (runtime.backend: onnxruntime)"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if not strongly_typed:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without scales run in fp16
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            cache_file = _calibration_file(settings)
            config.int8_calibrator = _calibrator(trt, cache_file)
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes = profile_shapes(
            tuple(tensor.shape), settings.max_batch, input_width, settings.max_aspect
        )
        if shapes is not None:
            profile.set_shape(tensor.name, *shapes)
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build an engine for {onnx_path.name} (its log above says why); "
            "try runtime.precision fp32, a larger runtime.workspace_mb, or runtime.backend "
            "onnxruntime"
        )
    return bytes(serialized)


def autocast_fp16(onnx_path: Path, out_dir: Path, model_sha256: str) -> Path:
    """A mixed-precision (fp16) copy of ``onnx_path`` made by ModelOpt AutoCast, for TensorRT 11.

    Kept in ``out_dir`` under the source's sha256, so a rebuild for another batch size or GPU
    reuses it. Inputs and outputs stay float32 (``keep_io_types``): the runtime's buffers and
    the models' pre- and postprocessing do not change.
    """
    dest = out_dir / f"{onnx_path.stem}-{model_sha256[:16]}.fp16.onnx"
    if dest.is_file():
        return dest
    try:
        import onnx
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as exc:
        raise EngineBuildError(
            f"ModelOpt AutoCast cannot be imported ({exc}); reinstall nvidia-modelopt or set "
            "runtime.precision to fp32"
        ) from None
    log.info("%s: converting to mixed precision with ModelOpt AutoCast", onnx_path.name)
    try:
        model = convert_to_mixed_precision(
            onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True
        )
    except Exception as exc:  # a tool's failure on one model must not kill the service
        raise EngineBuildError(
            f"ModelOpt AutoCast could not convert {onnx_path.name} to fp16 ({exc}); set "
            "runtime.precision to fp32"
        ) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dest)
    return dest


def _calibration_file(settings: RuntimeSettings) -> Path:
    if settings.int8_calibration_cache is None:
        raise ConfigError(
            "runtime.precision is int8 but runtime.int8_calibration_cache is not set; give the "
            "calibration cache made for this model, or use precision fp16."
        )
    return check_file(
        Path(settings.int8_calibration_cache).expanduser(), "runtime.int8_calibration_cache"
    )


def resolve_precision(settings: RuntimeSettings) -> RuntimeSettings:
    """``auto`` is fp16 on TensorRT; bf16 (an OpenVINO precision) is not built here."""
    if settings.precision == "auto":
        return replace(settings, precision="fp16")
    if settings.precision not in PRECISIONS:
        raise ConfigError(
            f"runtime.precision {settings.precision!r} is not one TensorRT builds here "
            f"({', '.join(PRECISIONS)}); use auto or fp16."
        )
    return settings


def engine_key(
    trt: Any, cudart: Any, onnx_path: Path, settings: RuntimeSettings, input_width: int
) -> EngineKey:
    settings = resolve_precision(settings)
    gpu, cc = gpu_identity(cudart)
    precision = effective_precision(trt, settings.precision)
    calibration = None
    if precision == "int8":
        calibration = file_sha256(_calibration_file(settings))
    return EngineKey(
        model_sha256=file_sha256(onnx_path),
        gpu_name=gpu,
        compute_capability=cc,
        tensorrt_version=str(trt.__version__),
        precision=precision,
        max_batch=settings.max_batch,
        input_wh_max=profile_wh_max(input_width, settings.max_aspect),
        calibration_sha256=calibration,
    )


def engine_cache(settings: RuntimeSettings) -> EngineCache:
    """The cache in ``settings.engine_dir``, which the caller (``build``) always fills in."""
    if settings.engine_dir is None:
        raise ConfigError("runtime.engine_dir is not set; give TensorRT a folder for its engines.")
    return EngineCache(settings.engine_dir)


def ensure_engine(
    onnx_path: Path, settings: RuntimeSettings, input_width: int, force: bool = False
) -> tuple[bytes, Path, bool]:
    """The cached engine for this model, GPU and settings, built first if needed.

    Returns (engine bytes, cache path, built now). The first build of a model on a GPU can take
    minutes (a Jetson Orin Nano: several); later starts read the cache in a second.
    """
    trt, cudart = load_modules()
    settings = resolve_precision(settings)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelMissing(
            f"Model file {onnx_path} does not exist; check the path or run `edgeblur models pull`."
        )
    key = engine_key(trt, cudart, onnx_path, settings, input_width)
    cache = engine_cache(settings)

    def build() -> bytes:
        source = onnx_path
        if key.precision != settings.precision:
            log.warning(
                "%s: TensorRT %s builds fp16 only from a mixed-precision model and "
                "nvidia-modelopt is not installed; building fp32 (pip install nvidia-modelopt "
                "for fp16)",
                onnx_path.name,
                key.tensorrt_version,
            )
        elif key.precision == "fp16" and tensorrt_major(trt) >= STRONGLY_TYPED_FROM:
            source = autocast_fp16(onnx_path, cache.root / "onnx", key.model_sha256)
        log.info(
            "building TensorRT engine for %s (first run on this GPU; this can take minutes): "
            "%s, batch 1..%d, up to %dx%d, %s, TensorRT %s",
            onnx_path.name,
            key.precision,
            key.max_batch,
            *key.input_wh_max,
            key.gpu_name,
            key.tensorrt_version,
        )
        with api_drift(trt, "build an engine"):
            return build_engine(trt, source, settings, input_width, key.precision)

    return cache.get_or_build(onnx_path.stem, key, build, force=force)


def _is_view_of(array: np.ndarray, buf: _Buffer) -> bool:
    """Whether ``array`` is the contiguous start of ``buf``'s pinned memory (``host_input``)."""
    return (
        buf.host_ptr != 0
        and array.dtype == buf.host.dtype
        and array.flags.c_contiguous
        and array.__array_interface__["data"][0] == buf.host_ptr
    )


@dataclass(slots=True)
class _Buffer:
    """One I/O tensor's memory, sized for the profile's largest shape."""

    device: int
    host_ptr: int
    host: np.ndarray  # flat view of the pinned host memory
    max_shape: tuple[int, ...]


class TensorRtRuntime:
    """One TensorRT engine with its CUDA stream and buffers; one owner thread calls ``run``.

    Args:
        path: the model's ONNX file (the engine is built or taken from the cache), or a
            ``.engine``/``.plan`` file built elsewhere for this GPU and TensorRT version.
        settings: precision, max_batch, max_aspect, engine_dir, workspace_mb are used.
        input_width: the role's configured detection width; the profile's largest width.
    """

    def __init__(
        self, path: Path, settings: RuntimeSettings = RuntimeSettings(), *, input_width: int = 640
    ):
        self.name = Path(path).stem
        self._trt, self._cudart = load_modules()
        self.precision = resolve_precision(settings).precision
        self._buffers: dict[str, _Buffer] = {}
        self._stream: Any = None
        self._closed = False
        path = Path(path)
        if not path.is_file():
            raise ModelMissing(
                f"Model file {path} does not exist; check the path or run `edgeblur models pull`."
            )
        try:
            # An attribute this TensorRT lacks falls back like a missing TensorRT.
            with api_drift(self._trt, "load and run an engine"):
                self._load(path, settings, input_width)
        except BaseException:
            self.close()
            raise

    def _load(self, path: Path, settings: RuntimeSettings, input_width: int) -> None:
        """Deserialize (building first if needed) the engine, then bind its buffers."""
        runtime = self._trt.Runtime(_trt_logger(self._trt))
        if path.suffix in ENGINE_FILE_SUFFIXES:
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise ModelMissing(
                    f"TensorRT engine {path} cannot be loaded here (another GPU or TensorRT "
                    "version?); point the role at the model's .onnx file so edgeblur builds one."
                )
            self.engine_path = path
        else:
            data, self.engine_path, built = ensure_engine(path, settings, input_width)
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None and not built:
                engine_cache(settings).discard(
                    self.engine_path, "TensorRT could not deserialize it"
                )
                data, self.engine_path, built = ensure_engine(path, settings, input_width)
                engine = runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise EngineBuildError(
                    f"TensorRT built an engine for {path.name} that it cannot load; run "
                    "`edgeblur engines build --force` and check the TensorRT log."
                )
        self._runtime = runtime  # the engine must not outlive the runtime that made it
        self.engine = engine
        self._setup()

    # --- the Runtime protocol -------------------------------------------------------------------

    def describe(self) -> tuple[str, str]:
        return "tensorrt", self.precision

    def input_shape(self, name: str) -> tuple[int | str | None, ...]:
        if name not in self.input_names:
            raise KeyError(name)
        return tuple(None if d < 0 else int(d) for d in self.engine.get_tensor_shape(name))

    def host_input(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A C-contiguous view of input ``name``'s pinned host buffer, of ``shape``.

        Preprocess into it and pass it to ``run``: it goes to the GPU without the host copy an
        ordinary array needs. Valid until the next ``run`` or ``host_input``; one owner thread.
        """
        buf = self._buffers[name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(buf.max_shape) or any(
            a > m for a, m in zip(shape, buf.max_shape, strict=True)
        ):
            raise ConfigError(
                f"{self.name}: input {name} of shape {shape} exceeds the TensorRT engine's "
                f"largest {buf.max_shape}; raise runtime.max_aspect for tall frames."
            )
        return buf.host[: math.prod(shape)].reshape(shape)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; a batch above the engine's largest runs in parts, results joined."""
        if self._closed:
            raise RuntimeError(f"{self.name}: TensorRT runtime used after close()")
        n = len(next(iter(inputs.values())))
        if n <= self.max_batch:
            return self._run(inputs)
        parts = [
            self._run({k: v[i : i + self.max_batch] for k, v in inputs.items()})
            for i in range(0, n, self.max_batch)
        ]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.output_names))]

    # --- internals ------------------------------------------------------------------------------

    def _setup(self) -> None:
        trt, cudart, engine = self._trt, self._cudart, self.engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise CudaError(f"{self.name}: TensorRT could not create an execution context")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        max_in: dict[str, tuple[int, ...]] = {}
        for name in self.input_names:
            declared = tuple(int(d) for d in engine.get_tensor_shape(name))
            if any(d < 0 for d in declared):
                declared = tuple(int(d) for d in engine.get_tensor_profile_shape(name, 0)[2])
            max_in[name] = declared
            if not self.context.set_input_shape(name, declared):
                raise EngineBuildError(f"{self.name}: the engine refuses its own largest shape")
        first = self.input_names[0]
        self.batch_dynamic = int(engine.get_tensor_shape(first)[0]) < 0
        self.max_batch = max_in[first][0]
        max_out = {
            n: tuple(int(d) for d in self.context.get_tensor_shape(n)) for n in self.output_names
        }
        for name, shape in max_out.items():
            if any(d < 0 for d in shape):
                raise EngineBuildError(
                    f"{self.name}: output {name} has a data-dependent shape {shape}; edgeblur "
                    "runs networks whose outputs follow their inputs"
                )
        self._stream = _call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._stream_handle = int(self._stream)
        for name, shape in {**max_in, **max_out}.items():
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            nbytes = max(1, math.prod(shape)) * dtype.itemsize
            device = _call(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._buffers[name] = _Buffer(device, 0, np.empty(0, dtype), shape)
            host_ptr = _call(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            raw = (ctypes.c_byte * nbytes).from_address(host_ptr)
            self._buffers[name] = _Buffer(device, host_ptr, np.frombuffer(raw, dtype), shape)
            if not self.context.set_tensor_address(name, device):
                raise CudaError(f"{self.name}: TensorRT refused the address of tensor {name}")
        w, h = max_in[first][3], max_in[first][2]
        log.info(
            "%s: TensorRT engine %s, batch up to %d, input up to %dx%d",
            self.name,
            self.engine_path.name,
            self.max_batch,
            w,
            h,
        )

    def _run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart, ctx = self._cudart, self.context
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.input_names:
            array = inputs[name]
            buf = self._buffers[name]
            if array.ndim != len(buf.max_shape) or any(
                a > m for a, m in zip(array.shape, buf.max_shape, strict=True)
            ):
                raise ConfigError(
                    f"{self.name}: input {name} of shape {tuple(array.shape)} exceeds the "
                    f"TensorRT engine's largest {buf.max_shape}; raise runtime.max_aspect for "
                    "tall frames (the engine is rebuilt on the next start)."
                )
            view = buf.host[: array.size].reshape(array.shape)
            if not _is_view_of(array, buf):  # host_input's view is already in place
                np.copyto(view, array, casting="same_kind")
            if not ctx.set_input_shape(name, array.shape):
                raise ConfigError(
                    f"{self.name}: the TensorRT engine does not accept input {name} of shape "
                    f"{tuple(array.shape)}; see its profile with `edgeblur engines list`."
                )
            _call(
                cudart,
                cudart.cudaMemcpyAsync(buf.device, buf.host_ptr, view.nbytes, h2d, self._stream),
                "cudaMemcpyAsync (host to device)",
            )
        if not ctx.execute_async_v3(self._stream_handle):
            raise CudaError(f"{self.name}: TensorRT execute_async_v3 failed (see its log)")
        shapes = []
        for name in self.output_names:
            buf = self._buffers[name]
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            nbytes = math.prod(shape) * buf.host.itemsize
            _call(
                cudart,
                cudart.cudaMemcpyAsync(buf.host_ptr, buf.device, nbytes, d2h, self._stream),
                "cudaMemcpyAsync (device to host)",
            )
            shapes.append(shape)
        _call(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        # Copies: the pinned buffers are overwritten by the next call, and a caller may keep
        # outputs longer than that. Outputs are small next to the input (a few MB at most).
        return [
            self._buffers[name].host[: math.prod(shape)].reshape(shape).copy()
            for name, shape in zip(self.output_names, shapes, strict=True)
        ]

    def close(self) -> None:
        """Free the GPU and pinned memory and the stream; idempotent."""
        if self._closed:
            return
        self._closed = True
        cudart = self._cudart
        for buf in self._buffers.values():
            if buf.host_ptr:
                cudart.cudaFreeHost(buf.host_ptr)
            if buf.device:
                cudart.cudaFree(buf.device)
        self._buffers.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        # Only a safety net: owners call close(). At interpreter exit the CUDA bindings may be
        # gone already, and a destructor must not raise.
        with contextlib.suppress(Exception):
            self.close()
