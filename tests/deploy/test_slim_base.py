"""The images' ``models`` stage on a slim Debian base: the plate export runs without libGL.

Both Dockerfiles run ``edgeblur models pull`` on ``python:3.11-slim-bookworm``, which has no
libGL, glib or X libraries. The GUI build of OpenCV that ultralytics asks for needs all three,
so the tools venv swaps it for opencv-python-headless (edgeblur/convert/toolenv.py). Without
Docker, this test proves the swap the way the stage would: it makes a Debian bookworm root with
``debootstrap --variant=minbase`` plus Debian's python3 (what a slim image holds: libc, the C++
runtime, Python's own libraries, nothing graphical), checks that root really lacks libGL and
glib, and runs the real ``edgeblur models pull plate`` with its tools interpreter inside that
root (chroot, in a private mount namespace that sees only the tools' packages and the
conversion's work files). The converted file must have the manifest's sha256.

Cost: the root is built once (about 30-60 s and 240 MB, apt from the mirror this machine's apt
uses) and kept in ``<cache>/debootstrap``; later runs take the export's few seconds. Needs root
(debootstrap, chroot, mount); skipped, saying why, where debootstrap or root is missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from edgeblur import assets, convert
from edgeblur.convert import toolenv

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Read before anything points EDGEBLUR_CACHE elsewhere.
REAL_CACHE = assets.cache_dir()
ROOT_DIR = REAL_CACHE / "debootstrap" / f"{SUITE}-minbase-python3"
GRAPHICAL = (
    "libGL.so.1",
    "libglib-2.0.so.0",
    "libgthread-2.0.so.0",
    "libX11.so.6",
    "libxcb.so.1",
)


def _why_not() -> str | None:
    for tool in ("debootstrap", "chroot", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install debootstrap)"
    if os.geteuid() != 0:
        return "debootstrap and chroot need root"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses for ``SUITE`` (deb822 or one-line sources)."""
    sources = [*Path("/etc/apt/sources.list.d").glob("*.sources")]
    for path in sources:
        for stanza in path.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
    lists = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]
    for path in lists:
        if path.is_file():
            for m in re.finditer(
                rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", path.read_text(), re.M
            ):
                return m.group(1)
    return DEFAULT_MIRROR


@pytest.fixture(scope="session")
def slim_root() -> Path:
    """A bookworm minbase root with python3, built once and kept in the cache."""
    marker = ROOT_DIR / ".edgeblur-complete"
    if marker.exists():
        return ROOT_DIR
    ROOT_DIR.parent.mkdir(parents=True, exist_ok=True)
    building = ROOT_DIR.with_name(ROOT_DIR.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3",
            SUITE,
            str(building),
            apt_mirror(),
        ],
        capture_output=True,
        text=True,
        timeout=900,  # a hang, not a slow mirror: it takes under a minute here
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    shutil.rmtree(ROOT_DIR, ignore_errors=True)
    building.rename(ROOT_DIR)
    marker.touch()
    return ROOT_DIR


def chroot_python(root: Path, site: Path, script_dir: Path, work: Path, out: Path) -> Path:
    """An executable that runs Python inside ``root`` with the tools' ``site`` packages.

    The converter calls it as it would any EDGEBLUR_TOOLS_PYTHON: script path, source and
    destination (all under ``script_dir`` and ``work``, bind-mounted at the same paths), from a
    working directory under ``work``.
    """
    binds = " ".join(f'"{p}"' for p in (site, script_dir, work))
    out.write_text(
        f"""#!/bin/sh
exec unshare --mount --propagation private sh -c '
set -e
root="$1"; cwd="$2"; shift 2
for d in {binds}; do mkdir -p "$root$d"; mount --bind "$d" "$root$d"; done
mount -t proc proc "$root/proc"
exec chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp \\
    PYTHONPATH="{site}" YOLO_OFFLINE=1 YOLO_VERBOSE=False \\
    YOLO_CONFIG_DIR="$cwd/yolo-config" MPLCONFIGDIR="$cwd/matplotlib" \\
    /bin/sh -c "cd \\"\\$0\\" && exec /usr/bin/python3 -s \\"\\$@\\"" "$cwd" "$@"
' sh "{root}" "$PWD" "$@"
"""
    )
    out.chmod(0o755)
    return out


def test_slim_root_has_no_graphical_libraries(slim_root: Path) -> None:
    """Otherwise the export test below would prove nothing."""
    present = [p for name in GRAPHICAL for p in slim_root.glob(f"usr/lib/*/{name}*") if p.exists()]
    assert present == []
    assert (slim_root / "usr/bin/python3").exists()


def test_plate_export_runs_in_a_slim_root(
    slim_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python, _ = toolenv.tools_python(REAL_CACHE / "tools-venv", convert.ULTRALYTICS_PINS, print)
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    )
    # The tools' Python is this machine's; the root's is Debian's: the same minor version.
    root_version = next((slim_root / "usr/lib").glob("python3.*")).name
    assert root_version == f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert sysconfig.get_python_version() == root_version.removeprefix("python")
    cached = tmp_path / "cache"
    monkeypatch.setenv("EDGEBLUR_CACHE", str(cached))
    work = Path(tempfile.gettempdir())
    wrapper = chroot_python(
        slim_root, site, Path(convert.__file__).parent, work, tmp_path / "slim-python"
    )
    monkeypatch.setenv(toolenv.TOOLS_PYTHON_ENV, str(wrapper))
    lines: list[str] = []
    (path,) = assets.pull(["plate"], force=True, progress=lines.append)
    spec = assets.load_manifest()["yolov8n-plate"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.converted_sha256, lines
    assert any("converted (ultralytics_export)" in line for line in lines), lines
