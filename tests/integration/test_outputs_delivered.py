"""Outputs: "published" means delivered, a write error shows at once, a recording survives a kill.

All real: the sample clip as a looping camera, real models, FFmpeg writing a real file, HTTP on
127.0.0.1. The full disk is real too: RLIMIT_FSIZE makes every write past the limit fail
(EFBIG; Python ignores SIGXFSZ), as ENOSPC would, without needing a mount.
"""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from rtsp import media_file, wait_for
from serving import get, running, service_config, status


@contextlib.contextmanager
def file_size_limit(max_bytes: int) -> Iterator[None]:
    """Writes past ``max_bytes`` fail in this process (a full disk, as far as FFmpeg can tell)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def decoded_frames(path: Path) -> int:
    """Frames a player shows: decoded until the end or the first damage (a cut-off fragment)."""
    n = 0
    with av.open(str(path)) as c, contextlib.suppress(av.FFmpegError):
        for _ in c.decode(video=0):
            n += 1
    return n


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_full_disk_shows_at_once_and_the_frames_before_it_are_kept(
    models, tmp_path, suffix
) -> None:
    rec = tmp_path / "rec" / f"door{suffix}"
    cfg = service_config(
        [
            {
                "name": "door",
                "url": str(media_file("carphone.mp4")),
                "source": {"loop": True},
                "output": {"file": str(rec), "preview": False, "encode": {"gop_s": 0.5}},
            }
        ]
    )
    with running(cfg) as run:

        def on_disk() -> int:
            return sum(p.stat().st_size for p in rec.parent.glob(f".door.*.part{suffix}"))

        # Fragments on disk (FFmpeg buffers 32 kB before it writes), however slow the machine.
        wait_for(lambda: on_disk() > 64 * 1024, 120, "64 kB of recording on disk")
        wait_for(lambda: get(run.base + "/readyz")[0] == 200, 30, "ready")
        # Below the file's size: its next write fails. The models are long loaded by now.
        with file_size_limit(16 * 1024):
            wait_for(
                lambda: run.value("edgeblur_output_errors_total", camera="door", output="file") > 0,
                30,
                "the write error to be counted",
            )
            cam = status(run.base)["cameras"][0]
            code, body = get(run.base + "/readyz")
            published = run.published("door")
            wait_for(
                lambda: (
                    run.value("edgeblur_frames_total", camera="door", result="dropped_output") >= 5
                ),
                30,
                "frames the dead output did not take",
            )
            after = run.published("door")
        recorded = run.value("edgeblur_output_frames_total", camera="door", output="file")

    assert cam["last_error"] and cam["last_error"].startswith("file output:"), cam
    assert "file" in cam["outputs_down"], cam
    assert code == 503
    assert json.loads(body)["outputs_down"]["door"]["file"].startswith("file output:")
    # Frames no output took are not "published".
    assert after == published
    assert recorded == published
    # The recording ends at the error, but what was written before it plays.
    assert rec.exists()
    assert 0 < decoded_frames(rec) <= recorded
    assert not [p for p in rec.parent.iterdir() if ".part." in p.name]


SERVE_CONFIG = """
http: {{bind: 127.0.0.1, port: 0}}
cameras:
  - name: door
    url: {url}
    source: {{loop: true}}
    output: {{file: {rec}, preview: false, encode: {{gop_s: 0.5}}}}
"""


def test_a_recording_survives_sigkill_up_to_its_last_fragment(models, tmp_path) -> None:
    rec = tmp_path / "door.mp4"
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(SERVE_CONFIG.format(url=media_file("carphone.mp4"), rec=rec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeblur", "serve", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Recorded fragments are on disk once the temporary file holds a few kilobytes.
        def parts() -> list[Path]:
            return [p for p in tmp_path.iterdir() if p.name.endswith(".part.mp4")]

        wait_for(lambda: any(p.stat().st_size > 50_000 for p in parts()), 90, "a recording")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    (part,) = parts()
    assert decoded_frames(part) > 0
    assert not rec.exists()  # never renamed into place as if complete


def test_dropped_output_frames_are_not_published_nor_ready(models, tmp_path) -> None:
    """An RTSP output where nobody listens: nothing published, /readyz says which output."""
    cfg = service_config(
        [
            {
                "name": "door",
                "url": str(media_file("carphone.mp4")),
                "source": {"loop": True},
                "output": {"rtsp": "rtsp://127.0.0.1:9/nobody", "preview": False},
            }
        ]
    )
    with running(cfg) as run:

        def dropped() -> float:
            return run.value("edgeblur_frames_total", camera="door", result="dropped_output")

        wait_for(lambda: dropped() > 0, 60, "a frame no output took")
        published, before = run.published("door"), dropped()
        wait_for(lambda: dropped() >= before + 10, 30, "more frames no output took")
        code, body = get(run.base + "/readyz")
        cam = status(run.base)["cameras"][0]
        after = run.published("door")
    assert code == 503
    assert "rtsp" in json.loads(body)["outputs_down"]["door"]
    assert cam["last_error"].startswith("rtsp output:")
    # Only frames handed over before the first failed connect could count; none since.
    assert after == published
