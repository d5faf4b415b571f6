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
- faces by size: coverage per face box height (< 10, 10-20, 20-40, >= 40 px) for each set: the
  shared media, and the derived cases of ``--derived small`` (derived.py: the shared media at
  1/2, 1/3, 1/4, a 2048-px crowd of 10-40 px faces, and the face clips at 1/2 and 1/4 in a
  720p frame; made in a temporary folder per run).

``--baseline`` exits 1 when a coverage share fell by more than ``--margin`` percentage points
against a stored run, over the modes and files both runs hold (as norfair's mot_metrics).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import operator
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeblur.config import job_config
from edgeblur.errors import ConfigError, SourceUnavailable
from edgeblur.fs import atomic_path
from edgeblur.quality.coverage import COVERED, SIZE_BUCKETS
from edgeblur.quality.judge import JUDGES, LEAK_IOU
from edgeblur.quality.scores import COVERAGE, Evaluation, summary

MODE_KEYS = ("track", "stride", "backfill")  # `edgeblur blur` flags, applied by config.job_config
DEFAULT_MODES = [
    "track=off,stride=1",
    "track=on,stride=1",
    "track=on,stride=2",
    "track=on,stride=4",
]


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
    out += ["", *by_size_report(results)]
    out += ["", "targets:"]
    for t in checks:
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
        out.append(f"  {verdict:<4}  {t['target']:<52} {_pct(t['value']):>7}  {t['mode'] or ''}")
    return out


def file_set(name: str, entry: dict) -> str:
    """The set a labelled file belongs to: its label's ``set`` (derived cases), else shared."""
    return entry.get("set", "shared")


def by_set(r: ModeResult) -> dict[str, dict]:
    """Face coverage by size of each set of ``r``'s files, plus "all" when there are several."""
    groups: dict[str, dict] = {}
    for name, f in r.files.items():
        groups.setdefault(f.get("set", "shared"), {})[name] = f
    if len(groups) > 1:
        groups["all"] = r.files
    out = {}
    for key, files in groups.items():
        o = summary(files)
        faces = [o["coverage"][k] for k in ("faces_images", "faces_videos")]
        c, t = sum(x["covered"] for x in faces), sum(x["total"] for x in faces)
        out[key] = {
            "files": len(files),
            "faces": {"covered": c, "total": t, "share": c / t if t else None},
            "faces_by_size": o["faces_by_size"],
        }
    return out


def by_size_report(results: list[ModeResult]) -> list[str]:
    """Faces covered per size bucket (box height, px), per mode and set: the small-face view."""
    names = [n for n, _, _ in SIZE_BUCKETS]
    out = [
        "faces covered by size (box height in px of the evaluated image):",
        f"{'mode':<20}{'set':<14}{''.join(f'{n:>16}' for n in names)}{'all faces':>16}",
    ]
    for r in results:
        for key, g in by_set(r).items():
            cells = [
                _frac(g["faces_by_size"][n]["covered"], g["faces_by_size"][n]["total"])
                for n in names
            ]
            cells.append(_frac(g["faces"]["covered"], g["faces"]["total"]))
            out.append(f"{r.name:<20}{key:<14}{''.join(f'{c:>16}' for c in cells)}")
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
    with contextlib.ExitStack() as stack:
        labels, paths = inputs(args, stack)
        return _evaluate(args, labels, paths)


def inputs(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[dict, list[Path]]:
    """The labels and files to evaluate: the given media, plus any derived set (made in a
    temporary folder that ``stack`` removes)."""
    from edgeblur.quality import derived

    labels = _read_json(args.labels, "Labels").get("files", {})
    paths = media_files(args.media, labels)
    if not args.derived:
        if args.only_derived:
            raise ConfigError("--only-derived needs --derived NAME; add e.g. --derived small.")
        return labels, paths
    cases = derived.build(args.derived, {p.name: p for p in paths}, labels)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeblur-derived-")))
    made, entries = derived.write(cases, folder)
    clash = sorted(set(entries) & {p.name for p in paths})
    if clash:
        raise ConfigError(
            f"{clash[0]} is both a given file and a derived case; leave derived images out of "
            "the media."
        )
    return {**labels, **entries}, ([] if args.only_derived else paths) + made


def _evaluate(args: argparse.Namespace, labels: dict, paths: list[Path]) -> int:
    from edgeblur.build import build_anonymizer, build_detector
    from edgeblur.files.blur import FileAnonymizer

    modes = []
    for name, flags in map(parse_mode, args.modes):
        cfg = job_config(args.config, flags)
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
            files[p.name] = {
                **asdict(s),
                "over_blur": s.over_blur_sum / s.frames,
                "fps": fps,
                "set": file_set(p.name, labels[p.name]),
            }
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
        command += ["--derived", args.derived] if args.derived else []
        command += ["--only-derived"] if args.only_derived else []
        command += ["--json", str(args.json)]
        doc = {
            "note": f"Written by `{' '.join(command).replace(str(Path.home()), '~')}` (fps on "
            f"{os.cpu_count()} CPU cores). Coverage counts are [covered, total]; --baseline "
            "compares coverage per mode over the files both runs hold.",
            "covered_at": COVERED,
            "judge": args.judge,
            "leak_iou": LEAK_IOU,
            "size_buckets": "face box height, px: " + ", ".join(n for n, _, _ in SIZE_BUCKETS),
            "modes": [
                {"mode": r.name, "overall": r.overall, "by_set": by_set(r), "files": r.files}
                for r in results
            ],
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
    add(
        "--derived",
        choices=["small", "moving"],  # derived.SETS; not imported here: `--help` skips cv2
        help="Also evaluate cases derived from the given media: small = the faces at 1/2, 1/3, "
        "1/4, a 2048-px crowd of 10-40 px faces and the face clips small in a 720p frame; "
        "moving = the plate stills sliding across a 720p frame at 25 fps (made in a temporary "
        "folder, not kept).",
    )
    add("--only-derived", action="store_true", help="Evaluate the derived cases only.")
    add("--json", type=Path, metavar="OUT", help="Also write every figure, per mode and file.")
    add("--baseline", type=Path, help="--json of an earlier run: exit 1 if coverage fell more.")
    add("--margin", type=float, default=1.0, help="Allowed coverage drop, points (default 1).")
    add("--detail", action="store_true", help="Per-file rows for every mode, not the first only.")
    add("-q", "--quiet", action="store_true", help="No progress lines on stderr.")
    e.set_defaults(func=cmd_eval)
    return e
