"""Config files: ${ENV} placeholders, one-sentence errors that name the key, never the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeblur.config import (
    AnonymizeConfig,
    JobConfig,
    interpolate_env,
    job_config,
    load_job_config,
    load_yaml,
)
from edgeblur.core.anonymize import AnonymizeSettings
from edgeblur.errors import ConfigError, EdgeblurError

SECRET = "rtsp://user:s3cret@host"


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def job(tmp_path: Path, **overrides: Any) -> Path:
    """A YAML job file: a minimal valid config with ``overrides`` merged in by section."""
    data: dict[str, Any] = {"detect": {"faces": {"threshold": 0.3}}, "encode": {"crf": 23}}
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return write(tmp_path, yaml.safe_dump(data))


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_job_config(path)
    return str(info.value)


# --- ${ENV} ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("crf: ${EB_CRF}", {"EB_CRF": "18"}, "crf: 18"),
        ("crf: ${EB_CRF:-20}", {}, "crf: 20"),
        ("crf: ${EB_CRF:-20}", {"EB_CRF": "18"}, "crf: 18"),  # set wins over default
        ("preset: ${EB_P:-}", {}, "preset: "),  # empty default
        ("a: ${A}\nb: ${B:-x}", {"A": "1"}, "a: 1\nb: x"),
        ("url: rtsp://${U}:${P}@h", {"U": "u", "P": "p"}, "url: rtsp://u:p@h"),
        ("crf: $EB_CRF", {}, "crf: $EB_CRF"),  # no braces: not a placeholder
        ("crf: 20", {}, "crf: 20"),
    ],
)
def test_interpolate_env(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate_env(text, "job.yaml", env) == expected


def test_unset_variable_names_the_variable_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        interpolate_env("encode:\n  crf: 20\n  preset: ${EB_MISSING_PRESET}\n", "job.yaml", {})
    msg = str(info.value)
    assert "job.yaml:3" in msg
    assert "EB_MISSING_PRESET" in msg
    assert "${EB_MISSING_PRESET:-default}" in msg  # the fix


def test_env_is_read_at_load_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "anonymize:\n  strength: ${EB_STRENGTH:-0.5}\n")
    monkeypatch.delenv("EB_STRENGTH", raising=False)
    assert load_job_config(path).anonymize.strength == 0.5
    monkeypatch.setenv("EB_STRENGTH", "0.75")
    assert load_job_config(path).anonymize.strength == 0.75


def test_env_value_is_taken_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EB_FACE_MODEL", "/srv/models/face #2.onnx")
    path = write(tmp_path, "detect:\n  faces:\n    model: ${EB_FACE_MODEL}\n")
    assert load_job_config(path).detect.faces.model == "/srv/models/face #2.onnx"


# --- loading ---------------------------------------------------------------------------------


def test_load_job_config_reads_a_yaml_file(tmp_path: Path) -> None:
    cfg = load_job_config(job(tmp_path, anonymize={"method": "pixelate", "strength": 0.125}))
    assert cfg.detect.faces.threshold == 0.3
    assert cfg.encode.crf == 23
    assert cfg.anonymize.method == "pixelate"
    assert cfg.anonymize.strength == 0.125


def test_a_partial_section_keeps_the_other_defaults(tmp_path: Path) -> None:
    cfg = load_job_config(write(tmp_path, "detect:\n  faces:\n    threshold: 0.3\n"))
    assert cfg.detect.faces.model == "face"  # not required just to change the threshold
    assert cfg.detect.plates.model == "plate"
    assert cfg.detect.plates.threshold == JobConfig().detect.plates.threshold


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file_is_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_job_config(write(tmp_path, text)) == JobConfig()


def test_no_file_is_the_defaults() -> None:
    assert load_job_config(None) == JobConfig()


def test_anonymize_config_defaults_match_the_anonymizer_defaults() -> None:
    # `edgeblur blur` without a config and Anonymizer() must hide the same way.
    cfg, settings = AnonymizeConfig(), AnonymizeSettings()
    for name in AnonymizeConfig.model_fields:
        assert getattr(cfg, name) == getattr(settings, name), name


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    msg = config_error(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg


# --- YAML errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("encode:\n  crf: 20\n\tpreset: fast\n", 3),  # a tab
        ("encode:\n  crf: 20\n  preset: a: b\n", 3),  # a second colon
        ("track:\n  coast_frames: 3\nencode:\n  crf: [1, 2\n  preset: x\n", 5),  # unclosed list
    ],
)
def test_yaml_syntax_error_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    msg = config_error(write(tmp_path, text))
    assert f"job.yaml:{line}:" in msg
    assert "YAML" in msg


@pytest.mark.parametrize(("text", "got"), [("- a\n- b\n", "list"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    msg = config_error(write(tmp_path, text))
    assert "mapping" in msg and got in msg


def test_a_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "clip.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ConfigError):
        load_yaml(path)


# --- validation messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "suggestion"),
    [
        ({"detect": {"faces": {"treshold": 0.3}}}, "detect.faces.treshold", "'threshold'"),
        ({"anonymize": {"stregth": 0.3}}, "anonymize.stregth", "'strength'"),
        ({"track": {"coast_frame": 3}}, "track.coast_frame", "'coast_frames'"),
        ({"anonymise": {"method": "fill"}}, "anonymise", "'anonymize'"),
        ({"detect": {"plate": {"threshold": 0.3}}}, "detect.plate", "'plates'"),
    ],
)
def test_unknown_key_suggests_the_nearest_valid_one(
    tmp_path: Path, overrides: dict[str, Any], key: str, suggestion: str
) -> None:
    msg = config_error(write(tmp_path, yaml.safe_dump(overrides)))
    assert f"unknown key '{key}'" in msg
    assert f"did you mean {suggestion}?" in msg


def test_unknown_key_without_a_near_match_lists_the_valid_ones(tmp_path: Path) -> None:
    msg = config_error(job(tmp_path, track={"zzzz": 1}))
    assert "unknown key 'track.zzzz'" in msg
    assert "valid keys:" in msg and "coast_frames" in msg and "iou_threshold" in msg


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("encode", {"crf": SECRET}, "encode.crf"),  # int field
        ("encode", {"codec": [SECRET]}, "encode.codec"),  # str field given a list
        ("anonymize", {"method": SECRET}, "anonymize.method"),  # one of a few words
        ("detect", {"faces": {"threshold": SECRET}}, "detect.faces.threshold"),
        ("runtime", {"threads": {"n": SECRET}}, "runtime.threads"),
    ],
)
def test_bad_value_names_the_key_and_never_echoes_the_value(
    tmp_path: Path, section: str, values: dict[str, Any], key: str
) -> None:
    msg = config_error(job(tmp_path, **{section: values}))
    assert f"'{key}'" in msg
    assert "s3cret" not in msg and "rtsp://" not in msg
    assert msg.startswith(str(tmp_path / "job.yaml"))


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("encode", {"crf": 52}, "encode.crf"),
        ("detect", {"faces": {"threshold": 1.0}}, "detect.faces.threshold"),
        ("detect", {"stride": 0}, "detect.stride"),
        ("anonymize", {"strength": 0}, "anonymize.strength"),
        ("anonymize", {"face_pad": 2.5}, "anonymize.face_pad"),
        ("track", {"coast_frames": -1}, "track.coast_frames"),
    ],
)
def test_out_of_range_values_are_rejected(
    tmp_path: Path, section: str, values: dict[str, Any], key: str
) -> None:
    assert f"'{key}'" in config_error(job(tmp_path, **{section: values}))


@pytest.mark.parametrize("width", [650, 100, 1000])
def test_input_width_must_be_a_multiple_of_32(tmp_path: Path, width: int) -> None:
    msg = config_error(job(tmp_path, detect={"plates": {"input_width": width}}))
    assert "'detect.plates.input_width'" in msg
    assert "multiple of 32" in msg


@pytest.mark.parametrize("width", [64, 608, 640, 1280])
def test_input_width_multiples_of_32_are_accepted(tmp_path: Path, width: int) -> None:
    cfg = load_job_config(job(tmp_path, detect={"plates": {"input_width": width}}))
    assert cfg.detect.plates.input_width == width


@pytest.mark.parametrize("rgb", [[300, 0, 0], [0, -1, 0]])
def test_fill_colour_must_be_8_bit(tmp_path: Path, rgb: list[int]) -> None:
    msg = config_error(job(tmp_path, anonymize={"method": "fill", "fill_rgb": rgb}))
    assert "'anonymize.fill_rgb" in msg


def test_config_error_is_a_user_error() -> None:
    assert issubclass(ConfigError, EdgeblurError)
    assert ConfigError.exit_code == 2


def test_job_config_lays_flags_over_the_file(tmp_path: Path) -> None:
    path = job(tmp_path, detect={"stride": 3, "faces": {"threshold": 0.3}})
    cfg = job_config(path, {"stride": 2, "thresh": None, "spinning": True})
    assert cfg.detect.stride == 2  # the flag wins
    assert cfg.detect.faces.threshold == 0.3  # None: not given, the file's value stays
    assert cfg.runtime.allow_spinning is True


def test_job_config_names_the_flag_of_a_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"^--plate-size: "):
        job_config(None, {"plate_size": 100})
