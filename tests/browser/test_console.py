"""The operator console (/) in a real browser: Debian's Chromium driven by Playwright.

`edgeblur serve` runs as a process on two cameras, the looped demo clip and a real RTSP camera
(tests/servers/camera.py); the test looks at the page as an operator would: the tiles, a preview
that changes, numbers that move, the RTSP camera going to "reconnecting" when its server is
killed and back to "streaming" when it returns, and no error in the browser's console or network
log (a missing favicon counts). Every wait polls with a generous deadline: nothing here depends
on how fast the machine is.

Chromium is Debian's (`apt-get install chromium`, listed in .ci/apt-packages.txt): Playwright's
own browser download is not reachable from CI. The screenshot is saved under the test's tmp dir;
with EDGEBLUR_UPDATE_SCREENSHOT=1 it also replaces docs/console.png.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rtsp import gst_unavailable_reason, media_file, start_camera, wait_for
from serving import get

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CHROMIUM = os.environ.get("EDGEBLUR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FAST_SOURCE = {"read_timeout_s": 2.0, "open_timeout_s": 3.0, "backoff_max_s": 2.0}
WAIT_MS = 60_000  # generous: a loaded 2-core CI box builds two cameras' models and decodes both

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: apt install"),
    pytest.mark.skipif(gst_unavailable_reason() is not None, reason=str(gst_unavailable_reason())),
]


def tile(page, camera: str):
    return page.locator(f'section.camera[data-camera="{camera}"]')


def field(page, camera: str, name: str) -> str:
    return tile(page, camera).locator(f'[data-field="{name}"]').inner_text(timeout=WAIT_MS)


def shot(locator):
    """The element's pixels, or None while polling swaps the element (it is re-read later)."""
    from playwright.sync_api import Error

    try:
        return locator.screenshot(timeout=WAIT_MS)
    except Error:
        return None


def wait_changed(read, timeout_s: float, what: str):
    """Poll ``read()`` until it differs from its first value; returns (first, later)."""
    first = read()
    later = first
    deadline = time.monotonic() + timeout_s
    while later == first or later is None or first is None:
        if first is None:
            first = later
        assert time.monotonic() < deadline, f"{what} did not change in {timeout_s} s"
        time.sleep(0.5)
        later = read()
    return first, later


def test_console_in_a_real_browser(models, tmp_path):
    from edgeblur import assets

    t_start = time.monotonic()
    camera = start_camera(media_file("carphone.mp4"), log_dir=tmp_path)
    config = tmp_path / "cameras.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http": {"port": 0},
                "cameras": [
                    {"name": "demo", "url": str(assets.resolve("sample")[1]),
                     "source": {"loop": True}},
                    {"name": "door", "url": camera.url, "source": FAST_SOURCE},
                ],
            }
        )
    )  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeblur", "serve", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    problems: list[str] = []
    try:
        wait_for(lambda: "serving demo, door" in log.read_text(), 90, "serve to start")
        base = re.search(r"http://127\.0\.0\.1:\d+", log.read_text()).group(0)
        wait_for(lambda: get(base + "/readyz")[0] == 200, 90, "both cameras to publish")

        # Without JavaScript: the server-rendered page names each camera and its state.
        code, body = get(base + "/")
        html = body.decode()
        assert code == 200
        for name in ("demo", "door"):
            assert f'data-camera="{name}"' in html
        assert re.search(r'data-field="state">streaming<', html), html[:2000]

        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.on(
                    "console",
                    lambda m: (
                        problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning")
                        else None
                    ),
                )
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on(
                    "requestfailed",
                    lambda r: problems.append(f"request failed: {r.url} {r.failure}"),
                )
                page.on(
                    "response",
                    lambda r: (
                        problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
                    ),
                )
                page.goto(base + "/", wait_until="load", timeout=WAIT_MS)
                expect = sync_api.expect

                for name in ("demo", "door"):
                    expect(tile(page, name)).to_be_visible(timeout=WAIT_MS)
                    expect(tile(page, name).locator(".name")).to_have_text(name)
                    expect(tile(page, name).locator('[data-field="state"]')).to_have_text(
                        "streaming", timeout=WAIT_MS
                    )
                    expect(tile(page, name).locator("img.preview")).to_be_visible(timeout=WAIT_MS)
                # The preview changes between two looks (the pixels, not just the URL).
                door_img = tile(page, "door").locator("img.preview")
                wait_changed(lambda: shot(door_img), 60, "door preview")
                # Numbers move without a reload.
                wait_changed(lambda: field(page, "door", "frames_in"), 60, "door frames in")
                wait_changed(lambda: page.locator("#uptime").inner_text(), 60, "uptime")
                assert float(field(page, "door", "fps_out")) >= 0
                # The runtime the selector chose (OpenVINO or ONNX Runtime on a CPU) is named.
                assert page.locator("#runtimes").inner_text().strip()
                page.screenshot(path=str(tmp_path / "console.png"))

                # The RTSP camera dies: its tile says so; it returns: streaming again.
                state = tile(page, "door").locator('[data-field="state"]')
                camera.kill()
                expect(state).to_have_text("reconnecting", timeout=WAIT_MS)
                expect(tile(page, "demo").locator('[data-field="state"]')).to_have_text("streaming")
                page.screenshot(path=str(tmp_path / "console-reconnecting.png"))
                camera.restart()
                expect(state).to_have_text("streaming", timeout=WAIT_MS)
                assert int(field(page, "door", "reconnects")) >= 1
                assert field(page, "door", "last_error") != "none"
                wait_changed(lambda: shot(door_img), 60, "door preview")
                page.screenshot(path=str(tmp_path / "console.png"))
                page.close()
            finally:
                browser.close()
        if os.environ.get("EDGEBLUR_UPDATE_SCREENSHOT") == "1":
            shutil.copy(tmp_path / "console.png", ROOT / "docs" / "console.png")
        assert not problems, "\n".join(problems)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
        print(f"\nbrowser test: {time.monotonic() - t_start:.1f} s; screenshot {tmp_path}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        camera.stop()
    assert "Traceback" not in log.read_text()
