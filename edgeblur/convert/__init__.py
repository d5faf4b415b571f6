"""Turn a pinned source file into the runnable ONNX file the cache holds.

Each conversion is a standalone script in this folder that imports only its tools (onnx, torch,
ultralytics), run as a subprocess by the tools interpreter (``toolenv``), never imported here:
the product's own environment stays free of those packages. The pins below are the versions the
``converted_sha256`` values in the manifest were measured with.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgeblur.errors import ModelFetchError

ONNX_PINS = ("onnx==1.23.2",)
# torch==2.13.0 resolves to the CPU wheel on this project's machines (a local wheel; PyPI's
# default build pulls gigabytes of CUDA libraries that an export does not use). torchvision is
# pinned to the release built for that torch. omegaconf is needed to unpickle the checkpoint.
# opencv-python-headless replaces the opencv-python that ultralytics asks for (toolenv swaps
# them): the GUI build's Qt needs libGL and glib, which python:*-slim images and servers lack,
# and the export never opens a window.
ULTRALYTICS_PINS = (
    "torch==2.13.0",
    "torchvision==0.28.0",
    "ultralytics==8.4.190",
    "omegaconf==2.4.0",
    "onnx==1.23.2",
    "onnxslim==0.1.98",
    "opencv-python-headless==5.1.0.95",
)
# An export takes ~3 s; ten minutes means something hangs, not a slow machine.
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Converter:
    """A conversion script and the pins its interpreter needs."""

    script: str
    requirements: tuple[str, ...]
    env: Mapping[str, str]


CONVERTERS: dict[str, Converter] = {
    "centerface_patch": Converter("centerface_patch.py", ONNX_PINS, {}),
    "ultralytics_export": Converter(
        "ultralytics_export.py", ULTRALYTICS_PINS, {"YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
    ),
}
METHODS = ("none", *CONVERTERS)


def requirements_for(methods: Iterable[str]) -> list[str]:
    """The pins that cover every method in ``methods``, in a stable order, without repeats."""
    pins: dict[str, None] = {}
    for method in methods:
        if method != "none":
            pins.update(dict.fromkeys(CONVERTERS[method].requirements))
    return list(pins)


def run(
    method: str,
    python: Path,
    src: Path,
    dest: Path,
    options: Mapping[str, object],
    isolated: bool,
) -> str:
    """Convert ``src`` into ``dest`` with ``python``; returns the script's summary line.

    ``src`` and ``dest`` must lie in a throwaway directory: the scripts and the tools they call
    write beside them (Ultralytics writes its .onnx next to the .pt and a settings folder). With
    ``isolated`` (edgeblur's own venv) PYTHONPATH is dropped, so nothing outside the venv shadows
    the pinned tools; a user's EDGEBLUR_TOOLS_PYTHON keeps the environment it was given.
    """
    converter = CONVERTERS[method]
    work = dest.parent
    env = dict(os.environ)
    if isolated:
        env.pop("PYTHONPATH", None)
    env.update(converter.env)
    # Keep the tools' settings and caches out of the user's home; they die with the work dir.
    env["YOLO_CONFIG_DIR"] = str(work / "yolo-config")
    env["MPLCONFIGDIR"] = str(work / "matplotlib")
    script = Path(__file__).with_name(converter.script)
    args = [str(python), str(script), str(src), str(dest)]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    try:
        result = subprocess.run(
            args, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelFetchError(
            f"Converting {src.name} ({method}) took over {TIMEOUT_S:.0f} s and was stopped; "
            "run `edgeblur models pull` again, and report it if it hangs again."
        ) from exc
    if result.returncode != 0 or not dest.exists():
        reason = _last_line(result.stderr) or _last_line(result.stdout) or "no output"
        if isolated:
            fix = f"delete {python.parent.parent} and pull again to rebuild the tools"
        else:
            fix = (
                f"check that it has {' '.join(converter.requirements)}, or unset "
                "EDGEBLUR_TOOLS_PYTHON to let edgeblur build its own tools virtualenv"
            )
        raise ModelFetchError(
            f"Converting {src.name} ({method}) with {python} failed ({reason}); {fix}."
        )
    return _last_line(result.stdout)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
