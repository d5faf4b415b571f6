"""OpenVINO: Intel's runtime for x86 CPUs (bf16 on AMX / AVX-512-BF16) and Intel GPUs.

The network is read once from its ONNX file and compiled per fixed input shape: edgeblur runs
each role at a few letterboxed sizes, fixed shapes compile to faster code than dynamic ones, and
OpenVINO's CenterFace crashed when compiled with a dynamic shape (issue 12). Compiled models are
kept in a small LRU cache; compiling one takes a fraction of a second.

On the CPU a batch runs image by image at batch 1: batching gains nothing on CPU (the bench
measured 1.01x) and it would multiply the shapes to compile by every batch size. On a GPU the
batch runs whole.

Precision: OpenVINO's CPU plugin runs bf16 by default wherever the CPU has it (AMX or
AVX-512-BF16), so "fp32" must be asked for explicitly with INFERENCE_PRECISION_HINT. ``auto``
picks bf16 where the device lists BF16 in OPTIMIZATION_CAPABILITIES, f16 on a GPU, else f32.

Threads: LATENCY hint with one stream (one owner thread runs one request at a time), at most
``threads`` threads, and no pinning to cores: pinned threads of two processes on the same cores
queue behind each other, and this machine's cores are shared with decode and encode.

``openvino`` is imported when a runtime is made, never at module import, so the selector can say
why it is unavailable.
"""

from __future__ import annotations

import logging
import platform
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from edgeblur.errors import ConfigError, EdgeblurError, ModelMissing
from edgeblur.runtime.base import RuntimeSettings

log = logging.getLogger(__name__)

X86_64 = ("x86_64", "amd64")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "CPU", "GPU")
_OV_TYPE = {"bf16": "bf16", "fp16": "f16", "fp32": "f32"}
_FROM_OV = {"bf16": "bf16", "f16": "fp16", "f32": "fp32"}
# Compiled shapes kept per network: a few letterboxed sizes per role, tiles, odd cameras.
CACHE_SIZE = 8


class OpenVinoUnavailable(EdgeblurError):
    """The openvino package is missing or this machine is not x86-64."""


def load_openvino() -> Any:
    """The openvino module, or OpenVinoUnavailable saying why not."""
    machine = platform.machine().lower()
    if machine not in X86_64:
        raise OpenVinoUnavailable(f"OpenVINO is used on x86-64 only, this machine is {machine}")
    try:
        import openvino
    except ImportError as exc:
        raise OpenVinoUnavailable(
            f"the openvino package cannot be imported ({exc}); pip install 'edgeblur[openvino]'"
        ) from None
    return openvino


def choose_device(available: list[str], wanted: str) -> str:
    """``wanted`` (CPU, GPU) if OpenVINO lists it; ``auto``: an Intel GPU when present."""
    if wanted == "auto":
        return "GPU" if any(d.split(".")[0] == "GPU" for d in available) else "CPU"
    if not any(d.split(".")[0] == wanted for d in available):
        raise ConfigError(
            f"runtime.device is {wanted} but OpenVINO sees only {', '.join(available)}; "
            "set runtime.device to auto or CPU."
        )
    return wanted


def choose_precision(device: str, capabilities: list[str], wanted: str) -> str:
    """bf16 / fp16 / fp32 for ``device`` with these OPTIMIZATION_CAPABILITIES."""
    caps = {c.upper() for c in capabilities}
    if wanted == "auto":
        if device == "GPU" and "FP16" in caps:
            return "fp16"
        return "bf16" if device == "CPU" and "BF16" in caps else "fp32"
    if wanted not in _OV_TYPE:
        raise ConfigError(
            f"runtime.precision {wanted} is not one OpenVINO runs here; use one of "
            f"{', '.join(PRECISIONS)}."
        )
    if wanted != "fp32" and wanted.upper() not in caps:
        raise ConfigError(
            f"runtime.precision is {wanted} but this {device} does not support it (it offers "
            f"{', '.join(sorted(caps))}); set runtime.precision to auto or fp32."
        )
    return wanted


class OpenVinoRuntime:
    """One network on one OpenVINO device; not thread-safe by design (one owner)."""

    def __init__(self, path: Path, settings: RuntimeSettings = RuntimeSettings()):
        path = Path(path)
        if not path.is_file():
            raise ModelMissing(
                f"Model file {path} does not exist; check the path or run `edgeblur models pull`."
            )
        ov = load_openvino()
        self._ov = ov
        self._core = ov.Core()
        self.device = choose_device(self._core.available_devices, settings.device)
        caps = list(self._core.get_property(self.device, "OPTIMIZATION_CAPABILITIES"))
        self.precision = choose_precision(self.device, caps, settings.precision)
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:  # openvino raises its own untyped errors for bad files
            raise ModelMissing(
                f"Model file {path} cannot be loaded by OpenVINO ({type(exc).__name__}); "
                "pull it again with `edgeblur models pull --force` or check the file."
            ) from exc
        self._config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_PRECISION_HINT": _OV_TYPE[self.precision],
        }
        if self.device == "CPU":
            self._config["ENABLE_CPU_PINNING"] = False
            if settings.threads:
                self._config["INFERENCE_NUM_THREADS"] = settings.threads
        self.input_names = [i.get_any_name() for i in self._model.inputs]
        self.output_names = [o.get_any_name() for o in self._model.outputs]
        self._declared = {
            i.get_any_name(): tuple(
                d.get_length() if d.is_static else None for d in i.get_partial_shape()
            )
            for i in self._model.inputs
        }
        first = self._declared[self.input_names[0]]
        self.batch_dynamic = first[0] is None
        self._split_batch = self.device == "CPU" or not self.batch_dynamic
        self._compiled: OrderedDict[tuple, Any] = OrderedDict()
        self.compiles = 0  # shapes compiled so far (a bounded cache must not recompile each call)

    def describe(self) -> tuple[str, str]:
        # openvino-cpu / openvino-gpu: lower case and without the device index ("GPU.1"), as
        # metric label values and alerts match them.
        return f"openvino-{self.device.split('.')[0].lower()}", self.precision

    def input_shape(self, name: str) -> tuple[int | str | None, ...]:
        return self._declared[name]

    def _request(self, inputs: dict[str, np.ndarray]) -> Any:
        key = tuple((name, arr.shape) for name, arr in inputs.items())
        request = self._compiled.get(key)
        if request is not None:
            self._compiled.move_to_end(key)
            return request
        self._model.reshape({name: list(arr.shape) for name, arr in inputs.items()})
        compiled = self._core.compile_model(self._model, self.device, self._config)
        if self.compiles == 0:
            actual = precision_in_use(compiled)
            if actual != self.precision:
                log.warning("OpenVINO runs %s at %s, not %s", self.device, actual, self.precision)
                self.precision = actual
        self.compiles += 1
        request = compiled.create_infer_request()
        self._compiled[key] = request
        while len(self._compiled) > CACHE_SIZE:
            self._compiled.popitem(last=False)
        return request

    def _infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = self._request(inputs)
        # share_inputs: the preprocessed batch is read in place; outputs are copied out
        # because the request reuses its buffers on the next call.
        result = request.infer(inputs, share_inputs=True, share_outputs=False)
        return [result[i] for i in range(len(self.output_names))]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        n = len(next(iter(inputs.values())))
        if not self._split_batch or n == 1:
            return self._infer(inputs)
        parts = [self._infer({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(n)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.output_names))]


def precision_in_use(compiled: Any) -> str:
    """The precision a compiled model reports (bf16, fp16, fp32)."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    value = str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint).lower()
    return _FROM_OV.get(value, value)
