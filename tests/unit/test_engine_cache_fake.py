"""The TensorRT engine cache (edgeblur/runtime/engines.py), with fake engine bytes.

No TensorRT here: an "engine" is any byte string a fake build returns. What is tested is what
the cache promises: one file per key, a stale or corrupt file rebuilt (never returned), and
writes that leave either the old file or the whole new one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest

from edgeblur.runtime import engines
from edgeblur.runtime.engines import EngineCache, EngineKey, sidecar_path

KEY = EngineKey(
    model_sha256="a" * 64,
    gpu_name="NVIDIA Orin",
    compute_capability="8.7",
    tensorrt_version="10.3.0.30",
    precision="fp16",
    max_batch=8,
    input_wh_max=(640, 640),
)
ENGINE = b"fake-engine-header-0123456789abcdef" + bytes(range(256)) * 40


class FakeBuild:
    """Counts calls; returns ``data``."""

    def __init__(self, data: bytes = ENGINE):
        self.data = data
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.data


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "b" * 64},
        {"gpu_name": "NVIDIA GeForce RTX 4090"},
        {"compute_capability": "8.9"},
        {"tensorrt_version": "10.3.0.31"},
        {"precision": "fp32"},
        {"precision": "int8", "calibration_sha256": "c" * 64},
        {"max_batch": 4},
        {"input_wh_max": (1280, 1280)},
        {"input_wh_max": (640, 1152)},
        {"calibration_sha256": "d" * 64},
    ],
)
def test_fake_key_digest_and_file_change_with_every_part(tmp_path: Path, change: dict) -> None:
    other = replace(KEY, **change)
    cache = EngineCache(tmp_path)
    assert other.digest != KEY.digest
    assert cache.path_for("centerface", other) != cache.path_for("centerface", KEY)
    assert KEY.differences(other)  # the log line can name what changed


def test_fake_key_survives_its_sidecar_form() -> None:
    assert EngineKey.from_dict(json.loads(json.dumps(KEY.as_dict()))) == KEY
    assert KEY.digest == replace(KEY).digest  # stable, not per process


def test_fake_engine_is_built_once_then_read_from_cache(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    build = FakeBuild()
    data, path, built = cache.get_or_build("centerface", KEY, build)
    assert (data, built, build.calls) == (ENGINE, True, 1)
    assert path.name.startswith("centerface-fp16-") and path.suffix == ".engine"
    assert path.read_bytes() == ENGINE
    record = json.loads(sidecar_path(path).read_text())
    assert record["key"] == KEY.as_dict() and record["size"] == len(ENGINE)
    data, path2, built = cache.get_or_build("centerface", KEY, build)
    assert (data, path2, built, build.calls) == (ENGINE, path, False, 1)
    data, _path, built = cache.get_or_build("centerface", KEY, build, force=True)
    assert built and build.calls == 2


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _bad_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def _bit_flip_inside(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _no_sidecar(path: Path) -> None:
    sidecar_path(path).unlink()


def _garbage_sidecar(path: Path) -> None:
    sidecar_path(path).write_text("{not json")


def _stale_key(path: Path) -> None:
    """The sidecar says another TensorRT built this file (copied in from another box)."""
    side = sidecar_path(path)
    record = json.loads(side.read_text())
    record["key"]["tensorrt_version"] = "10.0.1.6"
    side.write_text(json.dumps(record))


def _old_format(path: Path) -> None:
    side = sidecar_path(path)
    record = json.loads(side.read_text())
    record["format"] = 0
    side.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, "truncated"),
        (_bad_header, "header"),
        (_bit_flip_inside, "sha256"),
        (_no_sidecar, "no sidecar"),
        (_garbage_sidecar, "sidecar unreadable"),
        (_stale_key, "tensorrt_version: 10.0.1.6 != 10.3.0.30"),
        (_old_format, "sidecar format"),
    ],
)
def test_fake_stale_or_corrupt_engine_is_rebuilt_not_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, reason: str
) -> None:
    cache = EngineCache(tmp_path)
    _data, path, _built = cache.get_or_build("yolov8n-plate", KEY, FakeBuild())
    damage(path)
    bad = path.read_bytes()
    rebuilt = FakeBuild(ENGINE[::-1])
    with caplog.at_level(logging.WARNING, logger="edgeblur.runtime.engines"):
        data, path2, built = cache.get_or_build("yolov8n-plate", KEY, rebuilt)
    assert built and rebuilt.calls == 1 and path2 == path
    assert data == ENGINE[::-1] != bad
    assert path.read_bytes() == ENGINE[::-1]
    assert cache.check(path, KEY) == (ENGINE[::-1], None)
    messages = [r.getMessage() for r in caplog.records]
    assert any("stale or corrupt" in m and reason in m and "rebuilding" in m for m in messages)


def test_fake_engine_of_another_key_at_the_same_path_is_not_loaded(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    other = replace(KEY, gpu_name="NVIDIA GeForce RTX 3060")
    _data, path, _built = cache.get_or_build("centerface", KEY, FakeBuild())
    data, problem = cache.check(path, other)
    assert data is None and "gpu_name" in (problem or "")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_fake_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_fsync(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail_fsync)
    cache = EngineCache(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        cache.get_or_build("centerface", KEY, FakeBuild())
    assert _leftovers(tmp_path) == []


def test_fake_failed_write_keeps_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.engine"
    engines.write_atomic(target, b"old engine")
    real_replace = os.replace

    def interrupted_replace(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # Ctrl-C between write and rename

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        engines.write_atomic(target, b"new engine, longer than the old one")
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_bytes() == b"old engine"
    assert _leftovers(tmp_path) == ["x.engine"]


def test_fake_build_that_fails_writes_nothing(tmp_path: Path) -> None:
    def broken() -> bytes:
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError):
        EngineCache(tmp_path).get_or_build("centerface", KEY, broken)
    assert _leftovers(tmp_path) == []


def test_fake_crash_between_engine_and_sidecar_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = EngineCache(tmp_path)
    real = engines.write_atomic

    def engine_only(path: Path, data: bytes) -> None:
        if path.suffix == ".json":
            raise OSError(5, "I/O error")
        real(path, data)

    monkeypatch.setattr(engines, "write_atomic", engine_only)
    with pytest.raises(OSError):
        cache.get_or_build("centerface", KEY, FakeBuild())
    monkeypatch.setattr(engines, "write_atomic", real)
    build = FakeBuild()
    _data, _path, built = cache.get_or_build("centerface", KEY, build)
    assert built and build.calls == 1


def test_fake_list_engines_reports_each_file_and_its_problem(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    _d, good, _b = cache.get_or_build("centerface", KEY, FakeBuild())
    _d, bad, _b = cache.get_or_build("yolov8n-plate", replace(KEY, precision="fp32"), FakeBuild())
    _truncate(bad)
    listed = {e.path.name: e for e in engines.list_engines(tmp_path)}
    assert listed[good.name].problem is None and listed[good.name].key == KEY
    assert "truncated" in (listed[bad.name].problem or "")
    assert engines.list_engines(tmp_path / "missing") == []


def test_fake_default_engine_dir_follows_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeblur.build import engine_dir, runtime_settings
    from edgeblur.config import RuntimeConfig

    monkeypatch.setenv("EDGEBLUR_CACHE", str(tmp_path))
    assert engine_dir(RuntimeConfig()) == tmp_path / "engines"
    assert runtime_settings(RuntimeConfig()).engine_dir == str(tmp_path / "engines")
    assert engine_dir(RuntimeConfig(engine_dir=tmp_path / "x")) == tmp_path / "x"
    assert EngineCache(tmp_path / "elsewhere").root == tmp_path / "elsewhere"


def test_fake_engines_cli_parser_and_empty_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeblur import cli

    parser = cli.build_parser()
    args = parser.parse_args(["engines", "build", "-c", "cams.yaml", "--force"])
    assert args.func is cli.cmd_engines_build and args.force
    assert args.config == Path("cams.yaml")
    args = parser.parse_args(["engines", "list", "--dir", str(tmp_path)])
    assert args.func(args) == 0
    assert "no TensorRT engines" in capsys.readouterr().out
    EngineCache(tmp_path).get_or_build("centerface", KEY, FakeBuild())
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "NVIDIA Orin" in out and "1..8" in out and "640x640" in out and "ok" in out


def test_fake_list_skips_a_write_in_progress(tmp_path: Path) -> None:
    EngineCache(tmp_path).get_or_build("centerface", KEY, FakeBuild())
    (tmp_path / ".centerface-fp16-0123.abcd.part.engine").write_bytes(b"half an engine")
    assert [e.path.name for e in EngineCache(tmp_path).entries()] == [
        EngineCache(tmp_path).path_for("centerface", KEY).name
    ]
