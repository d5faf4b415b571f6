"""YOLOv5-face (deepcam-cn/yolov5-face exports): one output [B, N, 16], no NMS inside.

Rows: cx, cy, w, h (input pixels), objectness, 5 landmarks as 10 coordinates, class score;
the confidence is objectness × class. These exports run only at the size they were traced at,
so the input size comes from the network (``fixed_input_wh``), letterboxed, RGB / 255.
No package ships weights for it: users bring their own file.
"""

from __future__ import annotations

import numpy as np

from edgeblur.models.base import ModelSettings
from edgeblur.models.ops import (
    Letterbox,
    LetterboxBuffers,
    cxcywh_to_xyxy,
    letterbox_batch,
    nms,
    to_original,
)
from edgeblur.types import Detections, Kind


class YoloV5Face:
    input_name = "input"
    stride = 32

    def __init__(self, settings: ModelSettings, input_name: str = "input"):
        if settings.fixed_input_wh is None:
            raise ValueError(
                "YOLOv5-face needs fixed_input_wh: its exports run only at their traced size"
            )
        self.settings = settings
        self._buffers = LetterboxBuffers()  # inputs reused frame to frame
        self.input_name = input_name
        self.kind = settings.kind_of_class.get(0, Kind.FACE)

    def preprocess(self, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], list[Letterbox]]:
        batch, boxes = letterbox_batch(
            images,
            self.settings.fixed_input_wh,
            pad_value=114 / 255,
            scale_by=1 / 255,
            buffers=self._buffers,
        )
        return {self.input_name: batch}, boxes

    def postprocess(self, outputs: list[np.ndarray], meta: list[Letterbox]) -> list[Detections]:
        out = outputs[0]
        if out.ndim != 3 or out.shape[2] != 16:
            raise ValueError(f"YOLOv5-face output must be [B, N, 16], got {out.shape}")
        return [self._decode(out[i], lb) for i, lb in enumerate(meta)]

    def _decode(self, rows: np.ndarray, lb: Letterbox) -> Detections:
        conf = rows[:, 4] * rows[:, 15]
        keep = conf > self.settings.threshold
        if not keep.any():
            return Detections.empty()
        xyxy = cxcywh_to_xyxy(rows[keep, :4])
        conf = conf[keep]
        order = nms(xyxy, conf, self.settings.nms_iou)
        kinds = np.full(len(order), self.kind, np.uint8)
        return Detections(to_original(xyxy[order].astype(np.float32), lb), conf[order], kinds)
