"""A test RTSP relay: a publisher RECORDs H.264 on one port, viewers PLAY it on another.

    /usr/bin/python3 tests/servers/relay.py [--record-port 0] [--play-port 0] [--path /live]

Prints "READY <record_port> <play_port>" on stdout once both listen (0 picks a free port);
SIGTERM/SIGINT stop it. Record: TCP only. Play: TCP and UDP, any number of viewers.

One GStreamer RTSP media cannot both RECORD and PLAY (shared/RTSP.md), so these are two
servers in one process. The record media depayloads into an appsink; each access unit is
handed unchanged (re-timed onto the viewer's pipeline clock) to the shared play media's
appsrc. Per publisher session, the play path is mounted when its first
access unit arrives (404 before that), and when the publisher leaves (TEARDOWN, a dropped
connection, or a newer publisher taking over) current viewers get end of stream and the path
is unmounted until the next publisher sends data.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gstcommon import (
    AU_CAPS,
    PLAY_LAUNCH,
    TCP_AND_UDP,
    TCP_ONLY,
    AccessUnit,
    AppsrcFeed,
    Gst,
    GstRtspServer,
    attach,
    log,
    make_server,
    serve_until_signalled,
)

NAME = "relay"
GOP_MAX_BYTES = 64 * 1024 * 1024
RECORD_LAUNCH = (
    "( rtph264depay name=depay0 ! h264parse config-interval=-1"
    f" ! {AU_CAPS} ! appsink name=sink sync=false emit-signals=true max-buffers=64 drop=true )"
)


class Relay:
    """The hand-over between one publisher at a time and the viewers of its session."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.play_mounts: GstRtspServer.RTSPMountPoints | None = None
        self._lock = threading.Lock()
        self._sessions = 0  # publisher sessions so far (ANNOUNCEs)
        self._active: int | None = None  # the session relayed to viewers
        self._caps: str | None = None
        self._mounted = False
        self._viewers: dict[int, AppsrcFeed] = {}  # viewer media id -> feed, active session
        self._next_viewer = 0
        self._gop: list[AccessUnit] = []  # since the last keyframe, to start late viewers
        self._gop_bytes = 0

        self.record_factory = GstRtspServer.RTSPMediaFactory()
        self.record_factory.set_launch(RECORD_LAUNCH)
        self.record_factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        self.record_factory.set_shared(False)
        self.record_factory.set_latency(0)
        self.record_factory.set_protocols(TCP_ONLY)
        self.record_factory.connect("media-configure", self._on_record_configure)

    # -- publisher side (record server) --------------------------------------------------

    def _on_record_configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        with self._lock:
            self._end_session_locked("a new publisher took over")
            self._sessions += 1
            session = self._active = self._sessions
        log(NAME, "publisher %d: announced", session)
        sink = media.get_element().get_by_name("sink")
        sink.connect("new-sample", self._on_sample, session)
        sink.connect("eos", lambda _sink: self._on_publisher_gone(session, "end of stream"))
        media.connect("unprepared", lambda _m: self._on_publisher_gone(session, "left"))

    def _on_sample(self, sink: Gst.Element, session: int) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer() if sample is not None else None
        if buf is None or buf.pts == Gst.CLOCK_TIME_NONE:
            return Gst.FlowReturn.OK
        unit = AccessUnit(
            data=buf.extract_dup(0, buf.get_size()),
            pts=buf.pts,
            dts=buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts,
            duration=buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else -1,
            key=not buf.has_flags(Gst.BufferFlags.DELTA_UNIT),
        )
        with self._lock:
            if session != self._active:
                return Gst.FlowReturn.OK  # an older publisher still draining
            if not self._mounted:
                self._caps = sample.get_caps().to_string()
                self._mount_locked()
            self._cache_locked(unit)
            gop = list(self._gop) if self._gop and self._gop[-1] is unit else None
            feeds = list(self._viewers.values())
        for feed in feeds:
            feed.push(unit, gop)
        return Gst.FlowReturn.OK

    def _cache_locked(self, unit: AccessUnit) -> None:
        """Keep the units since the last keyframe (bounded; a viewer then waits for one)."""
        if unit.key:
            self._gop.clear()
            self._gop_bytes = 0
        elif not self._gop or self._gop_bytes > GOP_MAX_BYTES:
            self._gop.clear()
            return
        self._gop.append(unit)
        self._gop_bytes += len(unit.data)

    def _on_publisher_gone(self, session: int, why: str) -> None:
        with self._lock:
            if session == self._active:
                self._end_session_locked(why)

    def _end_session_locked(self, why: str) -> None:
        """The active publisher is gone: end its viewers, unmount play (404), drop its data."""
        if self._mounted:
            log(
                NAME, "publisher %s: %s; ending %d viewer(s)", self._active, why, len(self._viewers)
            )
            self.play_mounts.remove_factory(self.path)
            self._mounted = False
        for feed in self._viewers.values():
            feed.close(eos=True)
        self._viewers.clear()
        self._gop.clear()
        self._gop_bytes = 0
        self._active = None

    # -- viewer side (play server) --------------------------------------------------------

    def _mount_locked(self) -> None:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(PLAY_LAUNCH)
        factory.set_shared(True)
        factory.set_latency(0)
        factory.set_protocols(TCP_AND_UDP)
        factory.connect("media-configure", self._on_play_configure, self._active)
        self.play_mounts.add_factory(self.path, factory)
        self._mounted = True
        log(NAME, "publisher %d: sending; play path mounted", self._active)

    def _on_play_configure(
        self, _factory: object, media: GstRtspServer.RTSPMedia, session: int
    ) -> None:
        appsrc = media.get_element().get_by_name("src")
        with self._lock:
            feed = AppsrcFeed(appsrc, self._caps or AU_CAPS)
            if session != self._active:
                feed.close(eos=True)  # its publisher is already gone
                return
            viewer = self._next_viewer
            self._next_viewer += 1
            self._viewers[viewer] = feed
        log(NAME, "viewer media %d: start", viewer)
        media.connect("unprepared", self._on_play_unprepared, viewer)

    def _on_play_unprepared(self, _media: object, viewer: int) -> None:
        with self._lock:
            feed = self._viewers.pop(viewer, None)
        if feed is not None:
            log(NAME, "viewer media %d: stop", viewer)
            feed.close()

    def stop(self) -> None:
        with self._lock:
            self._end_session_locked("relay stopping")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--record-port", type=int, default=8555, help="port publishers RECORD to; 0 = any free port"
    )
    parser.add_argument(
        "--play-port", type=int, default=8556, help="port viewers PLAY from; 0 = any free port"
    )
    parser.add_argument("--path", default="/live", help="mount path on both (default /live)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args(argv)

    relay = Relay(args.path)
    record_server = make_server(args.host, args.record_port, {args.path: relay.record_factory})
    play_server = make_server(args.host, args.play_port, {})
    relay.play_mounts = play_server.get_mount_points()
    record_port = attach(NAME, record_server)
    play_port = attach(NAME, play_server)
    log(
        NAME,
        "record rtsp://%s:%d%s, play rtsp://%s:%d%s",
        args.host,
        record_port,
        args.path,
        args.host,
        play_port,
        args.path,
    )
    serve_until_signalled(NAME, [record_port, play_port], relay.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
