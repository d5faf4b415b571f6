"""The operator's HTTP endpoints: the console (/), /metrics, /healthz, /readyz, /status, previews.

One ``http`` thread that ``HttpServer`` owns (``start`` / ``stop`` / ``join``) runs a
non-blocking ``selectors`` loop over every client socket; there is no thread per connection, so a
client can hold at most a socket and a few kB, never a thread. The loop:

- caps what a client may send before anything parses it: a request line over
  ``MAX_REQUEST_LINE`` bytes is answered 414, a request head over ``MAX_HEAD`` bytes 431, and
  nothing else is read (no regex ever runs on client bytes);
- gives every request head ``HEAD_TIMEOUT_S`` from the connection (or the previous response) to
  arrive; a slowloris client dripping a byte a second is answered 408 and closed;
- bounds the connection count (``max_connections``); at the cap, a new connection displaces the
  oldest one still sending its head, so idle or slow clients cannot lock operators out;
- writes without blocking: an MJPEG stream is handed a new frame only once the previous one left
  (a slow viewer skips frames instead of queueing them), and a client that stops reading for
  ``WRITE_STALL_S`` is closed;
- on ``stop()`` closes every socket at once: no client can delay it.

The endpoint callbacks (status, ready, alive, /metrics) run on the loop thread: they read
counters and must stay cheap. It binds 127.0.0.1 unless configured otherwise: /status and the
previews are for the operator, not the network. Every string that leaves through /status, /readyz
or /healthz goes through ``redact()`` as a last defence against a camera URL with its password
slipping into a status dict; request lines never reach ``redact`` or a log in full.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.exposition import choose_encoder

from edgeblur import __version__
from edgeblur.errors import ConfigError
from edgeblur.io.preview import PreviewHub
from edgeblur.live import console
from edgeblur.live.metrics import Metrics
from edgeblur.secrets import redact

log = logging.getLogger(__name__)

_PREVIEW_PATH = re.compile(r"^/preview/([A-Za-z0-9_.~-]+)\.(jpg|mjpg)$")
_BOUNDARY = "edgeblurframe"
_MJPEG_TYPE = f"multipart/x-mixed-replace; boundary={_BOUNDARY}"

MAX_REQUEST_LINE = 4096  # bytes; longer is 414 (our URLs are short; 64 kB URLs are attacks)
MAX_HEAD = 16384  # bytes of request line + headers; longer is 431
HEAD_TIMEOUT_S = 10.0  # to send a whole request head (and the idle time of a keep-alive)
WRITE_STALL_S = 10.0  # a client that reads nothing for this long is closed
MAX_CONNECTIONS = 256
_TICK_S = 0.05  # loop wake-up: MJPEG frames are handed out and deadlines checked this often
_LOG_PATH_CHARS = 80

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def scrub(value: Any) -> Any:
    """A JSON-safe copy of ``value`` with every string redacted.

    Unknown objects become ``redact(str(obj))`` (``SecretUrl`` already prints redacted), and
    NaN/inf become null so the body stays valid JSON.
    """
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {scrub(k if isinstance(k, str) else str(k)): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    return redact(str(value))


def _json(value: Any) -> bytes:
    return (json.dumps(scrub(value), indent=2, sort_keys=True) + "\n").encode()


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: str | None = None  # camera name: an MJPEG stream follows the head


@dataclass(eq=False)
class _Conn:
    """One client socket and where its exchange stands; touched only by the loop thread."""

    sock: socket.socket
    peer: str
    opened: float
    deadline: float  # head must be complete by then (state "head")
    state: str = "head"  # head → writing → (head again on keep-alive | closed), or stream
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    last_progress: float = 0.0
    keep_alive: bool = False
    camera: str | None = None  # streaming this camera's previews
    seq: int = 0  # sequence number of the last preview sent


class HttpServer:
    """Serves the operator endpoints on ``host:port`` from a thread this object owns.

    Args:
        host: address to bind; 127.0.0.1 by default in the config.
        port: TCP port; 0 picks a free one (read ``.port`` after ``start()``).
        metrics: whose registry /metrics exposes.
        status: returns the JSON-able status of cameras for /status.
        ready: returns (every enabled camera is publishing, details) for /readyz.
        alive: returns (process is healthy, reason if not) for /healthz.
        previews: source of /preview/<camera>.jpg|.mjpg, or None to disable previews.
        max_streams: concurrent MJPEG streams; more get 503.
        max_connections: open client sockets at most (see the module docstring).
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        status: Callable[[], dict],
        ready: Callable[[], tuple[bool, dict]],
        alive: Callable[[], tuple[bool, str]],
        previews: PreviewHub | None,
        *,
        max_streams: int = 8,
        max_connections: int = MAX_CONNECTIONS,
    ):
        self.host = host
        self.port = port
        self.metrics = metrics
        self._status = status
        self._ready = ready
        self._alive = alive
        self._previews = previews
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._conns: dict[socket.socket, _Conn] = {}
        self._streams = 0
        self._max_streams = max_streams
        self._max_connections = max(2, max_connections)
        self.head_timeout_s = HEAD_TIMEOUT_S
        self.write_stall_s = WRITE_STALL_S

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind now (a busy port fails here, as ConfigError), then serve on the ``http`` thread."""
        if self._listener is not None:
            raise RuntimeError("HttpServer.start() called twice")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET  # "::1" is IPv6
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise self._bind_error(exc) from None
        listener.setblocking(False)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._serve, name="http", daemon=False)
        self._thread.start()
        log.info("http: serving on http://%s:%d/", self.host, self.port)

    def _bind_error(self, exc: OSError) -> ConfigError:
        where = f"{self.host}:{self.port}"
        if exc.errno == errno.EADDRINUSE:
            return ConfigError(
                f"HTTP port {where} is in use; set http.port to a free port or stop the other "
                "process."
            )
        if exc.errno == errno.EACCES:
            return ConfigError(
                f"HTTP port {where} needs privileges; set http.port to 1024 or above."
            )
        return ConfigError(
            f"Cannot listen on {where} ({exc.strerror or exc}); set http.bind to an address of "
            "this machine, such as 127.0.0.1."
        )

    def stop(self) -> None:
        """Ask the loop to end; it closes the port and every client socket within one tick."""
        self._stop.set()
        if self._wake_w is not None:
            # OSError: already woken (buffer full) or already closed.
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    def join(self, timeout_s: float) -> bool:
        """Wait for the server thread (and so every connection) to end; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()

    # --- the loop ------------------------------------------------------------------------------

    def _serve(self) -> None:
        sel = self._selector
        assert sel is not None
        try:
            while not self._stop.is_set():
                for key, mask in sel.select(_TICK_S):
                    sock = key.fileobj
                    if sock is self._listener:
                        self._accept()
                    elif sock is self._wake_r:
                        self._drain_wake()
                    else:
                        conn = self._conns.get(sock)  # type: ignore[arg-type]
                        if conn is None:
                            continue
                        if mask & selectors.EVENT_READ:
                            self._on_readable(conn)
                        if mask & selectors.EVENT_WRITE and conn.sock in self._conns:
                            self._flush(conn)
                self._tick()
        except Exception:
            log.exception("http: server thread failed")
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            sel.close()
            for s in (self._listener, self._wake_r, self._wake_w):
                if s is not None:
                    s.close()
            log.info("http: stopped")

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        for _ in range(64):  # a burst of connects is taken in a few rounds, not forever
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: leave it in the backlog for now
                log.warning("http: accept failed (%s)", exc.strerror or exc)
                return
            sock.setblocking(False)
            if len(self._conns) >= self._max_connections and not self._evict_one():
                _send_and_close(sock, Response(503, b"too many connections\n"))
                continue
            now = time.monotonic()
            peer = str(addr[0]) if isinstance(addr, tuple) else "?"
            conn = _Conn(sock, peer, now, now + self.head_timeout_s, last_progress=now)
            self._conns[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, None)

    def _evict_one(self) -> bool:
        """Close the oldest connection still sending its request head; True if there was one."""
        waiting = [c for c in self._conns.values() if c.state == "head"]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.opened)
        log.debug("http: %s: closed to make room for a new connection", oldest.peer)
        self._close(oldest)
        return True

    def _on_readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        if conn.state != "head":
            # More while we answer: the rest of a refused request or junk during a stream is
            # dropped (the connection closes after the answer); a pipelined request is kept if
            # it fits in one head.
            if not conn.keep_alive:
                return
            if len(conn.inbuf) + len(data) > MAX_HEAD:
                self._close(conn)
            else:
                conn.inbuf += data
            return
        conn.inbuf += data
        self._try_request(conn)

    def _try_request(self, conn: _Conn) -> None:
        """Answer the request in ``conn.inbuf`` if its head is complete; refuse it if oversized."""
        buf = conn.inbuf
        line_end = buf.find(b"\n", 0, MAX_REQUEST_LINE + 1)
        if line_end < 0:
            if len(buf) > MAX_REQUEST_LINE:
                self._refuse(conn, 414, b"request line too long\n")
            return
        head_end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        sep = 4
        if head_end < 0:
            head_end, sep = buf.find(b"\n\n", 0, MAX_HEAD + 2), 2
        if head_end < 0:
            if len(buf) > MAX_HEAD:
                self._refuse(conn, 431, b"request headers too large\n")
            return
        head = bytes(buf[:head_end])
        del buf[: head_end + sep]
        request = _parse_head(head)
        if request is None:
            self._refuse(conn, 400, b"bad request\n")
            return
        method, target, version, headers = request
        path = target.split("?", 1)[0]
        log.debug("http: %s %s %s", conn.peer, method[:16], path[:_LOG_PATH_CHARS])
        has_body = headers.get("transfer-encoding") or headers.get("content-length", "0") != "0"
        connection = headers.get("connection", "").lower()
        conn.keep_alive = not has_body and (
            (version == "HTTP/1.1" and "close" not in connection)
            or (version == "HTTP/1.0" and "keep-alive" in connection)
        )
        try:
            response = self._route(method, path)
        except Exception:
            log.exception("http: %s failed", path[:_LOG_PATH_CHARS])
            response = Response(500, b"internal error\n")
        if response.stream is not None:
            self._start_stream(conn, response.stream)
            return
        self._queue(conn, response, head_only=method == "HEAD")

    def _refuse(self, conn: _Conn, status: int, body: bytes) -> None:
        conn.inbuf.clear()
        conn.keep_alive = False
        self._queue(conn, Response(status, body), head_only=False)

    def _queue(self, conn: _Conn, response: Response, *, head_only: bool) -> None:
        conn.state = "writing"
        conn.outbuf += _encode(response, keep_alive=conn.keep_alive, head_only=head_only)
        conn.last_progress = time.monotonic()
        self._flush(conn)

    def _start_stream(self, conn: _Conn, camera: str) -> None:
        conn.state, conn.camera, conn.keep_alive = "stream", camera, False
        self._streams += 1
        head = (
            "HTTP/1.1 200 OK\r\n"
            f"Content-Type: {_MJPEG_TYPE}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        )
        conn.outbuf += head.encode()
        conn.last_progress = time.monotonic()
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        """Send what the socket takes now; watch for writability only while bytes are left."""
        assert self._selector is not None
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn)
                return
            if sent:
                del conn.outbuf[:sent]
                conn.last_progress = time.monotonic()
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        self._selector.modify(conn.sock, want, None)
        if conn.outbuf or conn.state != "writing":
            return
        if not conn.keep_alive:
            self._close(conn)
            return
        now = time.monotonic()
        conn.state, conn.deadline = "head", now + self.head_timeout_s
        if conn.inbuf:  # a pipelined request arrived meanwhile
            self._try_request(conn)

    def _tick(self) -> None:
        """Hand new previews to idle streams; close clients past their deadlines."""
        now = time.monotonic()
        hub = self._previews
        for conn in list(self._conns.values()):
            if conn.state == "head":
                if now >= conn.deadline:
                    if conn.inbuf:  # a request began but did not finish in time (slowloris)
                        log.debug("http: %s: request head not complete in time", conn.peer)
                        self._refuse(conn, 408, b"request timeout\n")
                    else:  # an idle keep-alive connection, or one that never said anything
                        self._close(conn)
                continue
            if conn.outbuf and now - conn.last_progress > self.write_stall_s:
                log.debug("http: %s: stopped reading; closed", conn.peer)
                self._close(conn)
                continue
            if conn.state == "stream" and not conn.outbuf and hub is not None:
                camera = conn.camera or ""
                if camera not in hub:
                    self._close(conn)  # camera removed
                    continue
                got = hub.latest(camera)
                if got is not None and got[0] > conn.seq:
                    conn.seq, jpeg = got
                    conn.outbuf += (
                        f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                    )
                    conn.outbuf += jpeg
                    conn.outbuf += b"\r\n"
                    conn.last_progress = now
                    self._flush(conn)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is None:
            return
        if conn.state == "stream":
            self._streams -= 1
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.sock.close()

    # --- routing -------------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            return Response(405, b"GET or HEAD only\n", headers=[("Allow", "GET, HEAD")])
        if path == "/metrics":
            encoder, content_type = choose_encoder("")
            return Response(200, encoder(self.metrics.registry), content_type)
        if path == "/healthz":
            return self._healthz()
        if path == "/readyz":
            return self._readyz()
        if path == "/status":
            return self._status_page()
        if path == "/":
            return self._console()
        if path in console.ASSETS:
            body, content_type = console.asset(path)
            return Response(200, body, content_type, [("Cache-Control", "max-age=300")])
        if m := _PREVIEW_PATH.match(path):
            return self._preview(m.group(1), m.group(2), head=method == "HEAD")
        return Response(404, b"not found\n")

    def _healthz(self) -> Response:
        try:
            ok, reason = self._alive()
        except Exception as exc:
            log.exception("http: alive() failed")
            ok, reason = False, f"health check failed: {type(exc).__name__}"
        if ok:
            return Response(200, b"ok\n")
        text = redact(str(reason) or "not alive")
        return Response(503, (text + "\n").encode())

    def _readyz(self) -> Response:
        try:
            ok, details = self._ready()
        except Exception as exc:
            log.exception("http: ready() failed")
            ok, details = False, {"error": f"readiness check failed: {type(exc).__name__}"}
        return Response(200 if ok else 503, _json(details), "application/json")

    def status(self) -> dict:
        """The service's status, scrubbed, with each camera's preview sequence number added
        (``preview_seq``: 0 until the first preview), so the console asks only for what exists."""
        data = scrub(self._status())
        hub = self._previews
        cameras = data.get("cameras") if isinstance(data, dict) else None
        if hub is not None and isinstance(cameras, list):
            for cam in cameras:
                if isinstance(cam, dict) and isinstance(cam.get("name"), str):
                    got = hub.latest(cam["name"]) if cam["name"] in hub else None
                    cam["preview_seq"] = got[0] if got else 0
        if isinstance(data, dict):
            data.setdefault("version", __version__)
        return data

    def _status_page(self) -> Response:
        try:
            data = self.status()
        except Exception as exc:
            log.exception("http: status() failed")
            error = {"error": f"status failed: {type(exc).__name__}"}
            return Response(500, _json(error), "application/json")
        return Response(200, _json(data), "application/json")

    def _console(self) -> Response:
        try:
            data = self.status()
        except Exception as exc:
            log.exception("http: status() failed")
            data = {"error": f"status failed: {type(exc).__name__}", "cameras": []}
        known = {c.get("name") for c in data.get("cameras", []) if isinstance(c, dict)}
        for name in self._camera_names():  # cameras with previews or metrics but no status
            if name not in known:
                data.setdefault("cameras", []).append({"name": name})
        page = console.render(data, previews=self._previews is not None)
        return Response(
            200, page.encode(), "text/html; charset=utf-8", [("Content-Security-Policy", _CSP)]
        )

    def _camera_names(self) -> list[str]:
        names = set(self._previews.cameras()) if self._previews is not None else set()
        names.update(self.metrics.cameras())
        return sorted(names)

    def _preview(self, camera: str, ext: str, *, head: bool) -> Response:
        hub = self._previews
        if hub is None:
            return Response(404, b"previews are disabled\n")
        if ext == "jpg":
            got = hub.latest(camera)
            if got is None:
                return Response(404, b"no preview yet\n")
            return Response(200, got[1], "image/jpeg")
        if camera not in hub:
            return Response(404, b"no such camera\n")
        if head:
            return Response(200, b"", _MJPEG_TYPE)
        if self._stop.is_set() or self._streams >= self._max_streams:
            return Response(503, b"too many streams\n")
        return Response(200, stream=camera)


# The console loads only its own script, style and images: an injected <script> cannot run.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]] | None:
    """(method, target, version, lower-cased headers) of a size-capped head, or None."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes every byte; kept for clarity
        return None
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1].startswith("/") or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def _encode(response: Response, *, keep_alive: bool, head_only: bool) -> bytes:
    reason = _REASONS.get(response.status, "Unknown")
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
        *response.headers,
        ("Connection", "keep-alive" if keep_alive else "close"),
    ]
    # A later Cache-Control (static assets) replaces the default one.
    merged: dict[str, tuple[str, str]] = {}
    for name, value in headers:
        merged[name.lower()] = (name, value)
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in merged.values()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def _send_and_close(sock: socket.socket, response: Response) -> None:
    """Best effort, never blocking: a refused client gets its answer if the socket takes it."""
    with contextlib.suppress(OSError):
        sock.send(_encode(response, keep_alive=False, head_only=False))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
