"""The throwaway "tools" interpreter that runs model conversions.

Converting needs onnx, and the plate model needs torch and ultralytics as well: gigabytes that
the running product never uses. They live in a virtualenv under ``cache_dir()/tools-venv``,
created on the first pull that needs them and grown only by the pins a conversion asks for, so
pulling the face model alone installs onnx and nothing else. ``EDGEBLUR_TOOLS_PYTHON`` names an
interpreter that already has the tools (a Jetson image, an air-gapped box) and skips all of this.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from edgeblur.errors import ModelFetchError

TOOLS_PYTHON_ENV = "EDGEBLUR_TOOLS_PYTHON"
# Lists the pins installed so far, one per line: a changed pin is installed again.
MARKER = "edgeblur-tools.txt"
INSTALL_LOG = "install.log"
# A headless pin wins over the GUI twin a dependency declares (ultralytics requires
# opencv-python): pip cannot substitute one package for another, so the twin is removed after
# the install and the headless wheel reinstalled over the files they share (both own cv2/).
HEADLESS_TWINS = {"opencv-python-headless": "opencv-python"}


def venv_python(venv: Path) -> Path:
    """The interpreter inside a virtualenv, on POSIX and Windows layouts."""
    posix = venv / "bin" / "python"
    return posix if posix.exists() or os.name != "nt" else venv / "Scripts" / "python.exe"


def tools_python(
    venv: Path, requirements: Sequence[str], progress: Callable[[str], None]
) -> tuple[Path, bool]:
    """Return an interpreter with ``requirements`` and whether edgeblur manages it.

    ``EDGEBLUR_TOOLS_PYTHON`` wins and is used as it is (False). Otherwise the virtualenv at
    ``venv`` is created or completed under a lock, so two pulls at once do not both install.
    """
    override = os.environ.get(TOOLS_PYTHON_ENV)
    if override:
        python = Path(override).expanduser()
        if not python.exists():
            raise ModelFetchError(
                f"{TOOLS_PYTHON_ENV} points to {python}, which does not exist; "
                "set it to an interpreter with the conversion tools, or unset it."
            )
        return python, False

    venv.parent.mkdir(parents=True, exist_ok=True)
    with _locked(venv.parent / f".{venv.name}.lock"):
        python = venv_python(venv)
        if not _runs(python):
            _create(venv, progress)
        installed = _installed(venv)
        missing = [req for req in requirements if req not in installed]
        if missing:
            _install(venv, python, requirements, progress)
            (venv / MARKER).write_text("\n".join(sorted(installed | set(requirements))) + "\n")
    return python, True


def _runs(python: Path) -> bool:
    """A venv whose base interpreter moved or was upgraded has a dead ``python``: rebuild it."""
    if not python.exists():
        return False
    result = subprocess.run([str(python), "-c", "pass"], capture_output=True, check=False)
    return result.returncode == 0


def _installed(venv: Path) -> set[str]:
    marker = venv / MARKER
    if not marker.exists():
        return set()
    return {line.strip() for line in marker.read_text().splitlines() if line.strip()}


def _create(venv: Path, progress: Callable[[str], None]) -> None:
    import shutil

    progress(f"tools: creating a virtualenv for model conversion at {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ModelFetchError(
            f"Could not create the tools virtualenv at {venv} ({_last_line(result.stderr)}); "
            f"install Python's venv module (Debian: python3-venv) or set {TOOLS_PYTHON_ENV} "
            "to an interpreter that has the conversion tools."
        )


def _install(
    venv: Path, python: Path, requirements: Sequence[str], progress: Callable[[str], None]
) -> None:
    # All pins in one call, so pip resolves them together (torchvision must match torch).
    slow = " (a few minutes)" if any(req.startswith("torch==") for req in requirements) else ""
    progress(f"tools: installing {' '.join(requirements)} into {venv}{slow}")
    log_path = venv / INSTALL_LOG
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    with log_path.open("w") as log:
        result = subprocess.run(
            [*cmd, *requirements], stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        tail = _last_line(log_path.read_text())
        raise ModelFetchError(
            f"Installing the conversion tools into {venv} failed ({tail}); check the network "
            f"and {log_path}, or set {TOOLS_PYTHON_ENV} to an interpreter that has "
            f"{' '.join(requirements)}."
        )
    _swap_in_headless(python, requirements, log_path)


def _swap_in_headless(python: Path, requirements: Sequence[str], log_path: Path) -> None:
    """Remove the GUI twin of every headless pin in ``requirements`` and reinstall the pin."""
    for pin in requirements:
        twin = HEADLESS_TWINS.get(pin.split("==")[0])
        if twin is None:
            continue
        base = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        with log_path.open("a") as log:
            steps = (
                [*base, "uninstall", "-y", twin],
                [*base, "install", "--force-reinstall", "--no-deps", pin],
            )
            for step in steps:
                if subprocess.run(
                    step, stdout=log, stderr=subprocess.STDOUT, check=False
                ).returncode:
                    raise ModelFetchError(
                        f"Replacing {twin} by {pin} in the tools virtualenv failed "
                        f"({_last_line(log_path.read_text())}); check {log_path}, or set "
                        f"{TOOLS_PYTHON_ENV} to an interpreter that has the conversion tools."
                    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock; where fcntl is missing (Windows) concurrent pulls may race."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
