"""Default settings on the labelled stills: how many labelled faces and plates end up hidden.

Criterion (edgeblur/coverage.py): a labelled box is covered when ≥ 80% of its pixels are inside
the mask the anonymizer hides. Real models from the cache, real media from ../shared.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeblur.build import anonymize_settings, build_detector
from edgeblur.config import JobConfig
from edgeblur.core.anonymize import hidden_mask
from edgeblur.io.files import decode_frames, read_image
from edgeblur.quality.coverage import COVERED, box_coverage
from edgeblur.types import Regions


@pytest.fixture(scope="module")
def pipeline(models):
    cfg = JobConfig()
    return build_detector(cfg.detect, cfg.runtime), anonymize_settings(cfg.anonymize)


def _mask(pipeline, image: np.ndarray) -> np.ndarray:
    detector, settings = pipeline
    regions = Regions.from_detections(detector.detect([image])[0], checked_index=0)
    return hidden_mask(regions, settings, (image.shape[1], image.shape[0]))


def _labelled(labels: dict, media_dir, what: str):
    """(name, frame index, boxes, hard indices) for every labelled still and GIF frame."""
    for name, entry in labels.items():
        if entry["type"] == "image" and entry[what]:
            yield name, None, entry[what], set(entry.get("hard", {}).get(what, []))
        elif entry["type"] == "gif":
            for idx, lab in entry["frames"].items():
                if lab[what]:
                    yield name, int(idx), lab[what], set(lab.get("hard", {}).get(what, []))


def _coverage(pipeline, labels, media_dir, what: str) -> dict[str, list[float]]:
    gif_frames: dict[str, list[np.ndarray]] = {}
    out: dict[str, list[float]] = {"easy": [], "hard": []}
    for name, idx, boxes, hard in _labelled(labels, media_dir, what):
        if idx is None:
            image = read_image(media_dir / name).rgb
        else:
            if name not in gif_frames:
                gif_frames[name] = [f for f, _, _ in decode_frames(media_dir / name)]
            image = gif_frames[name][idx]
        cov = box_coverage(_mask(pipeline, image), np.array(boxes))
        for i, c in enumerate(cov):
            out["hard" if i in hard else "easy"].append(float(c))
    return out


def test_faces_on_labelled_stills_are_hidden(pipeline, labels, media_dir):
    cov = _coverage(pipeline, labels, media_dir, "faces")
    every = np.array(cov["easy"] + cov["hard"])
    share = float(np.mean(every >= COVERED))
    # measured with the defaults: 21 / 21 clear and 12 / 13 hard faces (stills and the GIF's
    # billboard); the miss is obama2's defocused, border-cut face. 97%; the issue asks >= 95%.
    assert share >= 0.95, f"only {share:.1%} of {len(every)} labelled faces hidden"
    assert np.mean(np.array(cov["easy"]) >= COVERED) == 1.0, "a clear (not hard) face was missed"


def test_plates_on_labelled_stills_and_gif_are_hidden(pipeline, labels, media_dir):
    cov = _coverage(pipeline, labels, media_dir, "plates")
    every = np.array(cov["easy"] + cov["hard"])
    share = float(np.mean(every >= COVERED))
    # measured: 28 / 28 clear plates and 5 / 8 hard (under 25 px wide, or the bus plate hidden
    # behind coats) at the default plate width of 1280: 92%; the issue asks for >= 85%.
    assert share >= 0.85, f"only {share:.1%} of {len(every)} labelled plates hidden"
    assert np.mean(np.array(cov["easy"]) >= COVERED) == 1.0, "a clear (not hard) plate was missed"


@pytest.mark.parametrize("name", ["alpr_test.jpg", "plate_crop_1.png"])
def test_no_face_images_get_almost_no_face_regions(pipeline, media_dir, name):
    detector, _ = pipeline
    image = read_image(media_dir / name).rgb
    dets = detector.detect([image])[0]
    faces = dets[dets.kind == 0]
    area = float(np.prod(faces.xyxy[:, 2:] - faces.xyxy[:, :2], axis=1).sum()) if len(faces) else 0
    assert area / (image.shape[0] * image.shape[1]) < 0.01


def test_cartoon_clip_hides_little_of_the_frame(pipeline, media_dir):
    """bigbuckbunny has no real faces; cartoon faces may fire, but the frame stays mostly clear."""
    hidden = []
    for i, (image, _, _) in enumerate(decode_frames(media_dir / "bigbuckbunny.mp4")):
        if i % 11 == 0:
            hidden.append(_mask(pipeline, image).mean())
    assert np.mean(hidden) < 0.05, f"{np.mean(hidden):.1%} of the frame hidden on average"


def test_shot_cuts_of_bikes_are_found_exactly(media_dir):
    from edgeblur.core.shots import CutDetector

    cuts = CutDetector()
    found = [
        i
        for i, (img, _, _) in enumerate(decode_frames(media_dir / "bikes.mp4"))
        if cuts.is_cut(img)
    ]
    assert found == [30, 76, 137, 187, 242]  # MEDIA.md lists these cuts
