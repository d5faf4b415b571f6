"""Helpers for tests of `edgeblur serve`: the service in-process, a viewer, scrapes, a leak judge.

The service runs in the test process (built by live/build.py build_service, as `edgeblur serve`
does), so fault tests can wrap its real detector to make it raise or hang. Everything else is
real: GStreamer RTSP servers (tests/rtsp.py), PyAV on both ends, HTTP scrapes on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from edgeblur.build import build_detector
from edgeblur.config import JobConfig, ServiceConfig
from edgeblur.io.preview import PreviewHub
from edgeblur.live.build import build_service
from edgeblur.live.http import HttpServer
from edgeblur.live.metrics import Metrics

READ_OPTIONS = {"rtsp_transport": "tcp", "timeout": "3000000"}


@dataclass
class Running:
    service: Any
    http: HttpServer
    metrics: Metrics

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    def value(self, name: str, **labels: str) -> float:
        v = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def published(self, camera: str) -> float:
        return self.value("edgeblur_frames_total", camera=camera, result="published")

    def unchecked(self, camera: str) -> float:
        return self.value("edgeblur_unchecked_frames_published_total", camera=camera)


def service_config(cameras: list[dict], **top: Any) -> ServiceConfig:
    return ServiceConfig.model_validate({"http": {"port": 0}, "cameras": cameras, **top})


@contextlib.contextmanager
def running(cfg: ServiceConfig, stall_s: float = 30.0) -> Iterator[Running]:
    """The service and its HTTP server, started; stopped (with a bounded join) afterwards."""
    metrics = Metrics()
    previews = PreviewHub()
    service = build_service(cfg, metrics, previews)
    service.stall_s = stall_s
    http = HttpServer(
        "127.0.0.1", 0, metrics, service.status, service.ready, service.alive, previews
    )
    http.start()
    service.start()
    try:
        yield Running(service, http, metrics)
    finally:
        service.stop()
        stuck = service.join(8.0)
        http.stop()
        http.join(3.0)
        assert not stuck, f"threads did not stop: {stuck}"


def get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """/metrics over real HTTP, as {(sample name, sorted labels): value}."""
    status, body = get(base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def status(base: str) -> dict:
    code, body = get(base + "/status")
    assert code == 200
    return json.loads(body)


@dataclass
class Viewer:
    """Reads an RTSP URL on a thread, reconnecting until stopped; keeps every frame it got."""

    url: str
    max_frames: int = 3000
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)
    pts: list[float] = field(default_factory=list)
    sessions: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Viewer:
        self._thread = threading.Thread(target=self._run, name="viewer")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.frames) < self.max_frames:
            try:
                with av.open(self.url, options=READ_OPTIONS, timeout=(5.0, 5.0)) as c:
                    self.sessions += 1
                    for frame in c.decode(video=0):
                        if frame.pts is not None:
                            self.pts.append(float(frame.pts * frame.time_base))
                        self.frames.append((time.monotonic(), frame.to_ndarray(format="rgb24")))
                        if self._stop.is_set() or len(self.frames) >= self.max_frames:
                            return
            except (OSError, av.FFmpegError):
                pass  # 404 until the publisher's first frame, or the relay restarting
            self._stop.wait(0.2)

    def count_since(self, t: float) -> int:
        return sum(1 for ts, _ in self.frames if ts >= t)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "viewer did not stop"


class LeakJudge:
    """A face detector edgeblur does not use by default (the faceghost YOLOv8n face model) at a
    confident threshold: on raw carphone frames it finds the face in 120 / 120 frames, on
    anonymized output in 0 / 120 (measured). A face it finds in the output is a leak."""

    def __init__(self) -> None:
        cfg = JobConfig.model_validate(
            {
                "detect": {
                    # tiles 1: calibrated on whole frames (tiles upscale blurred crops).
                    "faces": {
                        "model": "yolov8n-face",
                        "threshold": 0.5,
                        "input_width": 320,
                        "tiles": 1,
                    },
                    "plates": {"enabled": False},
                }
            }
        )
        self.detector = build_detector(cfg.detect, cfg.runtime)

    def faces(self, images: list[np.ndarray]) -> list[int]:
        return [len(d) for d in self.detector.detect(images)] if images else []

    def leaks(self, images: list[np.ndarray]) -> int:
        return sum(1 for n in self.faces(images) if n)


class FaultyDetector:
    """Wraps the service's real detector to inject faults: raise, or hang, for a while."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.raise_until = 0.0
        self.hang_s = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def detect(self, images: list[np.ndarray], plans: Any = None):
        self.calls += 1
        if time.monotonic() < self.raise_until:
            raise RuntimeError("injected inference fault")
        if self.hang_s:
            hang, self.hang_s = self.hang_s, 0.0
            time.sleep(hang)
        return self.inner.detect(images, plans)


def inject(run: Running) -> FaultyDetector:
    worker = run.service.workers[0]
    faulty = FaultyDetector(worker.detector)
    worker.detector = faulty
    return faulty


def start_demo(log: Path) -> subprocess.Popen:
    """`edgeblur serve --demo --port 0` from this checkout as a process, stdout and stderr
    into ``log`` (the printed URLs tell the port); the caller stops it."""
    root = Path(__file__).resolve().parent.parent
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edgeblur", "serve", "--demo", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
