"""Source against real inputs: a looping file, and a GStreamer RTSP camera that is killed,
restarted, stalled (SIGSTOP) and resumed; plus URLs that never answer. Real PyAV throughout,
nothing but 127.0.0.1. Timeouts are short (1 s) so each fault is seen in seconds.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest
from rtsp import CameraServer, free_port, gst_unavailable_reason, media_file, start_camera, wait_for

from edgeblur.io.source import Source, SourceSettings
from edgeblur.live.metrics import Metrics
from edgeblur.secrets import SecretUrl
from edgeblur.types import Frame

CARPHONE = media_file("carphone.mp4")
FPS = 30000 / 1001
STEP = 3003  # one carphone frame in 1/90000 s
READ_TIMEOUT_S = 1.0

needs_gst = pytest.mark.skipif(
    gst_unavailable_reason() is not None, reason=f"{gst_unavailable_reason()}"
)


class Collector:
    """Drains a source's queue on a thread of its own, as the scheduler would."""

    def __init__(self, source: Source):
        self.source = source
        self.frames: list[Frame] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-collector")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.source.queue.get(0.05)
            if frame is not None:
                self.frames.append(frame)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def assert_increasing(frames: list[Frame]) -> None:
    idx = [f.index for f in frames]
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(idx)), "index must increase"
    assert None not in pts
    assert all(b > a for a, b in itertools.pairwise(pts)), "pts must increase strictly"
    assert {f.time_base for f in frames} == {Fraction(1, 90000)}


def metrics_reader(metrics: Metrics) -> Callable[..., float | None]:
    """Reads camera "gate"'s samples from the real registry, as a Prometheus scrape would."""
    registry = metrics.registry

    def read(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"camera": "gate", **labels})

    return read


@pytest.fixture
def run_source() -> Iterator[Callable[..., tuple[Source, Collector]]]:
    """Starts sources with a collector each; stops and joins them all at the end."""
    started: list[tuple[Source, Collector]] = []

    def start(url: str, metrics=None, **settings) -> tuple[Source, Collector]:
        options = {"read_timeout_s": READ_TIMEOUT_S, "open_timeout_s": 2.0} | settings
        source = Source("gate", SourceSettings(SecretUrl(url), **options), metrics=metrics)
        source.start()
        collector = Collector(source)
        started.append((source, collector))
        return source, collector

    yield start
    for source, collector in started:
        source.stop()
        assert source.join(5.0), "source thread did not stop"
        collector.stop()
        assert source.state == "stopped"


@pytest.fixture
def camera(tmp_path: Path) -> Iterator[CameraServer]:
    if gst_unavailable_reason() is not None:
        pytest.skip(gst_unavailable_reason())
    server = start_camera(CARPHONE, log_dir=tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 15 frames of carphone (0.5 s), so a test crosses loop points quickly."""
    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    with av.open(str(CARPHONE)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        stream.codec_context.time_base = Fraction(1001, 30000)
        for i, frame in enumerate(inp.decode(video=0)):
            if i == 15:
                break
            frame.pts, frame.time_base = i, Fraction(1001, 30000)
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# -- files ----------------------------------------------------------------------------------


def test_looping_file_is_paced_in_real_time_with_increasing_pts(run_source, short_clip) -> None:
    source, seen = run_source(str(short_clip), loop=True, realtime=True, queue_size=100)
    wait_for(lambda: len(seen.frames) >= 50, 10, "50 frames (three passes of 15)")
    frames = seen.frames[:50]
    assert_increasing(frames)
    assert [f.index for f in frames] == list(range(50))
    steps = {b.pts - a.pts for a, b in itertools.pairwise(frames)}
    # Past each loop point the clock goes on by one frame: no jump back, no gap.
    assert max(steps) <= STEP + 450 and min(steps) > 0, steps
    rate = (len(frames) - 1) / (frames[-1].t_decoded - frames[0].t_decoded)
    assert FPS * 0.9 < rate < FPS * 1.1, f"{rate:.2f} frames/s"
    assert source.reconnects == 0 and source.state == "streaming"
    assert frames[0].image.flags.c_contiguous and frames[0].size_wh == (176, 144)


def test_file_without_realtime_runs_faster_than_real_time(run_source, short_clip) -> None:
    _source, seen = run_source(str(short_clip), loop=True, realtime=False, queue_size=1000)
    t = wait_for(lambda: len(seen.frames) >= 60, 10, "60 frames")
    assert t < 60 / FPS / 2
    assert_increasing(seen.frames)


@pytest.fixture(scope="module")
def corrupt_clip(short_clip: Path) -> Path:
    """short_clip with the payload of three non-key packets replaced by noise."""
    with av.open(str(short_clip)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size and not p.is_keyframe]
    data = bytearray(short_clip.read_bytes())
    rng = np.random.default_rng(0)
    for pos, size in packets[4:7]:
        data[pos + 4 : pos + size] = rng.integers(0, 256, size - 4, dtype=np.uint8).tobytes()
    path = short_clip.with_name("corrupt.mp4")
    path.write_bytes(bytes(data))
    return path


def test_corrupt_packets_are_counted_and_skipped_not_a_reconnect(run_source, corrupt_clip):
    metrics = Metrics()
    registry_value = metrics_reader(metrics)
    source, seen = run_source(
        str(corrupt_clip),
        loop=True,
        realtime=False,
        queue_size=1000,
        metrics=metrics.camera("gate"),
    )
    wait_for(lambda: source.decode_errors >= 6, 10, "two passes over the corrupt packets")
    assert source.reconnects == 0 and source.state == "streaming"
    assert registry_value("edgeblur_camera_up") == 1
    source.stop()
    assert source.join(5)
    dropped = registry_value("edgeblur_source_dropped_frames_total", reason="decode_error")
    assert dropped == source.decode_errors >= 6
    assert registry_value("edgeblur_camera_up") == 0  # stopped
    # Frames past the bad packets keep coming (a few that referenced them are lost too).
    assert registry_value("edgeblur_source_frames_total") == source.frames >= 15
    assert_increasing(seen.frames)


# -- RTSP camera ----------------------------------------------------------------------------


@needs_gst
def test_reads_an_rtsp_camera(run_source, camera) -> None:
    source, seen = run_source(camera.url)
    wait_for(lambda: len(seen.frames) >= 60, 10, "60 frames")
    assert source.state == "streaming" and source.reconnects == 0
    assert source.size_wh == (176, 144) and source.frames >= 60
    frames = list(seen.frames)
    assert_increasing(frames)
    steady = frames[30:]  # after the burst read while the stream was probed
    rate = (len(steady) - 1) / (steady[-1].t_decoded - steady[0].t_decoded)
    assert FPS * 0.8 < rate < FPS * 1.2, f"{rate:.2f} frames/s"


@needs_gst
def test_killed_camera_is_noticed_and_restarted_camera_resumes(run_source, camera) -> None:
    source, seen = run_source(camera.url, backoff_initial_s=0.2, backoff_max_s=2.0)
    wait_for(lambda: len(seen.frames) >= 20, 10, "frames before the kill")
    camera.kill()
    noticed = wait_for(lambda: source.state != "streaming", 2 * READ_TIMEOUT_S, "the loss")
    assert source.state == "reconnecting"
    time.sleep(1.0)  # a real outage: a few refused attempts
    assert source.reconnects >= 2 and "Refused" in (source.last_error or "")
    before = len(seen.frames)
    camera.restart()
    resumed = wait_for(lambda: len(seen.frames) > before + 10, 10, "frames after the restart")
    assert source.state == "streaming" and source.reconnects >= 1
    assert_increasing(seen.frames)
    gap = seen.frames[before].pts - seen.frames[before - 1].pts
    assert gap >= 90000, "the outage shows as a gap in pts, not as a jump back"
    print(f"kill noticed after {noticed:.2f} s; frames resumed {resumed:.2f} s after restart")


@needs_gst
def test_stalled_camera_is_detected_and_recovers(run_source, camera) -> None:
    source, seen = run_source(camera.url, backoff_initial_s=0.2, backoff_max_s=1.0)
    wait_for(lambda: len(seen.frames) >= 20, 10, "frames before the stall")
    camera.pause()
    try:
        # FFmpeg alone reports this after 2 × read_timeout; the watchdog reopens at 1 ×.
        detected = wait_for(lambda: source.state != "streaming", 2 * READ_TIMEOUT_S, "stall")
        assert source.state in ("stalled", "reconnecting")
        wait_for(lambda: source.state == "reconnecting", 2 * READ_TIMEOUT_S, "reopen")
        assert "TimeoutError" in (source.last_error or "")
        time.sleep(1.0)
    finally:
        camera.resume()
    before = len(seen.frames)
    resumed = wait_for(lambda: len(seen.frames) > before + 10, 10, "frames after SIGCONT")
    assert source.state == "streaming"
    assert_increasing(seen.frames)
    print(f"stall detected after {detected:.2f} s; frames resumed {resumed:.2f} s after SIGCONT")


# -- URLs that never answer -----------------------------------------------------------------


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, name="silent-listener")
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_url_that_never_answers_backs_off_and_stops_quickly(
    run_source, silent_listener, kind
) -> None:
    port = free_port() if kind == "refused" else silent_listener
    timeouts = {"open_timeout_s": 0.5, "read_timeout_s": 0.5}
    source, seen = run_source(
        f"rtsp://127.0.0.1:{port}/x", backoff_initial_s=0.1, backoff_max_s=5.0, **timeouts
    )
    waits: list[float] = []

    def three_waits() -> bool:
        if source.backoff_s and (not waits or waits[-1] != source.backoff_s):
            waits.append(source.backoff_s)
        return len(waits) >= 3

    wait_for(three_waits, 8, "three retries")
    assert all(b > a for a, b in itertools.pairwise(waits)), waits  # backoff grows
    assert source.state == "connecting" and not seen.frames
    expected = "ConnectionRefusedError" if kind == "refused" else "TimeoutError"
    assert (source.last_error or "").startswith(expected), source.last_error
    t0 = time.monotonic()
    source.stop()
    assert source.join(2.0)
    assert time.monotonic() - t0 < 2.0
    assert source.state == "stopped"


# -- secrets --------------------------------------------------------------------------------


@needs_gst
@pytest.mark.parametrize("password", ["s3cr3t", "p%40ss%3Aw0rd%2F"])
def test_password_never_reaches_logs_or_last_error(
    run_source, camera, caplog, password, monkeypatch
) -> None:
    caplog.set_level(logging.DEBUG)
    # FFmpeg's own lines too: enable PyAV logging for this test only (see io/source.py).
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.VERBOSE)
    try:
        port = camera.port
        source, seen = run_source(
            f"rtsp://user:{password}@127.0.0.1:{port}/cam", backoff_initial_s=0.1
        )
        wait_for(lambda: len(seen.frames) >= 5, 10, "frames through a URL with a password")
        camera.kill()
        wait_for(lambda: source.reconnects >= 2, 5, "failed reconnects")
        refused, _ = run_source(f"rtsp://user:{password}@127.0.0.1:{free_port()}/x")
        wait_for(lambda: refused.last_error is not None, 5, "a refused connection")
    finally:
        av.logging.set_level(previous)
    texts = [caplog.text, source.last_error or "", refused.last_error or ""]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert password not in text and "user:" not in text, text
    assert "rtsp://***@127.0.0.1" in caplog.text
