"""`edgeblur blur` keeps the metadata of a video that identifies no one (creation time, language,
colour tags), always drops what may (GPS, camera make/model/serial), and --strip-metadata drops
the rest too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEN = "2024-05-01T10:00:00.000000Z"


def make_tagged_clip(path: Path) -> None:
    with av.open(str(path), "w", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update(
            {
                "creation_time": WHEN,
                "location": "+48.8583+002.2945/",
                "make": "ACME",
                "model": "Cam 3000",
                "com.apple.quicktime.location.ISO6709": "+48.8583+002.2945/",
            }
        )
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        v.codec_context.color_primaries = 1  # BT.709
        v.codec_context.color_trc = 1
        v.codec_context.colorspace = 1
        v.metadata["language"] = "fra"
        for i in range(10):
            img = np.full((120, 160, 3), 20 * i, np.uint8)
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(v.encode(None))


def tags(path: Path) -> tuple[dict, dict, tuple]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        cc = v.codec_context
        colour = (cc.color_primaries, cc.color_trc, cc.colorspace)
        return dict(c.metadata), dict(v.metadata), colour


@pytest.mark.parametrize("strip", [False, True])
def test_metadata_kept_or_stripped(tmp_path, models, strip) -> None:
    src, out = tmp_path / "tagged.mp4", tmp_path / "out.mp4"
    make_tagged_clip(src)
    src_tags, _, src_colour = tags(src)
    assert "location" in src_tags or "com.apple.quicktime.location.ISO6709" in src_tags
    flags = ["--strip-metadata"] if strip else []
    r = subprocess.run(
        [sys.executable, "-m", "edgeblur", "blur", str(src), "-o", str(out), "-q", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    container, stream, colour = tags(out)
    text = repr(container) + repr(stream)
    for secret in ("48.8583", "ACME", "Cam 3000"):
        assert secret not in text
    assert colour == src_colour == (1, 1, 1)
    if strip:
        assert "creation_time" not in container and stream.get("language") in (None, "und")
    else:
        assert container.get("creation_time", "").startswith("2024-05-01T10:00:00")
        assert stream.get("language") == "fra"
