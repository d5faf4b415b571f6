"""Scores of one `edgeblur eval` run: coverage, leaks, flicker and over-blur per file and overall.

The metric functions are pure (masks and boxes in, numbers out) so unit tests can pin them down;
``Evaluation`` runs the blur pipeline over labelled files and tallies them. evaluate.py turns the
tallies into modes, targets, a report and a baseline check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeblur.core.anonymize import hidden_mask
from edgeblur.quality.coverage import COVERED, SIZE_BUCKETS, box_coverage, size_buckets
from edgeblur.quality.judge import LEAK_IOU, iou_matrix, matched
from edgeblur.types import Frame, Kind, Regions

COVERAGE = ("faces_images", "faces_videos", "plates", "faces_hard", "plates_hard")
MAX_GAP = 2  # frames (labelled frames for labels) a face may show before it counts as flicker


# -- metrics on masks and boxes ---------------------------------------------------------------
def covered(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: which xyxy boxes have ≥ COVERED of their pixels True in the H×W mask."""
    return box_coverage(mask, np.asarray(boxes).reshape(-1, 4)) >= COVERED


def over_blur(mask: np.ndarray, ignore: np.ndarray) -> float:
    """Share of the frame's pixels hidden by ``mask`` (H×W bool), not counting ``ignore`` boxes."""
    mask = mask.copy()
    for x1, y1, x2, y2 in np.asarray(ignore, np.int64).reshape(-1, 4).clip(0):
        mask[y1:y2, x1:x2] = False
    return float(mask.mean())


def flicker_events(hidden: list[bool], max_gap: int = MAX_GAP) -> int:
    """Runs of 1..max_gap visible (False) steps between hidden (True) ones."""
    events, run, was_hidden = 0, 0, False
    for h in hidden:
        if h:
            events += 0 < run <= max_gap  # run only grows after a hidden step
            was_hidden, run = True, 0
        elif was_hidden:
            run += 1
    return events


def labelled_flicker(frames: list[tuple[np.ndarray, np.ndarray]], iou: float = 0.1) -> tuple:
    """(flicker events, tracks) of labelled faces chained over consecutive labelled frames.

    frames: per labelled frame in order, the (N, 4) face boxes and their (N,) hidden flags. A
    face continues the track of the most overlapping face of the previous labelled frame.
    """
    tracks: list[list[bool]] = []
    last: list[tuple[int, np.ndarray]] = []  # (track, box) on the previous labelled frame
    for boxes, hidden in frames:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        owner = [-1] * len(boxes)
        if last and len(boxes):
            scores = iou_matrix(np.stack([b for _, b in last]), boxes)
            for flat in np.argsort(-scores, axis=None):  # greedy one-to-one, best first
                r, c = divmod(int(flat), len(boxes))
                if scores[r, c] >= iou and owner[c] < 0 and last[r][0] not in owner:
                    owner[c] = last[r][0]
        for j in range(len(boxes)):
            if owner[j] < 0:
                tracks.append([])
                owner[j] = len(tracks) - 1
            tracks[owner[j]].append(bool(hidden[j]))
        last = list(zip(owner, boxes, strict=True))
    return sum(flicker_events(t) for t in tracks), len(tracks)


def region_gaps(regions: list[Regions], max_gap: int = MAX_GAP, iou: float = 0.3) -> int:
    """Face regions that vanish for 1..max_gap frames and come back (label-free flicker).

    The same region: the same track id, or, where no tracker ran (id -1), IoU ≥ ``iou``.
    """

    def found(a: Regions, b: Regions) -> np.ndarray:
        fa, fb = a.kind == Kind.FACE, b.kind == Kind.FACE
        ids_a, ids_b = a.track_id[fa, None], b.track_id[None, fb]
        same = (iou_matrix(a.xyxy[fa], b.xyxy[fb]) >= iou) | ((ids_a == ids_b) & (ids_a >= 0))
        return same.any(axis=1)

    events = 0
    for t in range(len(regions) - 2):
        gone = ~found(regions[t], regions[t + 1])
        for g in range(2, min(max_gap + 2, len(regions) - t)):
            back = gone & found(regions[t], regions[t + g])
            events, gone = events + int(back.sum()), gone & ~back
    return events


# -- one file, one mode -------------------------------------------------------------------------
def frame_labels(entry: dict) -> dict[int, dict]:
    """Labels per frame index: faces, plates, ignore as (N, 4) arrays, hard as index sets."""
    raw = {0: entry} if entry["type"] == "image" else entry["frames"]
    return {
        int(i): {
            **{k: np.asarray(v.get(k, []), np.int64).reshape(-1, 4) for k in ("faces", "plates")},
            "ignore": np.asarray(v.get("ignore", []), np.int64).reshape(-1, 4),
            "hard": {k: sorted(v.get("hard", {}).get(k, [])) for k in ("faces", "plates")},
        }
        for i, v in raw.items()
    }


def _tallies() -> dict[str, list[int]]:
    return {k: [0, 0] for k in ("faces", "plates", "faces_hard", "plates_hard")}


def _size_tallies() -> dict[str, list[int]]:
    return {name: [0, 0] for name, _, _ in SIZE_BUCKETS}


@dataclass
class FileScore:
    type: str  # image | video (a GIF is a video)
    seconds: float = 0.0
    judged: bool = False  # False: no judge ran, the leak figures mean nothing
    frames: int = 0
    coverage: dict[str, list[int]] = field(default_factory=_tallies)  # [covered, total]
    faces_by_size: dict[str, list[int]] = field(default_factory=_size_tallies)  # box height
    over_blur_sum: float = 0.0
    judge_faces: int = 0  # the judge's faces on the input frames
    judge_seen: int = 0  # labelled faces among them (the judge's sensitivity)
    judge_set_aside: int = 0  # judge faces on labelled frames where the labels have none
    leak_frames: int = 0
    leaks: int = 0
    leak_at: list[int] = field(default_factory=list)  # frame indices
    flicker: int = 0
    labelled_tracks: int = 0
    gaps: int = 0


class Evaluation:
    """Scores files for one mode after another; keeps what no mode key changes."""

    def __init__(self, labels: dict, judge=None):
        self.labels, self.judge = labels, judge
        self._judged: dict[str, dict[int, np.ndarray]] = {}  # the judge's faces on the input
        self._images: dict[str, FileScore] = {}  # mode keys change videos only

    def file(self, worker, path: Path) -> FileScore:
        """Score one labelled file with ``worker`` (a ``FileAnonymizer`` of the mode)."""
        from edgeblur.io.files import decode_frames, read_image

        if self.labels[path.name]["type"] == "image":
            if path.name not in self._images:
                t0 = time.perf_counter()
                rgb = read_image(path).rgb
                regions = [worker.image_regions(rgb)]
                seconds = time.perf_counter() - t0
                self._images[path.name] = self._score(path.name, [rgb], regions, worker, seconds)
            return self._images[path.name]
        t0 = time.perf_counter()
        regions = worker.video_regions(path)
        seconds = time.perf_counter() - t0
        frames = (np.ascontiguousarray(f) for f, _, _ in decode_frames(path))
        return self._score(path.name, frames, regions, worker, seconds)

    def _score(self, name, frames, regions: list[Regions], worker, seconds: float) -> FileScore:
        labels, judged = frame_labels(self.labels[name]), self._judged.setdefault(name, {})
        s = FileScore("image" if self.labels[name]["type"] == "image" else "video", seconds)
        s.judged = self.judge is not None
        labelled = []
        for i, image in enumerate(frames):
            h, w = image.shape[:2]
            mask = hidden_mask(regions[i], worker.anonymizer.settings, (w, h))
            lab = labels.get(i)
            s.over_blur_sum += over_blur(mask, lab["ignore"] if lab else [])
            for what in ("faces", "plates") if lab else ():
                hit = covered(mask, lab[what])
                for key, pick in ((what, range(len(hit))), (f"{what}_hard", lab["hard"][what])):
                    s.coverage[key][0] += int(sum(hit[j] for j in pick))
                    s.coverage[key][1] += len(pick)
                if what == "faces":
                    labelled.append((lab["faces"], hit))
                    for bucket, h in zip(size_buckets(lab["faces"]), hit, strict=True):
                        s.faces_by_size[bucket][0] += int(h)
                        s.faces_by_size[bucket][1] += 1
            if self.judge is not None and i not in judged:
                judged[i] = self.judge.faces(image)  # before hiding: apply() works in place
            t0 = time.perf_counter()
            out = worker.anonymizer.apply(Frame("eval", i, image), regions[i]).frame.image
            s.seconds += time.perf_counter() - t0
            before = judged.get(i, np.zeros((0, 4)))
            if lab:
                # Labels overrule the judge: its boxes on a wheel, a sign or a badge (all four
                # "leaks" of the first full run) are no faces, and edgeblur rightly leaves them.
                real = (iou_matrix(before, lab["faces"]) >= LEAK_IOU).any(axis=1)
                s.judge_set_aside += int((~real).sum())
                before = before[real]
                s.judge_seen += matched(lab["faces"], before)
            s.judge_faces += len(before)
            if len(before) and (n := matched(before, self.judge.faces(out))):
                s.leaks, s.leak_frames = s.leaks + n, s.leak_frames + 1
                s.leak_at.append(i)
            s.frames += 1
        if s.type == "video":
            s.flicker, s.labelled_tracks = labelled_flicker(labelled)
            s.gaps = region_gaps(regions)
        return s


# -- overall figures, targets, baseline ---------------------------------------------------------
def summary(files: dict[str, dict]) -> dict:
    """Overall figures of per-file results (``FileScore`` as dicts), of this run or a stored one."""
    every = list(files.values())
    images = [f for f in every if f["type"] == "image"]
    videos = [f for f in every if f["type"] == "video"]
    face_videos = [f for f in videos if f["coverage"]["faces"][1]]

    def add(key: str, of: list[dict]) -> float:
        return sum(f[key] for f in of)

    def tally(src: str, of: list[dict]) -> dict:
        c, t = (sum(f["coverage"][src][i] for f in of) for i in (0, 1))
        return {"covered": c, "total": t, "share": c / t if t else None}

    def by_size(of: list[dict]) -> dict:
        # .get: runs stored before the buckets existed have none; they count as empty.
        c = {
            n: [sum(f.get("faces_by_size", {}).get(n, [0, 0])[i] for f in of) for i in (0, 1)]
            for n, _, _ in SIZE_BUCKETS
        }
        return {
            n: {"covered": a, "total": t, "share": a / t if t else None} for n, (a, t) in c.items()
        }

    of_frames = add("frames", face_videos) if all(f.get("judged", 1) for f in every) else 0
    return {
        "coverage": {
            "faces_images": tally("faces", images),
            "faces_videos": tally("faces", videos),
            **{k: tally(k, every) for k in ("plates", "faces_hard", "plates_hard")},
        },
        "leaks": {
            "frames": add("leak_frames", face_videos),
            "of_frames": of_frames,
            "share": add("leak_frames", face_videos) / of_frames if of_frames else None,
            "judge_faces": add("judge_faces", face_videos),
            "judge_seen": add("judge_seen", face_videos),
            "labelled_faces": sum(f["coverage"]["faces"][1] for f in face_videos),
            "set_aside": add("judge_set_aside", every),
            "images": add("leak_frames", images),
        },
        "faces_by_size": by_size(every),
        "flicker": {k: add(k, videos) for k in ("flicker", "labelled_tracks", "gaps")},
        "over_blur": add("over_blur_sum", every) / add("frames", every) if every else None,
        "fps": add("frames", videos) / add("seconds", videos) if videos else None,
    }
