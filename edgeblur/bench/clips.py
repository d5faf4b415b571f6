"""Test clips and outside processes for `edgeblur bench`: the 720p/1080p clips, deface's venv.

The clips are bikes.mp4 (640×272, 250 frames, 25 fps, faces in two shots; shared/MEDIA.md)
scaled ×2 or ×3 and letterboxed into 1280×720 / 1920×1080: 10 s at 25 fps, H.264 with a 2 s
GOP and no B-frames, as IP cameras send. A camera ``k`` of ``n`` gets the same clip started
``k/n`` of the way in (rotated), so simulated cameras do not show the same picture at the same
moment. Made on first use into ``<cache>/bench/``; the same inputs give the same pixels (the
encoder runs with a fixed thread count, so its bitstream does not depend on the machine's cores).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from edgeblur import assets
from edgeblur.errors import EdgeblurError, SourceUnavailable
from edgeblur.io.files import atomic_path

log = logging.getLogger(__name__)

CLIP_SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
CLIP_SOURCE = "bikes.mp4"
CLIP_FPS = 25
CLIP_FRAMES = 250  # 10 s
CLIP_VERSION = 1  # bump when the recipe changes: the cached files are named after it
DEFACE = "deface==1.5.0"
# onnx + onnxruntime: deface's fastest CPU backend ('auto' picks it when both import; without
# them it falls back to OpenCV's dnn). imageio-ffmpeg's wheel carries its own ffmpeg binary.
DEFACE_NEEDS = (DEFACE, "onnx", "onnxruntime")


class ToolUnavailable(EdgeblurError):
    """A tool the benchmark compares with could not be installed."""


def media_dir() -> Path:
    """The shared test media (shared/MEDIA.md): ``$EDGEBLUR_MEDIA`` or ``<cache>/media``."""
    configured = os.environ.get("EDGEBLUR_MEDIA")
    return Path(configured).expanduser() if configured else assets.cache_dir() / "media"


def bench_dir() -> Path:
    return assets.cache_dir() / "bench"


def clip_path(size: str, offset: int = 0, cameras: int = 1) -> Path:
    """The cached clip of ``size`` (720p, 1080p) for camera ``offset`` of ``cameras``."""
    suffix = f"-cam{offset}of{cameras}" if offset else ""
    return bench_dir() / f"bikes-{size}-v{CLIP_VERSION}{suffix}.mp4"


def make_clip(size: str, offset: int = 0, cameras: int = 1) -> Path:
    """The bench clip of ``size``, rotated by ``offset/cameras`` of its length; made if missing."""
    dest = clip_path(size, offset, cameras)
    if dest.is_file():
        return dest
    src = media_dir() / CLIP_SOURCE
    if not src.is_file():
        raise SourceUnavailable(
            f"The bench clip is made from {src}, which is missing; fetch the test media with "
            "`bash ../shared/media/fetch.sh` (shared/MEDIA.md)."
        )
    w, h = CLIP_SIZES[size]
    frames = _letterboxed(src, w, h)
    start = offset * len(frames) // cameras
    frames = frames[start:] + frames[:start]
    log.info("bench: writing %s (%d frames)", dest, len(frames))
    with atomic_path(dest) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=CLIP_FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 2
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(2 * CLIP_FPS), "bf": "0"}
        stream.codec_context.time_base = Fraction(1, CLIP_FPS)
        for i, rgb in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            vf.pts, vf.time_base = i, Fraction(1, CLIP_FPS)
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return dest


def _letterboxed(src: Path, w: int, h: int) -> list[np.ndarray]:
    """The first CLIP_FRAMES frames of ``src`` scaled to fit w×h, centred on black, RGB."""
    out = []
    with av.open(str(src)) as container:
        for vf in container.decode(video=0):
            scale = min(w / vf.width, h / vf.height)
            sw, sh = round(vf.width * scale) // 2 * 2, round(vf.height * scale) // 2 * 2
            small = vf.reformat(width=sw, height=sh, format="rgb24", interpolation="BICUBIC")
            canvas = np.zeros((h, w, 3), np.uint8)
            y, x = (h - sh) // 2, (w - sw) // 2
            canvas[y : y + sh, x : x + sw] = small.to_ndarray()
            out.append(canvas)
            if len(out) == CLIP_FRAMES:
                break
    return out


def clip_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for _ in container.decode(stream))


# -- deface, in a venv of its own ----------------------------------------------------------------
def deface_venv() -> Path:
    """``<cache>/bench-venv`` with deface and its ONNX Runtime backend; created on first use.

    A venv of its own: deface pins nothing and pulls opencv-python (with GUI libraries) and
    scikit-image, which edgeblur's environment must not get.
    """
    venv = assets.cache_dir() / "bench-venv"
    exe = venv / "bin" / "deface"
    marker = venv / "edgeblur-bench.txt"
    if exe.is_file() and marker.is_file() and marker.read_text().split() == list(DEFACE_NEEDS):
        return exe
    log.warning("bench: installing %s into %s (once)", DEFACE, venv)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--disable-pip-version-check", *DEFACE_NEEDS], check=True)
    except subprocess.CalledProcessError as exc:
        raise ToolUnavailable(
            f"Installing {DEFACE} into {venv} failed (exit {exc.returncode}); check that PyPI "
            "is reachable, or leave out --baseline deface."
        ) from None
    marker.write_text(" ".join(DEFACE_NEEDS) + "\n")
    return exe


def run_deface(exe: Path, clip: str, scale: str | None = None) -> dict:
    """deface on ``clip`` as a whole process: frames / wall-clock seconds, CPU, peak RSS."""
    cmd = [str(exe), clip]
    cmd += ["--scale", scale] if scale else []
    return run_whole(cmd, clip, "deface")


def run_blur(clip: str, config: str | None = None) -> dict:
    """`edgeblur blur` on ``clip`` as a whole process (model load, both passes, encode)."""
    cmd = [sys.executable, "-m", "edgeblur", "blur", clip, "--force"]
    cmd += ["-c", config] if config else []
    return run_whole(cmd, clip, "blur")


def run_whole(cmd: list[str], clip: str, name: str) -> dict:
    """Run ``cmd`` + ``-o <tmp>/out.mp4``: frames of ``clip`` / wall seconds, CPU, peak RSS."""
    frames = clip_frames(Path(clip))
    with tempfile.TemporaryDirectory(prefix=f"edgeblur-{name}-") as tmp:
        cmd = [*cmd, "-o", str(Path(tmp) / "out.mp4")]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _pid, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU and peak RSS
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.stderr and proc.stderr.close()
    if proc.returncode:
        raise ToolUnavailable(f"{name} exited {proc.returncode} on {clip}: {err[-500:]}")
    return {
        "fps_total": frames / wall,
        "fps": {name: frames / wall},
        "elapsed_s": wall,
        "frames": frames,
        "cpu_cores": (usage.ru_utime + usage.ru_stime) / wall,
        "rss_peak_mib": usage.ru_maxrss / 1024,
    }
