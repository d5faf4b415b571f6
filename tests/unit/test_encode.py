"""The one encoder recipe (io/encode.py) with real FFmpeg: live pads odd sizes and forces
keyframes by pts; a `blur` file output keeps odd sizes exactly, in 4:4:4."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from edgeblur.io import decode
from edgeblur.io.encode import FILE_OUTPUT, LIVE, Encoder, EncodeSettings
from edgeblur.io.files import transcode

TB = Fraction(1, 90000)


def write(path: Path, settings: EncodeSettings, w: int, h: int, n: int = 25) -> None:
    with av.open(str(path), "w") as out:
        enc = Encoder(out, settings, (w, h), Fraction(25), TB)
        for i in range(n):
            image = np.full((h, w, 3), (i * 9) % 256, np.uint8)
            out.mux(enc.encode(image, i * 3600))
        out.mux(enc.flush())


def frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(video=0))


def test_live_pads_odd_sizes_and_forces_a_keyframe_every_gop(tmp_path: Path) -> None:
    dest = tmp_path / "live.mkv"
    write(dest, EncodeSettings(gop_s=0.4), 175, 143)
    got = frames(dest)
    assert len(got) == 25
    assert {(f.width, f.height, f.format.name) for f in got} == {(176, 144, "yuv420p")}
    assert [i for i, f in enumerate(got) if f.key_frame] == [0, 10, 20]


def test_file_output_keeps_odd_sizes_in_444(tmp_path: Path) -> None:
    dest = tmp_path / "file.mkv"
    write(dest, FILE_OUTPUT, 175, 143)
    assert {(f.width, f.height, f.format.name) for f in frames(dest)} == {(175, 143, "yuv444p")}


def test_transcode_keeps_size_count_and_timing(tmp_path: Path) -> None:
    src, dest = tmp_path / "odd.mkv", tmp_path / "out.mp4"
    write(src, LIVE, 175, 143)  # 176x144 after padding
    assert transcode(src, dest, lambda _i, image: image) == 25
    with decode.open_input(str(dest), (10.0, 10.0)) as c:
        stream = decode.video_stream(c)
        assert decode.frame_rate(stream) == 25
        got = [decode.pts_ticks(f) for f in c.decode(stream)]
    assert got == [i * 3600 for i in range(25)]


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="gop_s"):
        EncodeSettings(gop_s=0)
    with pytest.raises(ValueError, match="odd_size"):
        EncodeSettings(odd_size="crop")  # type: ignore[arg-type]
