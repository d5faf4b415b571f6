"""A fake RTSP camera for the tests: plays an H.264 mp4 file looped forever at its real rate.

    /usr/bin/python3 tests/servers/camera.py --file clip.mp4 [--port 0] [--path /cam]

Prints "READY <port>" on stdout once listening (--port 0 picks a free port); SIGTERM/SIGINT
stop it. Serves RTSP over TCP and UDP to any number of clients through one shared media.

The file is demuxed once into memory (test clips are small) as byte-stream access units with
SPS/PPS before each IDR. Each media gets a feeder thread that replays them paced on the media
clock, shifting every pass by the file's length, so a reader sees one continuous stream with
strictly increasing timestamps across loop points. The first client of a media starts at the
file's first frame (an IDR, so no wait); later clients join the running media like a real
camera (the decoder waits for the next IDR). A SIGSTOP/SIGCONT stall is seen by clients as a
gap, after which the feed resumes at the clock's "now" (no catch-up burst).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gstcommon import (
    AU_CAPS,
    PLAY_LAUNCH,
    TCP_AND_UDP,
    AccessUnit,
    AppsrcFeed,
    Gst,
    GstRtspServer,
    attach,
    log,
    make_server,
    serve_until_signalled,
)

NAME = "camera"
MAX_FILE_BYTES = 256 * 1024 * 1024
START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Clip:
    units: list[AccessUnit]  # times in ns from the first unit's DTS
    caps: str
    length_ns: int  # one pass: the next pass's timestamps are shifted by this


def load_clip(path: str, timeout_s: float = 30.0) -> Clip:
    """Demux an mp4 into byte-stream H.264 access units; raise SystemExit on failure."""
    if os.path.getsize(path) > MAX_FILE_BYTES:
        sys.exit(f"{NAME}: {path} is larger than {MAX_FILE_BYTES} bytes")
    pipeline = Gst.parse_launch(
        "filesrc name=file ! qtdemux ! h264parse config-interval=-1"
        f" ! {AU_CAPS} ! appsink name=sink sync=false"
    )
    pipeline.get_by_name("file").set_property("location", path)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    raw: list[tuple[bytes, int, int, int, bool]] = []
    caps = None
    deadline = time.monotonic() + timeout_s
    bus = pipeline.get_bus()
    try:
        while not sink.get_property("eos"):
            msg = bus.pop_filtered(Gst.MessageType.ERROR)
            if msg is not None:
                err, _ = msg.parse_error()
                sys.exit(f"{NAME}: cannot demux {path}: {err.message}")
            if time.monotonic() > deadline:
                sys.exit(f"{NAME}: demuxing {path} took over {timeout_s} s")
            sample = sink.emit("try-pull-sample", 100 * Gst.MSECOND)
            if sample is None:
                continue
            caps = caps or sample.get_caps().to_string()
            buf = sample.get_buffer()
            pts = buf.pts
            dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else pts
            key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
            raw.append((buf.extract_dup(0, buf.get_size()), pts, dts, buf.duration, key))
    finally:
        pipeline.set_state(Gst.State.NULL)
    if not raw or not raw[0][4]:
        sys.exit(f"{NAME}: {path} has no H.264 video starting with a keyframe")
    origin = min(dts for _, _, dts, _, _ in raw)
    frame_ns = next((d for *_, d, _ in raw if d != Gst.CLOCK_TIME_NONE), Gst.SECOND // 25)
    units = [
        AccessUnit(
            data, pts - origin, dts - origin, dur if dur != Gst.CLOCK_TIME_NONE else frame_ns, key
        )
        for data, pts, dts, dur, key in raw
    ]
    length = max(u.pts + u.duration for u in units) - min(u.pts for u in units)
    return Clip(units, caps, length)


class CameraFeed:
    """Replays the clip into one media's appsrc on a thread of its own, until closed."""

    def __init__(self, clip: Clip, appsrc: Gst.Element, media_id: int) -> None:
        self.clip = clip
        self.feed = AppsrcFeed(appsrc, clip.caps)
        self.thread = threading.Thread(target=self._run, name=f"feed:{media_id}")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.feed.close()

    def join(self, timeout_s: float) -> bool:
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def _wait_until(self, due_ns: int) -> bool:
        while not self.feed.closed.is_set():
            now = self.feed.running_time()
            if now is None:  # media paused (no client playing): idle, the feed re-anchors
                self.feed.closed.wait(0.05)
                continue
            if now >= due_ns:
                return True
            self.feed.closed.wait(min(0.05, (due_ns - now) / 1e9))
        return False

    def _run(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.feed.running_time() is None:
            if self.feed.closed.wait(0.01) or time.monotonic() > deadline:
                return
        shift = 0
        while not self.feed.closed.is_set():
            for unit in self.clip.units:
                due = self.feed.due_ns(unit.dts + shift)
                if due is not None and not self._wait_until(due):
                    return
                if not self.feed.push(replace(unit, pts=unit.pts + shift, dts=unit.dts + shift)):
                    return
            shift += self.clip.length_ns


class Camera:
    """The media factory side: one CameraFeed per media, stopped when the media goes."""

    def __init__(self, clip: Clip) -> None:
        self.clip = clip
        self.feeds: dict[int, CameraFeed] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        self.factory = GstRtspServer.RTSPMediaFactory()
        self.factory.set_launch(PLAY_LAUNCH)
        self.factory.set_shared(True)
        self.factory.set_latency(0)
        self.factory.set_protocols(TCP_AND_UDP)
        self.factory.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        with self._lock:
            media_id = self._next_id
            self._next_id += 1
            feed = CameraFeed(self.clip, appsrc, media_id)
            self.feeds[media_id] = feed
        media.connect("unprepared", self._on_unprepared, media_id)
        log(NAME, "media %d: start", media_id)
        feed.start()

    def _on_unprepared(self, _media: object, media_id: int) -> None:
        with self._lock:
            feed = self.feeds.pop(media_id, None)
        if feed is not None:
            log(NAME, "media %d: stop", media_id)
            feed.stop()

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._lock:
            feeds = list(self.feeds.values())
            self.feeds.clear()
        for feed in feeds:
            feed.stop()
        for feed in feeds:
            if not feed.join(timeout_s):
                log(NAME, "feeder %s did not stop", feed.thread.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="H.264 mp4 file to loop")
    parser.add_argument("--port", type=int, default=8554, help="RTSP port; 0 = any free port")
    parser.add_argument("--path", default="/cam", help="mount path (default /cam)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.file):
        parser.error(f"--file {args.file}: no such file")

    clip = load_clip(args.file)
    log(
        NAME,
        "%s: %d access units, %.3f s per pass",
        args.file,
        len(clip.units),
        clip.length_ns / 1e9,
    )
    camera = Camera(clip)
    server = make_server(args.host, args.port, {args.path: camera.factory})
    port = attach(NAME, server)
    log(NAME, "serving rtsp://%s:%d%s", args.host, port, args.path)
    serve_until_signalled(NAME, [port], camera.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
