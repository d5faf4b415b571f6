"""SIGHUP: apply an edited camera file without rebuilding the engines of unchanged models.

What a reload does, camera by camera (enabled cameras, compared whole: url, outputs, source,
detect, track, anonymize, fail_closed):
- unchanged: its source and publisher keep running (tracks, connections and sinks stay);
- removed or changed: its source and publisher are stopped, and a changed one starts anew;
- added: built and started.
Detector groups are compared by their detect settings: a group that still exists keeps its
Detector (no model load, no engine build); a new group (a camera's detect section changed) builds
its Detector before anything is stopped, so a model that fails to load leaves the old service
running. The inference workers themselves are cheap threads and are always started anew for the
new camera lists.

Sections a reload cannot apply in place (http: the bound port; runtime and scheduler: every
detector and batch; log_level) keep their old values, and the log says a restart applies them.
A file that does not load or validate keeps the old configuration and logs one sentence; so
does a reload while inference is stuck (its Detector would not stop, and must not run twice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from edgeblur.build import (
    build_camera,
    build_detectors,
    build_workers,
    check_service,
    enabled,
)
from edgeblur.config import ServiceConfig, load_service_config
from edgeblur.errors import EdgeblurError
from edgeblur.io.preview import PreviewHub
from edgeblur.live.host import ServiceHost
from edgeblur.live.metrics import Metrics
from edgeblur.live.service import Service

log = logging.getLogger(__name__)

RESTART_SECTIONS = ("http", "runtime", "scheduler", "log_level")


@dataclass(frozen=True)
class ReloadPlan:
    config: ServiceConfig  # the new file, with RESTART_SECTIONS kept as they run
    keep: list[str] = field(default_factory=list)  # cameras left running
    stop: list[str] = field(default_factory=list)  # removed or changed: stopped
    start: list[str] = field(default_factory=list)  # added or changed: built and started
    needs_restart: list[str] = field(default_factory=list)  # sections changed but not applied

    @property
    def changed(self) -> bool:
        return bool(self.stop or self.start)


def plan_reload(old: ServiceConfig, new: ServiceConfig) -> ReloadPlan:
    needs_restart = [s for s in RESTART_SECTIONS if getattr(old, s) != getattr(new, s)]
    config = new.model_copy(update={s: getattr(old, s) for s in RESTART_SECTIONS})
    before = {cam.name: cam for cam in enabled(old)}
    after = {cam.name: cam for cam in enabled(config)}
    keep = [n for n, cam in after.items() if before.get(n) == cam]
    stop = [n for n in before if n not in keep]
    start = [n for n in after if n not in keep]
    return ReloadPlan(config, keep, stop, start, needs_restart)


def reload_service(
    host: ServiceHost,
    path: Path,
    metrics: Metrics,
    previews: PreviewHub | None,
    join_s: float = 5.0,
) -> bool:
    """Run ``path``'s cameras: True when ``host`` now holds a new Service, False when nothing
    changed or the file is bad (the old Service keeps running, untouched)."""
    service = host.service
    if service is None:
        raise RuntimeError("reload_service() before the first Service was attached")
    try:
        new = load_service_config(path)
        plan = plan_reload(service.config, new)
        check_service(plan.config)
    except EdgeblurError as exc:  # a bad file or a missing model
        log.error("reload: %s The previous configuration keeps running.", exc)
        metrics.reloaded("failed")
        return False
    if plan.needs_restart:
        log.warning(
            "reload: %s changed; restart edgeblur to apply %s (SIGHUP reloads cameras only).",
            ", ".join(plan.needs_restart),
            "it" if len(plan.needs_restart) == 1 else "them",
        )
    if not plan.changed:
        log.info("reload: no camera changed")
        metrics.reloaded("unchanged")
        return False
    alive, reason = service.alive()
    if not alive:  # a hung detect() would not stop, and its Detector must not get a 2nd thread
        log.error("reload: %s; restart edgeblur instead. The old configuration runs on.", reason)
        metrics.reloaded("failed")
        return False
    cams = {cam.name: cam for cam in plan.config.cameras}
    kept = {n: (service.sources[n], service.publishers[n]) for n in plan.keep}
    # What can fail is built before anything stops: first the Detectors of new groups (a model
    # that does not load), then the new cameras' objects (not started).
    old_detectors = service.detectors()
    try:
        detectors = build_detectors(plan.config, old_detectors)
        fresh = {n: build_camera(cams[n], plan.config, metrics, previews) for n in plan.start}
    except Exception as exc:  # still one line, and the old service runs on untouched
        what = str(exc) if isinstance(exc, EdgeblurError) else f"{type(exc).__name__}: {exc}."
        log.error("reload: %s The previous configuration keeps running.", what)
        for n in plan.start:  # a new camera's series or preview slot made before the failure
            if n not in service.sources:
                metrics.remove_camera(n)
                if previews is not None and n in previews:
                    previews.remove(n)
            else:  # a changed camera: its depth gauges read the running queues again
                m = metrics.camera(n)
                m.set_queue_depth("source", service.sources[n].queue.__len__)
                m.set_queue_depth("publish", service.publishers[n].queue.qsize)
        metrics.reloaded("failed")
        return False
    cameras = {**kept, **fresh}
    workers = build_workers(plan.config, cameras, metrics, detectors)
    reused = {id(d) for _n, d in old_detectors.values()}
    built = [w.group for w in workers if id(w.detector) not in reused]
    # Flow order, as Service.stop: inputs of the cameras going away, then every batcher (its
    # camera list changes), then their publishers, each joined before its successor starts, so
    # no Detector runs on two threads and no output path has two writers.
    for n in plan.stop:
        service.sources[n].stop()
    for w in service.workers:
        w.stop()
    for n in plan.stop:
        service.publishers[n].stop()
    owners = [(f"source:{n}", service.sources[n]) for n in plan.stop]
    owners += [(f"infer:{w.group}", w) for w in service.workers]
    owners += [(f"publish:{n}", service.publishers[n]) for n in plan.stop]
    stuck = [name for name, owner in owners if not owner.join(join_s)]
    if stuck:
        log.warning("reload: %s did not stop within %.0f s", ", ".join(stuck), join_s)
    new_service = Service(
        plan.config,
        metrics,
        {n: s for n, (s, _p) in cameras.items()},
        {n: p for n, (_s, p) in cameras.items()},
        workers,
        stall_s=service.stall_s,
    )
    new_service.started_at = service.started_at
    metrics.set_runtimes(new_service.runtime_rows())
    for w in workers:
        w.start()
    for n in plan.start:
        fresh[n][1].start()
    for n in plan.start:
        fresh[n][0].start()
    host.reloads += 1
    host.attach(new_service)
    # Only now: until attach() returned, a /status of the old Service could recreate them.
    for group in {w.group for w in service.workers} - {w.group for w in workers}:
        metrics.remove_group(group)
    for n in plan.stop:
        gone = n not in cams or not cams[n].enabled
        if gone:
            metrics.remove_camera(n)
        if previews is not None and n in previews and (gone or not cams[n].output.preview):
            previews.remove(n)
    log.info(
        "reload: cameras kept %s, stopped %s, started %s; detectors reused %d, built %s",
        ", ".join(plan.keep) or "none",
        ", ".join(plan.stop) or "none",
        ", ".join(plan.start) or "none",
        len(workers) - len(built),
        ", ".join(built) or "none",
    )
    metrics.reloaded("applied")
    return True
