"""Sinks with real PyAV: RtspSink into the GStreamer test relay (killed and restarted under it,
or replaced by a listener that never answers), and FileSink's temporary-then-renamed file.
A PyAV viewer on the relay's play URL checks what actually went out. 127.0.0.1 only.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from rtsp import (
    RelayServer,
    gst_unavailable_reason,
    square_index,
    start_relay,
    synthetic_frame,
    wait_for,
)

from edgeblur.core.anonymize import Anonymizer
from edgeblur.io.sink import FileSink, RtspSink
from edgeblur.live.metrics import Metrics
from edgeblur.secrets import SecretUrl
from edgeblur.types import Anonymized, Detections, Frame, Regions

FPS = 25
STEP = 90000 // FPS
VIEW_OPTIONS = {"rtsp_transport": "tcp", "timeout": "3000000"}

needs_gst = pytest.mark.skipif(
    gst_unavailable_reason() is not None, reason=f"{gst_unavailable_reason()}"
)


def make_frame(i: int, width: int = 320, height: int = 240) -> Frame:
    image = synthetic_frame(i % 100, width, height)
    return Frame("gate", i, image, i * STEP, Fraction(1, 90000), time.monotonic())


def anonymized(i: int, width: int = 320, height: int = 240) -> Anonymized:
    regions = Regions.from_detections(Detections.empty(), i)
    return Anonymizer().apply(make_frame(i, width, height), regions)


class Viewer:
    """Reads a play URL on a thread, retrying the open while the relay answers 404."""

    def __init__(self, url: str, open_deadline_s: float = 15.0):
        self.url = url
        self.times: list[float] = []
        self.sizes: set[tuple[int, int]] = set()
        self.indexes: list[int | None] = []
        self.error: BaseException | None = None
        self._deadline = time.monotonic() + open_deadline_s
        self._thread = threading.Thread(target=self._run, name="test-viewer")
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    container = av.open(self.url, options=VIEW_OPTIONS, timeout=(3.0, 3.0))
                    break
                except (av.FFmpegError, OSError):
                    if time.monotonic() > self._deadline:
                        raise
                    time.sleep(0.1)
            with container:
                for frame in container.decode(video=0):
                    self.times.append(time.monotonic())
                    self.sizes.add((frame.width, frame.height))
                    self.indexes.append(square_index(frame.to_ndarray(format="rgb24")))
        except (av.FFmpegError, OSError) as exc:
            self.error = exc

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "viewer still reading"


class Feeder:
    """Writes anonymized frames at FPS on a thread, as a camera's publisher would; times writes."""

    def __init__(self, sink: RtspSink, first: int = 0):
        self.sink = sink
        self.next = first
        self.write_s: list[tuple[float, float]] = []  # (when, how long)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-feeder")
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            item = anonymized(self.next)
            start = time.monotonic()
            self.sink.write(item)
            self.write_s.append((start, time.monotonic() - start))
            self.next += 1
            self._stop.wait(max(0.0, t0 + self.next / FPS - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayServer]:
    if gst_unavailable_reason() is not None:
        pytest.skip(gst_unavailable_reason())
    server = start_relay(log_dir=tmp_path)
    yield server
    server.stop()


@pytest.fixture
def rtsp_sink() -> Iterator[Callable[..., RtspSink]]:
    sinks: list[RtspSink] = []

    def make(url: str, **kwargs) -> RtspSink:
        sink = RtspSink("gate", SecretUrl(url), **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close(timeout_s=5.0)


# -- RtspSink -------------------------------------------------------------------------------


@needs_gst
def test_rtsp_sink_publishes_frames_a_viewer_receives(relay, rtsp_sink) -> None:
    sink = rtsp_sink(relay.record_url)
    feeder = Feeder(sink)
    try:
        viewer = Viewer(relay.play_url)
        wait_for(lambda: len(viewer.times) >= 40, 15, "40 frames at the viewer")
    finally:
        feeder.stop()
    sink.close()
    viewer.join(10)  # the publisher's TEARDOWN ends the viewer's stream
    assert viewer.sizes == {(320, 240)}
    seen = [i for i in viewer.indexes if i is not None]
    assert len(seen) >= 0.9 * len(viewer.indexes) and seen == sorted(seen)
    assert sink.connected is False and sink.reconnects == 0 and sink.last_error is None
    assert sink.bytes_written > 0 and sink.frames_written >= 40


@needs_gst
def test_rtsp_sink_survives_a_relay_restart_without_blocking_writes(relay, rtsp_sink) -> None:
    metrics = Metrics()
    sink = rtsp_sink(
        relay.record_url, backoff_initial_s=0.2, backoff_max_s=1.0, metrics=metrics.camera("gate")
    )
    feeder = Feeder(sink)
    try:
        first = Viewer(relay.play_url)
        wait_for(lambda: len(first.times) >= 20, 15, "frames before the kill")
        killed_at = time.monotonic()
        relay.kill()
        wait_for(lambda: sink.reconnects >= 1, 2, "the sink to notice the dead relay")
        assert not sink.connected
        time.sleep(1.5)  # the relay stays down for a while; the publisher keeps writing
        restarted_at = time.monotonic()
        relay.restart()
        reconnected = wait_for(lambda: sink.connected, 5, "the sink to publish again")
        second = Viewer(relay.play_url)
        recovered = wait_for(lambda: len(second.times) >= 20, 15, "frames after the restart")
        assert sink.connected
    finally:
        feeder.stop()
    first.join(10)
    sink.close()
    second.join(10)
    while_down = [d for t, d in feeder.write_s if killed_at <= t <= restarted_at]
    assert while_down and max(while_down) < 0.2, f"slowest write while down: {max(while_down)}"
    assert max(d for _t, d in feeder.write_s) < 0.2
    assert sink.reconnects >= 1 and sink.dropped > 0
    assert second.sizes == {(320, 240)}
    sample = metrics.registry.get_sample_value
    assert sample("edgeblur_sink_bytes_total", {"camera": "gate", "sink": "rtsp"}) == (
        sink.bytes_written
    )
    assert sample("edgeblur_reconnects_total", {"camera": "gate", "stage": "sink"}) == (
        sink.reconnects
    )
    first_frame_s = second.times[0] - restarted_at
    print(
        f"sink publishing again {reconnected:.2f} s after the relay restart; viewer frames "
        f"after {first_frame_s:.2f} s (20 after {recovered:.2f} s); {sink.reconnects} reconnects"
    )


def test_rtsp_sink_never_freezes_the_process_on_a_server_that_never_answers(rtsp_sink) -> None:
    """PyAV runs the RTSP handshake holding the GIL (see io/sink.py): the sink must not enter it
    against a silent server, or every camera thread would stop for the whole timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, name="silent-listener")
    acceptor.start()
    ticks: list[float] = []
    ticker_stop = threading.Event()

    def tick() -> None:
        while not ticker_stop.wait(0.02):
            ticks.append(time.monotonic())

    ticker = threading.Thread(target=tick, name="ticker")
    ticker.start()
    try:
        sink = rtsp_sink(
            f"rtsp://127.0.0.1:{server.getsockname()[1]}/live",
            connect_timeout_s=0.5,
            backoff_initial_s=0.1,
        )
        longest = 0.0
        t_end = time.monotonic() + 2.5
        i = 0
        while time.monotonic() < t_end:
            t = time.monotonic()
            sink.write(anonymized(i))
            longest = max(longest, time.monotonic() - t)
            i += 1
            time.sleep(1 / FPS)
        assert longest < 0.2
        assert sink.reconnects >= 2 and not sink.connected
        assert (sink.last_error or "").startswith("TimeoutError"), sink.last_error
        t0 = time.monotonic()
        sink.close(timeout_s=2.0)
        assert time.monotonic() - t0 < 1.5
    finally:
        ticker_stop.set()
        ticker.join(5)
        stop.set()
        acceptor.join(5)
        for conn in accepted:
            conn.close()
        server.close()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.3, f"the process froze for {max(gaps):.2f} s"


@pytest.mark.parametrize("make", ["rtsp", "file"])
def test_sinks_refuse_a_raw_frame(make, tmp_path) -> None:
    sink = (
        RtspSink("gate", SecretUrl("rtsp://127.0.0.1:9/never"))
        if make == "rtsp"
        else FileSink("gate", tmp_path / "out.mp4")
    )
    with pytest.raises(TypeError, match="Anonymized"):
        sink.write(make_frame(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sink.write(make_frame(0).image)  # type: ignore[arg-type]
    sink.close()
    assert not list(tmp_path.iterdir())


# -- FileSink -------------------------------------------------------------------------------


def test_file_sink_appears_only_on_close_with_every_frame(tmp_path) -> None:
    dest = tmp_path / "rec" / "gate.mp4"
    sink = FileSink("gate", dest)
    for i in range(40):
        sink.write(anonymized(i))
    assert not dest.exists()
    parts = [p for p in dest.parent.iterdir() if p.name.startswith(".gate.")]
    assert len(parts) == 1 and parts[0].name.endswith(".part.mp4")
    sink.close()
    assert dest.exists() and not parts[0].exists()
    assert sink.frames_written == 40 and 0 < sink.bytes_written <= dest.stat().st_size
    with av.open(str(dest)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        duration = float(stream.duration * stream.time_base)
    assert len(frames) == 40
    assert (frames[0].width, frames[0].height) == (320, 240)
    assert [square_index(f.to_ndarray(format="rgb24")) for f in frames] == list(range(40))
    assert abs(duration - 40 / FPS) < 0.1  # the source's timing is kept
    keyframes = [f.pts for f in frames if f.key_frame]
    assert len(keyframes) == 1  # gop_s = 2 s: one keyframe in 1.6 s
    assert os.stat(dest).st_mode & 0o777 != 0o600  # usual permissions, not mkstemp's


def test_file_sink_pads_odd_sizes_and_forces_keyframes_by_time(tmp_path) -> None:
    from edgeblur.io.encode import EncodeSettings

    dest = tmp_path / "odd.mkv"
    sink = FileSink("gate", dest, EncodeSettings(preset="ultrafast", tune="", gop_s=0.5))
    for i in range(50):  # 2 s
        sink.write(anonymized(i, 175, 143))
    sink.close()
    with av.open(str(dest)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 50
    assert {(f.width, f.height) for f in frames} == {(176, 144)}
    image = frames[10].to_ndarray(format="rgb24")
    assert (
        np.abs(image[:, -1].astype(int) - image[:, -2].astype(int)).mean() < 12
    )  # edge, not black
    keys = [i for i, f in enumerate(frames) if f.key_frame]
    assert {0, 13, 26, 39} <= set(keys), keys  # every 0.5 s of pts (12.5 frames)


def test_file_sink_that_got_no_frame_leaves_no_file(tmp_path) -> None:
    sink = FileSink("gate", tmp_path / "never.mp4")
    sink.close()
    assert not list(tmp_path.iterdir())
