"""`edgeblur serve` as a process: the README's main job, SIGTERM, bad configs, exit codes."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rtsp import wait_for
from serving import get, start_demo

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_demo_serves_and_stops_on_sigterm_within_5_s(models, tmp_path):
    log = tmp_path / "serve.log"
    proc = start_demo(log)
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
    proc = start_demo(log)
    try:
        wait_for(lambda: "building engines; status" in log.read_text(), 60, "the HTTP server")
        proc.send_signal(signal.SIGTERM)  # most often before the models are loaded
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "Traceback" not in log.read_text()


@dataclass
class Run:
    proc: subprocess.Popen
    signal_at: float  # monotonic
    log: Any
    delay: float
    sent: float | None = None
    ended: float | None = None


def test_sigterm_at_any_moment_of_start_up_ends_serve_in_time(models, tmp_path):
    """20 runs, each signalled at a random moment 0-10 s after start: every one ends within 8 s,
    with 0 (it had started and stopped in order) or 143 (start-up abandoned), no traceback.
    A signal that lands before the interpreter runs any edgeblur code ends it at once (-15)."""
    rng = random.Random(13)
    delays = [rng.uniform(0.0, 10.0) for _ in range(20)]
    done: list[Run] = []
    for batch in range(0, len(delays), 4):  # four at a time: bounded time, bounded load
        runs = []
        for i, delay in enumerate(delays[batch : batch + 4]):
            log = (tmp_path / f"serve{batch + i}.log").open("w+")
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgeblur", "serve", "--demo", "--port", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
            runs.append(Run(proc, time.monotonic() + delay, log, delay))
        deadline = time.monotonic() + 60  # a bound on a hang, not a speed
        while any(r.ended is None for r in runs) and time.monotonic() < deadline:
            now = time.monotonic()
            for r in runs:
                if r.ended is None and r.proc.poll() is not None:
                    r.ended = now
                if r.sent is None and now >= r.signal_at:
                    if r.ended is None:
                        r.proc.send_signal(signal.SIGTERM)
                    r.sent = now
            time.sleep(0.02)
        for r in runs:
            if r.ended is None:
                r.proc.kill()
                r.proc.wait(10)
        done += runs
    for r in done:
        r.log.seek(0)
        text = r.log.read()
        r.log.close()
        where = f"signalled {r.delay:.2f} s after start: exit {r.proc.returncode}\n{text[-2000:]}"
        assert r.sent is not None and r.ended is not None, "never ended; " + where
        assert r.ended - r.sent <= 8.0, f"ended {r.ended - r.sent:.1f} s after SIGTERM; " + where
        assert r.proc.returncode in (0, 143, -signal.SIGTERM), where
        assert "Traceback" not in text, where
