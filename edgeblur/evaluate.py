"""`edgeblur eval`: how much of what must be hidden is hidden, on labelled media, per mode.

Runs the blur pipeline (``FileAnonymizer``: decode, detect, track, backfill, hide; no encoding)
over labelled images and videos (labels.json, shared/MEDIA.md) once per mode (tracker on or
off, detection stride, backfill) and reports:

- coverage: labelled boxes with ≥ 80% of their pixels hidden (coverage.py): faces on images and
  on labelled video frames, plates, and the ``hard`` ones again on their own;
- leaks: frames on which the judge (judge.py) finds a face in the output where it found one in
  the input, as a share of the frames of the videos with labelled faces;
- flicker: a labelled face hidden, visible on 1-2 labelled frames, hidden again; and, label-free
  ("gaps"), a hidden face region that vanishes for 1-2 frames and comes back;
- over-blur: share of frame pixels hidden outside ``ignore`` regions, mean over frames;
- fps: video frames per second of decode + detect + track + hide (no encoding, no judge).

``--baseline`` exits 1 when a coverage share fell by more than ``--margin`` percentage points
against a stored run, over the modes and files both runs hold (as norfair's mot_metrics).
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeblur.anonymize import hidden_mask
from edgeblur.coverage import COVERED, box_coverage
from edgeblur.errors import ConfigError, SourceUnavailable
from edgeblur.judge import JUDGES, LEAK_IOU, iou_matrix, matched
from edgeblur.types import Frame, Kind, Regions

MODE_KEYS = ("track", "stride", "backfill")  # `edgeblur blur` flags, applied by cli.job_config
DEFAULT_MODES = [
    "track=off,stride=1",
    "track=on,stride=1",
    "track=on,stride=2",
    "track=on,stride=4",
]
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


@dataclass
class FileScore:
    type: str  # image | video (a GIF is a video)
    seconds: float = 0.0
    judged: bool = False  # False: no judge ran, the leak figures mean nothing
    frames: int = 0
    coverage: dict[str, list[int]] = field(default_factory=_tallies)  # [covered, total]
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
        "flicker": {k: add(k, videos) for k in ("flicker", "labelled_tracks", "gaps")},
        "over_blur": add("over_blur_sum", every) / add("frames", every) if every else None,
        "fps": add("frames", videos) / add("seconds", videos) if videos else None,
    }


@dataclass
class ModeResult:
    name: str
    track: bool
    stride: int
    files: dict[str, dict]
    overall: dict


def targets(results: list[ModeResult]) -> list[dict]:
    """The issue's targets: coverage and over-blur at track on, stride 1; leaks where named."""

    def mode(track: bool, stride: int) -> ModeResult | None:
        return next((r for r in results if (r.track, r.stride) == (track, stride)), None)

    def leak(m: ModeResult | None) -> float | None:
        return m.overall["leaks"]["share"] if m else None

    ref, on1, on2, off1 = mode(True, 1) or results[0], mode(True, 1), mode(True, 2), mode(False, 1)
    cov = {k: v["share"] for k, v in ref.overall["coverage"].items()}
    ratio = leak(on1) / leak(off1) if leak(on1) is not None and leak(off1) else None
    rows = [
        ("faces covered on images", ref, cov["faces_images"], ">=", 0.98),
        ("faces covered on labelled video frames", ref, cov["faces_videos"], ">=", 0.97),
        ("plates covered", ref, cov["plates"], ">=", 0.90),
        ("face-video frames with a judge leak", on1, leak(on1), "<=", 0.01),
        ("face-video frames with a judge leak", on2, leak(on2), "<=", 0.02),
        ("leak frames, tracking on / off at stride 1", on1, ratio, "<=", 0.5),
        ("over-blur, share of frame area", ref, ref.overall["over_blur"], "<", 0.15),
    ]
    ops = {">=": operator.ge, "<=": operator.le, "<": operator.lt}
    return [
        {
            "target": f"{what} {op} {limit:.0%}",
            "mode": m.name if m else None,
            "value": v,
            "pass": None if m is None or v is None else bool(ops[op](v, limit)),
        }
        for what, m, v, op, limit in rows
    ]


def compare(results: list[ModeResult], baseline: dict, margin_pp: float) -> tuple[list, bool]:
    """Coverage now vs a stored run, per mode, over the files both hold; True if one fell."""
    stored = {m["mode"]: m["files"] for m in baseline.get("modes", [])}
    lines, fell = [], False
    for r in results:
        common = sorted(set(stored.get(r.name, ())) & set(r.files))
        old = summary({f: stored[r.name][f] for f in common})["coverage"] if common else {}
        new = summary({f: r.files[f] for f in common})["coverage"]
        for key in old:
            a, b = old[key]["share"], new[key]["share"]
            if a is not None and b is not None:
                fell |= (bad := (a - b) * 100 > margin_pp)
                lines.append(
                    f"  {'FELL' if bad else 'ok':<4}  {r.name:<20} {key:<13} {a:7.1%} -> {b:7.1%}"
                    f"  ({len(common)} files)"
                )
    if not lines:
        raise ConfigError(
            "The baseline shares no mode and labelled file with this run; run the modes and "
            "files it was made with (its note says which)."
        )
    return lines, fell


# -- output -------------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _frac(c: int, t: int) -> str:
    return f"{c}/{t} {c / t:.1%}" if t else "-"


def report(results: list[ModeResult], checks: list[dict], judge: str, detail: bool) -> list[str]:
    """The printed table: one row per mode, per-file rows, the judge's sensitivity, targets."""
    cols = ("faces img", "faces vid", "plates", "hard faces", "hard plates", "leak frames")
    out = [f"{'mode':<20}{''.join(f'{c:>15}' for c in cols)}  flicker  gaps  over-blur    fps"]
    for r in results:
        o = r.overall
        cells = [_frac(o["coverage"][k]["covered"], o["coverage"][k]["total"]) for k in COVERAGE]
        cells.append(_frac(o["leaks"]["frames"], o["leaks"]["of_frames"]))  # "-": no judge
        out.append(
            f"{r.name:<20}{''.join(f'{c:>15}' for c in cells)}{o['flicker']['flicker']:>9}"
            f"{o['flicker']['gaps']:>6}{_pct(o['over_blur']):>11}{o['fps'] or 0:>7.1f}"
        )
    lk = results[0].overall["leaks"]
    if judge == "none":
        out.append("judge: none, so no leak figures")
    else:
        out.append(
            f"judge {judge}: {lk['judge_faces']} faces on the input frames of the face videos, "
            f"{lk['judge_seen']} of their {lk['labelled_faces']} labelled faces among them "
            f"(IoU >= {LEAK_IOU}); {lk['set_aside']} judge faces on labelled frames that the "
            f"labels call no face were set aside; images with a leak: {lk['images']}"
        )
        for r in results:
            at = {n: " ".join(map(str, f["leak_at"])) for n, f in r.files.items() if f["leak_at"]}
            sites = "; ".join(f"{n} {v}" for n, v in at.items()) or "none"
            out.append(f"leak frames, {r.name}: {sites}")
    for r in results if detail else results[:1]:
        out += ["", f"per file, {r.name} (flicker: events/labelled tracks):"]
        out.append(
            f"{'file':<24}{'frames':>7}{'faces':>8}{'plates':>8}{'hard f':>8}{'hard p':>8}"
            f"{'judge in':>9}{'leak fr':>8}{'flicker':>8}{'gaps':>6}{'over-blur':>10}{'fps':>7}"
        )
        for name, f in r.files.items():
            c = {k: f"{v[0]}/{v[1]}" for k, v in f["coverage"].items()}
            fl = f"{f['flicker']}/{f['labelled_tracks']}" if f["type"] == "video" else "-"
            out.append(
                f"{name:<24}{f['frames']:>7}{c['faces']:>8}{c['plates']:>8}{c['faces_hard']:>8}"
                f"{c['plates_hard']:>8}{f['judge_faces']:>9}{f['leak_frames']:>8}{fl:>8}"
                f"{f['gaps']:>6}{_pct(f['over_blur']):>10}{f['fps']:>7.1f}"
            )
    out += ["", "targets:"]
    for t in checks:
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
        out.append(f"  {verdict:<4}  {t['target']:<52} {_pct(t['value']):>7}  {t['mode'] or ''}")
    return out


# -- command ------------------------------------------------------------------------------------
def parse_mode(text: str) -> tuple[str, dict[str, object]]:
    """'stride=2,track=on' → ('track=on,stride=2', {'track': True, 'stride': 2})."""
    values = dict(part.strip().lower().partition("=")[::2] for part in text.split(","))
    if not values or any(k not in MODE_KEYS or not v for k, v in values.items()):
        raise ConfigError(
            f"Mode '{text}' is not KEY=VALUE[,KEY=VALUE] with keys {', '.join(MODE_KEYS)}; write "
            "e.g. track=on,stride=2, and give the media before --modes."
        )
    try:
        flags = {
            k: {"on": True, "off": False}[v] if k == "track" else int(v) for k, v in values.items()
        }
    except (KeyError, ValueError):
        raise ConfigError(
            f"Mode '{text}': track is on or off; stride, backfill integers."
        ) from None
    return ",".join(f"{k}={values[k]}" for k in MODE_KEYS if k in values), flags


def media_files(inputs: list[str], labels: dict) -> list[Path]:
    """The labelled files among ``inputs`` (files, or folders searched one level deep)."""
    out: dict[str, Path] = {}
    for p in map(Path, inputs):
        if not p.exists():
            raise SourceUnavailable(f"Input {p} does not exist; check the path.")
        found = sorted(f for f in p.iterdir() if f.name in labels) if p.is_dir() else [p]
        if not found or found[0].name not in labels:
            raise ConfigError(f"{p} has no entry in the labels; label it or leave it out.")
        out.update((f.name, f) for f in found if f.name not in out)
    return list(out.values())


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc}); check the path.") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from edgeblur.blur import FileAnonymizer
    from edgeblur.build import build_anonymizer, build_detector
    from edgeblur.cli import job_config
    from edgeblur.io.files import atomic_path

    labels = _read_json(args.labels, "Labels").get("files", {})
    paths = media_files(args.media, labels)
    modes = []
    for name, flags in map(parse_mode, args.modes):
        cfg = job_config(argparse.Namespace(config=args.config, **flags))
        modes.append((name, cfg))
    judge = None if args.judge == "none" else JUDGES[args.judge]()
    # Mode keys never change the models, so one detector (and its sessions) serves every mode.
    detector = build_detector(modes[0][1].detect, modes[0][1].runtime)
    ev, results, t0 = Evaluation(labels, judge), [], time.perf_counter()
    for name, cfg in modes:
        worker = FileAnonymizer(cfg, detector, build_anonymizer(cfg.anonymize))
        files = {}
        for p in paths:
            s = ev.file(worker, p)
            fps = s.frames / s.seconds if s.seconds else 0.0
            files[p.name] = {**asdict(s), "over_blur": s.over_blur_sum / s.frames, "fps": fps}
            if not args.quiet:
                print(f"eval: {name}: {p.name}: {s.frames} frames, {fps:.1f} fps", file=sys.stderr)
        overall = summary(files)
        results.append(ModeResult(name, cfg.track.enabled, cfg.detect.stride, files, overall))
    checks = targets(results)
    print("\n".join(report(results, checks, args.judge, args.detail)))
    fell = False
    if args.baseline:
        lines, fell = compare(results, _read_json(args.baseline, "Baseline"), args.margin)
        print(f"\nagainst {args.baseline} (coverage may fall {args.margin:g} pp at most):")
        print("\n".join(lines))
    print(f"\n{len(paths)} files, {len(modes)} modes in {time.perf_counter() - t0:.0f} s")
    if args.json:
        command = ["edgeblur eval --labels", str(args.labels), *map(str, args.media)]
        command += ["--modes", *args.modes, "--judge", args.judge]
        command += ["--config", str(args.config)] if args.config else []
        command += ["--json", str(args.json)]
        doc = {
            "note": f"Written by `{' '.join(command).replace(str(Path.home()), '~')}` (fps on "
            f"{os.cpu_count()} CPU cores). Coverage counts are [covered, total]; --baseline "
            "compares coverage per mode over the files both runs hold.",
            "covered_at": COVERED,
            "judge": args.judge,
            "leak_iou": LEAK_IOU,
            "modes": [{"mode": r.name, "overall": r.overall, "files": r.files} for r in results],
            "targets": checks,
        }
        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if fell else 0


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add `eval` to the `edgeblur` sub-commands; its ``func`` returns the exit code."""
    e = subparsers.add_parser(
        "eval",
        help="Measure coverage, judge leaks, flicker, over-blur and speed on labelled media.",
    )
    add = e.add_argument
    add("media", nargs="+", help="Labelled images, videos, or folders holding them.")
    add("--labels", type=Path, required=True, help="labels.json (format: shared/MEDIA.md).")
    add("-c", "--config", type=Path, help="YAML with runtime/detect/track/anonymize, as blur.")
    add(
        "--modes",
        nargs="+",
        default=DEFAULT_MODES,
        metavar="MODE",
        help="Pipeline variants to compare: KEY=VALUE[,...] with keys track (on/off), stride, "
        f"backfill (default: {' '.join(DEFAULT_MODES)}).",
    )
    add(
        "--judge",
        choices=[*JUDGES, "none"],
        default="dlib-hog",
        help="Independent face detector of the leak measure (default dlib-hog).",
    )
    add("--json", type=Path, metavar="OUT", help="Also write every figure, per mode and file.")
    add("--baseline", type=Path, help="--json of an earlier run: exit 1 if coverage fell more.")
    add("--margin", type=float, default=1.0, help="Allowed coverage drop, points (default 1).")
    add("--detail", action="store_true", help="Per-file rows for every mode, not the first only.")
    add("-q", "--quiet", action="store_true", help="No progress lines on stderr.")
    e.set_defaults(func=cmd_eval)
    return e
