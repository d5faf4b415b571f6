"""How much of a labelled box ended up hidden: the criterion of tests and `edgeblur eval`.

A labelled face or plate counts as covered when at least ``COVERED`` (80%) of its pixels lie
inside the mask the anonymizer hides. Pixels, not IoU with a detection, because what matters is
what leaves the box: a detection that is a little off but padded still hides the face, and a
perfect detection hidden with a tiny ellipse would not.
"""

from __future__ import annotations

import numpy as np

COVERED = 0.8


def box_coverage(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Fraction (N,) of each xyxy box's pixels that are True in the H×W boolean ``mask``.

    Boxes follow labels.json: x1, y1 inclusive, x2, y2 exclusive, clipped to the mask.
    """
    h, w = mask.shape
    out = np.zeros(len(boxes), dtype=np.float64)
    # An integral image makes each box sum O(1), however many boxes a frame has.
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.int64).reshape(-1, 4)):
        x1, x2 = np.clip([x1, x2], 0, w)
        y1, y2 = np.clip([y1, y2], 0, h)
        area = (x2 - x1) * (y2 - y1)
        if area <= 0:
            continue
        inside = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
        out[i] = inside / area
    return out


# Face size buckets of `edgeblur eval`, by box height in pixels of the evaluated image (a profile
# face is narrow but as tall as a frontal one, so height tracks distance better than width).
SIZE_BUCKETS = (("<10", 0, 10), ("10-20", 10, 20), ("20-40", 20, 40), (">=40", 40, None))


def size_buckets(boxes: np.ndarray) -> list[str]:
    """The SIZE_BUCKETS name of each xyxy box, by its height."""
    heights = np.asarray(boxes, np.int64).reshape(-1, 4) @ np.array([0, -1, 0, 1])
    edges = [lo for _, lo, _ in SIZE_BUCKETS[1:]]
    return [SIZE_BUCKETS[int(i)][0] for i in np.searchsorted(edges, heights, side="right")]
