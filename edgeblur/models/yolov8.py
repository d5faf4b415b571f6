"""YOLOv8 detect heads (Ultralytics export): one output [B, 4 + classes, N], no NMS inside.

Rows are cx, cy, w, h in network-input pixels, then one score per class (already sigmoid).
Used for the faceghost face model and the safelicensing plate model; input RGB / 255, padding
114 as Ultralytics trains with.
"""

from __future__ import annotations

import numpy as np

from edgeblur.models.base import ModelSettings
from edgeblur.models.ops import (
    Letterbox,
    LetterboxBuffers,
    cxcywh_to_xyxy,
    input_size_for,
    letterbox_batch,
    nms,
    to_original,
)
from edgeblur.types import Detections


class YoloV8:
    input_name = "images"
    stride = 32

    def __init__(self, settings: ModelSettings):
        self.settings = settings
        self._buffers = LetterboxBuffers()  # inputs reused frame to frame
        n = max(settings.kind_of_class, default=-1) + 1
        # class id → Kind, 255 for classes we do not hide (dropped after decoding)
        self._kinds = np.full(max(n, 1), 255, np.uint8)
        for cls, kind in settings.kind_of_class.items():
            self._kinds[cls] = kind

    def preprocess(self, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], list[Letterbox]]:
        wh = self.settings.fixed_input_wh or input_size_for(
            [(im.shape[1], im.shape[0]) for im in images],
            self.settings.input_width,
            self.stride,
            self.settings.max_upscale,
        )
        batch, boxes = letterbox_batch(
            images, wh, pad_value=114 / 255, scale_by=1 / 255, buffers=self._buffers
        )
        return {self.input_name: batch}, boxes

    def postprocess(self, outputs: list[np.ndarray], meta: list[Letterbox]) -> list[Detections]:
        out = outputs[0]
        if out.ndim != 3 or out.shape[1] < 5:
            raise ValueError(f"YOLOv8 output must be [B, 4 + classes, N], got {out.shape}")
        return [self._decode(out[i], lb) for i, lb in enumerate(meta)]

    def _decode(self, rows: np.ndarray, lb: Letterbox) -> Detections:
        scores = rows[4:]
        cls = scores.argmax(axis=0)
        conf = scores[cls, np.arange(scores.shape[1])]
        keep = conf > self.settings.threshold
        if not keep.any():
            return Detections.empty()
        cls = cls[keep]
        conf = conf[keep]
        known = cls < len(self._kinds)
        kinds = np.where(known, self._kinds[np.minimum(cls, len(self._kinds) - 1)], 255)
        xyxy = cxcywh_to_xyxy(rows[:4, keep].T)
        sel = kinds != 255
        xyxy, conf, cls, kinds = xyxy[sel], conf[sel], cls[sel], kinds[sel]
        order = nms(xyxy, conf, self.settings.nms_iou, classes=cls)
        return Detections(
            to_original(xyxy[order].astype(np.float32), lb), conf[order], kinds[order]
        )
