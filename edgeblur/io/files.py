"""Image and video files for `edgeblur blur`: PyAV for video, OpenCV for stills.

Every output is written under a temporary name in the destination folder and renamed into place
only when complete, so an interrupted run never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from edgeblur.errors import SourceUnavailable, UnsupportedInput
from edgeblur.fs import atomic_path
from edgeblur.io.decode import frame_rate, open_input, to_rgb, video_stream
from edgeblur.io.encode import FILE_OUTPUT, Encoder, EncodeSettings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {
    ".mp4",
    ".mkv",
    ".mov",
    ".avi",
    ".webm",
    ".m4v",
    ".ts",
    ".mpg",
    ".mpeg",
    ".flv",
    ".gif",
    ".wmv",
}
# Containers we can write H.264 into; a GIF input is written as MP4 by default.
VIDEO_OUTPUT_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".m4v", ".ts"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Still:
    """A decoded image: RGB pixels plus the alpha channel to put back on write, if any."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None


def read_image(path: Path) -> Still:
    data = np.fromfile(path, dtype=np.uint8)
    # IMREAD_COLOR applies the EXIF orientation, so boxes match what viewers show.
    try:
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error:  # a header OpenCV refuses (a claimed size over its limit, a bad chunk)
        raw = None
    if raw is None:
        raise UnsupportedInput(
            f"{path} is not an image OpenCV can decode; convert it to PNG or JPEG."
        )
    alpha = None
    if raw.ndim == 2:
        rgb = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
    elif raw.shape[2] == 4:
        alpha = raw[:, :, 3].copy()
        rgb = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)
    else:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise UnsupportedInput(f"{path} is damaged; OpenCV cannot decode it in color.")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if rgb.dtype != np.uint8:  # 16-bit PNG/TIFF
        rgb = (rgb / 257).astype(np.uint8)
    return Still(np.ascontiguousarray(rgb), alpha)


def write_image(still: Still, dest: Path, quality: int = 95) -> None:
    bgr = cv2.cvtColor(still.rgb, cv2.COLOR_RGB2BGR)
    suffix = dest.suffix.lower()
    if still.alpha is not None and suffix in {".png", ".webp", ".tif", ".tiff"}:
        bgr = np.dstack([bgr, still.alpha])
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in {".jpg", ".jpeg"} else []
    ok, buf = cv2.imencode(suffix, bgr, params)
    if not ok:
        raise UnsupportedInput(
            f"Cannot write images of type {suffix}; use .png or .jpg for {dest}."
        )
    with atomic_path(dest) as tmp:
        tmp.write_bytes(buf.tobytes())  # not ndarray.tofile: its short write has no errno


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int  # 0 when the container does not say
    fps: Fraction
    time_base: Fraction
    duration_s: float
    has_audio: bool


def open_video(path: Path) -> av.container.InputContainer:
    try:
        container = open_input(str(path), (10.0, 10.0))
    except FileNotFoundError as exc:
        raise SourceUnavailable(f"{path} does not exist; check the path.") from exc
    except PermissionError as exc:
        raise SourceUnavailable(
            f"{path} cannot be read (permission denied); fix its permissions."
        ) from exc
    except av.FFmpegError as exc:
        raise UnsupportedInput(
            f"{path} is not a video FFmpeg can open ({exc.strerror or exc}); convert it to MP4."
        ) from exc
    if not container.streams.video:
        container.close()
        raise UnsupportedInput(f"{path} has no video stream; give a video or an image.")
    return container


def probe_video(path: Path) -> VideoInfo:
    with open_video(path) as c:
        v = c.streams.video[0]
        fps = frame_rate(v) or Fraction(25)
        duration = float(v.duration * v.time_base) if v.duration else (c.duration or 0) / 1e6
        return VideoInfo(
            width=v.codec_context.width,
            height=v.codec_context.height,
            frames=v.frames or round(duration * fps),
            fps=Fraction(fps),
            time_base=Fraction(v.time_base) if v.time_base else Fraction(1, 90000),
            duration_s=duration,
            has_audio=bool(c.streams.audio),
        )


def decode_frames(path: Path) -> Iterator[tuple[np.ndarray, int | None, Fraction]]:
    """(RGB image, pts, time_base) for each frame in decode order."""
    with open_video(path) as c:
        stream = video_stream(c)
        try:
            for frame in c.decode(stream):
                yield (
                    to_rgb(frame),
                    frame.pts,
                    Fraction(frame.time_base or stream.time_base),
                )
        except av.FFmpegError as exc:
            raise SourceUnavailable(
                f"{path} is damaged and cannot be decoded past a point ({exc})."
            ) from exc


# Tags copied from the input when metadata is kept: when it was filmed and in what language.
# Everything else is dropped: GPS (location, com.apple.quicktime.location.ISO6709), camera make,
# model and serial numbers, software and free-text fields that may name a person.
KEPT_TAGS = ("creation_time", "language")


def _kept(tags: dict[str, str], keep: bool) -> dict[str, str]:
    return {k: v for k, v in tags.items() if keep and k in KEPT_TAGS}


def _copy_colour(src: av.video.stream.VideoStream, dst: av.video.stream.VideoStream) -> None:
    """Colour tags (primaries, transfer, matrix, range) as the input had them: they say how to
    show the pixels, and a player guessing them shifts colours; they identify no one."""
    for name in ("color_primaries", "color_trc", "colorspace", "color_range"):
        with contextlib.suppress(AttributeError, ValueError, TypeError):
            setattr(dst.codec_context, name, getattr(src.codec_context, name))


def transcode(
    src: Path,
    dest: Path,
    process,
    encode: EncodeSettings = FILE_OUTPUT,
    on_frame=None,
) -> int:
    """Decode ``src``, pass each RGB frame through ``process(index, image) -> image``, encode to
    ``dest`` keeping resolution, timestamps and frame count, and copy audio packets untouched.
    Colour tags are kept; of the metadata only ``KEPT_TAGS``, and none without keep_metadata.

    Written atomically: ``dest`` appears only when the whole file is finished. Returns frames.
    """
    count = 0
    with open_video(src) as inp, atomic_path(dest) as tmp:
        in_v = video_stream(inp)
        in_a = inp.streams.audio[0] if inp.streams.audio else None
        fmt = "mp4" if dest.suffix.lower() in {".mp4", ".m4v"} else None
        with av.open(str(tmp), "w", format=fmt) as out:
            out.metadata.update(_kept(dict(inp.metadata), encode.keep_metadata))
            time_base = Fraction(in_v.time_base) if in_v.time_base else Fraction(1, 90000)
            rate = frame_rate(in_v) or Fraction(25)
            size_wh = (in_v.codec_context.width, in_v.codec_context.height)
            # FILE_OUTPUT keeps an odd-sized input's size in 4:4:4, uncropped (io/encode.py).
            out_v = Encoder(out, encode, size_wh, rate, time_base)
            _copy_colour(in_v, out_v.stream)
            out_v.stream.metadata.update(_kept(dict(in_v.metadata), encode.keep_metadata))
            out_a = None
            if in_a is not None:
                try:
                    out_a = out.add_stream_from_template(in_a)
                    out_a.metadata.clear()
                    out_a.metadata.update(_kept(dict(in_a.metadata), encode.keep_metadata))
                except (ValueError, av.FFmpegError) as exc:
                    raise UnsupportedInput(
                        f"The audio of {src} ({in_a.codec_context.name}) cannot go into a "
                        f"{dest.suffix} file; choose a .mkv output."
                    ) from exc
            streams = [in_v] + ([in_a] if in_a is not None else [])
            last_pts = None
            try:
                for packet in inp.demux(streams):
                    if packet.stream is in_a:
                        # The flush packet (size 0, dts None) is skipped; real packets are copied.
                        if packet.dts is None:
                            continue
                        packet.stream = out_a
                        out.mux(packet)
                        continue
                    for frame in packet.decode():
                        image = process(count, to_rgb(frame))
                        pts = frame.pts
                        if pts is None or (last_pts is not None and pts <= last_pts):
                            # Frames without (or with repeated) timestamps still count: keep
                            # the frame, give it the next slot instead of dropping it.
                            step = max(1, round(1 / (rate * time_base))) if rate else 1
                            pts = 0 if last_pts is None else last_pts + step
                        last_pts = pts
                        out.mux(out_v.encode(image, pts))
                        count += 1
                        if on_frame is not None:
                            on_frame(count)
            except av.FFmpegError as exc:
                raise SourceUnavailable(
                    f"{src} is damaged and cannot be decoded past frame {count} ({exc})."
                ) from exc
            out.mux(out_v.flush())
    return count
