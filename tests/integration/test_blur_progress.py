"""Progress of `edgeblur blur`: bars on stderr only on a terminal or with --progress, left visible
with their final rate; one line per file on stdout; no fps for a single image."""

from __future__ import annotations

from conftest import edgeblur_cli

edgeblur = edgeblur_cli


def test_video_bars_stay_with_their_rate_and_image_has_no_fps(tmp_path, media_dir, models):
    video, image = tmp_path / "v.mp4", tmp_path / "i.png"
    r = edgeblur("blur", str(media_dir / "carphone.mp4"), "-o", str(video), "--progress")
    assert r.returncode == 0, r.stderr
    # Both passes' bars were left on screen, finished, with a rate.
    for stage in ("detect", "encode"):
        finals = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if stage in ln]
        assert finals and "120/120" in finals[-1] and "frame/s" in finals[-1], r.stderr
    (line,) = r.stdout.splitlines()
    assert "120 frame(s)" in line and "fps" in line

    r = edgeblur("blur", str(media_dir / "astronaut.png"), "-o", str(image))
    assert r.returncode == 0, r.stderr
    assert "%|" not in r.stderr and "/s]" not in r.stderr  # no terminal, no --progress: no bars
    (line,) = r.stdout.splitlines()
    assert "region(s) hidden" in line and "fps" not in line and "frame(s)" not in line
