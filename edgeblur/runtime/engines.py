"""The TensorRT engine cache (``edgeblur engines build|list`` in the CLI shows and fills it).

A TensorRT engine runs only on the GPU model, TensorRT version and precision it was built for,
and only for the model file and input shapes it was built from; building one takes from a
minute on a server GPU to many minutes on a Jetson. So each engine is built once and kept under
``<cache>/engines`` (``runtime.engine_dir`` overrides it), named by a digest of everything it
depends on (``EngineKey``); the caller names the folder (``build.engine_dir``): this module
knows no config. Next to each ``NAME.engine`` a ``NAME.engine.json`` sidecar records that key,
the file's size, first bytes and sha256. A file whose sidecar is missing, unreadable
or disagrees with the file or the key is rebuilt with a log line, never handed to TensorRT:
deserializing a truncated or foreign engine can crash the process instead of raising.

Writes go to a temporary file in the same folder, are fsynced and then renamed over the target,
so a reader never sees half an engine; builds of one engine are serialized with a lock file, so
two processes sharing the folder (pods on one volume) build it once. Nothing here imports
TensorRT: the cache works, and is tested, on CPU-only machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeblur.errors import ConfigError
from edgeblur.fs import write_atomic

log = logging.getLogger(__name__)

# Bump when the key, the sidecar or how profiles are derived from the key changes: every cached
# engine then reads as stale and is rebuilt.
FORMAT = 1
ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
HEADER_BYTES = 32


@dataclass(frozen=True, slots=True)
class EngineKey:
    """Everything an engine depends on; any change means another engine.

    Attributes:
        model_sha256: of the ONNX file the engine is built from.
        gpu_name: as CUDA reports it, e.g. ``NVIDIA Orin`` or ``NVIDIA H100 80GB HBM3``.
        compute_capability: ``major.minor``, e.g. ``8.7``.
        tensorrt_version: the full version string; engines do not move between versions.
        precision: ``fp16``, ``fp32`` or ``int8``.
        max_batch: the optimization profile covers batches 1..max_batch.
        input_wh_max: the largest (width, height) of the profile.
        calibration_sha256: of the INT8 calibration cache, for ``int8``.
    """

    model_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    max_batch: int
    input_wh_max: tuple[int, int]
    calibration_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_wh_max"] = list(self.input_wh_max)
        data["format"] = FORMAT
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        """Raises KeyError, TypeError or ValueError for a record that is not a key."""
        if data.get("format") != FORMAT:
            raise ValueError(f"key format {data.get('format')!r}, expected {FORMAT}")
        values = {f.name: data[f.name] for f in fields(cls)}
        w, h = values["input_wh_max"]
        values["input_wh_max"] = (int(w), int(h))
        values["max_batch"] = int(values["max_batch"])
        return cls(**values)

    @property
    def digest(self) -> str:
        """16 hex digits of the sha256 of the key: part of the file name."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: EngineKey) -> list[str]:
        """``part: theirs != ours`` for every part that differs, for log lines."""
        return [
            f"{f.name}: {getattr(other, f.name)} != {getattr(self, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True, slots=True)
class EngineEntry:
    """One cached engine as ``list_engines`` sees it; ``problem`` is None when it is intact."""

    path: Path
    key: EngineKey | None
    size: int
    built_at: str | None
    problem: str | None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes, where the OS has ``fcntl``."""
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic writes still keep every file whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


class EngineCache:
    """Engines in one folder, each with its JSON sidecar. Safe across threads and processes."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()

    def path_for(self, name: str, key: EngineKey) -> Path:
        """``<root>/<model>-<precision>-<digest>.engine``: readable, unique per key."""
        return self.root / f"{name}-{key.precision}-{key.digest}{ENGINE_SUFFIX}"

    def check(self, path: Path, key: EngineKey | None) -> tuple[bytes | None, str | None]:
        """(engine bytes, None) if ``path`` is intact and was built for ``key``, else
        (None, why not). ``key`` None checks integrity only. A missing engine is (None, None)."""
        side = sidecar_path(path)
        if not path.is_file():
            return None, ("sidecar without its engine" if side.is_file() else None)
        try:
            record = json.loads(side.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, "no sidecar (an interrupted build, or a file copied by hand)"
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return None, f"sidecar unreadable ({type(exc).__name__})"
        found = record.get("format") if isinstance(record, dict) else None
        if found != FORMAT:
            return None, f"sidecar format {found!r}, expected {FORMAT}"
        try:
            recorded = EngineKey.from_dict(record["key"])
        except (KeyError, TypeError, ValueError) as exc:
            return None, f"sidecar key unreadable ({type(exc).__name__}: {exc})"
        if key is not None and recorded != key:
            return None, "built for another key (" + "; ".join(key.differences(recorded)) + ")"
        data = path.read_bytes()
        if len(data) != record.get("size"):
            return (
                None,
                f"file is {len(data)} bytes, sidecar says {record.get('size')} (truncated?)",
            )
        if data[:HEADER_BYTES].hex() != record.get("header"):
            return None, "file header differs from the one recorded at build time"
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            return None, "sha256 differs from the one recorded at build time (corrupt file)"
        return data, None

    def store(self, path: Path, key: EngineKey, data: bytes, build_s: float) -> None:
        """Engine first, sidecar second: a crash between them leaves a pair that fails
        ``check`` and is rebuilt, never one that passes."""
        write_atomic(path, data)
        record = {
            "format": FORMAT,
            "key": key.as_dict(),
            "size": len(data),
            "header": data[:HEADER_BYTES].hex(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "build_s": round(build_s, 1),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_atomic(sidecar_path(path), (json.dumps(record, indent=2) + "\n").encode())

    def discard(self, path: Path, reason: str) -> None:
        """Remove an engine that looked intact but TensorRT refused, so it is built again."""
        log.warning("TensorRT engine %s is unusable (%s); removing it", path, reason)
        for p in (sidecar_path(path), path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def get_or_build(
        self, name: str, key: EngineKey, build: Callable[[], bytes], force: bool = False
    ) -> tuple[bytes, Path, bool]:
        """The engine for ``key``, built with ``build()`` and stored if the cache has none.

        Returns (engine bytes, its path, whether it was built now). ``build`` runs under the
        lock, so a second process waits for the first one's engine instead of building again.
        """
        path = self.path_for(name, key)
        with _locked(path.with_name(path.name + ".lock")):
            if not force:
                data, problem = self.check(path, key)
                if data is not None:
                    log.debug("%s: TensorRT engine from cache %s", name, path)
                    return data, path, False
                if problem:
                    log.warning(
                        "%s: cached TensorRT engine %s is stale or corrupt (%s); rebuilding it",
                        name,
                        path,
                        problem,
                    )
            started = time.monotonic()
            data = build()
            self.store(path, key, data, time.monotonic() - started)
        return data, path, True

    def entries(self) -> list[EngineEntry]:
        """Every engine in the folder with what its sidecar says, sorted by name."""
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.glob(f"*{ENGINE_SUFFIX}")):
            if path.name.startswith("."):
                continue  # the temporary of a write in progress (fs.atomic_path)
            _data, problem = self.check(path, None)
            try:
                record = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
                key = EngineKey.from_dict(record["key"])
                built_at = record.get("built_at")
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
                key, built_at = None, None
            out.append(EngineEntry(path, key, path.stat().st_size, built_at, problem))
        return out


def list_engines(root: Path | str) -> list[EngineEntry]:
    """The cached engines (``edgeblur engines list``); needs no GPU."""
    return EngineCache(root).entries()


def check_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable file; else a ConfigError naming ``what`` (a config key)."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; check the path.")
    return path
