"""`edgeblur serve` as a process: the README's main job, SIGTERM, bad configs, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rtsp import wait_for
from serving import get

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_demo_serves_and_stops_on_sigterm_within_5_s(models, tmp_path):
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeblur", "serve", "--demo", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    try:
        # HTTP comes up before the engines are built: /metrics, /healthz and /status answer
        # while the service builds, and /status says which of the two it is doing.
        wait_for(lambda: "building engines; status" in log.read_text(), 60, "the HTTP server")
        base = re.search(r"http://127\.0\.0\.1:\d+", log.read_text()).group(0)
        assert get(base + "/metrics")[0] == 200
        assert get(base + "/healthz")[0] == 200
        seen = set()

        def running() -> bool:
            data = json.loads(get(base + "/status")[1])
            seen.add(data["state"])
            if data["state"] == "building engines":  # the console shows it per camera
                assert [c["state"] for c in data["cameras"]] == ["building engines"]
                assert get(base + "/readyz")[0] == 503
            return data["state"] == "running"

        wait_for(running, 60, "/status to say running", step_s=0.05)
        assert seen <= {"building engines", "running"}, seen
        wait_for(lambda: "serving demo" in log.read_text(), 30)
        wait_for(lambda: get(base + "/readyz")[0] == 200, 30)
        metrics = get(base + "/metrics")[1].decode()
        published = re.search(
            r'edgeblur_frames_total\{camera="demo",result="published"\} (\S+)', metrics
        )
        assert published and float(published.group(1)) > 0
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/preview/demo.jpg")[1][:2] == b"\xff\xd8"  # a JPEG
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        assert time.monotonic() - t0 < 5.0
        assert code == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        (
            "cameras:\n  - name: gate\n    url: rtsp://h/s\n    outptu: {}\n",
            "did you mean 'output'",
        ),
        ("cameras:\n  - {name: a, url: rtsp://h/s}\n  - {name: a, url: rtsp://h/t}\n", "twice"),
        ("cameras:\n  - name: gate\n    url: rtsp://u:${NOT_SET_PW}@h/s\n", "NOT_SET_PW"),
        ("cameras: [\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_sentence_and_exit_2(tmp_path, yaml_text, needle):
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(yaml_text)
    for args in (["serve", "-c", str(cfg)], ["config", "check", str(cfg)]):
        r = subprocess.run(
            [sys.executable, "-m", "edgeblur", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=ENV,
        )
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr


def test_config_check_prints_the_resolved_config_without_the_password(tmp_path):
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("cameras:\n  - name: gate\n    url: rtsp://admin:${PW}@10.0.0.1/s\n")
    r = subprocess.run(
        [sys.executable, "-m", "edgeblur", "config", "check", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**ENV, "PW": "p@ss:w/rd"},
    )
    assert r.returncode == 0, r.stderr
    assert "rtsp://***@10.0.0.1/s" in r.stdout
    assert "p@ss" not in r.stdout + r.stderr and "w/rd" not in r.stdout + r.stderr


def test_sigterm_while_building_engines_stops_cleanly(models, tmp_path):
    """A pod deleted during a first engine build (minutes on TensorRT) must not wait for it."""
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeblur", "serve", "--demo", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    try:
        wait_for(lambda: "building engines; status" in log.read_text(), 60, "the HTTP server")
        proc.send_signal(signal.SIGTERM)  # most often before the models are loaded
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "Traceback" not in log.read_text()
