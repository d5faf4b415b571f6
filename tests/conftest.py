"""Shared fixtures: the test media (fetched from pinned packages by ../shared/media/fetch.sh) and
the cached models (pulled by scripts/setup.sh). Nothing here talks to anything but 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEBLUR_SHARED", ROOT.parent / "shared"))
MEDIA = Path(os.environ.get("EDGEBLUR_MEDIA", Path.home() / ".cache" / "edgeblur" / "media"))


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """The 18 labelled test files; fetched once (idempotent, verified by sha256)."""
    if not (MEDIA / "bigbuckbunny.mp4").exists():
        subprocess.run(
            ["bash", str(SHARED / "media" / "fetch.sh"), str(MEDIA)], check=True, timeout=600
        )
    return MEDIA


@pytest.fixture(scope="session")
def labels() -> dict:
    return json.loads((SHARED / "media" / "labels.json").read_text())["files"]


@pytest.fixture(scope="session")
def models() -> None:
    """The default models, cached (scripts/setup.sh pulls them, so this is a no-op then)."""
    from edgeblur import assets

    assets.pull(["face", "plate", "yolov8n-face"], progress=lambda _line: None)


def load_rgb(path: Path) -> np.ndarray:
    from edgeblur.io.files import read_image

    return read_image(path).rgb


def edgeblur_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m edgeblur ARGS` from this checkout, as a user runs it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "edgeblur", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
