"""Derived labelled cases for small faces, made from the shared media at eval or test time.

The shared media has few faces under 20 px (city.jpg's, 13-45 px) and no tiny CCTV heads
(issue 12). Rather than fetch or commit more images, the ``small`` set is computed from the
shared ones, deterministically (same inputs, same pixels and labels; nothing random, no
library RNG):

- every labelled still and every labelled video/GIF frame that shows a face, downscaled to 1/2,
  1/3 and 1/4 with its boxes scaled (faces of about 4-20 px; INTER_AREA, as a sensor bins);
- a crowd mosaic 2048 px wide: the clear, large (>= 40 px) shared faces cropped with some head
  and shoulders, shrunk to 10-40 px, feathered onto a real face-free background (alpr_test.jpg,
  else neutral grey) at known grid positions. Sources are only ever shrunk, never enlarged, so a
  small face here looks like a small face in a photo, not like an upscaled blur;
- CCTV-like videos: each labelled clip with faces (carphone, bikes) at 1/2 and 1/4, placed on a
  1280x720 street background, so heads of about 6-28 px sit in a frame the detector shrinks to
  its input width (the downscaled stills above are small pictures, which the detector may
  enlarge up to 2x: they do not test that case). H.264 at CRF 12, every frame, labels moved.

The ``moving`` set is for plates, which the shared media shows only in stills and a 1-fps GIF
(one scene per frame), so no stride or tracker is ever tested on a moving plate: every labelled
still and GIF frame with a plate, on a 1280x720 frame at 25 fps, sliding sideways at 4 and 12 px
per frame (100 and 300 px/s, a car crossing the picture in 13 and 4 s) for 2 s, its labels
moving with it. A plate less than 60% inside the frame is "ignore".

The images are written as PNG to a folder the caller owns (a temporary one in `edgeblur eval`)
and never committed. Each label entry carries ``set`` ("small 1/2", ..., "small crowd") so the
eval report can give each its own row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from edgeblur.errors import ConfigError

SETS = ("small", "moving")
SCALES = (2, 3, 4)
MIN_FACE = 4  # px of box height: a smaller face is no recognisable face; it becomes "ignore"
CROWD_WIDTH, CROWD_HEIGHT = 2048, 1344
CELL_W, CELL_H = 128, 112  # one face with context per cell; 16 x 12 cells
CROWD_SIZES = (10, 12, 14, 16, 18, 20, 23, 26, 30, 35, 40)  # face box heights placed, px
CROWD_FACES = 132  # 12 per size
CROWD_SOURCE_MIN = 40  # px: shrink only
CROWD_PER_FILE = 3  # at most this many source faces per file, so carphone's 24 do not dominate
# Context around a face box, as fractions of its width (sides) and height (top, bottom).
CONTEXT_SIDE, CONTEXT_TOP, CONTEXT_BOTTOM = 0.5, 0.5, 0.7
BACKGROUND = "alpr_test.jpg"  # a street with cars, no people (MEDIA.md)
GREY = 118
CCTV_W, CCTV_H = 1280, 720
CCTV_SCALES = (2, 4)
CCTV_CRF = 12  # near-lossless: the faces are few pixels, coding noise should not decide them
PAN_SPEEDS = (4, 12)  # px per frame at PAN_FPS
PAN_FPS = 25
PAN_FRAMES = 50
PAN_VISIBLE = 0.6  # share of a plate's box inside the frame for it to be asked for


@dataclass
class Case:
    """One derived image and its labels.json entry."""

    name: str
    rgb: np.ndarray
    entry: dict


@dataclass
class VideoCase:
    """One derived video: its frames, made on demand (250 frames of 720p do not fit in memory
    comfortably), and its labels.json entry."""

    name: str
    frames: Callable[[], Iterator[np.ndarray]]
    fps: Fraction
    entry: dict


@dataclass
class Source:
    """A labelled still or video frame of the shared media that shows at least one face."""

    stem: str  # file stem, plus the frame index for video frames
    rgb: np.ndarray
    labels: dict  # faces, plates, ignore?, hard? as in labels.json


# -- reading the shared media -------------------------------------------------------------------
def _labelled(
    files: dict[str, Path], labels: dict, keep: Callable[[dict], bool], clips: tuple[str, ...]
) -> Iterator[Source]:
    """The labelled stills, and frames of the clips of types ``clips``, whose labels ``keep``
    accepts (a frame's labels carry its clip's width and height), in name order."""
    from edgeblur.io.files import decode_frames, read_image

    for name in sorted(files):
        entry = labels[name]
        stem = Path(name).stem
        if entry["type"] == "image":
            if keep(entry):
                yield Source(stem, read_image(files[name]).rgb, entry)
            continue
        if entry["type"] not in clips:
            continue
        size = {"width": entry.get("width"), "height": entry.get("height")}
        wanted = {int(i): v for i, v in entry.get("frames", {}).items() if keep({**v, **size})}
        if not wanted:
            continue
        for i, (rgb, _, _) in enumerate(decode_frames(files[name])):
            if i in wanted:
                yield Source(f"{stem}.f{i:04d}", np.ascontiguousarray(rgb), wanted[i])
            if i >= max(wanted):
                break


def sources(files: dict[str, Path], labels: dict) -> Iterator[Source]:
    """The labelled stills and frames with faces among ``files`` (name → path), in name order."""
    return _labelled(files, labels, lambda e: bool(e.get("faces")), ("video", "gif"))


# -- downscaled copies --------------------------------------------------------------------------
def scale_boxes(boxes, sx: float, sy: float, w: int, h: int) -> np.ndarray:
    """xyxy boxes times (sx, sy), rounded to whole pixels, clipped, at least 1 px wide and high."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4) * [sx, sy, sx, sy]
    b = np.rint(b).astype(np.int64)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    b[:, 0] = np.minimum(b[:, 0], w - 1)
    b[:, 1] = np.minimum(b[:, 1], h - 1)
    b[:, 2] = np.maximum(b[:, 2], b[:, 0] + 1)
    b[:, 3] = np.maximum(b[:, 3], b[:, 1] + 1)
    return b


def downscaled(src: Source, scale: int) -> Case:
    """``src`` at 1/scale, boxes scaled; faces under MIN_FACE px high move to ``ignore``."""
    h, w = src.rgb.shape[:2]
    nw, nh = max(1, round(w / scale)), max(1, round(h / scale))
    rgb = cv2.resize(src.rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    sx, sy = nw / w, nh / h
    lab = src.labels
    faces = scale_boxes(lab.get("faces", []), sx, sy, nw, nh)
    keep = (faces[:, 3] - faces[:, 1]) >= MIN_FACE
    kept = [int(i) for i in np.flatnonzero(keep)]
    hard_faces = [kept.index(i) for i in lab.get("hard", {}).get("faces", []) if i in kept]
    ignore = scale_boxes(lab.get("ignore", []), sx, sy, nw, nh)
    entry = {
        "type": "image",
        "width": nw,
        "height": nh,
        "faces": faces[keep].tolist(),
        "plates": scale_boxes(lab.get("plates", []), sx, sy, nw, nh).tolist(),
        "ignore": np.concatenate([ignore, faces[~keep]]).tolist(),
        "hard": {"faces": hard_faces, "plates": list(lab.get("hard", {}).get("plates", []))},
        "set": f"small 1/{scale}",
        "note": f"{src.stem} downscaled to 1/{scale} (edgeblur.quality.derived)",
    }
    return Case(f"{src.stem}.s{scale}.png", rgb, entry)


# -- crowd mosaic -------------------------------------------------------------------------------
def _context(box, w: int, h: int) -> tuple[int, int, int, int] | None:
    """The crop around a face box with head and shoulders; None if it leaves the image."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    c = (
        round(x1 - CONTEXT_SIDE * bw),
        round(y1 - CONTEXT_TOP * bh),
        round(x2 + CONTEXT_SIDE * bw),
        round(y2 + CONTEXT_BOTTOM * bh),
    )
    return c if c[0] >= 0 and c[1] >= 0 and c[2] <= w and c[3] <= h else None


def crowd_faces(all_sources: list[Source]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(crop, face box in crop) of the clear faces: not hard, >= 40 px, context inside."""
    by_file: dict[str, list] = {}
    for src in all_sources:
        h, w = src.rgb.shape[:2]
        hard = set(src.labels.get("hard", {}).get("faces", []))
        for i, box in enumerate(src.labels.get("faces", [])):
            c = _context(box, w, h)
            if i in hard or box[3] - box[1] < CROWD_SOURCE_MIN or c is None:
                continue
            crop = src.rgb[c[1] : c[3], c[0] : c[2]]
            inner = np.asarray(box) - [c[0], c[1], c[0], c[1]]
            by_file.setdefault(src.stem.split(".f")[0], []).append((crop, inner))
    out = []
    for name in sorted(by_file):
        cands = by_file[name]
        k = min(CROWD_PER_FILE, len(cands))
        out += [cands[j * len(cands) // k] for j in range(k)]  # spread over the file's frames
    return out


def _feather(h: int, w: int) -> np.ndarray:
    """(h, w, 1) alpha: 1 inside, ramping to 0 over the outer ~12% so no hard edge is pasted."""
    r = max(1.0, 0.12 * min(h, w))
    y, x = np.arange(h)[:, None], np.arange(w)[None, :]
    d = np.minimum(np.minimum(x, w - 1 - x), np.minimum(y, h - 1 - y))
    return np.clip((d + 1) / r, 0.0, 1.0)[:, :, None]


def crowd(faces: list[tuple[np.ndarray, np.ndarray]], background: Source | None) -> Case:
    """CROWD_FACES faces of 10-40 px on a 2048-px background at known grid positions."""
    if background is None:
        canvas = np.full((CROWD_HEIGHT, CROWD_WIDTH, 3), GREY, np.uint8)
        ignore = np.zeros((0, 4), np.int64)
    else:
        bh, bw = background.rgb.shape[:2]
        canvas = cv2.resize(
            background.rgb, (CROWD_WIDTH, CROWD_HEIGHT), interpolation=cv2.INTER_AREA
        )
        sx, sy = CROWD_WIDTH / bw, CROWD_HEIGHT / bh
        # Its plates are real; not asked for here, so neither a hit nor over-blur.
        ignore = scale_boxes(background.labels.get("plates", []), sx, sy, CROWD_WIDTH, CROWD_HEIGHT)
    cols, rows = CROWD_WIDTH // CELL_W, CROWD_HEIGHT // CELL_H
    cells = cols * rows
    placed = []
    for k in range(CROWD_FACES if faces else 0):
        crop, box = faces[k % len(faces)]
        size = CROWD_SIZES[(k + k // len(faces)) % len(CROWD_SIZES)]
        f = size / (box[3] - box[1])
        ch, cw = crop.shape[:2]
        nw, nh = max(1, round(cw * f)), max(1, round(ch * f))
        small = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
        cell = (k * 97) % cells  # 97 is prime to 192: every k its own cell, scattered
        # Deterministic jitter inside the cell, so faces do not sit on a visible grid.
        x0 = (cell % cols) * CELL_W + (k * 29) % max(1, CELL_W - nw + 1)
        y0 = (cell // cols) * CELL_H + (k * 13) % max(1, CELL_H - nh + 1)
        x0, y0 = min(x0, CROWD_WIDTH - nw), min(y0, CROWD_HEIGHT - nh)  # a wide crop, last cell
        a = _feather(nh, nw)
        region = canvas[y0 : y0 + nh, x0 : x0 + nw]
        region[:] = np.rint(a * small + (1 - a) * region).astype(np.uint8)
        placed.append(scale_boxes([box], f, f, nw, nh)[0] + [x0, y0, x0, y0])
    entry = {
        "type": "image",
        "width": CROWD_WIDTH,
        "height": CROWD_HEIGHT,
        "faces": np.asarray(placed, np.int64).reshape(-1, 4).tolist(),
        "plates": [],
        "ignore": ignore.tolist(),
        "set": "small crowd",
        "note": f"{len(placed)} shared faces shrunk to 10-40 px on "
        f"{BACKGROUND if background else 'grey'} (edgeblur.quality.derived)",
    }
    return Case("crowd2048.png", canvas, entry)


# -- CCTV-like videos ----------------------------------------------------------------------------
def _move(boxes, scale: float, size: tuple[int, int], at: tuple[int, int]) -> list[list[int]]:
    """Boxes scaled into a picture of ``size`` (w, h) placed at ``at`` (x, y)."""
    return (scale_boxes(boxes, scale, scale, *size) + np.array([*at, *at])).tolist()


def cctv(path: Path, entry: dict, scale: int, background: np.ndarray | None) -> VideoCase:
    """The clip at ``path`` at 1/scale on a 1280x720 background, its labels moved with it."""
    from edgeblur.io.files import decode_frames, probe_video

    if background is None:
        canvas = np.full((CCTV_H, CCTV_W, 3), GREY, np.uint8)
    else:
        canvas = cv2.resize(background, (CCTV_W, CCTV_H), interpolation=cv2.INTER_AREA)
    w, h = entry["width"], entry["height"]
    nw, nh = round(w / scale), round(h / scale)
    f = nw / w  # one factor for both axes; nh / h differs by under a pixel
    dx, dy = (CCTV_W - nw) * 2 // 3, (CCTV_H - nh) // 3  # off centre, as a camera's subject is

    def frames() -> Iterator[np.ndarray]:
        for rgb, _, _ in decode_frames(path):
            out = canvas.copy()
            out[dy : dy + nh, dx : dx + nw] = cv2.resize(
                rgb, (nw, nh), interpolation=cv2.INTER_AREA
            )
            yield out

    labelled = {}
    for i, lab in entry["frames"].items():
        faces = np.asarray(_move(lab.get("faces", []), f, (nw, nh), (dx, dy)), np.int64).reshape(
            -1, 4
        )
        keep = (faces[:, 3] - faces[:, 1]) >= MIN_FACE
        kept = [int(j) for j in np.flatnonzero(keep)]
        labelled[i] = {
            "faces": faces[keep].tolist(),
            "plates": _move(lab.get("plates", []), f, (nw, nh), (dx, dy)),
            "ignore": _move(lab.get("ignore", []), f, (nw, nh), (dx, dy)) + faces[~keep].tolist(),
            "hard": {
                "faces": [kept.index(j) for j in lab.get("hard", {}).get("faces", []) if j in kept],
                "plates": list(lab.get("hard", {}).get("plates", [])),
            },
        }
    stem = Path(path).stem
    out_entry = {
        "type": "video",
        "width": CCTV_W,
        "height": CCTV_H,
        "frames_total": entry["frames_total"],
        "fps": entry["fps"],
        "labelled_every": entry.get("labelled_every"),
        "frames": labelled,
        "set": f"small cctv 1/{scale}",
        "note": f"{stem} at 1/{scale} on a {CCTV_W}x{CCTV_H} background (edgeblur.quality.derived)",
    }
    fps = probe_video(path).fps
    return VideoCase(
        f"{stem}.cctv{scale}.mp4", frames, Fraction(fps).limit_denominator(1001), out_entry
    )


# -- moving plates -----------------------------------------------------------------------------
def plate_sources(files: dict[str, Path], labels: dict) -> Iterator[Source]:
    """The labelled stills and GIF frames with a plate, not a plate crop (a plate filling its
    picture says nothing about finding one in a street), in name order. A video's frames move
    already; a GIF here is a slideshow."""

    def scene(entry: dict) -> bool:
        w, h = entry.get("width"), entry.get("height")
        boxes = np.asarray(entry.get("plates", []), np.float64).reshape(-1, 4)
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).max(initial=0)
        return len(boxes) > 0 and (not w or not h or area < 0.25 * w * h)

    return _labelled(files, labels, scene, ("gif",))


def panned(src: Source, speed: int, k: int) -> VideoCase:
    """``src`` (shrunk to fit, never enlarged) sliding across a grey 1280x720 frame at ``speed``
    px per frame, centred half way; ``k`` alternates the direction."""
    h, w = src.rgb.shape[:2]
    f = min(1.0, CCTV_W / w, CCTV_H / h)
    nw, nh = round(w * f), round(h * f)
    picture = cv2.resize(src.rgb, (nw, nh), interpolation=cv2.INTER_AREA) if f < 1 else src.rgb
    step = speed if k % 2 == 0 else -speed
    x_mid, y0 = (CCTV_W - nw) // 2, (CCTV_H - nh) // 2
    xs = [x_mid + step * (t - PAN_FRAMES // 2) for t in range(PAN_FRAMES)]
    plates = scale_boxes(src.labels.get("plates", []), f, f, nw, nh)
    ignore = scale_boxes(src.labels.get("ignore", []), f, f, nw, nh)
    hard = set(src.labels.get("hard", {}).get("plates", []))

    def frames() -> Iterator[np.ndarray]:
        for x0 in xs:
            out = np.full((CCTV_H, CCTV_W, 3), GREY, np.uint8)
            a, b = max(0, x0), min(CCTV_W, x0 + nw)  # the part of the picture inside
            if b > a:
                out[y0 : y0 + nh, a:b] = picture[:, a - x0 : b - x0]
            yield out

    def inside(boxes: np.ndarray, x0: int) -> tuple[np.ndarray, np.ndarray]:
        moved = boxes.astype(np.float64) + np.array([x0, y0, x0, y0], np.float64)
        clipped = moved.copy()
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, CCTV_W)
        area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
        seen = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1])
        return np.rint(clipped).astype(np.int64), seen >= PAN_VISIBLE * np.maximum(area, 1)

    # Faces are not what this set asks for: a still's faces count as neither hit nor over-blur.
    others = np.concatenate([ignore, scale_boxes(src.labels.get("faces", []), f, f, nw, nh)])
    labelled = {}
    for t, x0 in enumerate(xs):
        boxes, ok = inside(plates, x0)
        kept = [int(j) for j in np.flatnonzero(ok)]
        rest = np.concatenate([boxes[~ok], inside(others, x0)[0]])
        labelled[str(t)] = {
            "faces": [],
            "plates": boxes[ok].tolist(),
            "ignore": rest[rest[:, 2] > rest[:, 0]].tolist(),  # any part still in the frame
            "hard": {"faces": [], "plates": [kept.index(j) for j in sorted(hard) if j in kept]},
        }
    entry = {
        "type": "video",
        "width": CCTV_W,
        "height": CCTV_H,
        "frames_total": PAN_FRAMES,
        "fps": PAN_FPS,
        "labelled_every": 1,
        "frames": labelled,
        "set": f"moving {speed} px/frame",
        "note": f"{src.stem} sliding at {speed} px per frame across a {CCTV_W}x{CCTV_H} frame "
        "(edgeblur.quality.derived)",
    }
    return VideoCase(f"{src.stem}.pan{speed}.mp4", frames, Fraction(PAN_FPS), entry)


def write_video(case: VideoCase, dest: Path) -> int:
    """Encode ``case`` to ``dest`` (H.264, every frame, constant rate); returns the frames."""
    import av

    count = 0
    with av.open(str(dest), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=case.fps)
        stream.width, stream.height, stream.pix_fmt = CCTV_W, CCTV_H, "yuv420p"
        stream.options = {"crf": str(CCTV_CRF), "preset": "veryfast"}
        for rgb in case.frames():
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = count
            frame.time_base = 1 / case.fps
            out.mux(stream.encode(frame))
            count += 1
        out.mux(stream.encode(None))
    return count


# -- the set ------------------------------------------------------------------------------------
def build(name: str, files: dict[str, Path], labels: dict) -> list[Case | VideoCase]:
    """The derived cases of set ``name`` from the labelled ``files`` (name → path)."""
    if name not in SETS:
        raise ConfigError(f"There is no derived set '{name}'; use one of {', '.join(SETS)}.")
    if name == "moving":
        moving = [
            panned(src, speed, k)
            for speed in PAN_SPEEDS
            for k, src in enumerate(plate_sources(files, labels))
        ]
        if not moving:
            raise ConfigError(
                "The derived set 'moving' needs labelled media with plates; give the shared "
                "media folder (shared/media/fetch.sh fetches it)."
            )
        return moving
    srcs = list(sources(files, labels))
    cases = [downscaled(s, k) for k in SCALES for s in srcs]
    faces = crowd_faces(srcs)
    background = None
    if BACKGROUND in files and labels[BACKGROUND]["type"] == "image":
        from edgeblur.io.files import read_image

        background = Source("bg", read_image(files[BACKGROUND]).rgb, labels[BACKGROUND])
    if faces:
        cases.append(crowd(faces, background))
    clips = [
        n
        for n in sorted(files)
        if labels[n]["type"] == "video"
        and Path(n).suffix.lower() != ".gif"
        and any(v.get("faces") for v in labels[n].get("frames", {}).values())
    ]
    bg = background.rgb if background is not None else None
    cases += [cctv(files[n], labels[n], k, bg) for k in CCTV_SCALES for n in clips]
    if not cases:
        raise ConfigError(
            f"The derived set '{name}' needs labelled media with faces; give the shared media "
            "folder (shared/media/fetch.sh fetches it)."
        )
    return cases


def write(cases: list[Case | VideoCase], folder: Path) -> tuple[list[Path], dict]:
    """PNG or MP4 files of ``cases`` in ``folder`` and their labels.json entries by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, entries = [], {}
    for c in cases:
        path = folder / c.name
        if isinstance(c, VideoCase):
            write_video(c, path)
            paths.append(path)
            entries[c.name] = c.entry
            continue
        ok, buf = cv2.imencode(".png", cv2.cvtColor(c.rgb, cv2.COLOR_RGB2BGR))
        if not ok:  # cannot happen for uint8 RGB; say so rather than evaluate a missing file
            raise RuntimeError(f"PNG encoding of {c.name} failed")
        buf.tofile(path)
        paths.append(path)
        entries[c.name] = c.entry
    return paths, entries
