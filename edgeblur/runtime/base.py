"""The Runtime protocol: load a network, run a batch of named NCHW float32 arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """How to run networks.

    Attributes:
        providers: ONNX Runtime execution providers in order of preference.
        threads: intra-op threads per session; 0 lets the runtime use every core.
        allow_spinning: let idle worker threads spin; off by default because spinning threads
            steal the only other core from decoding and encoding on small boxes.
        backend: ``onnxruntime`` (the providers above), ``tensorrt`` (falls back to ONNX
            Runtime CUDA, then CPU, each step logged), ``openvino`` or ``auto`` (the best one
            available).
        fallback: when False, a missing TensorRT or GPU is an error instead of a slower run.
        precision: ``auto`` (TensorRT fp16; OpenVINO bf16 where the CPU has it, else fp32),
            ``fp16``, ``fp32``, ``bf16`` (OpenVINO) or ``int8`` (TensorRT).
        device: OpenVINO device: ``auto`` (an Intel GPU when present, else the CPU), ``CPU``
            or ``GPU``.
        max_batch: largest batch a TensorRT engine is built for; larger batches run in parts.
        max_aspect: tallest input a TensorRT engine accepts, as height / input width.
        engine_dir: TensorRT engine cache folder (``build`` sets ``<cache>/engines`` by default).
        int8_calibration_cache: TensorRT calibration cache file; required for ``int8``.
        workspace_mb: TensorRT builder scratch memory limit in MiB.
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 0
    allow_spinning: bool = False
    options: dict[str, str] = field(default_factory=dict)
    backend: str = "onnxruntime"
    fallback: bool = True
    precision: str = "auto"
    device: str = "auto"
    max_batch: int = 8
    max_aspect: float = 1.0
    engine_dir: str | None = None
    int8_calibration_cache: str | None = None
    workspace_mb: int = 1024


class Runtime(Protocol):
    input_names: list[str]
    output_names: list[str]
    batch_dynamic: bool

    def input_shape(self, name: str) -> tuple[int | str | None, ...]:
        """Declared shape of an input; str or None for a symbolic dimension."""
        ...

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; outputs in the network's output order."""
        ...

    def describe(self) -> tuple[str, str]:
        """(runtime and device, precision) this network actually runs on, for status/metrics."""
        ...
