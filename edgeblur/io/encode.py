"""The one H.264 encoder recipe, for live sinks (RTSP, recordings) and `blur`'s file outputs.

What differs between them is a setting, not another code path:
- Odd frame sizes: 4:2:0 needs even ones. Live streams pad one edge row/column (``pad``):
  browsers, WebRTC and most hardware decoders behind MediaMTX cannot play 4:4:4. A file output
  keeps its exact size in 4:4:4 (``yuv444p``): a user's video must come back uncropped and
  unpadded, and is played by desktop players that have 4:4:4.
- Keyframes: live streams force an IDR every ``gop_s`` seconds of pts, so a viewer joins within
  that time; files leave it to the encoder (``gop_s`` None).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np
from av.video.frame import PictureType

MAX_FPS_FOR_KEYINT = 60  # x264's own keyint ceiling; keyframes come from gop_s (by pts)


@dataclass(frozen=True)
class EncodeSettings:
    """How frames become H.264 (defaults: a live stream).

    Attributes:
        codec: FFmpeg encoder name.
        preset, tune: x264 speed/quality preset; tune "" for none (zerolatency for live: no
            frame delay, no B-frames).
        bitrate_kbps: average bitrate; None for constant quality ``crf`` (lower: better, bigger).
        gop_s: seconds between forced keyframes, counted on the frames' pts: a viewer joins at
            most this late, and a larger value saves bitrate. None: the encoder chooses (files).
        threads: encoder threads, 0 for FFmpeg's choice; None: FFmpeg's default threading.
        odd_size: ``pad`` (one edge row/column, stays 4:2:0) or ``yuv444p`` (exact size).
    """

    codec: str = "libx264"
    preset: str = "ultrafast"
    tune: str = "zerolatency"
    bitrate_kbps: int | None = None
    crf: int = 23
    gop_s: float | None = 2.0
    threads: int | None = 0
    odd_size: Literal["pad", "yuv444p"] = "pad"
    keep_metadata: bool = True  # files: the input's non-identifying tags (io/files.KEPT_TAGS)

    def __post_init__(self) -> None:
        if self.gop_s is not None and not self.gop_s > 0:
            raise ValueError(f"gop_s must be > 0 or None, got {self.gop_s}")
        if self.bitrate_kbps is not None and self.bitrate_kbps <= 0:
            raise ValueError(f"bitrate_kbps must be > 0 or None, got {self.bitrate_kbps}")
        if self.odd_size not in ("pad", "yuv444p"):
            raise ValueError(f"odd_size must be pad or yuv444p, got {self.odd_size!r}")

    @classmethod
    def for_files(
        cls,
        codec: str = "libx264",
        crf: int = 20,
        preset: str = "veryfast",
        keep_metadata: bool = True,
    ) -> EncodeSettings:
        """A `blur` output: constant quality, the encoder's own keyframes, odd sizes kept."""
        return cls(
            codec=codec, preset=preset, tune="", crf=crf, gop_s=None, threads=None,
            odd_size="yuv444p", keep_metadata=keep_metadata,
        )  # fmt: skip


LIVE = EncodeSettings()
RECORDING = EncodeSettings(preset="veryfast", tune="")
FILE_OUTPUT = EncodeSettings.for_files()


class Encoder:
    """One video stream of an output container, encoding RGB images at given pts."""

    def __init__(
        self,
        container: Any,
        settings: EncodeSettings,
        size_wh: tuple[int, int],
        rate: Fraction,
        time_base: Fraction,
    ):
        w, h = size_wh
        even = w % 2 == 0 and h % 2 == 0
        if settings.odd_size == "pad":
            self.pad = (h % 2, w % 2)
            self.pix_fmt = "yuv420p"
        else:
            self.pad = (0, 0)
            self.pix_fmt = "yuv420p" if even else "yuv444p"
        self.time_base = time_base
        self.stream = stream = container.add_stream(settings.codec, rate=rate)
        stream.width, stream.height = w + self.pad[1], h + self.pad[0]
        stream.pix_fmt = self.pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if settings.threads is None:
            stream.thread_type = "AUTO"
        else:
            stream.codec_context.thread_count = settings.threads
        stream.options = _options(settings)
        if settings.bitrate_kbps is not None:
            stream.codec_context.bit_rate = settings.bitrate_kbps * 1000
        self.gop_pts = None if settings.gop_s is None else round(settings.gop_s / time_base)
        self.last_key: int | None = None

    def encode(self, image: np.ndarray, pts: int) -> list[av.Packet]:
        """Encode one RGB image (the stream's size before padding) at ``pts`` (in time_base)."""
        if any(self.pad):
            image = np.pad(image, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(image, format="rgb24")
        if self.gop_pts is not None:
            # Converted here, not by the encoder, so the forced picture type survives it.
            vf = vf.reformat(format=self.pix_fmt)
            if self.last_key is None or pts - self.last_key >= self.gop_pts:
                vf.pict_type = PictureType.I
                self.last_key = pts
        vf.pts = pts
        vf.time_base = self.time_base
        return self.stream.encode(vf)

    def flush(self) -> list[av.Packet]:
        return self.stream.encode(None)


def _options(settings: EncodeSettings) -> dict[str, str]:
    options: dict[str, str] = {}
    if settings.codec.startswith("libx26"):
        options["preset"] = settings.preset
        if settings.tune:
            options["tune"] = settings.tune
        if settings.gop_s is not None:
            options["forced-idr"] = "1"  # a forced keyframe is an IDR a viewer can join at
        if settings.bitrate_kbps is None:
            options["crf"] = str(settings.crf)
    if settings.gop_s is not None:
        options["g"] = str(max(1, round(settings.gop_s * MAX_FPS_FOR_KEYINT)))
    if settings.bitrate_kbps is not None:
        options["maxrate"] = f"{settings.bitrate_kbps}k"
        options["bufsize"] = f"{2 * settings.bitrate_kbps}k"
    return options
