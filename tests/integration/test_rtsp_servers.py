"""The test RTSP servers themselves (tests/servers, tests/rtsp.py), read and fed by real PyAV.

A camera loops carphone.mp4 (176×144, 29.97 fps, 120 frames, one IDR) seamlessly; a relay takes
a PyAV publisher and serves viewers, across publisher sessions; killing or stalling a camera
ends or times out a reader within a bounded time. These are the fixtures' contracts that the
integration and fault tests build on. About 40 s in all.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from rtsp import (
    ServerProcess,
    gst_unavailable_reason,
    media_file,
    publish,
    square_index,
    start_camera,
    start_relay,
)

CARPHONE = media_file("carphone.mp4")
CARPHONE_FPS = 30000 / 1001
CARPHONE_FRAMES = 120  # one pass of the loop
READ_OPTIONS = {"rtsp_transport": "tcp", "timeout": "3000000"}  # timeout in µs (RTSP.md)
RTSP_PY = Path(__file__).resolve().parent.parent / "rtsp.py"

pytestmark = pytest.mark.skipif(
    gst_unavailable_reason() is not None, reason=f"{gst_unavailable_reason()}"
)


@pytest.fixture
def servers(tmp_path: Path):
    """Collects started servers and stops each at the end of the test, whatever happened."""
    started: list[ServerProcess] = []
    yield started.append, tmp_path
    for server in started:
        server.stop()


@dataclass
class ReadResult:
    """What a reader thread saw; times are time.monotonic()."""

    frames: int = 0
    pts: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    indexes: list[int | None] = field(default_factory=list)
    error: BaseException | None = None
    ended_at: float | None = None


def open_reader(url: str, deadline: float, **options: str) -> av.container.InputContainer:
    """Open an RTSP URL, retrying while it is refused or 404 (a relay before data)."""
    while True:
        try:
            return av.open(url, options={**READ_OPTIONS, **options}, timeout=(5.0, 5.0))
        except (av.FFmpegError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_stream(
    url: str,
    max_frames: int,
    result: ReadResult,
    *,
    open_deadline_s: float = 10.0,
    on_frame: Callable[[int], None] | None = None,
    squares: bool = False,
    **options: str,
) -> None:
    """Decode up to max_frames from url into result; an error ends the read and is kept."""
    try:
        with open_reader(url, time.monotonic() + open_deadline_s, **options) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                result.frames += 1
                result.pts.append(frame.pts)
                result.times.append(time.monotonic())
                result.sizes.add((frame.width, frame.height))
                if squares:
                    result.indexes.append(square_index(frame.to_ndarray(format="rgb24")))
                if on_frame is not None:
                    on_frame(result.frames)
                if result.frames >= max_frames:
                    break
    except (av.FFmpegError, OSError) as exc:
        result.error = exc
    finally:
        result.ended_at = time.monotonic()


def reader_thread(url: str, max_frames: int, **kwargs) -> tuple[threading.Thread, ReadResult]:
    result = ReadResult()
    thread = threading.Thread(
        target=read_stream, args=(url, max_frames, result), kwargs=kwargs, name="test-reader"
    )
    thread.start()
    return thread, result


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def join(thread: threading.Thread, timeout_s: float) -> None:
    thread.join(timeout_s)
    assert not thread.is_alive(), f"{thread.name} still running after {timeout_s} s"


# -- camera ---------------------------------------------------------------------------------


def test_camera_loops_the_file_seamlessly_in_real_time(servers) -> None:
    add, log_dir = servers
    camera = start_camera(CARPHONE, log_dir=log_dir)
    add(camera)
    assert camera.started_s is not None and camera.started_s < 5.0

    result = ReadResult()
    read_stream(camera.url, 2 * CARPHONE_FRAMES + 10, result)

    assert result.error is None, camera.log_tail()
    assert result.frames == 2 * CARPHONE_FRAMES + 10  # past two loop points
    assert result.sizes == {(176, 144)}
    # FFmpeg's RTSP demuxer leaves the very first packet (the IDR read while av.open probes the
    # stream) without a pts, whatever the server; every later frame has one.
    assert None not in result.pts[1:]
    steps = [b - a for a, b in zip(result.pts[1:], result.pts[2:], strict=False)]
    assert min(steps) > 0, "pts must increase strictly, across loop points too"
    # 90 kHz RTP clock: 3003 ticks per frame at 29.97 fps, also over the loop points.
    assert max(steps) < 2 * 3003
    # Real time: frames arrive at the file's rate once the open's read-ahead is drained.
    skip = 30
    rate = (result.frames - 1 - skip) / (result.times[-1] - result.times[skip])
    assert CARPHONE_FPS * 0.85 < rate < CARPHONE_FPS * 1.15, f"{rate:.2f} frames/s"


def test_camera_serves_udp_and_several_clients(servers) -> None:
    add, log_dir = servers
    camera = start_camera(CARPHONE, log_dir=log_dir)
    add(camera)
    first, first_result = reader_thread(camera.url, 60, rtsp_transport="udp")
    wait_for(lambda: first_result.frames >= 10 or first.is_alive() is False, 10, "UDP frames")
    second, second_result = reader_thread(camera.url, 30)
    join(first, 15)
    join(second, 15)  # joins mid-stream: waits for the next IDR (carphone has one per loop)
    assert first_result.error is None and first_result.frames == 60, camera.log_tail()
    assert second_result.error is None and second_result.frames == 30, camera.log_tail()


def test_killed_camera_ends_the_readers_demux_loop_within_bound(servers) -> None:
    add, log_dir = servers
    camera = start_camera(CARPHONE, log_dir=log_dir)
    add(camera)
    killed_at: list[float] = []

    def kill_after_30(n: int) -> None:
        if n == 30:
            killed_at.append(time.monotonic())
            camera.kill()

    thread, result = reader_thread(camera.url, 10_000, on_frame=kill_after_30)
    join(thread, 20)
    assert killed_at, f"the reader saw only {result.frames} frames"
    noticed_s = result.ended_at - killed_at[0]
    # RTSP.md: the loop just ends (EOF); with timeout=3 s it would at worst time out after ~6 s.
    assert noticed_s <= 10.0, f"reader noticed the dead camera after {noticed_s:.1f} s"
    assert result.frames < 30 + 2 * CARPHONE_FPS  # nothing was played after the kill


def test_camera_restarts_on_the_same_port(servers) -> None:
    add, log_dir = servers
    camera = start_camera(CARPHONE, log_dir=log_dir)
    add(camera)
    url = camera.url
    camera.kill()
    camera.restart()
    assert camera.url == url
    result = ReadResult()
    read_stream(camera.url, 20, result)
    assert result.error is None and result.frames == 20, camera.log_tail()
    assert camera.stop() == 0  # SIGTERM is a clean exit


def test_stalled_camera_times_the_reader_out_and_resumes(servers) -> None:
    add, log_dir = servers
    camera = start_camera(CARPHONE, log_dir=log_dir)
    add(camera)
    paused_at: list[float] = []

    def pause_after_20(n: int) -> None:
        if n == 20:
            paused_at.append(time.monotonic())
            camera.pause()

    thread, result = reader_thread(camera.url, 10_000, on_frame=pause_after_20)
    join(thread, 20)
    camera.resume()
    stalled_s = result.ended_at - paused_at[0]
    # RTSP.md: a stall is reported after about twice the 3 s timeout. No error and no EOF
    # earlier than the timeout: the camera is alive, only silent.
    assert 2.5 <= stalled_s <= 10.0, f"stall noticed after {stalled_s:.1f} s ({result.error!r})"
    again = ReadResult()
    read_stream(camera.url, 10, again)
    assert again.error is None and again.frames == 10, camera.log_tail()


# -- relay ----------------------------------------------------------------------------------


def test_relay_passes_published_frames_to_a_viewer(servers) -> None:
    add, log_dir = servers
    relay = start_relay(log_dir=log_dir)
    add(relay)
    assert relay.started_s is not None and relay.started_s < 5.0
    published_at: list[float] = []

    def publish_100() -> None:
        publish(relay.record_url, 100)
        published_at.append(time.monotonic())

    publisher = threading.Thread(target=publish_100, name="publisher")
    publisher.start()
    viewer, seen = reader_thread(relay.play_url, 1000, squares=True)
    join(publisher, 20)
    join(viewer, 10)  # the publisher's TEARDOWN ends the viewer's stream

    assert seen.error is None, relay.log_tail()
    assert seen.sizes == {(320, 240)}
    # A late viewer starts from the cached group of pictures (libx264 keyint 250 here), so it
    # gets nearly every frame; the few at the very start precede its connection.
    assert seen.frames >= 90, relay.log_tail()
    indexes = [i for i in seen.indexes if i is not None]
    assert len(indexes) >= 0.95 * seen.frames
    assert indexes == sorted(indexes) and indexes[-1] >= 98
    assert published_at and seen.ended_at - published_at[0] < 3.0


def test_relay_takes_a_second_publisher_after_the_first_dies(servers) -> None:
    add, log_dir = servers
    relay = start_relay(log_dir=log_dir)
    add(relay)

    # Session 1: a publisher process killed mid-stream (no TEARDOWN, the socket just closes).
    cmd = [sys.executable, str(RTSP_PY), "publish", relay.record_url, "--frames", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        viewer, seen = reader_thread(relay.play_url, 10_000, open_deadline_s=15.0)
        wait_for(lambda: seen.frames >= 20 or not viewer.is_alive(), 15, "session 1 frames")
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    join(viewer, 10)
    assert seen.frames >= 20, (seen.error, relay.log_tail())
    ended_s = seen.ended_at - killed_at
    assert ended_s <= 8.0, f"session 1 viewer ended {ended_s:.1f} s after its publisher died"

    # Session 2: a new publisher is accepted and a new viewer sees it from its first frames.
    publisher = threading.Thread(target=publish, args=(relay.record_url, 50), name="publisher")
    publisher.start()
    viewer, seen = reader_thread(relay.play_url, 1000, squares=True)
    join(publisher, 15)
    join(viewer, 10)
    assert seen.error is None, relay.log_tail()
    assert seen.frames >= 40 and seen.sizes == {(320, 240)}, relay.log_tail()
    assert relay.stop() == 0  # still alive, and SIGTERM is a clean exit


def test_killed_relay_breaks_the_publisher_and_restarts_on_its_ports(servers) -> None:
    add, log_dir = servers
    relay = start_relay(log_dir=log_dir)
    add(relay)
    ports = relay.ports
    failed: list[tuple[float, BaseException]] = []

    def publish_until_broken() -> None:
        try:
            publish(relay.record_url, 1000)
        except OSError as exc:  # RTSP.md: BrokenPipeError at mux once the server is gone
            failed.append((time.monotonic(), exc))

    publisher = threading.Thread(target=publish_until_broken, name="publisher")
    publisher.start()
    viewer, seen = reader_thread(relay.play_url, 10_000)
    wait_for(lambda: seen.frames >= 20 or not viewer.is_alive(), 15, "frames before the kill")
    killed_at = time.monotonic()
    relay.kill()
    join(publisher, 10)
    join(viewer, 10)
    assert failed, "the publisher did not notice the dead relay"
    assert failed[0][0] - killed_at <= 5.0
    assert seen.ended_at - killed_at <= 8.0

    relay.restart()
    assert relay.ports == ports
    publisher = threading.Thread(target=publish, args=(relay.record_url, 30), name="publisher")
    publisher.start()
    viewer, seen = reader_thread(relay.play_url, 1000)
    join(publisher, 10)
    join(viewer, 10)
    assert seen.error is None and seen.frames >= 25, relay.log_tail()
