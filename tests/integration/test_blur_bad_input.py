"""`edgeblur blur` on hostile or mistaken input: one sentence, exit 2, nothing left behind.

Each case was a traceback or silent damage before (issue 13). Real subprocesses, real FFmpeg;
the read-only folder is a real read-only mount when the tests run as root (root ignores
permission bits), else a folder without write permission.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import edgeblur_cli


def edgeblur(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return edgeblur_cli("blur", "-q", *args, cwd=cwd)


def refused(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width``×``height``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def image(media_dir, tmp_path) -> Path:
    path = tmp_path / "in" / "astronaut.png"
    path.parent.mkdir()
    shutil.copy(media_dir / "astronaut.png", path)
    return path


@contextlib.contextmanager
def read_only_folder(parent: Path) -> Iterator[Path]:
    folder = parent / "readonly"
    folder.mkdir()
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)])
        if r.returncode != 0:
            pytest.skip("root, but cannot mount a read-only tmpfs here")
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=False)
    else:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)


def test_a_zero_byte_image_is_refused(tmp_path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    refused(edgeblur(str(tmp_path / "empty.jpg")), "empty (0 bytes)")
    assert listing(tmp_path) == ["empty.jpg"]


def test_an_image_claiming_a_huge_size_is_refused_from_its_header(tmp_path) -> None:
    (tmp_path / "huge.png").write_bytes(png_claiming(60000, 60000))
    refused(edgeblur(str(tmp_path / "huge.png")), "--max-pixels 3600000000")
    (tmp_path / "big.png").write_bytes(png_claiming(12000, 12000))
    refused(edgeblur(str(tmp_path / "big.png")), "--max-pixels")
    assert listing(tmp_path) == ["big.png", "huge.png"]


def test_raising_the_pixel_cap_reaches_the_decoder_which_refuses_in_one_sentence(
    tmp_path,
) -> None:
    (tmp_path / "huge.png").write_bytes(png_claiming(60000, 60000))
    r = edgeblur(str(tmp_path / "huge.png"), "--max-pixels", "4000000000")
    refused(r, "not an image OpenCV can decode")
    assert listing(tmp_path) == ["huge.png"]


def test_a_read_only_output_folder_is_refused_before_any_work(image, tmp_path) -> None:
    with read_only_folder(tmp_path) as ro:
        refused(edgeblur(str(image), "-o", str(ro / "out.png")), "Cannot write to")
        refused(edgeblur(str(image.parent), "-o", str(ro / "sub")), "Cannot write to")
        assert listing(ro) == []


def test_blur_dot_names_its_output_after_the_folder(image, tmp_path) -> None:
    r = edgeblur(".", cwd=image.parent)
    assert r.returncode == 0, r.stderr
    assert listing(tmp_path / "in_anonymized") == ["astronaut.png"]
    assert listing(image.parent) == ["astronaut.png"]


def test_an_existing_file_as_output_of_a_folder_is_refused(image, tmp_path) -> None:
    (tmp_path / "out.png").write_bytes(b"keep me")
    refused(edgeblur(str(image.parent), "-o", str(tmp_path / "out.png")), "is a file")
    refused(edgeblur(str(image), str(image), "-o", str(tmp_path / "out.png")), "is a file")
    assert (tmp_path / "out.png").read_bytes() == b"keep me"


def test_two_inputs_of_one_name_into_one_folder_are_refused(image, tmp_path) -> None:
    other = tmp_path / "other" / "astronaut.png"
    other.parent.mkdir()
    shutil.copy(image, other)
    refused(edgeblur(str(image), str(other), "-o", str(tmp_path / "out")), "would both be")
    assert not (tmp_path / "out").exists()


def test_an_existing_sidecar_needs_force(image, tmp_path) -> None:
    out = tmp_path / "out.png"
    (tmp_path / "out.png.json").write_text("keep me")
    refused(edgeblur(str(image), "-o", str(out), "--json"), "--force")
    assert not out.exists() and (tmp_path / "out.png.json").read_text() == "keep me"
    # Without --json the sidecar is not ours to check; with --force both are replaced.
    assert edgeblur(str(image), "-o", str(out)).returncode == 0
    r = edgeblur(str(image), "-o", str(out), "--json", "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.png.json").read_text().startswith("{")


def make_clip(path: Path, frames: int = 50) -> None:
    # faststart: the index is at the front, as a camera's finished file; the cut hits the data.
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            img = np.zeros((120, 160, 3), np.uint8)
            img[:, :, 0] = (np.arange(160) + i * 4) % 256
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(v.encode(None))


def test_a_video_cut_short_is_blurred_as_far_as_it_goes_with_a_warning(tmp_path) -> None:
    make_clip(tmp_path / "whole.mp4")
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out.mp4"
    r = edgeblur(str(tmp_path / "cut.mp4"), "-o", str(out))
    if r.returncode == 2:  # FFmpeg gave up on the damage: then nothing is left behind
        refused(r, "damaged")
        assert not out.exists()
    else:
        assert r.returncode == 0, r.stderr
        assert "of the 50 frames its header lists" in r.stderr and "cut short" in r.stderr
        with av.open(str(out)) as c:
            got = sum(1 for _ in c.decode(video=0))
        assert 0 < got < 50
        assert f"{got} frame(s)" in r.stdout
    assert not [p for p in tmp_path.iterdir() if ".part." in p.name]


def test_read_only_check_leaves_no_probe_file(image, tmp_path) -> None:
    r = edgeblur(str(image), "-o", str(tmp_path / "o" / "out.png"))
    assert r.returncode == 0, r.stderr
    assert listing(tmp_path / "o") == ["out.png"]
    assert not list(Path(tempfile.gettempdir()).glob(".edgeblur-probe.*"))


def test_a_full_disk_is_one_sentence_and_leaves_nothing(image, tmp_path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)])
    if r.returncode != 0:
        pytest.skip("root, but cannot mount a tmpfs here")
    try:
        # The output folder is writable (the check passes); the 790 kB image does not fit.
        refused(edgeblur(str(image), "-o", str(full / "out.png")), "No space left on device")
        assert listing(full) == []
    finally:
        subprocess.run(["umount", str(full)], check=False)
