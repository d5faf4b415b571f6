"""`edgeblur blur` arguments checked before any model loads: each problem is one sentence, exit 2.

``plan`` (blur.py) maps inputs to outputs; this module checks what that plan would do to the
disk and the memory: empty inputs, images too large to decode safely (their header is read, not
the pixels), two inputs written to one file, outputs or sidecars that exist, output folders
that cannot be written. Nothing here decodes a frame.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgeblur.errors import OutputExists, OutputUnwritable, UnsupportedInput
from edgeblur.files.blur import Job
from edgeblur.io.files import is_image

# 8000×8000: a 64 MP photo decodes to 192 MB of RGB and about 1 GB while it is processed; a
# 12000×12000 PNG of 420 kB took 1.47 GB. --max-pixels raises it for a genuine large image.
MAX_PIXELS = 64_000_000
HEADER_BYTES = 64 * 1024  # JPEG's size marker may follow EXIF data; 64 kB covers the usual


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, WebP or BMP; None if not found."""
    with path.open("rb") as f:
        head = f.read(HEADER_BYTES)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return w, h
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(head) >= 30:
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return w, h
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        i += 2 + length
    return None


def check_inputs(jobs: Iterable[Job], max_pixels: int) -> None:
    for job in jobs:
        src = job.src
        if src.stat().st_size == 0:
            raise UnsupportedInput(f"{src} is empty (0 bytes); give a complete image or video.")
        if not is_image(src):
            continue
        size = image_size(src)
        if size is not None and size[0] * size[1] > max_pixels:
            w, h = size
            raise UnsupportedInput(
                f"{src} is {w}×{h} pixels, more than --max-pixels {max_pixels}; if it is a "
                f"genuine image, pass --max-pixels {w * h}."
            )


def check_outputs(jobs: list[Job], force: bool, sidecars: bool) -> None:
    """No two inputs into one file, no input overwritten, nothing existing replaced without
    --force (the sidecar included), every output folder writable."""
    sources = {job.src.resolve(): job.src for job in jobs}
    taken: dict[Path, Path] = {}
    for job in jobs:
        dest = job.dest.resolve()
        if dest in taken:
            raise OutputExists(
                f"{taken[dest]} and {job.src} would both be written to {job.dest}; blur them "
                "into separate output folders."
            )
        taken[dest] = job.src
        if dest in sources:
            raise OutputExists(
                f"Output {job.dest} is also an input ({sources[dest]}); choose another output."
            )
        if sidecars:
            side = sidecar_path(job.dest)
            if side.resolve() in sources:
                raise OutputExists(f"The sidecar {side} is an input; choose another output.")
            if side.exists() and not force:
                raise OutputExists(f"Sidecar {side} already exists; pass --force to overwrite it.")
    for folder in sorted({job.dest.parent for job in jobs}):
        check_writable(folder)


def check_writable(folder: Path) -> None:
    """Create and remove a file where the output will go (or in the nearest existing folder
    above it): the only honest test, since root ignores permission bits but not a read-only
    mount."""
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise OutputUnwritable(
            f"Cannot create the output folder {folder}: {probe_in} is a file; choose another "
            "output path."
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".edgeblur-probe.", dir=probe_in)
    except OSError as exc:
        raise OutputUnwritable(
            f"Cannot write to {probe_in} ({exc.strerror}); choose a writable output folder with -o."
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
