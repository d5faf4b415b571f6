"""Sinks: the last stage of the flow (Anonymizer → Sink → viewers), H.264 through PyAV.

A sink accepts only ``Anonymized`` items (``TypeError`` for anything else, a raw ``Frame`` above
all). ``RtspSink.write`` runs on the camera's publish thread and returns at once: it hands the
item to the sink's own thread ``sink:<camera>``, which encodes, pushes to an RTSP server
(MediaMTX in deployments) and reconnects with backoff. ``FileSink`` encodes on the caller's
thread into a temporary file that becomes the recording only on ``close()``.

Why a thread of its own, measured with PyAV 18.1 / FFmpeg 8.1 against the test relay:
- Relay killed: the next ``mux()`` raises ``BrokenPipeError`` within 20 ms.
- Relay stopped (SIGSTOP): once the socket buffer is full, ``mux()`` blocks in ``send()`` until
  the server reads again; the RTSP ``timeout`` option only bounds the wait for writability,
  not the send (blocked 25 s and counting in the experiment). The GIL is released meanwhile.
- A server that accepts and never answers: the RTSP handshake (``avformat_write_header``, run
  by PyAV's first ``mux()``) blocks without a bound unless ``timeout`` is set (then
  ``InvalidDataError`` after it), and PyAV runs it and ``av_write_trailer`` HOLDING THE GIL:
  every thread of the process froze for the whole wait (a 20 ms ticker thread stood still for
  0.61 s per attempt with a 0.5 s timeout). So the sink thread first asks for RTSP OPTIONS
  from Python (no GIL held; the ticker then never missed a beat) and only lets FFmpeg
  connect to a server that answered, with ``timeout`` as the backstop.
Only the sink thread ever blocks on the server; the camera's frames keep flowing, and items
that arrive while it is busy, or during a backoff, are dropped (newest wins) and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import av
import cv2

from edgeblur.fs import atomic_path
from edgeblur.io.backoff import backoff_s
from edgeblur.io.encode import LIVE, RECORDING, Encoder, EncodeSettings
from edgeblur.io.source import FrameQueue, describe
from edgeblur.secrets import SecretUrl
from edgeblur.types import Anonymized, Frame

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
TICKS = 90000
DEFAULT_FPS = 25  # the encoder's rate hint until frames have shown the real one
DEFAULT_RTSP_PORT = 554


class Sink(Protocol):
    """Where anonymized frames go. ``write`` takes only ``Anonymized``."""

    def write(self, item: Anonymized) -> None: ...

    def close(self) -> None: ...


def _check(item: object) -> Anonymized:
    if not isinstance(item, Anonymized):
        # The privacy promise: only the Anonymizer makes an Anonymized; a raw frame is a bug.
        raise TypeError(f"a sink accepts only Anonymized, got {type(item).__name__}")
    return item


class _Encoder:
    """One live encoder session: sized from its first frame, pts rebased to 0 on 90 kHz."""

    def __init__(self, container: Any, settings: EncodeSettings, first: Frame, fps: float):
        self.size_wh = first.size_wh
        rate = Fraction(fps).limit_denominator(1001)
        self.encoder = Encoder(container, settings, first.size_wh, rate, TIME_BASE)
        self.first_pts: int | None = None
        self.t0 = first.t_decoded
        self.last_pts: int | None = None
        self.resized = False

    def _pts(self, frame: Frame) -> int:
        ticks = None
        if frame.pts is not None and frame.time_base:
            ticks = round(frame.pts * Fraction(frame.time_base) * TICKS)
        if ticks is None:  # no source timing: the decode clock is the next best
            ticks = round((frame.t_decoded - self.t0) * TICKS)
        if self.first_pts is None:
            self.first_pts = ticks
        pts = ticks - self.first_pts
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1  # strictly increasing, whatever the input did
        self.last_pts = pts
        return pts

    def encode(self, frame: Frame) -> list[av.Packet]:
        image = frame.image
        if frame.size_wh != self.size_wh:
            if not self.resized:
                log.warning(
                    "%s: frame size changed %s → %s; scaling to the stream's size",
                    frame.camera,
                    self.size_wh,
                    frame.size_wh,
                )
                self.resized = True
            image = cv2.resize(image, self.size_wh, interpolation=cv2.INTER_AREA)
        return self.encoder.encode(image, self._pts(frame))

    def flush(self) -> list[av.Packet]:
        return self.encoder.flush()


class _FpsMeter:
    """The input's frame rate from pts steps: a rate hint for the next encoder session."""

    def __init__(self) -> None:
        self.last_s: float | None = None  # pts of the previous frame, in seconds
        self.fps = float(DEFAULT_FPS)

    def add(self, frame: Frame) -> None:
        prev = self.last_s
        if frame.pts is None or not frame.time_base:
            self.last_s = None
            return
        self.last_s = float(frame.pts * Fraction(frame.time_base))
        if prev is not None and 1 / 240 <= self.last_s - prev <= 2.0:
            self.fps = 0.9 * self.fps + 0.1 / (self.last_s - prev)


def _rtsp_options_probe(url: str, timeout_s: float) -> None:
    """Raise unless the server answers RTSP OPTIONS within ``timeout_s`` (socket: no GIL held).

    rtsps:// is only checked for a TCP connection (speaking TLS here is not worth it).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (322 if scheme == "rtsps" else DEFAULT_RTSP_PORT)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        if scheme != "rtsp":
            return
        netloc = f"[{host}]" if ":" in host else host
        netloc += "" if parts.port is None else f":{parts.port}"
        bare = urlunsplit((scheme, netloc, parts.path or "/", "", ""))  # no credentials
        sock.sendall(f"OPTIONS {bare} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        deadline = time.monotonic() + timeout_s
        reply = b""
        while b"\r\n" not in reply:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(256)
            except TimeoutError:
                raise TimeoutError(f"no RTSP answer within {timeout_s:.1f} s") from None
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            reply += chunk
        if not reply.startswith(b"RTSP/"):
            raise ConnectionError("the server does not speak RTSP")


class RtspSink:
    """Pushes one camera's anonymized stream to an RTSP server, on thread ``sink:<camera>``.

    ``write`` never blocks for long: it queues the item (newest wins) and returns. The thread
    connects on the first item (sized from it), starts every session with an IDR, and after a
    failure closes quietly, counts a reconnect and retries after a capped, jittered backoff;
    items arriving meanwhile are dropped (``dropped``). ``connected`` turns False while a send
    has been blocked for over ``connect_timeout_s`` (a stalled server).
    """

    def __init__(
        self,
        camera: str,
        url: SecretUrl,
        settings: EncodeSettings = LIVE,
        metrics: Any | None = None,
        transport: str = "tcp",
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        queue_size: int = 2,
    ):
        self.camera = camera
        self.url = url
        self.settings = settings
        self.metrics = metrics
        self.transport = transport
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self.reconnects = 0
        self.last_error: str | None = None
        self.bytes_written = 0
        self.frames_written = 0
        self.dropped = 0
        self._connected = False
        self._busy_since: float | None = None  # monotonic start of the running mux()
        self._queue: FrameQueue[Anonymized] = FrameQueue(queue_size, on_drop=self._count_drop)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sink:{camera}", daemon=True)
        self._fps = _FpsMeter()

    output = "rtsp"

    @property
    def connected(self) -> bool:
        busy = self._busy_since
        stuck = busy is not None and time.monotonic() - busy > self.connect_timeout_s
        return self._connected and not stuck

    @property
    def down(self) -> str | None:
        """Why frames are not reaching the server now; None while connected (or not yet tried)."""
        if self.connected:
            return None
        if self._connected:  # connected, but a send has been blocked past the timeout
            return f"rtsp output: the server stopped reading for over {self.connect_timeout_s} s"
        return f"rtsp output: {self.last_error}" if self.last_error else None

    def write(self, item: Anonymized) -> None:
        _check(item)
        if self._closed:
            raise RuntimeError(f"{self.camera}: write() after close()")
        if self._thread.ident is None:
            self._thread.start()  # lazily: a camera that never delivers never connects
        self._queue.put(item)

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and disconnect within ``timeout_s``; a thread stuck in a send is abandoned."""
        self._closed = True
        self._stop.set()
        if self._thread.ident is None:
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            # daemon=True is for exactly this: a send() blocked on a stalled server cannot be
            # interrupted from Python, and must not keep the process from exiting.
            log.warning(
                "%s: RTSP output still blocked on %s after %.1f s; abandoning it",
                self.camera,
                self.url,
                timeout_s,
            )

    # -- the thread -------------------------------------------------------------------------

    def _count_drop(self) -> None:
        self.dropped += 1

    def _run(self) -> None:
        failures = 0
        retry_at = 0.0
        session: tuple[Any, _Encoder] | None = None
        logged: str | None = None
        try:
            while not self._stop.is_set():
                item = self._queue.get(0.1)  # also how soon close() is noticed
                if item is None:
                    continue
                self._fps.add(item.frame)
                if session is None and time.monotonic() < retry_at:
                    self.dropped += 1  # backing off: the camera's frames keep flowing
                    continue
                try:
                    if session is None:
                        session = self._connect(item.frame)
                    sent = self._mux(session[0], session[1].encode(item.frame))
                    if sent and not self._connected:
                        self._connected = True
                        failures = 0
                        log.info("%s: publishing to %s", self.camera, self.url)
                        logged = None
                    self.frames_written += 1
                except Exception as exc:
                    expected = isinstance(exc, (av.FFmpegError, OSError, ValueError))
                    if not expected and logged != type(exc).__name__:
                        # A bug, not the server: keep publishing, show the traceback once.
                        log.exception("%s: unexpected error in the RTSP sink", self.camera)
                    self._disconnect(session)
                    session = None
                    failures += 1
                    retry_at = time.monotonic() + self._failed(exc, failures, logged)
                    logged = type(exc).__name__
        finally:
            self._disconnect(session, flush=True)

    def _connect(self, first: Frame) -> tuple[Any, _Encoder]:
        url = self.url.reveal()
        _rtsp_options_probe(url, self.connect_timeout_s)
        container = av.open(
            url,
            "w",
            format="rtsp",
            options={
                "rtsp_transport": self.transport,
                # Bounds the handshake (run with the GIL held) and each wait to send.
                "timeout": str(int(self.connect_timeout_s * 1e6)),
            },
        )
        try:
            return container, _Encoder(container, self.settings, first, self._fps.fps)
        except BaseException:
            container.close()
            raise

    def _mux(self, container: Any, packets: list[av.Packet]) -> int:
        """Mux ``packets``; the bytes sent. The first mux of a session runs the handshake."""
        n = 0
        self._busy_since = time.monotonic()
        try:
            for packet in packets:
                n += packet.size
                container.mux(packet)
        finally:
            self._busy_since = None
            self.bytes_written += n
            if self.metrics is not None and n:
                self.metrics.sink_bytes["rtsp"].inc(n)
        return n

    def _disconnect(self, session: tuple[Any, _Encoder] | None, flush: bool = False) -> None:
        """Close quietly: a dead server fails the trailer too, and that is expected."""
        self._connected = False
        if session is None:
            return
        container, encoder = session
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            if flush:
                self._mux(container, encoder.flush())
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            container.close()

    def _failed(self, exc: BaseException, failures: int, logged: str | None) -> float:
        self.reconnects += 1
        self.last_error = describe(exc)
        if self.metrics is not None:
            self.metrics.reconnects["sink"].inc()
        delay = backoff_s(failures, self.backoff_initial_s, self.backoff_max_s)
        level = logging.WARNING if logged != type(exc).__name__ else logging.DEBUG
        log.log(
            level,
            "%s: RTSP output %s; reconnecting in %.1f s (%s)",
            self.camera,
            self.url,
            delay,
            self.last_error,
        )
        return delay


# MP4/MOV written as fragments, one per keyframe: the file is playable up to its last complete
# fragment at every moment, so a crash, a kill or a full disk loses at most one keyframe
# interval (``gop_s``) instead of the whole recording (a plain MP4 needs its trailer).
FRAGMENTED_SUFFIXES = {".mp4", ".m4v", ".mov"}
# Containers a player reads up to where they were cut (Matroska clusters, MPEG-TS packets too).
PLAYABLE_WHEN_CUT = FRAGMENTED_SUFFIXES | {".mkv", ".webm", ".ts"}
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


class FileSink:
    """Records one camera to one file: written under a temporary name, renamed on ``close()``.

    Encodes on the caller's thread (a local file does not stall like a server); every frame is
    kept, with the source's timing. Nothing is written before the first frame, so a camera
    that never delivered leaves no file. MP4/MOV are fragmented (``FRAGMENTED_MP4``): after a
    crash the temporary file plays up to its last fragment. A write error (a full disk) stops
    the recording at once: ``write`` raises, ``down`` says why, later writes raise too, and
    what was recorded before it is kept as the recording (it ends at the error).
    """

    output = "file"

    def __init__(
        self,
        camera: str,
        path: Path | str,
        settings: EncodeSettings = RECORDING,
        metrics: Any | None = None,
    ):
        self.camera = camera
        self.path = Path(path)
        self.settings = settings
        self.metrics = metrics
        self.frames_written = 0
        self.bytes_written = 0
        self.tmp_path: Path | None = None
        self.error: str | None = None
        self._files = contextlib.ExitStack()
        self._container: Any = None
        self._encoder: _Encoder | None = None
        self._closed = False

    @property
    def down(self) -> str | None:
        return f"file output: {self.error}" if self.error else None

    def write(self, item: Anonymized) -> None:
        _check(item)
        if self._closed:
            why = f" ({self.error})" if self.error else ""
            raise RuntimeError(f"the recording {self.path} is closed or failed{why}")
        try:
            if self._container is None:
                self._open(item.frame)
            assert self._encoder is not None
            self._mux(self._encoder.encode(item.frame))
        except BaseException as exc:
            self._abort(exc)
            raise
        self.frames_written += 1

    def _abort(self, exc: BaseException) -> None:
        """Stop recording. A write error keeps the fragments written so far as the recording;
        anything else (a bug, an interrupt before the first fragment) removes the file."""
        self._closed = True
        self.error = describe(exc)
        write_error = isinstance(exc, (OSError, av.FFmpegError)) and self.frames_written > 0
        playable = self.path.suffix.lower() in PLAYABLE_WHEN_CUT
        if write_error and playable and self.tmp_path is not None:
            log.error(
                "%s: recording to %s failed after %d frames (%s); keeping what was written",
                self.camera,
                self.path,
                self.frames_written,
                self.error,
            )
            # Taken off the stack, so its exit (rename-or-remove) does not remove the file; held
            # until the file is moved, because a dropped atomic_path removes its temp file.
            kept = self._files.pop_all()
            with contextlib.suppress(av.FFmpegError, OSError, ValueError):
                self._container.close()  # the trailer may not fit; the fragments already did
            with contextlib.suppress(OSError):
                os.replace(self.tmp_path, self.path)
            del kept
            return
        self._files.__exit__(type(exc), exc, exc.__traceback__)

    def _open(self, first: Frame) -> None:
        self.tmp_path = self._files.enter_context(atomic_path(self.path))
        options = FRAGMENTED_MP4 if self.path.suffix.lower() in FRAGMENTED_SUFFIXES else {}
        self._container = self._files.enter_context(
            av.open(str(self.tmp_path), "w", options=options)
        )
        self._encoder = _Encoder(self._container, self.settings, first, DEFAULT_FPS)
        log.info("%s: recording to %s (until stop: %s)", self.camera, self.path, self.tmp_path)

    def _mux(self, packets: list[av.Packet]) -> None:
        n = sum(p.size for p in packets)
        self._container.mux(packets)
        self.bytes_written += n
        if self.metrics is not None and n:
            self.metrics.sink_bytes["file"].inc(n)

    def close(self) -> None:
        """Flush the encoder and move the file into place (no file if nothing was written)."""
        if self._closed:
            return
        self._closed = True
        if self._encoder is None:
            return
        with self._files:  # closes the container, then renames (or removes on error)
            self._mux(self._encoder.flush())
        log.info("%s: recorded %d frames to %s", self.camera, self.frames_written, self.path)
