"""Which runtime runs a model: TensorRT, ONNX Runtime on CUDA, or ONNX Runtime on the CPU.

``open_runtime`` is what the Detector calls for each role, on the thread that builds it.
``runtime.backend`` chooses:

- ``onnxruntime``: ONNX Runtime with ``runtime.providers``, exactly as before the GPU path.
- ``tensorrt``: TensorRT; if it cannot run here, ONNX Runtime's CUDA provider; if that cannot
  either, the CPU. Each step down is a WARNING with the reason, logged once per process, never
  silent; ``runtime.fallback: false`` makes it an error instead.
- ``openvino``: OpenVINO (x86-64 CPUs, Intel GPUs); where it is not installed, ONNX Runtime CPU
  with a WARNING (``runtime.fallback: false``: an error).
- ``auto``: the GPU if there is one (TensorRT, then ONNX Runtime CUDA), else the CPU with the
  fastest runtime installed: OpenVINO on x86-64, else ONNX Runtime, the portable fallback. Steps
  down are logged at INFO, because a CPU-only box running on its CPU is what was asked for.

Whatever is chosen is logged once per process with its precision; ``Runtime.describe()`` says it
for status pages and metrics.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from edgeblur.errors import ConfigError, ModelMissing
from edgeblur.runtime.base import Runtime, RuntimeSettings
from edgeblur.runtime.onnxruntime import OnnxRuntime
from edgeblur.runtime.openvino import OpenVinoRuntime, OpenVinoUnavailable
from edgeblur.runtime.tensorrt import (
    ENGINE_FILE_SUFFIXES,
    CudaError,
    EngineBuildError,
    TensorRtRuntime,
    TensorRtUnavailable,
)

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt", "openvino", "auto")
# Precisions that only TensorRT builds; OpenVINO reached by ``auto`` chooses its own instead.
TENSORRT_ONLY_PRECISIONS = ("fp16", "int8")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CUDA_PROVIDER = "CUDAExecutionProvider"

# Fallback messages already logged by this process: a service opens one runtime per role and
# detector group, and one missing GPU is one line, not one per model.
_logged: set[str] = set()
_logged_lock = threading.Lock()


def _log_once(level: int, message: str) -> None:
    with _logged_lock:
        if message in _logged:
            return
        _logged.add(message)
    log.log(level, "%s", message)


def open_runtime(
    path: Path, settings: RuntimeSettings = RuntimeSettings(), *, input_width: int = 640
) -> Runtime:
    """A runtime for the network at ``path`` on the best backend ``settings`` allow.

    ``input_width`` is the role's detection width: the largest width a TensorRT engine's
    profile is built for.
    """
    runtime = _open(Path(path), settings, input_width)
    name, precision = runtime.describe()
    _log_once(logging.INFO, f"inference runs on {name} at {precision}")
    return runtime


def _open(path: Path, settings: RuntimeSettings, input_width: int) -> Runtime:
    if settings.backend == "onnxruntime":
        return OnnxRuntime(path, settings)
    if settings.backend not in BACKENDS:
        raise ConfigError(
            f"runtime.backend {settings.backend!r} is not one of {', '.join(BACKENDS)}."
        )
    if not path.is_file():
        raise ModelMissing(
            f"Model file {path} does not exist; check the path or run `edgeblur models pull`."
        )
    if settings.backend == "openvino":
        try:
            return OpenVinoRuntime(path, settings)
        except OpenVinoUnavailable as exc:
            _step_down(settings, str(exc), "ONNX Runtime CPU")
            return OnnxRuntime(path, _cpu_settings(settings))
    try:
        return TensorRtRuntime(path, settings, input_width=input_width)
    except TensorRtUnavailable as exc:
        reason = f"TensorRT is not available ({exc})"
    except (EngineBuildError, CudaError) as exc:
        reason = f"TensorRT cannot run {path.name} ({exc})"
    if path.suffix in ENGINE_FILE_SUFFIXES:
        raise ModelMissing(
            f"{path} is a TensorRT engine, but {reason}; point the role at the model's .onnx "
            "file to run it elsewhere."
        )
    _step_down(settings, reason, "ONNX Runtime CUDA")

    runtime, reason = _onnxruntime_cuda(path, settings)
    if runtime is not None and reason is None:
        log.info("%s: running on ONNX Runtime CUDA", path.stem)
        return runtime
    assert reason is not None
    if settings.backend == "auto":
        _step_down(settings, reason, "the CPU")
        try:
            return OpenVinoRuntime(path, _openvino_settings(settings))
        except OpenVinoUnavailable as exc:
            reason = str(exc)
    _step_down(settings, reason, "ONNX Runtime CPU")
    if runtime is not None:  # the CUDA attempt already opened a session, which runs on the CPU
        return runtime
    return OnnxRuntime(path, _cpu_settings(settings))


def _openvino_settings(settings: RuntimeSettings) -> RuntimeSettings:
    """``auto`` reached the CPU: a TensorRT precision (fp16 for the GPU) means auto here."""
    if settings.precision not in TENSORRT_ONLY_PRECISIONS:
        return settings
    _log_once(
        logging.INFO,
        f"runtime.precision {settings.precision} is a TensorRT precision; OpenVINO chooses its "
        "own (auto)",
    )
    return replace(settings, precision="auto")


def _step_down(settings: RuntimeSettings, reason: str, to: str) -> None:
    if settings.backend in ("tensorrt", "openvino") and not settings.fallback:
        raise ConfigError(
            f"runtime.backend is {settings.backend} but {reason}; fix that, or set "
            f"runtime.fallback to true to run on {to} instead."
        )
    level = logging.INFO if settings.backend == "auto" else logging.WARNING
    _log_once(level, f"{reason}; falling back to {to}")


def _onnxruntime_cuda(
    path: Path, settings: RuntimeSettings
) -> tuple[OnnxRuntime | None, str | None]:
    """(runtime, None) on CUDA; else (None or a runtime that ended up on the CPU, why)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA_PROVIDER not in available:
        return None, (
            f"this onnxruntime has no {CUDA_PROVIDER} (it has {', '.join(available)}; the "
            "onnxruntime-gpu package has it)"
        )
    cuda = replace(settings, providers=(CUDA_PROVIDER, *_cpu_settings(settings).providers))
    try:
        runtime = OnnxRuntime(path, cuda)
    except ModelMissing as exc:
        return None, f"ONNX Runtime could not open {path.name} with CUDA ({exc})"
    if CUDA_PROVIDER not in runtime.providers:
        # ONNX Runtime drops a provider whose libraries fail to load and carries on on the CPU.
        return runtime, (
            f"ONNX Runtime's {CUDA_PROVIDER} did not start (CUDA or cuDNN libraries missing, "
            "or no GPU; its log above says which)"
        )
    return runtime, None


def _cpu_settings(settings: RuntimeSettings) -> RuntimeSettings:
    cpu = tuple(p for p in settings.providers if p not in GPU_PROVIDERS)
    return replace(settings, providers=cpu or ("CPUExecutionProvider",))
