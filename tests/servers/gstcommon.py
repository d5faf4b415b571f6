"""Shared parts of the test RTSP servers (camera.py, relay.py).

Runs under Debian's system interpreter (/usr/bin/python3) with PyGObject and GStreamer's RTSP
server, never under the test virtualenv. Each server is a GLib main loop; media pipelines are
`appsrc ! h264parse config-interval=-1 ! rtph264pay` fed with H.264 access units by Python.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

Gst.init(None)

TCP_ONLY = GstRtsp.RTSPLowerTrans.TCP
TCP_AND_UDP = GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP

# Byte-stream access units with SPS/PPS inline, as `h264parse` emits them.
AU_CAPS = "video/x-h264,stream-format=byte-stream,alignment=au"

# `h264parse config-interval=-1` repeats SPS/PPS before every IDR *access unit*;
# `rtph264pay config-interval=-1` alone repeats them before every IDR *slice*, and FFmpeg then
# splits a multi-slice frame into two broken halves (shared/RTSP.md).
PLAY_LAUNCH = (
    "( appsrc name=src is-live=true format=time do-timestamp=false max-bytes=8388608"
    " ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
)

# A feed whose timeline drifts this far from the pipeline clock (a SIGSTOP, a publisher pause)
# is re-anchored to "now" instead of bursting to catch up or lagging forever.
REANCHOR_NS = 500 * Gst.MSECOND


def log(name: str, fmt: str, *args: object) -> None:
    """One line on stderr (the test helper keeps it in a log file)."""
    print(f"{name}: " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One H.264 access unit in byte-stream form; times in ns on the source's timeline."""

    data: bytes
    pts: int
    dts: int
    duration: int  # -1 when unknown
    key: bool


class AppsrcFeed:
    """Pushes H.264 access units into one media's appsrc on that pipeline's running time.

    Stream timestamps are shifted by one offset so that the first live unit lands at the
    pipeline's current running time; the offset moves only when the stream and the clock drift
    apart by more than REANCHOR_NS, and pushed DTS stay strictly increasing. A feed starts at a
    keyframe: either a live one, or the cached group of pictures handed to `push` (see there).
    """

    def __init__(self, appsrc: Gst.Element, caps: str) -> None:
        self.appsrc = appsrc
        self.appsrc.set_property("caps", Gst.Caps.from_string(caps))
        # A viewer that stops reading must not grow memory without bound: past max-bytes, drop
        # the oldest (2 = GST_APP_LEAKY_TYPE_DOWNSTREAM, GStreamer >= 1.20).
        self.appsrc.set_property("leaky-type", 2)
        self.closed = threading.Event()
        self._started = False
        self._offset: int | None = None
        self._last_dts = -1
        self._lock = threading.Lock()

    def running_time(self) -> int | None:
        """The pipeline's running time in ns, or None before it reaches PLAYING."""
        _, state, _ = self.appsrc.get_state(0)
        clock = self.appsrc.get_clock()
        if state != Gst.State.PLAYING or clock is None:
            return None
        return clock.get_time() - self.appsrc.get_base_time()

    def close(self, eos: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        if eos:
            self.appsrc.emit("end-of-stream")

    def due_ns(self, dts: int) -> int | None:
        """Running time at which a unit with stream DTS `dts` is due, or None before start."""
        with self._lock:
            return None if self._offset is None else dts + self._offset

    def push(self, unit: AccessUnit, gop: list[AccessUnit] | None = None) -> bool:
        """Push one access unit; False once this feed is closed or its pipeline stops.

        Before the feed has started, units are dropped until a keyframe, unless `gop` (the units
        since the last keyframe, ending with `unit`) is given: then the cached units go out first
        as a burst, one RTP tick apart, so a viewer joining between keyframes decodes at once.
        """
        if self.closed.is_set():
            return False
        now = self.running_time()
        if now is None:
            return True
        with self._lock:
            if not self._started:
                if unit.key:
                    backlog: list[AccessUnit] = []
                elif gop and gop[0].key and gop[-1] is unit:
                    backlog = gop[:-1]
                else:
                    return True
                self._started = True
                self._offset = now - unit.dts
                timed = _compressed(backlog, now)
                if timed:
                    self._last_dts = timed[-1][2]
            else:
                timed = []
            out_dts = unit.dts + self._offset
            if abs(out_dts - now) > REANCHOR_NS:
                self._offset += now - out_dts
                out_dts = now
            if out_dts <= self._last_dts:
                self._offset += self._last_dts + 1 - out_dts
                out_dts = self._last_dts + 1
            self._last_dts = out_dts
            timed.append((unit, unit.pts + self._offset, out_dts))
        return all(self._push_buffer(au, pts, dts) for au, pts, dts in timed)

    def _push_buffer(self, unit: AccessUnit, pts: int, dts: int) -> bool:
        buf = Gst.Buffer.new_wrapped(unit.data)
        buf.pts = pts
        buf.dts = dts
        buf.duration = unit.duration if unit.duration >= 0 else Gst.CLOCK_TIME_NONE
        if not unit.key:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        if self.appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            self.closed.set()
            return False
        return True


# One tick of the 90 kHz RTP clock: closer timestamps would collapse into equal RTP times.
RTP_TICK_NS = 11_112


def _compressed(units: list[AccessUnit], end_ns: int) -> list[tuple[AccessUnit, int, int]]:
    """(unit, pts, dts) for a backlog squeezed into ticks ending just before `end_ns`.

    Decode order is kept for DTS and presentation order for PTS (a unit's PTS rank, delayed by
    the deepest reordering so that PTS >= DTS).
    """
    if not units:
        return []
    by_pts = sorted(range(len(units)), key=lambda i: units[i].pts)
    rank = {i: r for r, i in enumerate(by_pts)}
    delay = max(max(i - rank[i] for i in range(len(units))), 0)
    start = end_ns - (len(units) + delay + 1) * RTP_TICK_NS
    start = max(start, 0)
    return [
        (u, start + (rank[i] + delay) * RTP_TICK_NS, start + i * RTP_TICK_NS)
        for i, u in enumerate(units)
    ]


def make_server(
    host: str, port: int, mounts: dict[str, GstRtspServer.RTSPMediaFactory]
) -> GstRtspServer.RTSPServer:
    """An RTSP server on host:port (0 = any free port) with the given mount points."""
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))
    points = server.get_mount_points()
    for path, factory in mounts.items():
        points.add_factory(path, factory)
    return server


def attach(name: str, server: GstRtspServer.RTSPServer) -> int:
    """Start listening; return the bound port or exit 1 when the port cannot be bound."""
    if server.attach(None) == 0:
        log(name, "cannot listen on %s:%s", server.get_address(), server.get_service())
        sys.exit(1)
    return server.get_bound_port()


def serve_until_signalled(name: str, ports: Sequence[int], on_stop: Callable[[], None]) -> None:
    """Print "READY <ports>", run the GLib main loop until SIGTERM/SIGINT, then on_stop().

    The handlers are in place before READY is printed: a test that stops a server right
    after start must get a clean exit (0), not death by the default SIGTERM action.
    """
    loop = GLib.MainLoop()

    def quit_loop(signame: str) -> bool:
        log(name, "%s: stopping", signame)
        loop.quit()
        return GLib.SOURCE_REMOVE

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, quit_loop, sig.name)
    # The one stdout line the test helper waits for.
    print("READY " + " ".join(str(p) for p in ports), flush=True)
    loop.run()
    on_stop()
