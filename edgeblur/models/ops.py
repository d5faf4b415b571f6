"""Pre- and post-processing shared by more than one model family: letterbox and NMS.

Letterboxing anchors the image at the top-left corner, so mapping a box back to the original
frame is a single division by the scale; no offsets to carry around.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How one image was placed into the model input: ``scale`` from original to input pixels."""

    scale: float
    size_wh: tuple[int, int]  # original image
    input_wh: tuple[int, int]  # network input


def round_up(value: float, multiple: int) -> int:
    return int(-(-int(np.ceil(value)) // multiple) * multiple)


def input_size_for(
    sizes_wh: list[tuple[int, int]], width: int, multiple: int, max_upscale: float = 2.0
) -> tuple[int, int]:
    """One network input size (w, h) for a batch of images of possibly different sizes.

    ``width`` is the input width; the height follows the tallest aspect ratio in the batch so
    that no image is squeezed, rounded up to ``multiple`` (the network's stride). Small images
    are enlarged at most ``max_upscale`` times: a 176-px clip letterboxed to 1280 would cost 50x
    the compute of its own size and find nothing more.
    """
    widest = max(w for w, _ in sizes_wh)
    width = round_up(min(width, widest * max_upscale), multiple)
    aspect = max(h / w for w, h in sizes_wh)
    return width, max(multiple, round_up(width * aspect, multiple))


class LetterboxBuffers:
    """One model's reused input arrays, so a frame allocates no batch and no resized image.

    Holds the float32 NCHW batch per input size (grown to the largest batch seen) and the uint8
    resized image per resized size, each in a small LRU: a service sees a few sizes, not one per
    frame. Padding is written only where an image's placement changed since the slot's last use.
    Not thread-safe: one model, one owner thread. The batch handed out is valid until the next
    call, which overwrites it.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._batches: OrderedDict[tuple[int, int], tuple[np.ndarray, list]] = OrderedDict()
        self._resized: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.allocations = 0  # arrays made so far: stays flat once the sizes are known

    def batch(self, n: int, in_wh: tuple[int, int], pad_value: float) -> tuple[np.ndarray, list]:
        """(array of at least n images, placement (w, h) last written to each slot)."""
        key = (in_wh[1], in_wh[0])
        entry = self._batches.get(key)
        if entry is None or len(entry[0]) < n:
            arr = np.full((n, 3, *key), pad_value, dtype=np.float32)
            self.allocations += 1
            entry = (arr, [None] * n)
            self._batches[key] = entry
        self._batches.move_to_end(key)
        _trim(self._batches, self.keep)
        return entry

    def resized(self, wh: tuple[int, int]) -> np.ndarray:
        key = (wh[1], wh[0])
        arr = self._resized.get(key)
        if arr is None:
            arr = np.empty((*key, 3), np.uint8)
            self.allocations += 1
            self._resized[key] = arr
        self._resized.move_to_end(key)
        _trim(self._resized, self.keep * 2)
        return arr


def _trim(cache: OrderedDict, keep: int) -> None:
    while len(cache) > keep:
        cache.popitem(last=False)


def letterbox_batch(
    images: list[np.ndarray],
    input_wh: tuple[int, int],
    pad_value: float,
    scale_by: float,
    buffers: LetterboxBuffers | None = None,
) -> tuple[np.ndarray, list[Letterbox]]:
    """Resize each RGB image into one NCHW float32 batch.

    Args:
        images: H×W×3 uint8 RGB arrays.
        input_wh: network input width and height.
        pad_value: value of the padding, in the model's input units.
        scale_by: factor applied to pixel values (1.0 for 0..255 input, 1/255 for 0..1).
        buffers: reuse these arrays (the result is then valid until the next call with them);
            None: a fresh batch.
    Returns:
        (batch of shape (N, 3, H, W) float32, one Letterbox per image)
    """
    in_w, in_h = input_wh
    n = len(images)
    if buffers is None:
        batch, placed = np.full((n, 3, in_h, in_w), pad_value, dtype=np.float32), [None] * n
    else:
        full, placed = buffers.batch(n, input_wh, pad_value)
        batch = full[:n]
    boxes = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        scale = min(in_w / w, in_h / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if (nw, nh) == (w, h):
            resized = img
        elif buffers is None:
            resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        else:
            resized = cv2.resize(
                img, (nw, nh), dst=buffers.resized((nw, nh)), interpolation=cv2.INTER_LINEAR
            )
        if placed[i] is not None and placed[i] != (nw, nh):
            # Another size was here before: its pixels outside this image become padding again.
            batch[i, :, :, nw:] = pad_value
            batch[i, :, nh:, :nw] = pad_value
        placed[i] = (nw, nh)
        # One pass from uint8 HWC to float32 CHW, scaled, straight into the batch.
        chw = resized.transpose(2, 0, 1)
        if scale_by == 1.0:
            batch[i, :, :nh, :nw] = chw
        else:
            np.multiply(chw, np.float32(scale_by), out=batch[i, :, :nh, :nw])
        boxes.append(Letterbox(scale=scale, size_wh=(w, h), input_wh=input_wh))
    return batch, boxes


def to_original(xyxy: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map (N, 4) boxes from network input pixels back to original-image pixels, clipped."""
    out = xyxy / np.float32(lb.scale)
    w, h = lb.size_wh
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    return out.astype(np.float32, copy=False)


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(
    xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, classes: np.ndarray | None = None
) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    With ``classes``, boxes of different classes never suppress each other (boxes are shifted
    apart by class, the usual trick, so one pass handles all classes).
    """
    if len(xyxy) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = xyxy.astype(np.float32, copy=True)
    if classes is not None:
        # Shift each class by more than the whole span of coordinates (boxes may be negative
        # before clipping), so boxes of different classes can never overlap.
        span = float(boxes.max() - boxes.min()) + 1.0
        boxes += (classes.astype(np.float32) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        iou = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
