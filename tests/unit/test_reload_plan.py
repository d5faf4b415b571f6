"""What a SIGHUP reload keeps, stops and starts, and what /status says before the engines exist."""

from __future__ import annotations

from edgeblur.config import ServiceConfig
from edgeblur.live.host import BUILDING, ServiceHost
from edgeblur.live.reload import plan_reload


def _cfg(cameras: list[dict], **top: object) -> ServiceConfig:
    return ServiceConfig.model_validate({"cameras": cameras, **top})


def _cam(name: str, **extra: object) -> dict:
    return {
        "name": name,
        "url": f"rtsp://user:pw@10.0.0.1/{name}",
        "output": {"preview": True},
        **extra,
    }


def test_unchanged_cameras_are_kept_changed_ones_restarted() -> None:
    old = _cfg([_cam("gate"), _cam("yard"), _cam("dock")])
    new = _cfg([_cam("gate"), _cam("yard", anonymize={"method": "pixelate"}), _cam("lobby")])
    plan = plan_reload(old, new)
    assert plan.keep == ["gate"]
    assert plan.stop == ["yard", "dock"]
    assert plan.start == ["yard", "lobby"]
    assert plan.needs_restart == [] and plan.changed


def test_a_new_password_restarts_the_camera() -> None:
    old = _cfg([_cam("gate")])
    new = _cfg([{**_cam("gate"), "url": "rtsp://user:new@10.0.0.1/gate"}])
    assert plan_reload(old, new).stop == ["gate"]


def test_disabling_a_camera_stops_it() -> None:
    plan = plan_reload(
        _cfg([_cam("gate"), _cam("yard")]), _cfg([_cam("gate"), _cam("yard", enabled=False)])
    )
    assert (plan.keep, plan.stop, plan.start) == (["gate"], ["yard"], [])


def test_sections_a_reload_cannot_apply_keep_their_running_values() -> None:
    old = _cfg([_cam("gate")])
    new = _cfg([_cam("gate")], http={"port": 9200}, runtime={"threads": 2}, log_level="debug")
    plan = plan_reload(old, new)
    assert plan.needs_restart == ["http", "runtime", "log_level"]
    assert plan.config.http == old.http and plan.config.runtime == old.runtime
    assert not plan.changed


def test_host_reports_building_until_a_service_is_attached() -> None:
    host = ServiceHost(_cfg([_cam("gate"), _cam("yard", enabled=False)]))
    status = host.status()
    assert status["state"] == BUILDING
    assert status["cameras"][0] == {
        "name": "gate",
        "enabled": True,
        "url": "rtsp://***@10.0.0.1/gate",
        "state": BUILDING,
    }
    assert status["cameras"][1] == {"name": "yard", "enabled": False}
    assert host.ready() == (False, {"ready": False, "state": BUILDING, "cameras": {"gate": False}})
    assert host.alive() == (True, "ok")
