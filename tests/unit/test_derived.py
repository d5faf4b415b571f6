"""The derived small-face cases (quality/derived.py): deterministic, labels inside the images and
on the faces, sizes where the issue wants them. Real shared media, no model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeblur.errors import ConfigError
from edgeblur.io.files import decode_frames, probe_video, read_image
from edgeblur.quality import derived

SOURCES = ("city.jpg", "astronaut.png", "carphone.mp4", "alpr_test.jpg")


@pytest.fixture(scope="module")
def files(media_dir):
    return {n: media_dir / n for n in SOURCES}


@pytest.fixture(scope="module")
def cases(files, labels):
    return derived.build("small", files, labels)


def stills(cases) -> list[derived.Case]:
    return [c for c in cases if isinstance(c, derived.Case)]


def videos(cases) -> list[derived.VideoCase]:
    return [c for c in cases if isinstance(c, derived.VideoCase)]


def test_the_same_media_give_the_same_pixels_and_labels(cases, files, labels):
    again = derived.build("small", files, labels)
    assert [c.name for c in again] == [c.name for c in cases]
    for a, b in zip(stills(cases), stills(again), strict=True):
        assert a.entry == b.entry, a.name
        assert np.array_equal(a.rgb, b.rgb), a.name
    for a, b in zip(videos(cases), videos(again), strict=True):
        assert a.entry == b.entry and a.fps == b.fps, a.name
        for fa, fb in itertools.islice(zip(a.frames(), b.frames(), strict=True), 0, 120, 40):
            assert np.array_equal(fa, fb), a.name


def test_every_box_lies_inside_its_image(cases):
    for c in stills(cases):
        h, w = c.rgb.shape[:2]
        assert (c.entry["width"], c.entry["height"]) == (w, h), c.name
        for kind in ("faces", "plates", "ignore"):
            b = np.asarray(c.entry[kind], np.int64).reshape(-1, 4)
            assert (b[:, :2] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all(), c.name
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all(), c.name
        hard = c.entry.get("hard", {}).get("faces", [])
        assert all(0 <= i < len(c.entry["faces"]) for i in hard), c.name


def test_downscaled_copies_shrink_the_faces_by_the_scale(cases, labels):
    by_name = {c.name: c for c in cases}
    city = labels["city.jpg"]
    for scale in derived.SCALES:
        c = by_name[f"city.s{scale}.png"]
        assert c.entry["set"] == f"small 1/{scale}"
        assert c.rgb.shape[1] == round(city["width"] / scale)
        faces = np.asarray(c.entry["faces"])
        gone = len(city["faces"]) - len(faces)  # under MIN_FACE px: moved to ignore
        assert len(c.entry["ignore"]) == len(city.get("ignore", [])) + gone
        expect = np.asarray(city["faces"])[:, 3] - np.asarray(city["faces"])[:, 1]
        got = faces[:, 3] - faces[:, 1]
        assert abs(np.median(got) - np.median(expect) / scale) <= 1
    # carphone's labelled frames (every 5th) become stills; at 1/4 its face is 10-20 px.
    quarter = [c for c in cases if c.name.startswith("carphone.f") and c.name.endswith(".s4.png")]
    assert len(quarter) == 24
    heights = [b[3] - b[1] for c in quarter for b in c.entry["faces"]]
    assert len(heights) == 24 and min(heights) >= 10 and max(heights) < 20
    tiny = [b[3] - b[1] for b in by_name["city.s4.png"].entry["faces"]]
    assert min(tiny) >= derived.MIN_FACE and min(tiny) < 10


def test_the_crowd_places_faces_of_10_to_40_px_where_its_labels_say(files, labels):
    srcs = list(derived.sources(files, labels))
    faces = derived.crowd_faces(srcs)
    assert faces, "the sources hold clear faces >= 40 px"
    grey = derived.crowd(faces, None)  # on flat grey, a placed face shows as non-grey pixels
    boxes = np.asarray(grey.entry["faces"])
    assert grey.rgb.shape == (derived.CROWD_HEIGHT, derived.CROWD_WIDTH, 3)
    assert len(boxes) == derived.CROWD_FACES
    heights = boxes[:, 3] - boxes[:, 1]
    assert heights.min() >= 9 and heights.max() <= 41  # 10-40, give or take rounding
    for x1, y1, x2, y2 in boxes:
        patch = grey.rgb[y1:y2, x1:x2].astype(int)
        assert np.abs(patch - derived.GREY).mean() > 10, (x1, y1)
    # Disjoint: no two labelled faces overlap, so each is a face of its own.
    ix = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(
        boxes[:, None, 0], boxes[None, :, 0]
    )
    iy = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(
        boxes[:, None, 1], boxes[None, :, 1]
    )
    overlap = (ix > 0) & (iy > 0)
    np.fill_diagonal(overlap, False)
    assert not overlap.any()


def test_cctv_videos_put_the_clip_small_into_a_720p_frame_with_its_labels(cases, labels):
    (half, quarter) = (c for c in videos(cases) if c.name.startswith("carphone."))
    assert (half.name, quarter.name) == ("carphone.cctv2.mp4", "carphone.cctv4.mp4")
    src = labels["carphone.mp4"]
    assert set(quarter.entry["frames"]) == set(src["frames"])
    assert quarter.entry["set"] == "small cctv 1/4"
    first = next(quarter.frames())
    assert first.shape == (derived.CCTV_H, derived.CCTV_W, 3)
    heights = []
    for lab in quarter.entry["frames"].values():
        for x1, y1, x2, y2 in lab["faces"]:
            assert 0 <= x1 < x2 <= derived.CCTV_W and 0 <= y1 < y2 <= derived.CCTV_H
            heights.append(y2 - y1)
    assert len(heights) == 24 and min(heights) >= 10 and max(heights) < 20
    # The labelled face lies on the clip's pixels, not on the background around it.
    x1, y1, x2, y2 = quarter.entry["frames"]["0"]["faces"][0]
    bg = next(half.frames())  # the same background, the clip elsewhere and larger
    assert np.abs(first[y1:y2, x1:x2].astype(int) - bg[y1:y2, x1:x2]).mean() > 5


def test_a_written_cctv_video_has_every_frame(cases, tmp_path):
    case = next(c for c in videos(cases) if c.name == "carphone.cctv4.mp4")
    (path,), entries = derived.write([case], tmp_path)
    info = probe_video(path)
    assert (info.width, info.height) == (derived.CCTV_W, derived.CCTV_H)
    assert sum(1 for _ in decode_frames(path)) == entries[path.name]["frames_total"] == 120


def test_the_crowd_uses_the_street_background_and_ignores_its_plates(cases):
    crowd = next(c for c in cases if c.name == "crowd2048.png")
    assert crowd.entry["set"] == "small crowd"
    assert "alpr_test.jpg" in crowd.entry["note"]
    assert len(crowd.entry["ignore"]) == 2 and crowd.entry["plates"] == []
    assert crowd.rgb.std() > 20  # a real picture, not flat grey


def test_written_pngs_read_back_pixel_for_pixel(cases, tmp_path):
    some = stills(cases)[:2] + stills(cases)[-1:]
    paths, entries = derived.write(some, tmp_path / "out")
    assert [p.name for p in paths] == [c.name for c in some]
    for p, c in zip(paths, some, strict=True):
        assert np.array_equal(read_image(p).rgb, c.rgb)
        assert entries[p.name] == c.entry


def test_an_unknown_set_is_refused_with_the_known_ones(files, labels):
    with pytest.raises(ConfigError, match="small"):
        derived.build("tiny", files, labels)


def test_moving_plates_slide_across_a_720p_frame_with_their_labels(media_dir, labels):
    files = {n: media_dir / n for n in ("alpr_test.jpg", "plate_crop_1.png", "city.jpg")}
    cases = derived.build("moving", files, labels)
    # Only the street scene has plates that are not the whole picture: two speeds of it.
    assert [c.name for c in cases] == ["alpr_test.pan4.mp4", "alpr_test.pan12.mp4"]
    slow, fast = cases
    assert slow.entry["set"] == "moving 4 px/frame" and slow.entry["fps"] == derived.PAN_FPS
    assert len(slow.entry["frames"]) == derived.PAN_FRAMES
    frames = list(slow.frames())
    assert len(frames) == derived.PAN_FRAMES and frames[0].shape == (720, 1280, 3)
    f0, f1 = slow.entry["frames"]["0"], slow.entry["frames"]["1"]
    assert len(f0["plates"]) == len(labels["alpr_test.jpg"]["plates"]) == 2
    for a, b in zip(f0["plates"], f1["plates"], strict=True):
        assert b == [a[0] + 4, a[1], a[2] + 4, a[3]]  # 4 px a frame, to the right
        # The label sits on the same plate pixels in both frames.
        x1, y1, x2, y2 = a
        np.testing.assert_array_equal(frames[0][y1:y2, x1:x2], frames[1][y1:y2, x1 + 4 : x2 + 4])
    # Fast: the picture leaves the frame; a plate less than 60% inside becomes "ignore".
    asked = [len(fast.entry["frames"][str(t)]["plates"]) for t in range(derived.PAN_FRAMES)]
    assert max(asked) == 2 and min(asked) < 2
    for lab in fast.entry["frames"].values():
        for x1, _y1, x2, _y2 in lab["plates"] + lab["ignore"]:
            assert 0 <= x1 < x2 <= derived.CCTV_W
