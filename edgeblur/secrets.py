"""Camera URLs carry passwords: a type that hides them, and a log filter as the last defence.

``SecretUrl`` prints as ``rtsp://***@host/path``; only io/ (which must connect) calls
``reveal()``. Logs, metrics labels and /status only ever see the redacted form.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")


def redact(text: str) -> str:
    """Replace the ``user:pass@`` of every URL inside ``text`` with ``***@``.

    The userinfo is cut up to the LAST '@' of the whitespace-separated word, so passwords that
    contain '@', ':' or '/' (raw or percent-encoded) are hidden whole; hiding a little more than
    needed is the safe direction.
    """
    out = []
    for word in re.split(r"(\s+)", text):
        m = _SCHEME.search(word)
        if m and "@" in word[m.end() :]:
            at = word.rindex("@")
            word = word[: m.end()] + "***" + word[at:]
        out.append(word)
    return "".join(out)


class SecretUrl:
    """A URL whose credentials never show in str(), repr(), logs or JSON."""

    __slots__ = ("_url",)

    def __init__(self, url: str):
        self._url = url

    def reveal(self) -> str:
        """The real URL, for the one call that connects. Never log the result."""
        return self._url

    @property
    def scheme(self) -> str:
        return self._url.split("://", 1)[0].lower() if "://" in self._url else ""

    @property
    def has_credentials(self) -> bool:
        return redact(self._url) != self._url

    def __str__(self) -> str:
        return redact(self._url)

    def __repr__(self) -> str:
        return f"SecretUrl({redact(self._url)!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SecretUrl) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)


class RedactingFilter(logging.Filter):
    """Rewrites every record's message with credentials removed; install on root handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks of FFmpeg errors quote the URL; keep the type, drop the text.
            exc = record.exc_info[1]
            record.exc_text = f"{type(exc).__name__}: {redact(str(exc))}"
            record.exc_info = None
        return True


def install_log_redaction() -> None:
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
