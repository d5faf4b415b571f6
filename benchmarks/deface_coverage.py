"""Face coverage of deface next to edgeblur's, on the labelled media (shared/MEDIA.md).

Run from the repository root (deface is installed on first use into <cache>/bench-venv):

    python3 -m benchmarks.deface_coverage ~/.cache/edgeblur/media \
        --labels ../shared/media/labels.json -c configs/realtime-cpu.yaml --mode track=on,stride=2

The criterion is edgeblur's (coverage.py): a labelled face counts as covered when at least 80%
of its pixels are hidden. edgeblur's hidden pixels are its anonymizer's mask (as `edgeblur
eval`). deface reports no mask, so its hidden pixels are the ones its blur changed: deface runs
twice on the same inputs with a lossless encoder, once as usual and once with
``--replacewith none`` (same decoding, same encoding, nothing hidden), and every pixel that
differs by more than ``TOLERANCE`` in a channel is hidden; a 5×5 closing fills the few pixels
of a flat area that a blur leaves at their value. Only faces: deface hides no plates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from edgeblur.bench.clips import deface_venv
from edgeblur.io.files import decode_frames, read_image
from edgeblur.quality.coverage import COVERED, box_coverage
from edgeblur.quality.evaluate import media_files, parse_mode
from edgeblur.quality.scores import Evaluation, frame_labels, summary

TOLERANCE = 2  # levels: libx264rgb -qp 0 is lossless, so unchanged pixels differ by 0
LOSSLESS = {
    "codec": "libx264rgb",
    "pixelformat": "rgb24",
    "quality": None,
    "output_params": ["-qp", "0", "-preset", "ultrafast"],
}
VARIANTS = {"deface": [], "deface --scale 640x360": ["--scale", "640x360"]}


def stage_inputs(paths: list[Path], labels: dict, folder: Path) -> dict[str, Path]:
    """Each labelled file as deface reads it without loss: stills (and a GIF's first frame,
    all deface reads of one) as PNG, videos as they are. Returns label name → staged file."""
    staged = {}
    for p in paths:
        if labels[p.name]["type"] == "image" or p.suffix.lower() == ".gif":
            rgb = read_image(p).rgb if labels[p.name]["type"] == "image" else first_frame(p)
            dest = folder / f"{p.stem}.png"
            cv2.imwrite(str(dest), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        else:
            dest = folder / p.name
            shutil.copyfile(p, dest)
        staged[p.name] = dest
    return staged


def first_frame(path: Path) -> np.ndarray:
    return next(iter(decode_frames(path)))[0]


def run_deface(exe: Path, staged: dict[str, Path], extra: list[str], out: Path) -> None:
    """deface on every staged file; outputs (NAME_anonymized.EXT) moved into ``out``."""
    cmd = [str(exe), *map(str, staged.values()), "--ffmpeg-config", json.dumps(LOSSLESS), *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out.mkdir()
    for src in staged.values():
        shutil.move(src.with_name(f"{src.stem}_anonymized{src.suffix}"), out / src.name)


def frames_of(path: Path) -> list[np.ndarray]:
    if path.suffix == ".png":
        return [read_image(path).rgb]
    return [f for f, _, _ in decode_frames(path)]


def deface_coverage(labels: dict, staged: dict[str, Path], blurred: Path, plain: Path) -> dict:
    """[covered, total] faces on images, on video frames, and the hard ones."""
    tally = {"faces_images": [0, 0], "faces_videos": [0, 0], "faces_hard": [0, 0]}
    kernel = np.ones((5, 5), np.uint8)
    for name, src in staged.items():
        key = "faces_images" if labels[name]["type"] == "image" else "faces_videos"
        lab = frame_labels(labels[name])
        a, b = frames_of(blurred / src.name), frames_of(plain / src.name)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if i not in lab or not len(lab[i]["faces"]):
                continue
            diff = np.abs(x.astype(np.int16) - y.astype(np.int16)).max(axis=2) > TOLERANCE
            mask = cv2.morphologyEx(diff.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
            hit = box_coverage(mask, lab[i]["faces"]) >= COVERED
            for k, pick in ((key, range(len(hit))), ("faces_hard", lab[i]["hard"]["faces"])):
                tally[k][0] += int(sum(hit[j] for j in pick))
                tally[k][1] += len(pick)
    return tally


def edgeblur_coverage(paths: list[Path], labels: dict, config: Path | None, mode: str) -> dict:
    from edgeblur.build import build_anonymizer, build_detector
    from edgeblur.config import job_config
    from edgeblur.files.blur import FileAnonymizer

    cfg = job_config(config, parse_mode(mode)[1])
    worker = FileAnonymizer(
        cfg, build_detector(cfg.detect, cfg.runtime), build_anonymizer(cfg.anonymize)
    )
    ev, files = Evaluation(labels), {}
    for p in paths:
        s = ev.file(worker, p)
        files[p.name] = {**asdict(s), "over_blur": s.over_blur_sum / s.frames, "fps": 0.0}
    cov = summary(files)["coverage"]
    return {k: [cov[k]["covered"], cov[k]["total"]] for k in ("faces_images", "faces_videos")} | {
        "faces_hard": [cov["faces_hard"]["covered"], cov["faces_hard"]["total"]]
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("media", help="Folder with the labelled media.")
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("-c", "--config", type=Path, help="edgeblur's job config (as eval).")
    p.add_argument("--mode", default="track=on,stride=2", help="edgeblur's eval mode.")
    p.add_argument("--json", type=Path, help="Also write the figures here.")
    args = p.parse_args()
    labels = json.loads(args.labels.read_text())["files"]
    paths = [  # the files with a labelled face
        f
        for f in media_files([args.media], labels)
        if any(len(v["faces"]) for v in frame_labels(labels[f.name]).values())
    ]
    result = {f"edgeblur {args.mode}": edgeblur_coverage(paths, labels, args.config, args.mode)}
    exe = deface_venv()
    with tempfile.TemporaryDirectory(prefix="deface-coverage-") as tmp:
        for name, extra in VARIANTS.items():
            work = Path(tmp) / name.replace(" ", "_")
            (work / "in").mkdir(parents=True)
            staged = stage_inputs(paths, labels, work / "in")
            run_deface(exe, staged, extra, work / "blurred")
            run_deface(exe, staged, [*extra, "--replacewith", "none"], work / "plain")
            result[name] = deface_coverage(labels, staged, work / "blurred", work / "plain")
    print(f"{'':<28}{'faces img':>15}{'faces vid':>15}{'hard faces':>15}")
    for name, t in result.items():
        cells = [f"{c}/{n} {c / n:.1%}" if n else "-" for c, n in t.values()]
        print(f"{name:<28}" + "".join(f"{c:>15}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps({"covered_at": COVERED, "coverage": result}, indent=1))


if __name__ == "__main__":
    main()
