"""`edgeblur eval` end to end on city.jpg and carphone.mp4: real models, real judge (dlib).

Two runs of about 10 s each: one against the stored baseline (exit 0), one against a baseline
with impossible coverage (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from edgeblur.quality.evaluate import add_eval_parser

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGEBLUR_SHARED", ROOT.parent / "shared"))  # as conftest.py
BASELINE = ROOT / "benchmarks" / "eval_baseline.json"
MODES = ["track=off,stride=1", "track=on,stride=1"]


def run_eval(media_dir, *extra: str) -> int:
    parser = argparse.ArgumentParser(prog="edgeblur")
    add_eval_parser(parser.add_subparsers(required=True))
    media = [str(media_dir / "city.jpg"), str(media_dir / "carphone.mp4")]
    labels = str(SHARED / "media" / "labels.json")
    args = parser.parse_args(["eval", *media, "--labels", labels, "-q", "--modes", *MODES, *extra])
    return args.func(args)


@pytest.fixture(scope="module")
def evaluated(models, media_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "eval.json"
    code = run_eval(media_dir, "--json", str(out), "--baseline", str(BASELINE))
    return code, json.loads(out.read_text())


def test_eval_json_has_every_figure_in_range(evaluated):
    _, doc = evaluated
    assert [m["mode"] for m in doc["modes"]] == MODES
    assert "edgeblur eval" in doc["note"]
    for mode in doc["modes"]:
        o = mode["overall"]
        assert set(mode["files"]) == {"city.jpg", "carphone.mp4"}
        assert o["coverage"]["faces_images"]["total"] == 20  # city.jpg's labelled faces
        assert o["coverage"]["faces_videos"]["total"] == 24  # carphone, every 5th frame
        assert o["coverage"]["plates"]["total"] == 0
        for key in ("faces_images", "faces_videos"):
            assert 0.9 <= o["coverage"][key]["share"] <= 1.0, (mode["mode"], key)
        assert o["leaks"]["of_frames"] == 120
        assert 0 <= o["leaks"]["share"] <= 0.05
        # The judge must see carphone's face, or the leak measure would mean nothing.
        assert o["leaks"]["judge_seen"] >= 20
        assert o["flicker"]["labelled_tracks"] == 1
        assert 0.01 < o["over_blur"] < 0.5  # carphone's face fills a fifth of the frame
        assert o["fps"] > 1
        car = mode["files"]["carphone.mp4"]
        assert car["frames"] == 120 and car["type"] == "video"
    assert {t["pass"] for t in doc["targets"]} <= {True, False, None}


def test_eval_passes_against_the_stored_baseline(evaluated):
    code, _ = evaluated
    assert code == 0


def test_eval_exits_1_when_coverage_fell_below_the_baseline(evaluated, media_dir, tmp_path):
    _, doc = evaluated
    for mode in doc["modes"]:  # claim twice as many covered boxes as there are: impossible
        for f in mode["files"].values():
            for tally in f["coverage"].values():
                tally[0] = 2 * tally[1]
    impossible = tmp_path / "impossible.json"
    impossible.write_text(json.dumps(doc))
    assert run_eval(media_dir, "--modes", MODES[1], "--baseline", str(impossible)) == 1
