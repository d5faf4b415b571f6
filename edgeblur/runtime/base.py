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
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 0
    allow_spinning: bool = False
    options: dict[str, str] = field(default_factory=dict)


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
