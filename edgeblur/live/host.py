"""What /status, /readyz and /healthz answer over the whole life of `edgeblur serve`.

The HTTP server starts before the engines are built (a first TensorRT build takes minutes, and
/metrics and /healthz must answer meanwhile), so it cannot hold the Service itself: it holds a
``ServiceHost``, which reports ``building engines`` until ``attach()`` hands it the built
Service, and whose Service a reload (SIGHUP) swaps for the next one.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from edgeblur import __version__
from edgeblur.config import ServiceConfig

if TYPE_CHECKING:
    from edgeblur.live.service import Service

BUILDING = "building engines"
RUNNING = "running"


class ServiceHost:
    """The status provider of the HTTP server; the Service is swapped under it, never mutated."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.state = BUILDING
        self.started_at = time.monotonic()
        self.reloads = 0  # reloads applied since start
        self._lock = threading.Lock()
        self._service: Service | None = None

    @property
    def service(self) -> Service | None:
        return self._service

    def attach(self, service: Service) -> None:
        """The built (or reloaded) Service answers from now on."""
        with self._lock:
            self._service = service
            self.config = service.config
            self.state = RUNNING

    # -- what the HTTP server calls (on its own thread) --------------------------------------------
    def alive(self) -> tuple[bool, str]:
        service = self._service
        return (True, "ok") if service is None else service.alive()

    def ready(self) -> tuple[bool, dict]:
        service = self._service
        if service is None:
            cams = {cam.name: False for cam in self.config.cameras if cam.enabled}
            return False, {"ready": False, "state": self.state, "cameras": cams}
        return service.ready()

    def status(self) -> dict:
        # Under the lock: once attach() returned, no status of the previous Service is still
        # running (it would recreate the metric series of a camera the reload removed).
        with self._lock:
            service = self._service
            if service is None:
                return self._building()
            data = service.status()
        data["state"] = self.state
        data["reloads"] = self.reloads
        data["uptime_s"] = round(time.monotonic() - self.started_at, 1)
        return data

    def _building(self) -> dict:
        cams = [
            {"name": cam.name, "enabled": True, "url": str(cam.url), "state": self.state}
            if cam.enabled
            else {"name": cam.name, "enabled": False}
            for cam in self.config.cameras
        ]
        return {
            "version": __version__,
            "state": self.state,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "inference": [],
            "cameras": cams,
        }
