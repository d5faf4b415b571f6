"""Two looping file cameras at the defaults: carphone (176x144, 30 fps) and bikes (640x272,
25 fps). `serve` runs them for DURATION seconds (default 60). Prints the frames in and out per
camera, read from /metrics, and the serve process's RSS over time.

    python -m benchmarks.small_cameras [DURATION]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MEDIA = Path.home() / ".cache/edgeblur/media"
PORT = 9199
COUNTERS = re.compile(
    r"^(edgeblur_source_frames_total|edgeblur_frames_total)\{([^}]*)\} ([0-9.e+]+)", re.M
)


def scrape() -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(m[1], m[2]): float(m[3]) for m in COUNTERS.finditer(text)}


def rss_mib(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def publishing(sample: dict[tuple[str, str], float]) -> bool:
    published = [v for (name, labels), v in sample.items() if "published" in labels]
    return bool(published) and all(v > 0 for v in published)


def main(duration: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cams = [("carphone", "carphone.mp4", "a.mp4"), ("bikes", "bikes.mp4", "b.mp4")]
        lines = [f"http: {{port: {PORT}}}", "cameras:"] + [
            f"  - {{name: {n}, url: {MEDIA / f}, source: {{loop: true}}, "
            f"output: {{file: {tmp / o}, preview: false}}}}"
            for n, f, o in cams
        ]
        (tmp / "cams.yaml").write_text("\n".join(lines) + "\n")
        with open(tmp / "log", "w") as log:
            serve = subprocess.Popen(
                [sys.executable, "-m", "edgeblur", "serve", "-c", str(tmp / "cams.yaml")],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                measure(serve.pid, duration, [n for n, _f, _o in cams])
            finally:
                serve.terminate()
                serve.wait(20)


def measure(pid: int, duration: float, cameras: list[str]) -> None:
    for _ in range(600):  # bounded: 5 min for the models to load and both cameras to publish
        try:
            if publishing(scrape()):
                break
        except OSError:
            pass
        time.sleep(0.5)
    time.sleep(5)
    before, t0, rss = scrape(), time.monotonic(), []
    while time.monotonic() - t0 < duration:
        time.sleep(5)
        rss.append(round(rss_mib(pid)))
    after, elapsed = scrape(), time.monotonic() - t0
    for cam in cameras:
        mine = [k for k in after if f'camera="{cam}"' in k[1]]
        decoded = sum(
            after[k] - before.get(k, 0) for k in mine if k[0] == "edgeblur_source_frames_total"
        )
        results = {
            k[1].split('result="')[1].rstrip('"'): after[k] - before.get(k, 0)
            for k in mine
            if k[0] == "edgeblur_frames_total"
        }
        refused = {r: n for r, n in results.items() if n and r != "published"}
        print(
            f"{cam}: decoded {decoded / elapsed:.1f} fps, published "
            f"{results.get('published', 0) / elapsed:.1f} fps, not published {refused}"
        )
    print("rss MiB samples:", rss, "max", max(rss))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)
