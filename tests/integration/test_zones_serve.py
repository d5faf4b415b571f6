"""`edgeblur serve` with a hide zone: every frame it records has the zone hidden, whatever the
detector found (here nothing). Also exercises cameras as a mapping, a MediaMTX-style name with
upper case and '.', and {name} in an output path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def zone_sharpness(path: Path) -> list[float]:
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            zone = cv2.cvtColor(rgb[: int(0.4 * h) - 1, : int(0.4 * w) - 1], cv2.COLOR_RGB2GRAY)
            out.append(float(cv2.Laplacian(zone, cv2.CV_64F).var()))
    return out


def test_serve_hides_the_zone_on_every_recorded_frame(tmp_path, media_dir, models) -> None:
    clip = media_dir / "carphone.mp4"
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(
        f"""
http: {{port: 0}}
cameras:
  Zone.Cam:
    url: {clip}
    output: {{preview: false, file: "{tmp_path}/{{name}}.mp4"}}
    detect: {{faces: {{threshold: 0.99}}, plates: {{threshold: 0.99}}}}
    anonymize:
      zones:
        - kind: hide
          points: [[0, 0], [0.4, 0], [0.4, 0.4], [0, 0.4]]
"""
    )
    r = subprocess.run(
        [sys.executable, "-m", "edgeblur", "serve", "-c", str(cfg), "--duration", "10"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    recorded = zone_sharpness(tmp_path / "Zone.Cam.mp4")
    assert recorded, r.stderr
    source = zone_sharpness(clip)
    assert min(source) > 100  # the zone has detail to hide
    assert np.max(recorded) < 0.05 * min(source), "a recorded frame shows the zone"
