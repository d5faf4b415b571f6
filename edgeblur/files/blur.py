"""`edgeblur blur`: anonymize images, videos and folders of them.

The file counterpart of the live pipeline, with the same stages (Detector → Tracker →
Anonymizer) but no latency budget, so videos run in two passes: the first decodes, detects and
tracks every frame and keeps only the regions (small), which lets backward fill hide a face a few
frames *before* the detector first finds it; the second decodes again, hides and encodes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeblur import build
from edgeblur.config import JobConfig
from edgeblur.core.anonymize import Anonymizer
from edgeblur.core.detect import Detector
from edgeblur.core.step import NO_REGIONS, Checker, Planner
from edgeblur.core.track import Backfill
from edgeblur.errors import OutputExists, SourceUnavailable, UnsupportedInput
from edgeblur.io.files import (
    VIDEO_OUTPUT_SUFFIXES,
    EncodeSettings,
    Still,
    atomic_path,
    decode_frames,
    is_image,
    is_video,
    probe_video,
    read_image,
    transcode,
    write_image,
)
from edgeblur.types import Frame, Kind, Reason, Regions

log = logging.getLogger(__name__)

SUFFIX = "_anonymized"
# Outlines drawn over the original faces: a name that cannot be taken for an anonymized file.
DRAW_SUFFIX = "_boxes"


@dataclass(frozen=True)
class Job:
    """One input file and where its anonymized copy goes."""

    src: Path
    dest: Path


@dataclass
class FileReport:
    src: Path
    dest: Path
    frames: int = 0
    regions: int = 0
    seconds: float = 0.0
    regions_per_frame: list[Regions] = field(default_factory=list, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def default_output(src: Path, tag: str = SUFFIX) -> Path:
    suffix = ".mp4" if src.suffix.lower() == ".gif" else src.suffix
    return src.with_name(f"{src.stem}{tag}{suffix}")


def _tagged(path: Path, tag: str) -> Path:
    """``path`` with ``tag`` at the end of its stem (once)."""
    return path if path.stem.endswith(tag) else path.with_name(f"{path.stem}{tag}{path.suffix}")


def _media_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and (is_image(p) or is_video(p)))


def plan(inputs: list[Path], output: Path | None, force: bool, drawing: bool = False) -> list[Job]:
    """Every (input, output) pair, checked before any work starts so a bad argument loses nothing.

    A folder is searched recursively and its tree mirrored under the output folder; several
    inputs need ``output`` to be a folder; one file may name its output file directly.
    ``drawing`` (outlines over unhidden faces): every output name ends in ``_boxes``, never
    ``_anonymized``, whatever ``output`` says.
    """
    jobs = _plan(inputs, output, drawing)
    if drawing:
        jobs = [Job(j.src, _tagged(j.dest, DRAW_SUFFIX)) for j in jobs]
    _check(jobs, inputs, force)
    return jobs


def _plan(inputs: list[Path], output: Path | None, drawing: bool) -> list[Job]:
    tag = DRAW_SUFFIX if drawing else SUFFIX
    jobs: list[Job] = []
    for src in inputs:
        if not src.exists():
            raise SourceUnavailable(f"Input {src} does not exist; check the path.")
        if src.is_dir():
            if output is not None and output.exists() and not output.is_dir():
                raise OutputExists(
                    f"Output {output} is a file, but the input {src} is a folder; give -o a "
                    "folder (new or existing)."
                )
            # `blur .` names its output after the folder itself, not after "" (Path(".").name).
            named = src if src.name not in ("", "..") else src.resolve()
            root = output if output is not None else named.with_name(named.name + tag)
            if len(inputs) > 1 and output is not None:
                root = output / named.name
            for f in _media_files(src):
                if f.resolve().is_relative_to(root.resolve()):
                    continue  # an output folder inside the input: earlier results, not input

                rel = f.relative_to(src)
                dest = root / (rel.with_suffix(".mp4") if f.suffix.lower() == ".gif" else rel)
                jobs.append(Job(f, dest))
            continue
        if not (is_image(src) or is_video(src)):
            raise UnsupportedInput(
                f"{src} has an unsupported type '{src.suffix}'; give an image (jpg, png, webp, "
                "bmp) or a video (mp4, mkv, mov, avi, webm, gif, ...)."
            )
        if output is None:
            dest = default_output(src, tag)
        elif len(inputs) > 1 and output.exists() and not output.is_dir():
            raise OutputExists(
                f"Output {output} is a file, but several inputs need a folder; give -o a folder."
            )
        elif len(inputs) > 1 or output.is_dir() or not output.suffix:
            dest = output / default_output(src).name.replace(SUFFIX, "")
        else:
            dest = output
        jobs.append(Job(src, dest))
    return jobs


def _check(jobs: list[Job], inputs: list[Path], force: bool) -> None:
    for job in jobs:
        if is_video(job.src) and job.dest.suffix.lower() not in VIDEO_OUTPUT_SUFFIXES:
            raise UnsupportedInput(
                f"Cannot write video {job.src.name} as '{job.dest.suffix}'; name the output .mp4, "
                ".mkv or .mov."
            )
        if is_image(job.src) and not is_image(job.dest):
            raise UnsupportedInput(
                f"Cannot write image {job.src.name} as '{job.dest.suffix}'; name the output "
                ".png or .jpg."
            )
        if job.dest.resolve() == job.src.resolve():
            raise OutputExists(
                f"Output {job.dest} is the input itself; choose another output path."
            )
        if job.dest.exists() and not force:
            raise OutputExists(f"Output {job.dest} already exists; pass --force to overwrite it.")
    if not jobs:
        raise SourceUnavailable(f"No images or videos found in {', '.join(map(str, inputs))}.")


def regions_to_json(regions: Regions) -> list[dict]:
    return [
        {
            "xyxy": [round(float(v), 1) for v in box],
            "kind": Kind(int(k)).name.lower(),
            "reason": Reason(int(r)).name.lower(),
            "confidence": round(float(c), 3),
            "track": int(t),
        }
        for box, k, r, c, t in zip(
            regions.xyxy,
            regions.kind,
            regions.reason,
            regions.confidence,
            regions.track_id,
            strict=True,
        )
    ]


def write_sidecar(report: FileReport, dest: Path) -> None:
    """An audit record of every hidden region per frame (no pixels)."""
    doc = {
        "input": str(report.src),
        "output": str(report.dest),
        "frames": [
            {"index": i, "regions": regions_to_json(r)}
            for i, r in enumerate(report.regions_per_frame)
        ],
    }
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))


class FirstPass:
    """Pass 1 (``FileAnonymizer.iter_regions``) on its own owned thread; pass 2 takes each
    frame's regions with ``get`` as soon as they are final. Leaving the ``with`` block stops the
    thread (after the frame in hand) and joins it; an error in pass 1 is raised in the caller."""

    STOP_WAIT_S = 30.0  # one frame's detection, with room for a loaded machine

    def __init__(self, regions: Iterator[Regions]):
        self._regions = regions
        self._done: list[Regions] = []
        self._cond = threading.Condition()
        self._finished = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blur-pass1", daemon=True)

    def __enter__(self) -> FirstPass:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.STOP_WAIT_S)

    def _run(self) -> None:
        try:
            for regions in self._regions:
                with self._cond:
                    self._done.append(regions)
                    self._cond.notify_all()
                if self._stop.is_set():
                    break
        except BaseException as exc:  # handed to the caller, which raises it
            self._error = exc
        finally:
            close = getattr(self._regions, "close", None)
            if close is not None:
                close()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _wait(self, until: Callable[[], bool]) -> None:
        with self._cond:
            # Each wait is bounded; the loop ends when pass 1 moves on, ends or dies.
            while not until() and not self._finished and self._thread.is_alive():
                self._cond.wait(timeout=1.0)
            ready = until()
        if not ready and self._error is not None:  # frames before the error are still served
            raise self._error

    def get(self, index: int) -> Regions | None:
        """Frame ``index``'s regions, waiting for pass 1 if needed; None if it has no such frame."""
        self._wait(lambda: len(self._done) > index)
        return self._done[index] if index < len(self._done) else None

    def result(self) -> list[Regions]:
        """Every frame's regions, once pass 1 is done."""
        self._wait(lambda: False)
        return self._done


class FileAnonymizer:
    """Runs the stages over files; one instance serves a whole `edgeblur blur` call."""

    def __init__(self, cfg: JobConfig, detector: Detector, anonymizer: Anonymizer):
        self.cfg = cfg
        self.detector = detector
        self.anonymizer = anonymizer
        e = cfg.encode
        self.encode = EncodeSettings.for_files(
            codec=e.codec, crf=e.crf, preset=e.preset, keep_metadata=e.metadata == "keep"
        )

    # -- images --------------------------------------------------------------------------------
    def image_regions(self, image: np.ndarray) -> Regions:
        return Regions.from_detections(self.detector.detect([image])[0], checked_index=0)

    def image(self, job: Job) -> FileReport:
        t0 = time.perf_counter()
        still = read_image(job.src)
        regions = self.image_regions(still.rgb)
        frame = Frame(camera="file", index=0, image=still.rgb)
        self.anonymizer.apply(frame, regions)
        write_image(Still(frame.image, still.alpha), job.dest)
        return FileReport(job.src, job.dest, 1, len(regions), time.perf_counter() - t0, [regions])

    # -- videos --------------------------------------------------------------------------------
    def iter_regions(
        self, src: Path, on_frame: Callable[[int], None] | None = None
    ) -> Iterator[Regions]:
        """Pass 1: plan (strides per role, shot cuts, tile rotation), detect what is due and
        track; yields every frame's regions in order, each once its backward fill is final.
        Backward fill runs within each shot, never across a cut."""
        cadence = build.cadence(self.cfg.detect, fps=probe_video(src).fps)
        planner = Planner(cadence)
        checker = Checker(list(cadence), build.check_settings(self.cfg.track))
        t = self.cfg.track
        fill = None
        if t.enabled and t.backfill_frames:
            # At least as far back as the schedule can leave a face unseen (0 turns it off).
            fill = Backfill(max(t.backfill_frames, build.blind_frames(cadence) - 1))
        frames = decode_frames(src)
        try:
            for i, (image, _pts, _tb) in enumerate(frames):
                plan = planner.plan(i, image)
                if fill is not None and plan.cut and i:
                    yield from fill.flush()
                dets = self.detector.detect([image], [plan])[0] if plan.due else None
                regions = checker.regions(Frame("file", i, image), plan, dets)
                yield from (fill.push(regions) if fill is not None else (regions,))
                if on_frame is not None:
                    on_frame(i + 1)
            if fill is not None:
                yield from fill.flush()
        finally:
            frames.close()  # the input is closed at once when a caller stops early

    def video_regions(
        self, src: Path, on_frame: Callable[[int], None] | None = None
    ) -> list[Regions]:
        """Pass 1 whole: regions for every frame."""
        return list(self.iter_regions(src, on_frame))

    def video(
        self, job: Job, progress: Callable[[str, int, int], None] | None = None
    ) -> FileReport:
        t0 = time.perf_counter()
        info = probe_video(job.src)
        total = info.frames

        def tick(stage: str) -> Callable[[int], None] | None:
            return (lambda n: progress(stage, n, total)) if progress else None

        # Pass 1 runs on its own thread a backfill window ahead of pass 2 (decode, hide,
        # encode) here: the two use both cores instead of one after the other.
        with FirstPass(self.iter_regions(job.src, tick("detect"))) as first:

            def hide(index: int, image: np.ndarray) -> np.ndarray:
                regions = first.get(index)
                if regions is None:
                    # Pass 2 decoded a frame pass 1 never saw (should not happen): fail closed.
                    return self.anonymizer.hide_whole(
                        Frame("file", index, image), NO_REGIONS
                    ).frame.image
                image = np.ascontiguousarray(image)
                return self.anonymizer.apply(Frame("file", index, image), regions).frame.image

            frames = transcode(job.src, job.dest, hide, self.encode, tick("encode"))
            regions = first.result()
        return FileReport(
            job.src,
            job.dest,
            frames,
            sum(len(r) for r in regions),
            time.perf_counter() - t0,
            regions,
        )

    def run(self, job: Job, progress: Callable[[str, int, int], None] | None = None) -> FileReport:
        return self.image(job) if is_image(job.src) else self.video(job, progress)
