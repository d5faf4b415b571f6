"""The operator console at ``/``: one page, rendered here from /status, kept live by console.js.

The first paint is complete HTML (a grid of camera tiles with their state, rates, drops, last
error and outputs), so the page reads without JavaScript; console.js then polls /status and
updates the same elements in place. Every value is escaped here and written with
``textContent`` there, and the page's Content-Security-Policy (http.py) allows only its own
script: a camera name or an error text cannot become markup. The assets are package data
(edgeblur/data/console/): the box may be offline, so nothing is fetched from elsewhere.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from typing import Any

# URL path → (file under data/console, Content-Type)
ASSETS = {
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),  # browsers ask for it unprompted
}


@functools.cache
def asset(path: str) -> tuple[bytes, str]:
    """(bytes, Content-Type) of one of ``ASSETS``."""
    name, content_type = ASSETS[path]
    return (resources.files("edgeblur") / "data" / "console" / name).read_bytes(), content_type


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    return f"{value:.{digits}f}{unit}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "–"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def dropped_text(dropped: Any) -> str:
    """'dropped_late 3, overrun 1', or 'none' (console.js writes the same)."""
    if not isinstance(dropped, dict):
        return "–"
    parts = [f"{k} {v}" for k, v in sorted(dropped.items()) if v]
    return ", ".join(parts) or "none"


def outputs_text(outputs: Any) -> str:
    if not isinstance(outputs, dict):
        return "–"
    parts = [f"{k}: {v}" if k != "preview" else "preview" for k, v in outputs.items() if v]
    return "; ".join(parts) or "none"


def state_class(state: Any) -> str:
    """A CSS class from a state string: letters and dashes only, whatever the string was."""
    slug = "".join(c if c.isalnum() else "-" for c in str(state or "unknown").lower())
    return "state-" + slug[:32]


def _tile(cam: dict, previews: bool) -> str:
    name = str(cam.get("name", "?"))
    n = _e(name)
    state = cam.get("state") or ("disabled" if cam.get("enabled") is False else "unknown")
    seq = cam.get("preview_seq") or 0
    if previews and seq:
        image = (
            f'<img class="preview" alt="live preview of {n}" '
            f'src="/preview/{n}.jpg?seq={int(seq)}" data-seq="{int(seq)}">'
        )
    else:
        image = '<div class="preview empty" data-seq="0">no preview yet</div>'
    live = f'<noscript><a href="/preview/{n}.mjpg">live stream</a></noscript>' if previews else ""
    rows = [
        ("fps in", "fps_in", _num(cam.get("fps_in"))),
        ("fps out", "fps_out", _num(cam.get("fps_out"))),
        ("latency p95", "latency_p95_ms", _num(cam.get("latency_p95_ms"), 0, " ms")),
        ("frames in", "frames_in", _num(cam.get("frames_in"), 0)),
        ("dropped", "dropped", dropped_text(cam.get("dropped"))),
        ("reconnects", "reconnects", _num(cam.get("reconnects"), 0)),
        ("last error", "last_error", cam.get("last_error") or "none"),
        ("outputs", "outputs", outputs_text(cam.get("outputs"))),
    ]
    dl = "".join(
        f'<dt>{_e(label)}</dt><dd data-field="{key}">{_e(text)}</dd>' for label, key, text in rows
    )
    return (
        f'<section class="camera" data-camera="{n}">'
        f'<h2><span class="name">{n}</span> '
        f'<span class="state {state_class(state)}" data-field="state">{_e(state)}</span></h2>'
        f'<div class="frame">{image}{live}</div><dl>{dl}</dl></section>'
    )


def render(status: dict, *, previews: bool = True) -> str:
    """The whole console page from a (scrubbed) /status dict."""
    cams = [c for c in status.get("cameras", []) if isinstance(c, dict)]
    tiles = "\n".join(_tile(c, previews) for c in cams) or '<p class="none">No cameras.</p>'
    # Each runtime entry names its model ("centerface: onnxruntime-cpu fp32").
    runtimes = [
        ", ".join(map(str, g.get("runtime") or [])) or str(g.get("group"))
        for g in status.get("inference", [])
        if isinstance(g, dict)
    ]
    error = status.get("error")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeblur console</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/console.css">
<script src="/console.js" defer></script>
</head><body data-previews="{"1" if previews else "0"}">
<header>
<h1>edgeblur <span id="version">{_e(status.get("version", ""))}</span></h1>
<dl class="summary">
<dt>uptime</dt><dd id="uptime">{_e(_duration(status.get("uptime_s")))}</dd>
<dt>detectors</dt><dd id="runtimes">{_e("; ".join(runtimes) or "–")}</dd>
<dt>updated</dt><dd id="updated">at page load</dd>
</dl>
<nav><a href="/status">/status</a> <a href="/metrics">/metrics</a> \
<a href="/readyz">/readyz</a> <a href="/healthz">/healthz</a></nav>
</header>
<p id="error" class="error"{"" if error else " hidden"}>{_e(error)}</p>
<main id="cameras">
{tiles}
</main>
</body></html>
"""
