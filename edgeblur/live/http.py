"""The operator's HTTP endpoints: /metrics, /healthz, /readyz, /status, previews, an index.

One small WSGI app served by stdlib ``wsgiref`` on one ``http`` thread that ``HttpServer`` owns
(``start`` / ``stop`` / ``join``); each request runs on its own short-lived thread. It binds
127.0.0.1 unless configured otherwise: /status and the previews are for the operator, not the
network. Every string that leaves through /status, /readyz or /healthz goes through ``redact()``
as a last defence against a camera URL with its password slipping into a status dict.
"""

from __future__ import annotations

import errno
import html
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import TCPServer, ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import make_wsgi_app

from edgeblur import __version__
from edgeblur.errors import ConfigError
from edgeblur.io.preview import PreviewHub
from edgeblur.live.metrics import Metrics
from edgeblur.secrets import redact

log = logging.getLogger(__name__)

_PREVIEW_PATH = re.compile(r"^/preview/([a-z0-9_-]+)\.(jpg|mjpg)$")
_BOUNDARY = "edgeblurframe"
# How long a stream waits for a new preview before re-checking stop: bounds how long stop()
# takes to end every open stream.
_STREAM_POLL_S = 0.25
# A client that stops reading blocks its thread in send(); the socket timeout frees it.
_CLIENT_TIMEOUT_S = 30.0

StartResponse = Callable[..., Any]


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


class _Stream:
    """An MJPEG response body that frees its stream slot however the response ends.

    wsgiref calls ``close()`` after a normal end, a client disconnect or an error, even if the
    body was never iterated; a generator's ``finally`` would not run in that last case.
    """

    def __init__(self, parts: Iterator[bytes], release: Callable[[], None]):
        self._parts = parts
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return self._parts

    def close(self) -> None:
        close = getattr(self._parts, "close", None)
        if close is not None:
            close()
        if self._release is not None:
            release, self._release = self._release, None
            release()


class _Handler(WSGIRequestHandler):
    """Routes wsgiref's per-request chatter to DEBUG logging instead of stderr."""

    timeout = _CLIENT_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: %s %s", self.client_address[0], redact(format % args))

    def get_stderr(self) -> Any:
        return _DebugLog()


class _DebugLog:
    """A file-like sink for wsgiref's error output (client disconnects mostly)."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("http: %s", redact(text.rstrip()))
        return len(text)

    def flush(self) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    # Request threads are daemons so a stuck client cannot hold the process open; they are not
    # the stop mechanism: streams end on HttpServer's stop event, and the serving thread is
    # stopped with shutdown(). block_on_close=False: server_close() must not wait unbounded.
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can hang for
        # seconds on an offline box; the name only fills SERVER_NAME.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="http:request",
            daemon=True,
        )
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http: request from %s failed", client_address[0], exc_info=True)


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
        max_streams: concurrent MJPEG streams; more get 503 (each holds a thread).
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
    ):
        self.host = host
        self.port = port
        self.metrics = metrics
        self._status = status
        self._ready = ready
        self._alive = alive
        self._previews = previews
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._streams_cond = threading.Condition()
        self._streams = 0
        self._max_streams = max_streams

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind now (a busy port fails here, as ConfigError), then serve on the ``http`` thread."""
        if self._server is not None:
            raise RuntimeError("HttpServer.start() called twice")
        server_cls = _Server
        if ":" in self.host:  # an IPv6 literal such as "::1"
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            server = server_cls((self.host, self.port), _Handler)
        except OSError as exc:
            raise self._bind_error(exc) from None
        server.set_app(self._app)
        self._server = server
        self.port = int(server.server_address[1])
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

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        try:
            server.serve_forever(poll_interval=0.2)
        except Exception:
            log.exception("http: server thread failed")
        finally:
            server.server_close()
            log.info("http: stopped")

    def stop(self) -> None:
        """Ask the server and every open stream to end; returns within about 0.2 s."""
        self._stop.set()
        if self._server is not None and self._thread is not None:
            # shutdown() waits for serve_forever's next poll (poll_interval=0.2 s).
            self._server.shutdown()

    def join(self, timeout_s: float) -> bool:
        """Wait for the server thread and open streams to end; True if they all did."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return False
        left = max(0.0, deadline - time.monotonic())
        with self._streams_cond:
            return self._streams_cond.wait_for(lambda: self._streams == 0, timeout=left)

    # --- the WSGI app ----------------------------------------------------------------------------

    def _app(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        if method not in ("GET", "HEAD"):
            return _respond(
                start_response, "405 Method Not Allowed", b"GET or HEAD only\n", allow=True
            )
        head = method == "HEAD"
        try:
            if path == "/metrics":
                if head:  # prometheus_client answers HEAD with 405; render, then drop the body
                    self._metrics_app({**environ, "REQUEST_METHOD": "GET"}, start_response)
                    return []
                return self._metrics_app(environ, start_response)
            if path == "/healthz":
                result = self._healthz(start_response)
            elif path == "/readyz":
                result = self._readyz(start_response)
            elif path == "/status":
                result = self._status_page(start_response)
            elif path == "/":
                result = self._index(start_response)
            elif m := _PREVIEW_PATH.match(path):
                result = self._preview(start_response, m.group(1), m.group(2), head)
            else:
                result = _respond(start_response, "404 Not Found", b"not found\n")
        except Exception:
            log.exception("http: %s failed", path)
            result = _respond(start_response, "500 Internal Server Error", b"internal error\n")
        if head and not isinstance(result, _Stream):
            return []
        return result

    def _healthz(self, start_response: StartResponse) -> list[bytes]:
        try:
            ok, reason = self._alive()
        except Exception as exc:
            log.exception("http: alive() failed")
            ok, reason = False, f"health check failed: {type(exc).__name__}"
        if ok:
            return _respond(start_response, "200 OK", b"ok\n")
        text = redact(str(reason) or "not alive")
        return _respond(start_response, "503 Service Unavailable", (text + "\n").encode())

    def _readyz(self, start_response: StartResponse) -> list[bytes]:
        try:
            ok, details = self._ready()
        except Exception as exc:
            log.exception("http: ready() failed")
            ok, details = False, {"error": f"readiness check failed: {type(exc).__name__}"}
        status = "200 OK" if ok else "503 Service Unavailable"
        return _respond(start_response, status, _json(details), "application/json")

    def _status_page(self, start_response: StartResponse) -> list[bytes]:
        try:
            body = _json(self._status())
        except Exception as exc:
            log.exception("http: status() failed")
            error = {"error": f"status failed: {type(exc).__name__}"}
            return _respond(
                start_response, "500 Internal Server Error", _json(error), "application/json"
            )
        return _respond(start_response, "200 OK", body, "application/json")

    def _camera_names(self) -> list[str]:
        names = set(self._previews.cameras()) if self._previews is not None else set()
        names.update(self.metrics.cameras())
        return sorted(names)

    def _index(self, start_response: StartResponse) -> list[bytes]:
        rows = []
        for name in self._camera_names():
            n = html.escape(name)
            links = ""
            if self._previews is not None:
                links = (
                    f' — <a href="/preview/{n}.jpg">still</a>'
                    f' · <a href="/preview/{n}.mjpg">live preview</a>'
                )
            rows.append(f"<li>{n}{links}</li>")
        cameras = "\n".join(rows) or "<li>(no cameras)</li>"
        page = (
            '<!doctype html>\n<html><head><meta charset="utf-8">'
            f"<title>edgeblur {html.escape(__version__)}</title></head><body>\n"
            f"<h1>edgeblur {html.escape(__version__)}</h1>\n"
            f"<h2>Cameras</h2>\n<ul>\n{cameras}\n</ul>\n"
            '<p><a href="/status">status (JSON)</a> · <a href="/metrics">metrics</a> · '
            '<a href="/readyz">readiness</a> · <a href="/healthz">health</a></p>\n'
            "</body></html>\n"
        )
        return _respond(start_response, "200 OK", page.encode(), "text/html; charset=utf-8")

    def _preview(
        self, start_response: StartResponse, camera: str, ext: str, head: bool
    ) -> Iterable[bytes]:
        hub = self._previews
        if hub is None:
            return _respond(start_response, "404 Not Found", b"previews are disabled\n")
        if ext == "jpg":
            got = hub.latest(camera)
            if got is None:
                return _respond(start_response, "404 Not Found", b"no preview yet\n")
            return _respond(start_response, "200 OK", got[1], "image/jpeg")
        if camera not in hub:
            return _respond(start_response, "404 Not Found", b"no such camera\n")
        if head:
            return _respond(start_response, "200 OK", b"", _MJPEG_TYPE)
        with self._streams_cond:
            if self._stop.is_set() or self._streams >= self._max_streams:
                busy = True
            else:
                busy = False
                self._streams += 1
        if busy:
            return _respond(start_response, "503 Service Unavailable", b"too many streams\n")
        start_response(
            "200 OK",
            [
                ("Content-Type", _MJPEG_TYPE),
                ("Cache-Control", "no-store"),
            ],
        )
        return _Stream(self._mjpeg_parts(hub, camera), self._release_stream)

    def _release_stream(self) -> None:
        with self._streams_cond:
            self._streams -= 1
            self._streams_cond.notify_all()

    def _mjpeg_parts(self, hub: PreviewHub, camera: str) -> Iterator[bytes]:
        # An empty first chunk makes wsgiref send the headers now, not at the first frame.
        yield b""
        seq = 0
        while not self._stop.is_set():
            got = hub.wait_newer(camera, seq, _STREAM_POLL_S)
            if got is None:
                if camera not in hub:
                    return  # camera removed
                continue
            seq, jpeg = got
            yield (
                f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                + jpeg
                + b"\r\n"
            )


_MJPEG_TYPE = f"multipart/x-mixed-replace; boundary={_BOUNDARY}"


def _respond(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    allow: bool = False,
) -> list[bytes]:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if allow:
        headers.append(("Allow", "GET, HEAD"))
    start_response(status, headers)
    return [body]
