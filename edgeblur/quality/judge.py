"""The judge of `edgeblur eval`: an independent face detector run on input and output frames.

A leak is a face the judge finds in an anonymized frame at a place where it also found one in
the original (IoU ≥ ``LEAK_IOU``). The judge must not share edgeblur's failure modes, so it is
not one of edgeblur's detection models; a judge that misses faces on the input only makes the
measure less sensitive, which is why `eval` reports how many faces it found there.

``dlib-hog``: dlib's HOG + linear SVM frontal face detector (frontal and turned faces, 5 filters).
Its model is compiled into dlib, so nothing is fetched at run time, and `dlib-bin` is a 4 MB
wheel with no dependencies. OpenCV's Haar cascades would need nothing new, but OpenCV 5 no
longer has them (no ``cv2.CascadeClassifier``, an empty ``cv2.data.haarcascades``);
face-detection-tflite requires all of TensorFlow; facenet-pytorch's MTCNN needs torch and
torchvision. Measured on the labelled media: it finds 24/24 of carphone's labelled faces but
only 1/6 of bikes' (side views, 23-66 px) and 6/20 of city.jpg's (13-40 px), as HOG needs faces
of about 40 px after upsampling. Its false positives (a wheel, a mission patch, a road sign here)
stay visible in the output and would read as leaks; `eval` sets them aside on labelled frames.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgeblur.errors import EdgeblurError
from edgeblur.models.ops import box_iou

LEAK_IOU = 0.3


class JudgeUnavailable(EdgeblurError):
    """The judge's library is not installed."""


class Judge(Protocol):
    name: str

    def faces(self, image: np.ndarray) -> np.ndarray:
        """(N, 4) float32 xyxy face boxes in an H×W×3 uint8 RGB image."""
        ...


class DlibHog:
    """dlib's HOG face detector, upsampling small frames so faces of ~40 px are found."""

    name = "dlib-hog"

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise JudgeUnavailable(
                "The eval judge 'dlib-hog' needs dlib; install it with "
                "`pip install dlib-bin==20.0.1.post1`."
            ) from None
        self._detect = dlib.get_frontal_face_detector()

    @staticmethod
    def upsample(size_wh: tuple[int, int]) -> int:
        # Each upsampling doubles the side and finds faces half as large, at 4x the time. At 1:
        # 0.24 s per 1280×720 frame on 2 cores; at 2 on every file, 2 more of city.jpg's 20 faces
        # and none elsewhere, for 4x that. carphone (176×144) needs 1 to find its 50 px face.
        side = max(size_wh)
        return 2 if side < 400 else 1 if side < 1600 else 0

    def faces(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        rects = self._detect(np.ascontiguousarray(image), self.upsample((w, h)))
        boxes = np.array(
            [[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32
        ).reshape(-1, 4)
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        return boxes


JUDGES = {"dlib-hog": DlibHog}


def build_judge(name: str) -> Judge:
    return JUDGES[name]()


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4), any array-likes: ``box_iou`` in
    float64, the one IoU of the package."""
    return box_iou(
        np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    )


def matched(a: np.ndarray, b: np.ndarray, iou: float = LEAK_IOU) -> int:
    """How many boxes of ``a`` have a box of ``b`` at IoU ≥ ``iou``.

    Leaks: ``a`` the judge's faces on the original frame, ``b`` those on the anonymized one.
    """
    if not len(a) or not len(b):
        return 0
    return int((iou_matrix(a, b) >= iou).any(axis=1).sum())
