"""A hide zone on a real clip (carphone.mp4, real models, real FFmpeg): hidden on every frame of
the output, frames where the detector finds nothing included; the rest of the frame is kept."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
from conftest import edgeblur_cli


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def sharpness(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_hide_zone_is_hidden_on_every_frame_even_without_detections(
    tmp_path, media_dir, models
) -> None:
    src, out = media_dir / "carphone.mp4", tmp_path / "out.mp4"
    cfg = tmp_path / "zones.yaml"
    cfg.write_text(
        "anonymize:\n  zones:\n    - kind: hide\n"
        "      points: [[0, 0], [0.4, 0], [0.4, 0.4], [0, 0.4]]\n"
    )
    # A threshold no face reaches: the detector finds nothing, only the zone can hide anything.
    args = ["blur", "-c", str(cfg), "--thresh", "0.99", "--json", "-q", str(src), "-o", str(out)]
    r = edgeblur_cli(*args, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out.mp4.json").read_text())
    assert all(not f["regions"] for f in doc["frames"])
    before, after = frames(src), frames(out)
    assert len(after) == len(before) > 0
    h, w = before[0].shape[:2]
    zone = (slice(0, int(0.4 * h) - 1), slice(0, int(0.4 * w) - 1))
    rest = (slice(h // 2, h), slice(w // 2, w))
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        # Hidden: the zone's detail is gone (a few % of the input's at most) on every frame...
        assert sharpness(b[zone]) < 0.05 * sharpness(a[zone]) + 1.0, f"frame {i}"
        # ...while outside it only the encoder's noise differs.
        assert np.abs(a[rest].astype(int) - b[rest]).mean() < 12, f"frame {i}"
