"""Real RTSP servers on 127.0.0.1 for the integration and fault tests.

The servers (tests/servers/camera.py, relay.py) are GStreamer RTSP servers run by Debian's
system interpreter, which has PyGObject (`apt-get install -y $(cat .ci/apt-packages.txt)`),
as separate processes, so a test can kill, stall (SIGSTOP) and restart them. Each prints
"READY <port>..." once listening; every wait here has a deadline, and a failure carries the
tail of the server's stderr log.

    camera = start_camera(MEDIA / "carphone.mp4")      # camera.url: rtsp://127.0.0.1:P/cam
    relay = start_relay()                              # relay.record_url, relay.play_url
    camera.pause(); camera.resume(); camera.kill(); camera.restart(); camera.stop()
    publish(relay.record_url, frames=100)              # PyAV + libx264, synthetic frames

Plain functions and classes: tests/conftest.py wraps them into fixtures. Run as a script,
`python tests/rtsp.py publish URL [--frames N]` publishes from a process a test can kill.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SERVERS = Path(__file__).resolve().parent / "servers"
# Debian's interpreter: python3-gi and the GStreamer typelibs are apt packages, not wheels.
GST_PYTHON = os.environ.get("EDGEBLUR_GST_PYTHON", "/usr/bin/python3")
HOST = "127.0.0.1"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 30

_GST_CHECK = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("appsrc", "appsink", "qtdemux", "h264parse", "rtph264pay",
                       "rtph264depay", "rtpbin", "udpsrc", "udpsink")
           if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
"""


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str = "condition", step_s: float = 0.01
) -> float:
    """Seconds until ``predicate()`` held; AssertionError naming ``what`` after ``timeout_s``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)
    return time.monotonic() - t0


class ServerError(RuntimeError):
    """A test RTSP server did not start, or died; the message ends with its log tail."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@functools.cache
def gst_unavailable_reason() -> str | None:
    """Why the GStreamer RTSP servers cannot run here, or None when they can."""
    if not os.access(GST_PYTHON, os.X_OK):
        return f"{GST_PYTHON} not found; apt-get install -y $(cat .ci/apt-packages.txt)"
    try:
        done = subprocess.run(
            [GST_PYTHON, "-c", _GST_CHECK],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{GST_PYTHON}: checking GStreamer took over 30 s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"GStreamer RTSP server not usable from {GST_PYTHON} ({last}); " + (
            "apt-get install -y $(cat .ci/apt-packages.txt)"
        )
    if done.stdout.strip():
        return f"GStreamer elements missing: {done.stdout.strip()}; apt-get install -y " + (
            "$(cat .ci/apt-packages.txt)"
        )
    return None


def gst_available() -> bool:
    """True when the test RTSP servers can run (see gst_unavailable_reason for why not)."""
    return gst_unavailable_reason() is None


def media_file(name: str) -> Path:
    """A test media file in $EDGEBLUR_MEDIA or ~/.cache/edgeblur/media (shared/media/fetch.sh)."""
    root = os.environ.get("EDGEBLUR_MEDIA", str(Path.home() / ".cache" / "edgeblur" / "media"))
    return Path(root) / name


class ServerProcess:
    """One test RTSP server process: start, stop, kill, pause, resume, restart on its ports.

    `port_options` name the server's port flags in the order its READY line reports them;
    `ports` are their first values (0: the server binds a free port itself, which avoids the
    race of free_port). After start(), `ports` holds the bound ports, and restart() reuses them.
    The server's stderr goes to `log_path` (kept across restarts and after stop()).
    """

    def __init__(
        self,
        name: str,
        script: str,
        args: Sequence[str],
        port_options: Sequence[str],
        ports: Sequence[int] | None = None,
        *,
        host: str = HOST,
        path: str = "/",
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.script = SERVERS / script
        self.args = list(args)
        self.port_options = list(port_options)
        self.ports: tuple[int, ...] = tuple(ports or (0,) * len(port_options))
        if len(self.ports) != len(self.port_options):
            raise ValueError(f"ports: expected {len(self.port_options)} values, got {self.ports}")
        self.host = host
        self.path = path
        fd, log = tempfile.mkstemp(prefix=f"edgeblur-{name}-", suffix=".log", dir=log_dir)
        os.close(fd)
        self.log_path = Path(log)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.started_s: float | None = None  # seconds the last start() waited for READY

    # -- state --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def port(self) -> int:
        """The first (for a relay: the record) port."""
        return self.ports[0]

    @property
    def url(self) -> str:
        """The URL clients read from (a camera's stream, a relay's play side)."""
        return self._url(self.ports[-1])

    def _url(self, port: int) -> str:
        if port == 0:
            raise ServerError(f"{self.name}: no port yet; call start() first")
        return f"rtsp://{self.host}:{port}{self.path}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _error(self, message: str) -> ServerError:
        return ServerError(
            f"{self.name}: {message}\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ServerProcess:
        """Launch the server and wait (at most timeout_s) for its READY line."""
        if self.alive:
            raise ServerError(f"{self.name}: already running (pid {self.pid})")
        argv = [GST_PYTHON, "-u", str(self.script), *self.args, "--host", self.host]
        for option, port in zip(self.port_options, self.ports, strict=True):
            argv += [option, str(port)]
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # a terminal's Ctrl-C goes to pytest, not the server
            )
        self.paused = False
        try:
            line = self._read_ready(t0 + timeout_s)
        except BaseException:
            self._reap(signal.SIGKILL, STOP_TIMEOUT_S)
            raise
        words = line.split()
        if len(words) != 1 + len(self.ports) or words[0] != "READY":
            self._reap(signal.SIGKILL, STOP_TIMEOUT_S)
            raise self._error(f"unexpected first line {line!r}")
        self.ports = tuple(int(w) for w in words[1:])
        self.started_s = time.monotonic() - t0
        return self

    def _read_ready(self, deadline: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._error("no READY line before the deadline")
            readable, _, _ = select.select([fd], [], [], min(left, 0.2))
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait(STOP_TIMEOUT_S)
                    raise self._error(f"exited with {code} before READY")
                data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace").strip()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to timeout_s, then SIGKILL; the exit code (None if never started)."""
        return self._reap(signal.SIGTERM, timeout_s)

    def kill(self) -> int | None:
        """SIGKILL at once, as a crash would (fault tests); the exit code."""
        return self._reap(signal.SIGKILL, STOP_TIMEOUT_S)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open and sends nothing (a stalled camera)."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause(); a camera resumes at "now" (a gap, no catch-up burst)."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> ServerProcess:
        """Stop (if running) and start again on the same ports."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.start(max(deadline - time.monotonic(), 0.1))
            except ServerError as exc:
                # The old listening socket can linger a moment after a kill.
                if "cannot listen" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _signal(self, sig: signal.Signals) -> None:
        if not self.alive:
            raise self._error(f"not running; cannot send {sig.name}")
        assert self.proc is not None
        self.proc.send_signal(sig)

    def _reap(self, sig: signal.Signals, timeout_s: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            if self.paused:
                proc.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only now
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired as exc:
                    raise self._error(f"pid {proc.pid} survived SIGKILL") from exc
        self.paused = False
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        if not self.alive:
            self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(ServerError):
            self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.alive else "stopped"
        return f"<{type(self).__name__} {self.name} ports={self.ports} {state}>"


class CameraServer(ServerProcess):
    """tests/servers/camera.py: an H.264 mp4 looped forever at its real rate, TCP and UDP."""

    def __init__(
        self,
        file: str | os.PathLike[str],
        port: int | None = None,
        *,
        path: str = "/cam",
        host: str = HOST,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        file = Path(file)
        if not file.is_file():
            raise FileNotFoundError(f"camera media {file} is missing; run shared/media/fetch.sh")
        super().__init__(
            "camera",
            "camera.py",
            ["--file", str(file), "--path", path],
            ["--port"],
            [port or 0],
            host=host,
            path=path,
            log_dir=log_dir,
        )
        self.file = file


class RelayServer(ServerProcess):
    """tests/servers/relay.py: publishers RECORD to record_url, viewers PLAY play_url."""

    def __init__(
        self,
        record_port: int | None = None,
        play_port: int | None = None,
        *,
        path: str = "/live",
        host: str = HOST,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            "relay",
            "relay.py",
            ["--path", path],
            ["--record-port", "--play-port"],
            [record_port or 0, play_port or 0],
            host=host,
            path=path,
            log_dir=log_dir,
        )

    @property
    def record_url(self) -> str:
        return self._url(self.ports[0])

    @property
    def play_url(self) -> str:
        return self._url(self.ports[1])


def start_camera(
    file: str | os.PathLike[str],
    port: int | None = None,
    *,
    path: str = "/cam",
    timeout_s: float = START_TIMEOUT_S,
    log_dir: str | os.PathLike[str] | None = None,
) -> CameraServer:
    """A started camera serving `file` at rtsp://127.0.0.1:<port><path> (port None: any)."""
    camera = CameraServer(file, port, path=path, log_dir=log_dir)
    camera.start(timeout_s)
    return camera


def start_relay(
    record_port: int | None = None,
    play_port: int | None = None,
    *,
    path: str = "/live",
    timeout_s: float = START_TIMEOUT_S,
    log_dir: str | os.PathLike[str] | None = None,
) -> RelayServer:
    """A started relay: publish to `.record_url`, read `.play_url` (404 until data arrives)."""
    relay = RelayServer(record_port, play_port, path=path, log_dir=log_dir)
    relay.start(timeout_s)
    return relay


# -- a PyAV publisher with frames that say which they are ------------------------------------

SQUARE = 40  # px; the white square of synthetic_frame


def synthetic_frame(index: int, width: int = 320, height: int = 240) -> np.ndarray:
    """H×W×3 uint8 RGB: a moving gradient and a white SQUARE-px square at x = 2·index.

    square_index() reads the index back after encoding, for indexes below (width - SQUARE) / 2.
    """
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (xx + 4 * index) % 256
    image[..., 1] = yy * 200 // max(height - 1, 1)  # never white: at most 200
    image[..., 2] = 128
    x = (2 * index) % (width - SQUARE)
    y = (height - SQUARE) // 2
    image[y : y + SQUARE, x : x + SQUARE] = 255
    return image


def square_index(image: np.ndarray) -> int | None:
    """The index synthetic_frame drew into `image` (H×W×3 uint8), or None if no square."""
    height = image.shape[0]
    y = (height - SQUARE) // 2
    band = image[y + SQUARE // 4 : y + 3 * SQUARE // 4].min(axis=2).mean(axis=0)
    cols = (band > 220).nonzero()[0]
    if len(cols) < SQUARE // 2:
        return None
    return round(int(cols[0]) / 2)


def publish(
    url: str,
    frames: int = 100,
    *,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    first_index: int = 0,
) -> int:
    """Publish synthetic frames to an RTSP RECORD URL in real time; return frames muxed.

    PyAV as RTSP.md measured it: format 'rtsp' over TCP, libx264 ultrafast/zerolatency.
    The output connects lazily (at the first mux), and a server that dies under it raises
    BrokenPipeError from mux().
    """
    import av

    t0 = time.monotonic()
    with av.open(url, "w", format="rtsp", options={"rtsp_transport": "tcp"}) as out:
        stream = out.add_stream(
            "libx264", rate=fps, options={"preset": "ultrafast", "tune": "zerolatency"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                synthetic_frame(first_index + i, width, height), format="rgb24"
            )
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
            time.sleep(max(t0 + (i + 1) / fps - time.monotonic(), 0.0))
        for packet in stream.encode():
            out.mux(packet)
    return frames


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Test RTSP helpers.")
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="publish synthetic frames to an RTSP RECORD URL")
    pub.add_argument("url")
    pub.add_argument("--frames", type=int, default=100)
    pub.add_argument("--fps", type=int, default=25)
    args = parser.parse_args(argv)
    publish(args.url, args.frames, fps=args.fps)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
