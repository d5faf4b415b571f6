"""Face coverage by size in `edgeblur eval`: bucket edges, and buckets that add up to the totals."""

from __future__ import annotations

import numpy as np

from edgeblur.quality.coverage import SIZE_BUCKETS, size_buckets
from edgeblur.quality.evaluate import ModeResult, by_set, by_size_report
from edgeblur.quality.scores import summary


def test_buckets_go_by_box_height_with_the_lower_edge_inclusive():
    heights = [1, 9, 10, 19, 20, 39, 40, 300]
    boxes = np.array([[5, 0, 6, h] for h in heights])  # 1 px wide: the width does not count
    assert size_buckets(boxes) == ["<10", "<10", "10-20", "10-20", "20-40", "20-40", ">=40", ">=40"]
    assert size_buckets(np.zeros((0, 4))) == []
    assert [n for n, _, _ in SIZE_BUCKETS] == ["<10", "10-20", "20-40", ">=40"]


def a_file(kind, faces, by_size, set_name=None) -> dict:
    f = {
        "type": kind,
        "frames": 1,
        "seconds": 1.0,
        "coverage": {
            "faces": faces,
            "plates": [0, 0],
            "faces_hard": [0, 0],
            "plates_hard": [0, 0],
        },
        "faces_by_size": by_size,
        "over_blur_sum": 0.0,
        "leak_frames": 0,
        "judge_faces": 0,
        "judge_seen": 0,
        "judge_set_aside": 0,
        "flicker": 0,
        "labelled_tracks": 0,
        "gaps": 0,
    }
    return f | ({"set": set_name} if set_name else {})


FILES = {
    "city.jpg": a_file("image", [3, 4], {"<10": [0, 0], "10-20": [1, 2], "20-40": [2, 2]}),
    "city.s4.png": a_file(
        "image", [1, 3], {"<10": [1, 3], "10-20": [0, 0], ">=40": [0, 0]}, "small 1/4"
    ),
    "clip.mp4": a_file("video", [5, 6], {"20-40": [1, 1], ">=40": [4, 5]}),
}


def test_the_buckets_sum_to_the_face_totals_per_set_and_overall():
    o = summary(FILES)
    sizes = o["faces_by_size"]
    assert list(sizes) == ["<10", "10-20", "20-40", ">=40"]
    faces = [o["coverage"][k] for k in ("faces_images", "faces_videos")]
    for part in ("covered", "total"):
        assert sum(s[part] for s in sizes.values()) == sum(f[part] for f in faces)
    assert sizes["<10"] == {"covered": 1, "total": 3, "share": 1 / 3}
    groups = by_set(ModeResult("m", True, 1, FILES, o))
    assert list(groups) == ["shared", "small 1/4", "all"]
    for g in groups.values():
        for part in ("covered", "total"):
            assert sum(s[part] for s in g["faces_by_size"].values()) == g["faces"][part]
    assert groups["all"]["faces"]["total"] == 13 and groups["small 1/4"]["files"] == 1


def test_a_stored_run_without_buckets_counts_as_empty_buckets():
    old = {k: {kk: vv for kk, vv in f.items() if kk != "faces_by_size"} for k, f in FILES.items()}
    assert all(v["total"] == 0 for v in summary(old)["faces_by_size"].values())


def test_the_report_has_one_row_per_mode_and_set():
    r = ModeResult("track=on,stride=1", True, 1, FILES, summary(FILES))
    lines = by_size_report([r])
    assert "box height" in lines[0]
    rows = lines[2:]
    assert [row.split()[1] for row in rows] == ["shared", "small", "all"]
    assert "1/3 33.3%" in rows[1]  # <10 px of the 1/4 copy
