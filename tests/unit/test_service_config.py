"""cameras.yaml: defaults merged under cameras, one-sentence errors naming file, camera and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeblur.config import deep_merge, load_service_config
from edgeblur.errors import ConfigError

SECRET = "s3cr:t@/%x"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cams(*extra: dict, **top) -> dict:
    base = [{"name": "gate", "url": "rtsp://127.0.0.1:8554/cam", "output": {"preview": True}}]
    return {"cameras": base + list(extra), **top}


def error(tmp_path: Path, data: dict, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_service_config(write(tmp_path, data), env=env or {})
    msg = str(info.value)
    assert msg.count("\n") == 0
    return msg


def test_defaults_merge_under_each_camera_key_by_key(tmp_path):
    data = cams(
        {"name": "yard", "url": "rtsp://127.0.0.1/y", "detect": {"faces": {"threshold": 0.3}}},
        defaults={"detect": {"stride": 3, "faces": {"input_width": 960}}},
    )
    cfg = load_service_config(write(tmp_path, data), env={})
    gate, yard = cfg.cameras
    assert gate.detect.stride == yard.detect.stride == 3
    assert gate.detect.faces.input_width == yard.detect.faces.input_width == 960
    assert yard.detect.faces.threshold == 0.3
    assert gate.detect.faces.threshold == 0.15  # the built-in default


def test_deep_merge_does_not_change_its_inputs():
    a, b = {"x": {"y": 1, "z": 2}}, {"x": {"y": 5}}
    assert deep_merge(a, b) == {"x": {"y": 5, "z": 2}}
    assert a == {"x": {"y": 1, "z": 2}} and b == {"x": {"y": 5}}


def test_password_comes_from_the_environment_and_is_never_echoed(tmp_path):
    data = cams(
        {"name": "yard", "url": "rtsp://admin:${PASS}@10.0.0.1/s", "source": {"read_timeout_s": -1}}
    )
    msg = error(tmp_path, data, env={"PASS": SECRET})
    assert "'cameras[1].source.read_timeout_s'" in msg and "camera 'yard'" in msg
    assert SECRET not in msg and "s3cr" not in msg


def test_missing_variable_names_the_key(tmp_path):
    msg = error(tmp_path, cams({"name": "yard", "url": "rtsp://admin:${NOPE}@h/s"}))
    assert "NOPE" in msg and "cameras[1].url" in msg


@pytest.mark.parametrize(
    ("camera", "needle"),
    [
        ({"name": "Gate 2", "url": "rtsp://h/s"}, "'cameras[1].name' must be letters"),
        ({"name": "gate", "url": "rtsp://h/s"}, "used twice"),
        ({"name": "yard", "url": "ftp://h/s"}, "'cameras[1].url'"),
        ({"name": "yard", "url": "rtsp://h/s", "outptu": {}}, "did you mean 'output'"),
        ({"name": "yard", "url": "rtsp://h/s", "output": {"rtsp": "http://x/y"}}, "output.rtsp"),
        ({"name": "yard"}, "'cameras[1].url' is missing"),
    ],
)
def test_bad_camera_entries(tmp_path, camera, needle):
    assert needle in error(tmp_path, cams(camera))


def test_no_cameras_is_an_error(tmp_path):
    assert "at least one camera" in error(tmp_path, {"cameras": []})


def test_unknown_top_level_key_suggests(tmp_path):
    assert "did you mean 'scheduler'" in error(tmp_path, cams(schedular={"max_batch": 2}))


@pytest.mark.parametrize(
    ("cameras", "needle"),
    [
        # A camera recording over the file it reads (a bare path, a file:// URL, a symlink).
        (
            [{"name": "door", "url": "{d}/in.mp4", "output": {"file": "{d}/in.mp4"}}],
            "its own input",
        ),
        (
            [{"name": "door", "url": "file://{d}/in.mp4", "output": {"file": "{d}/./in.mp4"}}],
            "its own input",
        ),
        ([{"name": "door", "url": "{d}/link.mp4", "output": {"file": "{d}/in.mp4"}}], "own input"),
        (
            [
                {"name": "door", "url": "rtsp://h/x", "output": {"file": "{d}/in.mp4"}},
                {"name": "gate", "url": "{d}/in.mp4"},
            ],
            "the input of camera 'gate'",
        ),
        (
            [
                {"name": "door", "url": "rtsp://h/x", "output": {"file": "{d}/rec.mp4"}},
                {"name": "gate", "url": "rtsp://h/y", "output": {"file": "{d}/sub/../rec.mp4"}},
            ],
            "record to the same output.file",
        ),
    ],
)
def test_a_recording_may_not_replace_an_input_or_another_recording(tmp_path, cameras, needle):
    (tmp_path / "in.mp4").write_bytes(b"not really a video")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "in.mp4")
    (tmp_path / "sub").mkdir()
    data = yaml.safe_load(yaml.safe_dump({"cameras": cameras}).replace("{d}", str(tmp_path)))
    msg = error(tmp_path, data)
    assert needle in msg and "cameras.yaml" in msg, msg
    assert (tmp_path / "in.mp4").read_bytes() == b"not really a video"


def test_cameras_recording_to_their_own_files_are_fine(tmp_path):
    data = {
        "cameras": [
            {
                "name": "door",
                "url": f"{tmp_path}/a.mp4",
                "output": {"file": f"{tmp_path}/a.rec.mp4"},
            },
            {
                "name": "gate",
                "url": f"{tmp_path}/b.mp4",
                "output": {"file": f"{tmp_path}/b.rec.mp4"},
            },
        ]
    }
    cfg = load_service_config(write(tmp_path, data), env={})
    assert [c.output.file.name for c in cfg.cameras] == ["a.rec.mp4", "b.rec.mp4"]


def test_a_typo_of_the_only_key_is_reported_as_unknown_not_as_missing(tmp_path):
    msg = error(tmp_path, {"camerass": [{"name": "gate", "url": "rtsp://h/s"}]})
    assert "unknown key 'camerass'" in msg and "did you mean 'cameras'" in msg
    assert "missing" not in msg


def test_unknown_key_in_a_camera_is_reported_before_a_missing_url(tmp_path):
    msg = error(tmp_path, cams({"name": "yard", "ulr": "rtsp://h/s"}))
    assert "unknown key 'cameras[1].ulr'" in msg and "did you mean 'url'" in msg


def test_cameras_as_a_mapping_name_to_camera(tmp_path):
    data = {
        "defaults": {"output": {"rtsp": "rtsp://127.0.0.1:8554/{name}"}},
        "cameras": {
            "Gate.2": {"url": "rtsp://127.0.0.1:8554/cam"},
            "yard~b": {"url": "rtsp://127.0.0.1:8554/y", "output": {"file": "/rec/{name}.mp4"}},
        },
    }
    cfg = load_service_config(write(tmp_path, data), env={})
    assert [c.name for c in cfg.cameras] == ["Gate.2", "yard~b"]
    assert cfg.cameras[0].output.rtsp.reveal() == "rtsp://127.0.0.1:8554/Gate.2"
    assert cfg.cameras[1].output.rtsp.reveal() == "rtsp://127.0.0.1:8554/yard~b"
    assert str(cfg.cameras[1].output.file) == "/rec/yard~b.mp4"


@pytest.mark.parametrize(
    ("cameras", "needle"),
    [
        ({"gate": {"url": "rtsp://h/s", "name": "other"}}, "differs from its key"),
        ({"gate": {}}, "'cameras.gate.url' is missing"),
        ({"gate": {"url": "ftp://h/s"}}, "'cameras.gate.url'"),
        ({"bad name": {"url": "rtsp://h/s"}}, "'cameras.bad name.name' must be letters"),
        ({".hidden": {"url": "rtsp://h/s"}}, "not starting with '.'"),
    ],
)
def test_bad_cameras_in_a_mapping(tmp_path, cameras, needle):
    assert needle in error(tmp_path, {"cameras": cameras})


@pytest.mark.parametrize(
    ("zones", "needle"),
    [
        ([{"kind": "hide", "points": [[0, 0], [1, 1]]}], "at least 3 corners"),
        ([{"points": [[0, 0], [640, 0], [640, 480]]}], "between 0 and 1"),
        ([{"kind": "blur", "points": [[0, 0], [1, 0], [1, 1]]}], "'hide' or 'ignore'"),
        ([{"kind": "hide", "pts": [[0, 0], [1, 0], [1, 1]]}], "did you mean 'points'"),
    ],
)
def test_malformed_zone_is_one_sentence_naming_the_zone(tmp_path, zones, needle):
    msg = error(
        tmp_path, cams({"name": "yard", "url": "rtsp://h/s", "anonymize": {"zones": zones}})
    )
    assert needle in msg and "cameras[1].anonymize.zones[0]" in msg
