"""Files that are whole or absent: atomic writes and content digests, for every writer.

Outputs, recordings, cached models and TensorRT engines are all written under a temporary name
in the destination's own folder (``os.replace`` is atomic only within one file system, and /tmp
is often another one) and renamed over the target only when complete. A reader sees the old file
or the whole new one; an interrupted write, Ctrl-C included, leaves neither a half file nor its
temporary.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(dest: Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``dest`` that replaces it only if the block finishes.

    The temporary keeps ``dest``'s suffix (``.x.part.mp4``), so FFmpeg and OpenCV pick the format
    from it, and starts with a dot, so folder listings skip it. ``mode`` None: the usual
    permissions (``0666`` less the umask) instead of ``mkstemp``'s ``0600``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp_path: Path | None = None
    try:
        # Inside the try from its first line: a signal that lands right after the file is made
        # (the tests freeze the process the moment it appears) must still remove it.
        fd, tmp = tempfile.mkstemp(
            prefix=f".{dest.stem}.", suffix=f".part{dest.suffix}", dir=dest.parent
        )
        tmp_path = Path(tmp)
        os.close(fd)
        os.chmod(tmp_path, mode)
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        # BaseException too: Ctrl-C must not leave the half file behind.
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_atomic(dest: Path, data: bytes | Path, mode: int | None = None) -> None:
    """Write ``data`` (bytes, or the content of a file) to ``dest`` atomically and durably.

    The data is fsynced before the rename and the folder after it, so a power cut leaves the old
    file or the new one, not an empty one (engines and models are read back without a check of
    their length by the runtimes).
    """
    with atomic_path(dest, mode) as tmp, open(tmp, "wb") as sink:
        if isinstance(data, bytes):
            sink.write(data)
        else:
            with data.open("rb") as source:
                shutil.copyfileobj(source, sink, _CHUNK)
        sink.flush()
        os.fsync(sink.fileno())
    with contextlib.suppress(OSError):  # the rename itself survives a power cut only after this
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks (models are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
