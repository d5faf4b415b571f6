"""The HTTP endpoints scraped for real over 127.0.0.1 (http.py), and the preview sink feeding them
(io/preview.py). Every wait is bounded: sockets time out after a few seconds, threads are joined
with a deadline."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeblur.errors import ConfigError
from edgeblur.io.preview import PreviewHub, PreviewSink
from edgeblur.live.http import HttpServer
from edgeblur.live.metrics import Metrics
from edgeblur.types import Anonymized, Detections, Frame, Regions

SECRET_URL = "rtsp://user:s3cr@t@host/x"
TIMEOUT_S = 5.0


@dataclass
class State:
    """What the fake pipeline reports; tests flip it between requests."""

    alive: tuple[bool, str] = (True, "")
    ready: tuple[bool, dict] = (True, {"cameras": {"gate": "publishing"}})
    status: dict[str, Any] = field(default_factory=dict)


@dataclass
class Served:
    server: HttpServer
    metrics: Metrics
    hub: PreviewHub
    state: State

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body), for error statuses too."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def jpeg(value: int = 128, size_wh: tuple[int, int] = (64, 48)) -> bytes:
    img = np.full((size_wh[1], size_wh[0], 3), value, np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def anonymized(camera: str = "gate", index: int = 0, size_wh: tuple[int, int] = (1280, 720)):
    image = np.zeros((size_wh[1], size_wh[0], 3), np.uint8)
    image[..., 0] = 255  # pure red in RGB: lets a test check the RGB → BGR conversion
    frame = Frame(camera=camera, index=index, image=image)
    return Anonymized(frame, Regions.from_detections(Detections.empty(), index))


@pytest.fixture
def served() -> Iterator[Served]:
    metrics = Metrics()
    metrics.camera("gate")
    hub = PreviewHub()
    state = State()
    server = HttpServer(
        "127.0.0.1",
        0,
        metrics,
        status=lambda: state.status,
        ready=lambda: state.ready,
        alive=lambda: state.alive,
        previews=hub,
    )
    server.start()
    try:
        yield Served(server, metrics, hub, state)
    finally:
        server.stop()
        assert server.join(TIMEOUT_S), "http thread did not stop"


# --- /metrics ---------------------------------------------------------------------------------


def scrape(served: Served) -> dict[tuple[str, tuple], float]:
    status, headers, body = get(served.url("/metrics"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def test_metrics_parse_and_a_counter_moves_between_scrapes(served: Served) -> None:
    key = ("edgeblur_frames_total", (("camera", "gate"), ("result", "published")))
    first = scrape(served)
    assert first[key] == 0
    assert ("edgeblur_build_info", (("version", __import__("edgeblur").__version__),)) in first
    served.metrics.camera("gate").frames["published"].inc(3)
    second = scrape(served)
    assert second[key] == 3
    assert not any("://" in str(labels) for _, labels in second)


def test_head_metrics_has_no_body(served: Served) -> None:
    status, _, body = get(served.url("/metrics"), method="HEAD")
    assert status == 200 and body == b""


# --- health, readiness, status ------------------------------------------------------------------


def test_healthz(served: Served) -> None:
    assert get(served.url("/healthz"))[::2] == (200, b"ok\n")
    served.state.alive = (False, f"source thread of gate died ({SECRET_URL})")
    status, _, body = get(served.url("/healthz"))
    assert status == 503
    assert b"source thread of gate died" in body
    assert b"s3cr" not in body


def test_readyz_json(served: Served) -> None:
    status, headers, body = get(served.url("/readyz"))
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"cameras": {"gate": "publishing"}}
    served.state.ready = (False, {"cameras": {"gate": "reconnecting"}})
    status, _, body = get(served.url("/readyz"))
    assert status == 503
    assert json.loads(body) == {"cameras": {"gate": "reconnecting"}}


def test_status_redacts_every_string(served: Served) -> None:
    served.state.status = {
        "cameras": {
            "gate": {
                "url": SECRET_URL,
                "last_error": f"av.error: Connection refused: '{SECRET_URL}'",
                "notes": [SECRET_URL, 3, None, 1.5, float("nan")],
                "fps": 25.0,
            }
        }
    }
    status, headers, body = get(served.url("/status"))
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert b"s3cr" not in body
    data = json.loads(body)
    gate = data["cameras"]["gate"]
    assert gate["url"] == "rtsp://***@host/x"
    assert gate["last_error"].startswith("av.error: Connection refused")
    assert gate["notes"] == ["rtsp://***@host/x", 3, None, 1.5, None]
    assert gate["fps"] == 25.0


def test_failing_status_callback_is_a_500_without_details(served: Served) -> None:
    def boom() -> dict:
        raise RuntimeError(SECRET_URL)

    served.server._status = boom
    status, _, body = get(served.url("/status"))
    assert status == 500
    assert b"s3cr" not in body and json.loads(body)["error"] == "status failed: RuntimeError"


# --- index, routing ------------------------------------------------------------------------------


def test_console_is_readable_without_javascript(served: Served) -> None:
    served.hub.add("yard")
    served.hub.publish("yard", jpeg(10))
    served.state.status = {
        "uptime_s": 3725,
        "inference": [{"group": "centerface", "runtime": ["centerface: CPUExecutionProvider"]}],
        "cameras": [
            {"name": "gate", "state": "reconnecting", "fps_in": 0.0, "reconnects": 4,
             "last_error": f"Connection refused ({SECRET_URL})",
             "dropped": {"overrun": 2, "dropped_late": 0}},
            {"name": "yard", "state": "streaming", "fps_in": 25.0, "fps_out": 24.5,
             "latency_p95_ms": 75, "outputs": {"rtsp": SECRET_URL, "preview": "/p"}},
        ],
    }  # fmt: skip
    status, headers, body = get(served.url("/"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    page = body.decode()
    assert b"s3cr" not in body
    for cam in ("gate", "yard"):
        assert f'data-camera="{cam}"' in page
        assert f'href="/preview/{cam}.mjpg"' in page  # the live stream, without JS
    assert '<span class="state state-reconnecting" data-field="state">reconnecting</span>' in page
    assert "Connection refused (rtsp://***@host/x)" in page
    assert "overrun 2" in page and "dropped_late" not in page
    assert "75 ms" in page and "24.5" in page and "01:02:05" in page
    assert "centerface: CPUExecutionProvider" in page
    assert 'src="/preview/yard.jpg?seq=1"' in page  # only the camera that has a preview
    assert "/preview/gate.jpg" not in page
    assert 'href="/status"' in page and 'href="/metrics"' in page


def test_console_escapes_names_and_errors(served: Served) -> None:
    evil = '<img src=x onerror="alert(1)">'
    served.state.status = {
        "cameras": [{"name": f"cam{evil}", "state": f"</span>{evil}", "last_error": evil}]
    }
    body = get(served.url("/"))[2].decode()
    assert "<img src=x" not in body and 'onerror="alert' not in body
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/svg+xml"),
    ],
)
def test_console_assets_are_served(served: Served, path: str, ctype: str) -> None:
    status, headers, body = get(served.url(path))
    assert status == 200 and headers["Content-Type"].startswith(ctype) and body
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")  # no CDN


def test_status_adds_preview_seq_and_version(served: Served) -> None:
    served.hub.publish("gate", jpeg(1))
    served.hub.publish("gate", jpeg(2))
    served.state.status = {"cameras": [{"name": "gate"}, {"name": "yard"}]}
    data = json.loads(get(served.url("/status"))[2])
    assert [c["preview_seq"] for c in data["cameras"]] == [2, 0]
    assert data["version"] == __import__("edgeblur").__version__


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/metrics/extra",
        "/preview/Gate.jpg",
        "/preview/..%2Fetc.jpg",
        "/preview/gate.png",
        "/preview/x.jpg",  # a valid name with no preview yet
        "/preview/x.mjpg",  # no such camera
    ],
)
def test_unknown_paths_are_404(served: Served, path: str) -> None:
    assert get(served.url(path))[0] == 404


def test_post_is_405(served: Served) -> None:
    status, headers, _ = get(served.url("/metrics"), method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


# --- previews ------------------------------------------------------------------------------------


def test_preview_jpg_serves_the_latest(served: Served) -> None:
    served.hub.publish("gate", jpeg(10))
    served.hub.publish("gate", jpeg(200))
    status, headers, body = get(served.url("/preview/gate.jpg"))
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == jpeg(200)


def read_part(resp: Any, boundary: bytes) -> bytes:
    """One multipart part's body; the socket timeout bounds every read."""
    line = resp.readline()
    while line in (b"\r\n", b"\n"):
        line = resp.readline()
    assert line.rstrip(b"\r\n") == b"--" + boundary, line
    headers = {}
    while (line := resp.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    return resp.read(int(headers["content-length"]))


def test_mjpeg_stream_delivers_parts_and_ends_on_stop(served: Served) -> None:
    served.hub.add("gate")
    stop = threading.Event()

    def publish() -> None:
        value = 0
        while not stop.wait(0.05):
            value = (value + 37) % 256
            served.hub.publish("gate", jpeg(value))

    publisher = threading.Thread(target=publish, name="test:publisher")
    publisher.start()
    try:
        with urllib.request.urlopen(served.url("/preview/gate.mjpg"), timeout=TIMEOUT_S) as resp:
            ctype = resp.headers["Content-Type"]
            assert ctype.startswith("multipart/x-mixed-replace")
            boundary = ctype.split("boundary=", 1)[1].encode()
            parts = [read_part(resp, boundary) for _ in range(3)]
            assert all(p[:3] == b"\xff\xd8\xff" and p[-2:] == b"\xff\xd9" for p in parts)
            assert len(set(parts)) >= 2  # new frames, not the same one resent

            # Stopping the server ends the open stream: the body reaches EOF, bounded.
            t0 = time.monotonic()
            served.server.stop()
            while resp.read(65536):
                assert time.monotonic() - t0 < TIMEOUT_S
    finally:
        stop.set()
        publisher.join(TIMEOUT_S)
    assert served.server.join(TIMEOUT_S)


def test_mjpeg_stream_limit(served: Served) -> None:
    served.server._max_streams = 1
    served.hub.add("gate")
    with urllib.request.urlopen(served.url("/preview/gate.mjpg"), timeout=TIMEOUT_S) as first:
        assert first.status == 200
        assert get(served.url("/preview/gate.mjpg"))[0] == 503
    # The slot is freed once the client goes (the server notices on its next write or poll).
    served.hub.publish("gate", jpeg())
    deadline = time.monotonic() + TIMEOUT_S
    while served.server._streams and time.monotonic() < deadline:
        served.hub.publish("gate", jpeg())
        time.sleep(0.05)
    assert served.server._streams == 0


# --- hostile clients (in-process; the whole service under attack: test_http_hostile.py) -------


def raw(served: Served, data: bytes, timeout_s: float = TIMEOUT_S) -> bytes:
    """Send ``data`` on a fresh socket; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=timeout_s) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_a_64_kb_url_is_414_and_never_parsed(served: Served) -> None:
    answer = raw(served, b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414 ")
    assert get(served.url("/healthz"))[0] == 200


def test_oversized_headers_are_431_and_a_bad_request_line_400(served: Served) -> None:
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
    assert raw(served, b"GET / HTTP/1.1\r\n" + headers + b"\r\n").startswith(b"HTTP/1.1 431 ")
    assert raw(served, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_slowloris_is_cut_at_the_head_deadline(served: Served) -> None:
    served.server.head_timeout_s = 0.5
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=TIMEOUT_S) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        t0 = time.monotonic()
        answer = b""
        for _ in range(50):  # a byte every 0.05 s: never idle, never done
            try:
                s.sendall(b"X")
            except OSError:
                break
            time.sleep(0.05)
            s.setblocking(False)
            try:
                answer += s.recv(4096)
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - t0 < TIMEOUT_S


def test_keep_alive_serves_several_requests_on_one_connection(served: Served) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=TIMEOUT_S)
    try:
        for path in ("/healthz", "/metrics", "/healthz"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
        assert len(served.server._conns) == 1
    finally:
        conn.close()


def test_at_the_connection_cap_a_new_client_displaces_an_idle_one(served: Served) -> None:
    served.server._max_connections = 4
    idle = [socket.create_connection(("127.0.0.1", served.server.port)) for _ in range(4)]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(served.server._conns) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(served.server._conns) == 4
        assert get(served.url("/healthz"))[0] == 200
        assert len(served.server._conns) <= 4
        idle[0].settimeout(TIMEOUT_S)
        assert idle[0].recv(1) == b""  # the oldest idle one was closed to make room
    finally:
        for s in idle:
            s.close()


def test_stop_closes_every_client_socket(served: Served) -> None:
    clients = [socket.create_connection(("127.0.0.1", served.server.port)) for _ in range(50)]
    try:
        for c in clients[:25]:
            c.sendall(b"GET /metrics HTTP/1.1\r\n")  # half a request
        deadline = time.monotonic() + TIMEOUT_S
        while len(served.server._conns) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        served.server.stop()
        assert served.server.join(TIMEOUT_S)
        for c in clients:
            c.settimeout(TIMEOUT_S)
            # Closed with our unread bytes, the server's end resets: a reset is a close too.
            with contextlib.suppress(ConnectionResetError):
                assert c.recv(1) == b""
    finally:
        for c in clients:
            c.close()


def noise_jpeg(seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (480, 640, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def test_an_mjpeg_client_that_never_reads_cannot_hold_the_server(served: Served) -> None:
    served.server.write_stall_s = 0.5
    served.hub.add("gate")
    frames = [noise_jpeg(i) for i in range(4)]  # ~400 kB each: fills socket buffers fast
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", served.server.port))
    try:
        stuck.sendall(b"GET /preview/gate.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 3 * TIMEOUT_S
        i = 0
        while served.server._streams == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert served.server._streams == 1
        while served.server._streams and time.monotonic() < deadline:
            served.hub.publish("gate", frames[i % 4])
            i += 1
            time.sleep(0.02)
            assert get(served.url("/healthz"))[0] == 200  # others are served meanwhile
        assert served.server._streams == 0, "the stuck client was not closed"
        # And a stuck client cannot delay stop either.
        served.server.write_stall_s = 60
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        again.connect(("127.0.0.1", served.server.port))
        again.sendall(b"GET /preview/gate.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        for j in range(20):
            served.hub.publish("gate", frames[j % 4])
            time.sleep(0.02)
        assert served.server._streams == 1
        t0 = time.monotonic()
        served.server.stop()
        assert served.server.join(TIMEOUT_S)
        print(f"stop with a stuck MJPEG client took {time.monotonic() - t0:.3f} s")
        assert time.monotonic() - t0 < 2.0  # generous: only catches a hang
        again.close()
    finally:
        stuck.close()


# --- PreviewSink ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_preview_sink_rate_limit_with_a_fake_clock() -> None:
    hub, clock = PreviewHub(), FakeClock()
    sink = PreviewSink(hub, "gate", max_fps=2.0, clock=clock)
    published_at = []
    for i in range(20):  # 20 frames within 0.19 s: one preview
        sink.write(anonymized(index=i))
        clock.t += 0.01
    assert hub.latest("gate") is not None and hub.latest("gate")[0] == 1

    for i in range(100):  # 4 s at 25 fps: 2 fps, never more than 2 in any 0.5 s window
        before = hub.latest("gate")[0]
        sink.write(anonymized(index=20 + i))
        if hub.latest("gate")[0] != before:
            published_at.append(clock.t)
        clock.t += 0.04
    assert 7 <= len(published_at) <= 9
    for t in published_at:
        assert sum(1 for u in published_at if t <= u < t + 0.5) <= 2

    # An idle gap does not let a burst through afterwards.
    clock.t += 60
    seq = hub.latest("gate")[0]
    for i in range(5):
        sink.write(anonymized(index=200 + i))
        clock.t += 0.04
    assert hub.latest("gate")[0] == seq + 1


def test_preview_sink_downscales_and_converts_to_bgr() -> None:
    hub = PreviewHub()
    sink = PreviewSink(hub, "gate", width=320, quality=90)
    sink.write(anonymized(size_wh=(1280, 720)))
    got = hub.latest("gate")
    assert got is not None
    image = cv2.imdecode(np.frombuffer(got[1], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (180, 320, 3)
    b, g, r = image[90, 160].tolist()
    assert r > 200 and g < 50 and b < 50  # red stays red


def test_preview_sink_rejects_raw_frames_and_other_cameras() -> None:
    hub = PreviewHub()
    sink = PreviewSink(hub, "gate")
    raw = Frame(camera="gate", index=0, image=np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(TypeError, match="only Anonymized"):
        sink.write(raw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frame of camera"):
        sink.write(anonymized(camera="yard"))
    assert hub.latest("gate") is None
    sink.close()
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(anonymized())


def test_hub_wait_newer_is_bounded_and_wakes_on_publish() -> None:
    hub = PreviewHub()
    hub.add("gate")
    t0 = time.monotonic()
    assert hub.wait_newer("gate", 0, 0.1) is None
    assert 0.09 <= time.monotonic() - t0 < 2.0
    timer = threading.Timer(0.05, hub.publish, ("gate", b"\xff\xd8x\xff\xd9"))
    timer.start()
    try:
        got = hub.wait_newer("gate", 0, TIMEOUT_S)
    finally:
        timer.join(TIMEOUT_S)
    assert got == (1, b"\xff\xd8x\xff\xd9")
    assert hub.wait_newer("gate", 1, 0.0) is None
    with pytest.raises(ValueError):
        hub.publish("rtsp://u:p@h/x", b"x")


# --- lifecycle -----------------------------------------------------------------------------------


def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = HttpServer(
            "127.0.0.1",
            port,
            Metrics(),
            status=dict,
            ready=lambda: (True, {}),
            alive=lambda: (True, ""),
            previews=None,
        )
        with pytest.raises(ConfigError) as info:
            server.start()
    assert str(info.value) == (
        f"HTTP port 127.0.0.1:{port} is in use; set http.port to a free port or stop the "
        "other process."
    )
    assert server.join(0.1)  # never started: nothing to wait for


def test_stop_join_closes_the_port() -> None:
    server = HttpServer(
        "127.0.0.1",
        0,
        Metrics(),
        status=dict,
        ready=lambda: (True, {}),
        alive=lambda: (True, ""),
        previews=None,
    )
    server.start()
    assert server.port > 0
    threads = {t.name: t for t in threading.enumerate()}
    assert "http" in threads and not threads["http"].daemon
    assert get(f"http://127.0.0.1:{server.port}/preview/gate.jpg")[0] == 404  # previews off
    t0 = time.monotonic()
    server.stop()
    assert server.join(5)
    assert time.monotonic() - t0 < 5
    with pytest.raises(ConnectionRefusedError), socket.socket() as probe:
        probe.settimeout(TIMEOUT_S)
        probe.connect(("127.0.0.1", server.port))
