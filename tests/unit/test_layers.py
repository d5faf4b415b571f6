"""The import floors of pyproject.toml ([tool.importlinter]): imports point down, never in a
circle. ``lint-imports`` (import-linter, a dev dependency) checks them on the real package, and
on a copy with one upward import added, to show that the check would catch it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a bound on a hang, not a speed check
    )


def test_imports_point_down_and_never_in_a_circle() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_check(tmp_path: Path) -> None:
    copy = tmp_path / "edgeblur"
    shutil.copytree(ROOT / "edgeblur", copy, ignore=shutil.ignore_patterns("__pycache__"))
    engines = copy / "runtime" / "engines.py"
    engines.write_text(engines.read_text() + "\nfrom edgeblur.config import JobConfig  # noqa\n")
    done = lint(tmp_path, pythonpath=tmp_path)
    assert done.returncode != 0
    assert "edgeblur.runtime is not allowed to import edgeblur.config" in done.stdout
