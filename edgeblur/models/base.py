"""The Model protocol: a family's pre- and post-processing, and nothing of runtimes.

A model turns a list of RGB images into named NCHW input arrays and turns the runtime's named
outputs back into ``Detections`` in original-image pixels. Any runtime can run any model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgeblur.types import Detections, Kind


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Settings every family understands.

    Attributes:
        kind_of_class: detector class id → what it hides (FACE / PLATE); unknown classes dropped.
        threshold: minimum confidence kept; low by default because a miss is a privacy breach.
        nms_iou: boxes overlapping more than this are merged by NMS.
        input_width: network input width in pixels; the height follows the frame's aspect ratio.
        max_upscale: a frame narrower than input_width is enlarged at most this many times.
        fixed_input_wh: the (w, h) a network was exported at, when its input is not dynamic.
    """

    kind_of_class: dict[int, Kind]
    threshold: float = 0.2
    nms_iou: float = 0.4
    input_width: int = 640
    max_upscale: float = 2.0
    fixed_input_wh: tuple[int, int] | None = None


class Model(Protocol):
    """Pre- and post-processing of one family; see models/centerface.py for an example."""

    input_name: str
    stride: int
    settings: ModelSettings

    def preprocess(self, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], Any]:
        """RGB uint8 H×W×3 images → ({input name: NCHW float32 batch}, meta for postprocess)."""
        ...

    def postprocess(self, outputs: list[np.ndarray], meta: Any) -> list[Detections]:
        """Runtime outputs (in the network's output order) → one Detections per image."""
        ...
