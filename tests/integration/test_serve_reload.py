"""`edgeblur serve -c` and SIGHUP: the camera file is re-read in the same process, cameras are
added, removed and restarted, and a detector group whose models did not change is kept."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from rtsp import wait_for
from serving import get, inject, running, service_config

from edgeblur import assets
from edgeblur.live.host import ServiceHost
from edgeblur.live.reload import reload_service

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _camera(name: str, sample: Path, **extra: object) -> dict:
    return {
        "name": name,
        "url": str(sample),
        "source": {"loop": True},
        "output": {"preview": True},
        **extra,
    }


def _status(base: str) -> dict:
    code, body = get(base + "/status")
    assert code == 200
    return json.loads(body)


def _streaming(base: str, names: set[str]) -> bool:
    cams = {c["name"]: c for c in _status(base)["cameras"]}
    return set(cams) == names and all(cams[n].get("frames_in", 0) > 0 for n in names)


def test_sighup_reloads_cameras_without_rebuilding_the_detector(models, tmp_path):
    _spec, sample = assets.resolve("sample")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({"http": {"port": 0}, "cameras": [_camera("gate", sample)]}))
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeblur", "serve", "-c", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    try:
        wait_for(lambda: "serving gate" in log.read_text(), 90, "the service to start", step_s=0.2)
        base = re.search(r"http://127\.0\.0\.1:\d+", log.read_text()).group(0)
        wait_for(lambda: _streaming(base, {"gate"}), 30, "gate to stream", step_s=0.2)
        before = _status(base)
        (group,) = before["inference"]
        # What each model runs on, as Runtime.describe() says (and edgeblur_runtime_info has).
        for entry in group["runtime"]:
            assert re.fullmatch(r"[\w.+-]+: (openvino|onnxruntime)-cpu (fp32|bf16|fp16)", entry)

        # Add a camera alike in detect settings: it joins the running detector group.
        cams = [_camera("gate", sample), _camera("yard", sample)]
        cfg.write_text(yaml.safe_dump({"http": {"port": 0}, "cameras": cams}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _streaming(base, {"gate", "yard"}), 60, "yard to stream", step_s=0.2)
        after = _status(base)
        assert proc.poll() is None  # the same process: nothing restarted
        assert after["reloads"] == 1 and after["state"] == "running"
        assert [g["group"] for g in after["inference"]] == [group["group"]]
        gate = {c["name"]: c for c in after["cameras"]}["gate"]
        assert gate["frames_in"] >= {c["name"]: c for c in before["cameras"]}["gate"]["frames_in"]
        kept = "cameras kept gate, stopped none, started yard; detectors reused 1, built none"
        assert kept in log.read_text()
        metrics = get(base + "/metrics")[1].decode()
        assert 'edgeblur_camera_up{camera="yard"}' in metrics
        assert f'edgeblur_runtime_info{{group="{group["group"]}"' in metrics
        assert 'edgeblur_reloads_total{result="applied"} 1.0' in metrics

        # A broken file keeps what runs, in one logged sentence.
        cfg.write_text("cameras: [\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "previous configuration keeps running" in log.read_text(),
            30,
            "refusal",
            step_s=0.2,
        )
        assert proc.poll() is None
        assert {c["name"] for c in _status(base)["cameras"]} == {"gate", "yard"}
        assert _status(base)["reloads"] == 1
        assert 'edgeblur_reloads_total{result="failed"} 1.0' in get(base + "/metrics")[1].decode()

        # Remove gate, change yard's anonymize: gate's series go, yard restarts, same detector.
        cams = [_camera("yard", sample, anonymize={"method": "pixelate"})]
        cfg.write_text(yaml.safe_dump({"http": {"port": 0}, "cameras": cams}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _status(base)["reloads"] == 2, 60, "the second reload", step_s=0.2)
        wait_for(lambda: _streaming(base, {"yard"}), 60, "yard to stream again", step_s=0.2)
        assert 'camera="gate"' not in get(base + "/metrics")[1].decode()
        assert "stopped gate, yard, started yard; detectors reused 1, built none" in log.read_text()

        # A camera with other detect settings: its group's Detector is built, yard's is kept.
        dock = _camera("dock", sample, detect={"faces": {"threshold": 0.3}})
        cfg.write_text(yaml.safe_dump({"http": {"port": 0}, "cameras": [*cams, dock]}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _status(base)["reloads"] == 3, 60, "the third reload", step_s=0.2)
        wait_for(lambda: _streaming(base, {"yard", "dock"}), 60, "dock to stream", step_s=0.2)
        groups = [g["group"] for g in _status(base)["inference"]]
        assert groups == [group["group"], f"{group['group']}-1"]
        assert f"started dock; detectors reused 1, built {groups[1]}" in log.read_text()
        metrics = get(base + "/metrics")[1].decode()
        assert all(f'edgeblur_runtime_info{{group="{g}"' in metrics for g in groups)

        # A model that is not there: refused before anything stops.
        gone = {"faces": {"model": str(tmp_path / "gone.onnx"), "family": "centerface"}}
        cfg.write_text(
            yaml.safe_dump({"http": {"port": 0}, "cameras": [*cams, {**dock, "detect": gone}]})
        )
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "gone.onnx does not exist" in log.read_text(), 30, "refusal", step_s=0.2)
        assert [g["group"] for g in _status(base)["inference"]] == groups
        assert proc.poll() is None

        # Dock removed: its group goes, with its runtime and schedule series.
        cfg.write_text(yaml.safe_dump({"http": {"port": 0}, "cameras": cams}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _status(base)["reloads"] == 4, 60, "the fourth reload", step_s=0.2)
        assert [g["group"] for g in _status(base)["inference"]] == groups[:1]
        metrics = get(base + "/metrics")[1].decode()
        assert f'group="{groups[1]}"' not in metrics and 'camera="dock"' not in metrics

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "Traceback" not in log.read_text()


def test_reload_while_inference_hangs_is_refused(models, tmp_path, caplog):
    """A hung detect() would not stop: its Detector must not be handed to a second thread."""
    _spec, sample = assets.resolve("sample")
    cfg = service_config([_camera("gate", sample)])
    with running(cfg, stall_s=1.0) as run:
        wait_for(lambda: run.published("gate") > 0, 60, "gate to publish", step_s=0.1)
        host = ServiceHost(cfg)
        host.attach(run.service)
        faulty = inject(run)  # the real detector, wrapped to hang
        faulty.hang_s = 4.0
        wait_for(lambda: not run.service.alive()[0], 10, "the hang to show", step_s=0.1)
        path = tmp_path / "cameras.yaml"
        cams = [_camera("gate", sample), _camera("yard", sample)]
        path.write_text(yaml.safe_dump({"http": {"port": 0}, "cameras": cams}))
        with caplog.at_level(logging.ERROR, logger="edgeblur.live.reload"):
            assert not reload_service(host, path, run.metrics, None)
        assert host.service is run.service and host.reloads == 0
        (line,) = [r.getMessage() for r in caplog.records if r.name == "edgeblur.live.reload"]
        assert "stuck" in line and "restart edgeblur instead" in line
        assert run.value("edgeblur_reloads_total", result="failed") == 1
