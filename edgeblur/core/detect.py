"""Detector: the face and plate models of one configuration, run on a batch of frames.

Sits between the Scheduler (or the file loop) and the Tracker: RGB images in, one
``Detections`` per image out, boxes in original-frame pixels. Each role has its own model and
runtime session; results of the roles are concatenated per image.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeblur.models import Model, ModelSettings, build_model
from edgeblur.models.ops import box_iou, input_size_for
from edgeblur.runtime.base import Runtime, RuntimeSettings
from edgeblur.types import Detections, Kind

if TYPE_CHECKING:
    from edgeblur.core.step import Plan


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """One detector role resolved to a file: which family decodes it and how."""

    role: str  # "face" | "plate"
    path: Path
    family: str
    settings: ModelSettings
    tiles: int = 1  # >1: also detect on a tiles×tiles grid of overlapping crops (small faces)


TILE_OVERLAP = 0.15  # of a tile's size, so a face on a seam is whole in at least one tile


def tile_windows(width: int, height: int, tiles: int) -> list[tuple[int, int, int, int]]:
    """x1, y1, x2, y2 of a tiles×tiles grid of overlapping crops covering the frame."""
    if tiles <= 1:
        return []
    tw = width / tiles * (1 + TILE_OVERLAP)
    th = height / tiles * (1 + TILE_OVERLAP)
    out = []
    for r in range(tiles):
        for c in range(tiles):
            x1 = round(min(max(0.0, c * width / tiles - tw * TILE_OVERLAP / 2), width - tw))
            y1 = round(min(max(0.0, r * height / tiles - th * TILE_OVERLAP / 2), height - th))
            out.append((x1, y1, min(width, round(x1 + tw)), min(height, round(y1 + th))))
    return out


STILL_TILE_SCALE = 1.5  # a still's tile is at most this many model inputs wide
MAX_STILL_TILES = 4


def still_tiles(spec: RoleSpec, width: int, height: int) -> int:
    """The tile grid for a still (or a frame run without a plan): at least the role's own, and
    fine enough that each tile is near full resolution, up to 4×4. An image is not real time, so
    small faces in a 2048-px crowd photo are worth 17 model runs."""
    if spec.tiles <= 1:
        return 1
    need = math.ceil(max(width, height) / (STILL_TILE_SCALE * spec.settings.input_width))
    return max(spec.tiles, min(MAX_STILL_TILES, need))


def _merge_tiles(parts: list[tuple[Detections, int, int]], iou: float) -> Detections:
    """Detections of the full frame and its tiles, shifted to frame pixels, duplicates merged.

    Merged by union, not suppressed: a tile cuts faces at its border and may box half a face
    more confidently than the whole frame boxes all of it; NMS would keep the half and a face
    would leak. Overlapping boxes of a kind become one box covering both (recall first).
    """
    shifted = []
    for dets, dx, dy in parts:
        if len(dets):
            xyxy = dets.xyxy + np.array([dx, dy, dx, dy], np.float32)
            shifted.append(Detections(xyxy, dets.confidence, dets.kind))
    merged = Detections.concat(shifted)
    if len(merged) < 2:
        return merged
    order = np.argsort(-merged.confidence, kind="stable")
    boxes: list[np.ndarray] = []
    kinds: list[int] = []
    confs: list[float] = []
    for i in order:
        box, kind = merged.xyxy[i], int(merged.kind[i])
        same = [k for k, kk in enumerate(kinds) if kk == kind]
        if same:
            overlaps = box_iou(box[None], np.stack([boxes[k] for k in same]))[0]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou or _inside(box, boxes[same[best]]):
                k = same[best]
                boxes[k] = np.concatenate(
                    [np.minimum(boxes[k][:2], box[:2]), np.maximum(boxes[k][2:], box[2:])]
                )
                continue
        boxes.append(box.copy())
        kinds.append(kind)
        confs.append(float(merged.confidence[i]))
    return Detections(
        np.array(boxes, np.float32), np.array(confs, np.float32), np.array(kinds, np.uint8)
    )


def _inside(a: np.ndarray, b: np.ndarray, share: float = 0.8) -> bool:
    """Whether most of box a lies inside box b (a partial face within a whole one)."""
    tl, br = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(br - tl, 0, None)))
    area = float(np.prod(np.clip(a[2:] - a[:2], 0, None)))
    return area > 0 and inter >= share * area


STAGES = ("preprocess", "inference", "postprocess")
_GPU = re.compile(r"tensorrt|onnxruntime-(cuda|tensorrt)|openvino-gpu", re.IGNORECASE)


@dataclass
class StageTimes:
    """Seconds per stage of the latest calls (bounded: a service runs for months)."""

    preprocess: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    inference: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    postprocess: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    last: dict[str, float] = field(default_factory=dict)  # the latest detect() call, all roles


def _fixed_wh(runtime: Runtime, name: str) -> tuple[int, int] | None:
    shape = runtime.input_shape(name)
    h, w = shape[2], shape[3]
    return (w, h) if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 else None


class Detector:
    """All roles of one configuration; one owner thread calls ``detect``."""

    def __init__(
        self, roles: list[RoleSpec], runtime_settings: RuntimeSettings = RuntimeSettings()
    ):
        from edgeblur.runtime.select import open_runtime  # TensorRT → ORT CUDA → CPU

        self.roles = roles
        self.times = StageTimes()
        self._pairs: list[tuple[RoleSpec, Model, Runtime]] = []
        for spec in roles:
            runtime = open_runtime(
                spec.path, runtime_settings, input_width=spec.settings.input_width
            )
            name = runtime.input_names[0]
            settings = spec.settings
            fixed = _fixed_wh(runtime, name)
            if fixed and settings.fixed_input_wh is None:
                # A network traced at one size runs only at that size (YOLOv5-face exports).
                settings = replace(settings, input_width=fixed[0], fixed_input_wh=fixed)
            self._pairs.append((spec, build_model(spec.family, settings, name), runtime))
        # Models at other input widths a schedule asked for (detect.auto's cheapest rungs),
        # sharing the role's runtime, which compiles each new shape once.
        self._at_width: dict[tuple[int, int], Model] = {}

    @property
    def kinds(self) -> set[Kind]:
        return {k for spec in self.roles for k in spec.settings.kind_of_class.values()}

    @property
    def on_gpu(self) -> bool:
        """Whether every role runs on a GPU, where batching frames pays (on a CPU it does not)."""
        return all(_GPU.match(rt.describe()[0]) for _s, _m, rt in self._pairs)

    @property
    def role_names(self) -> list[str]:
        return [spec.role for spec in self.roles]

    def detect(
        self, images: list[np.ndarray], plans: Sequence[Plan] | None = None
    ) -> list[Detections]:
        """One Detections per image (H×W×3 uint8 RGB), the roles that ran merged.

        ``plans`` (one per image) says which roles run on which image and which of their tiles;
        None runs every role and every tile on every image (stills, evaluation).
        """
        if not images:
            return []
        per_image: list[list[Detections]] = [[] for _ in images]
        last = dict.fromkeys(STAGES, 0.0)
        for r, (spec, role_model, runtime) in enumerate(self._pairs):
            crops: list[tuple[int, int, int, np.ndarray]] = []  # image, dx, dy, pixels
            models: list[Model] = []  # the model (input width) of each crop
            for i, img in enumerate(images):
                plan = None if plans is None else plans[i]
                if plan is not None and spec.role not in plan.due:
                    continue
                width = None if plan is None else plan.widths.get(spec.role)
                model = self._model_at(r, role_model, width)
                crops.append((i, 0, 0, img))
                h, w = img.shape[:2]
                grid = spec.tiles if plan is not None else still_tiles(spec, w, h)
                if grid > 1:
                    windows = tile_windows(w, h, grid)
                    which = range(len(windows)) if plan is None else plan.tiles.get(spec.role, ())
                    for k in which:
                        x1, y1, x2, y2 = windows[k]
                        crops.append((i, x1, y1, np.ascontiguousarray(img[y1:y2, x1:x2])))
                models += [model] * (len(crops) - len(models))
            if not crops:
                continue
            # One model call per network input size: a small camera is never letterboxed into a
            # large camera's input (a 176-px clip padded into 1280 px costs 50x for nothing).
            by_size: dict[tuple[int, int, int], list[int]] = {}
            for n, (model, (_i, _dx, _dy, crop)) in enumerate(zip(models, crops, strict=True)):
                by_size.setdefault((id(model), *_input_wh(model, crop)), []).append(n)
            found: list[Detections] = [Detections.empty()] * len(crops)
            for idxs in by_size.values():
                model = models[idxs[0]]
                t0 = time.perf_counter()
                inputs, meta = model.preprocess([crops[n][3] for n in idxs])
                t1 = time.perf_counter()
                outputs = runtime.run(inputs)
                t2 = time.perf_counter()
                for n, dets in zip(idxs, model.postprocess(outputs, meta), strict=True):
                    found[n] = dets
                t3 = time.perf_counter()
                for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    getattr(self.times, stage).append(seconds)
                    last[stage] += seconds
            groups: dict[int, list[tuple[Detections, int, int]]] = {}
            for (i, dx, dy, _crop), dets in zip(crops, found, strict=True):
                groups.setdefault(i, []).append((dets, dx, dy))
            for i, parts in groups.items():
                merged = (
                    parts[0][0]
                    if len(parts) == 1
                    else _merge_tiles(parts, role_model.settings.nms_iou)
                )
                per_image[i].append(merged)
        self.times.last = last
        return [Detections.concat(parts) for parts in per_image]

    def _model_at(self, r: int, model: Model, width: int | None) -> Model:
        """Role ``r``'s model, or a copy letterboxing to input ``width`` (same network)."""
        s = model.settings
        if width is None or width == s.input_width or s.fixed_input_wh is not None:
            return model
        key = (r, width)
        if key not in self._at_width:
            spec, _m, runtime = self._pairs[r]
            self._at_width[key] = build_model(
                spec.family, replace(s, input_width=width), runtime.input_names[0]
            )
        return self._at_width[key]


def _input_wh(model: Model, image: np.ndarray) -> tuple[int, int]:
    """The network input size ``model`` letterboxes this image into."""
    s = model.settings
    if s.fixed_input_wh is not None:
        return s.fixed_input_wh
    h, w = image.shape[:2]
    return input_size_for([(w, h)], s.input_width, model.stride, s.max_upscale)
