"""`edgeblur blur` end to end, as a user runs it: a subprocess, real models, real FFmpeg."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import edgeblur_cli

from edgeblur.io.files import probe_video, read_image

ROOT = Path(__file__).resolve().parents[2]


edgeblur = edgeblur_cli


def make_clip_with_audio(path: Path, frames: int = 50, fps: int = 25) -> None:
    """A clip we make ourselves: a moving gradient and a 440 Hz tone in AAC."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
        samples_per_frame = 48000 // fps
        for i in range(frames):
            img = np.zeros((240, 320, 3), np.uint8)
            img[:, :, 0] = (np.arange(320) + i * 4) % 256
            img[:, :, 1] = np.arange(240)[:, None]
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
            t = (np.arange(samples_per_frame) + i * samples_per_frame) / 48000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = i * samples_per_frame
            for p in a.encode(af):
                out.mux(p)
        out.mux(v.encode(None))
        out.mux(a.encode(None))


@pytest.fixture(autouse=True)
def _models(models):
    return models


def test_image_is_anonymized_and_sidecar_lists_regions(media_dir, labels, tmp_path):
    out = tmp_path / "city_out.png"
    r = edgeblur("blur", str(media_dir / "city.jpg"), "-o", str(out), "--json", "-q")
    assert r.returncode == 0, r.stderr
    src, dst = read_image(media_dir / "city.jpg").rgb, read_image(out).rgb
    assert dst.shape == src.shape
    # Every clear labelled face changed a lot; the pavement at the bottom did not.
    entry = labels["city.jpg"]
    hard = set(entry["hard"]["faces"])
    for i, (x1, y1, x2, y2) in enumerate(entry["faces"]):
        if i not in hard:
            diff = np.abs(src[y1:y2, x1:x2].astype(int) - dst[y1:y2, x1:x2]).mean()
            assert diff > 8, f"face {i} barely changed ({diff:.1f})"
    assert np.abs(src[480:, :].astype(int) - dst[480:, :]).mean() < 3
    doc = json.loads((tmp_path / "city_out.png.json").read_text())
    regions = doc["frames"][0]["regions"]
    assert len(regions) >= 19 and {r["kind"] for r in regions} <= {"face", "plate"}


def test_video_round_trip_keeps_frames_rate_duration_and_audio(tmp_path):
    src, out = tmp_path / "tone.mp4", tmp_path / "tone_out.mp4"
    make_clip_with_audio(src)
    r = edgeblur("blur", str(src), "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    a, b = probe_video(src), probe_video(out)
    assert (b.width, b.height, b.fps) == (a.width, a.height, a.fps)
    with av.open(str(src)) as c:
        src_pts = [f.pts * f.time_base for f in c.decode(video=0)]
        src_audio = [p.size for p in c.demux(audio=0) if p.size]
    with av.open(str(out)) as c:
        out_pts = [f.pts * f.time_base for f in c.decode(video=0)]
        out_audio = [p.size for p in c.demux(audio=0) if p.size]
        codec = c.streams.audio[0].codec_context.name
    assert len(out_pts) == len(src_pts) == 50
    assert out_pts == src_pts, "presentation times changed"
    assert out_pts[-1] - out_pts[0] == Fraction(49, 25)
    assert codec == "aac" and out_audio == src_audio, "audio was not copied untouched"


def test_face_clip_round_trip_hides_the_face(media_dir, labels, tmp_path):
    out = tmp_path / "carphone_out.mp4"
    r = edgeblur("blur", str(media_dir / "carphone.mp4"), "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert probe_video(out).frames == 120
    frames = labels["carphone.mp4"]["frames"]
    with av.open(str(media_dir / "carphone.mp4")) as c1, av.open(str(out)) as c2:
        pairs = zip(c1.decode(video=0), c2.decode(video=0), strict=True)
        for i, (f1, f2) in enumerate(pairs):
            if str(i) not in frames:
                continue
            x1, y1, x2, y2 = frames[str(i)]["faces"][0]
            a = f1.to_ndarray(format="rgb24")[y1:y2, x1:x2].astype(np.float32)
            b = f2.to_ndarray(format="rgb24")[y1:y2, x1:x2].astype(np.float32)
            # Blurred: the fine detail (gradient energy) of the face is mostly gone.
            ga = np.abs(np.diff(a, axis=1)).mean()
            gb = np.abs(np.diff(b, axis=1)).mean()
            assert gb < ga / 2, f"frame {i}: face detail {gb:.1f} vs source {ga:.1f}"


def test_folder_is_mirrored(media_dir, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name, dest in [("astronaut.png", "a.png"), ("plate_crop_1.png", "sub/p.png")]:
        (src / dest).write_bytes((media_dir / name).read_bytes())
    (src / "notes.txt").write_text("not media")
    r = edgeblur("blur", str(src), "-o", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    ) == [
        "a.png",
        "sub",
        "sub/p.png",
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["blur", "/no/such/file.mp4"], "does not exist"),
        (["blur", "{tmp}/notes.txt"], "unsupported type"),
        (["blur", "{tmp}/fake.mp4"], "not a video"),
        (["blur", "{tmp}/exists_src.png", "-o", "{tmp}/exists.png"], "--force"),
        (["blur", "{tmp}/exists_src.png", "--thresh", "1.5"], "--thresh"),  # the flag is named
        (["blur", "{tmp}/exists_src.png", "--size", "650"], "multiple of 32"),
        (["blur", "{tmp}/exists_src.png", "-c", "{tmp}/bad.yaml"], "did you mean 'threshold'"),
    ],
)
def test_user_errors_are_one_sentence_exit_2_and_no_output(media_dir, tmp_path, args, needle):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "fake.mp4").write_bytes(b"this is not a video")
    (tmp_path / "exists_src.png").write_bytes((media_dir / "astronaut.png").read_bytes())
    (tmp_path / "exists.png").write_bytes(b"keep me")
    (tmp_path / "bad.yaml").write_text("detect:\n  faces:\n    treshold: 0.3\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = edgeblur(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "exists.png").read_bytes() == b"keep me"


def test_missing_model_names_the_pull_command(media_dir, tmp_path):
    r = edgeblur(
        "blur",
        str(media_dir / "astronaut.png"),
        "-o",
        str(tmp_path / "o.png"),
        env={"EDGEBLUR_CACHE": str(tmp_path / "empty-cache")},
    )
    assert r.returncode == 2
    assert "edgeblur models pull" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_no_partial_file(media_dir, tmp_path, sig):
    out = tmp_path / "bikes_out.mp4"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeblur",
            "blur",
            str(media_dir / "bikes.mp4"),
            "-o",
            str(out),
            "-q",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the encode pass has started writing its temporary file, then freeze the
        # process, so however fast this machine is the signal lands while the file is half
        # written: it cannot finish between our look and the signal.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if list(tmp_path.glob(".bikes_out.*")):
                proc.send_signal(signal.SIGSTOP)
                if list(tmp_path.glob(".bikes_out.*")):
                    break  # frozen with the temporary file in place
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        assert list(tmp_path.glob(".bikes_out.*")), "the encode pass never started"
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 128 + sig, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
