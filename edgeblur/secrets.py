"""Camera URLs carry passwords: a type that hides them, and a log filter as the last defence.

``SecretUrl`` prints as ``rtsp://***@host/path?channel=1&password=***``; only io/ (which must
connect) calls ``reveal()``. Config dumps, logs, metrics labels and /status only ever see the
redacted form, made from the URL itself, never by searching rendered text.

Where a secret is, is decided by one rule, used both to hide and to connect:

- userinfo: everything between ``scheme://`` and the LAST ``@`` of the URL. A password may hold
  any character (``@ : / ? #``, spaces, unicode) raw, as ``${CAM_PASS}`` substitutes it. The
  price: an ``@`` in a path or query must be written ``%40``, or the text before it is taken
  for credentials (hidden, and sent as such: the safe direction). ``reveal()`` percent-encodes the
  userinfo so FFmpeg, which ends the host at the first ``/ ? #`` and URL-decodes the credentials,
  splits the URL the same way; ``%XX`` already in the userinfo is kept (read as an escape, as by
  FFmpeg), so a literal ``%`` followed by two hex digits must be written ``%25``.
- query: from the first ``?``, the value of the first parameter whose name contains one of
  ``SECRET_KEY_PARTS`` and everything after it is hidden. A raw password may hold ``&`` and
  ``=``, so nothing after a secret value can be shown as a separate parameter safely. ``user``
  counts: it is half of the credential, and host, port and path already say which camera it is.

``redact(text)`` applies the same rule to free text (FFmpeg messages quote URLs raw) in one pass
without regular expressions: linear time whatever the input (a 1 MB word included).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

# Substrings of a query parameter name (lower-cased, percent-decoded) that make its value secret.
SECRET_KEY_PARTS = ("pass", "pwd", "token", "key", "auth", "secret", "user", "sig", "cred")
MASK = "***"

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_UNRESERVED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:")
_HEX = frozenset("0123456789abcdefABCDEF")


def is_secret_key(key: str) -> bool:
    """Whether a query parameter named ``key`` holds a secret (percent-decoded, any case)."""
    k = (unquote(key) if "%" in key else key).lower()
    return any(part in k for part in SECRET_KEY_PARTS)


def _spans(s: str, lo: int, hi: int, text_mode: bool) -> list[tuple[int, int]]:
    """Secret spans of the URL whose authority starts at ``lo`` (just after ``://``), up to ``hi``.

    Each character between lo and hi is looked at a bounded number of times: linear.
    """
    out = []
    at = s.rfind("@", lo, hi)
    if at > lo:
        out.append((lo, at))
    q = s.find("?", lo, hi)
    if q != -1:
        # Jump from '=' to '=' (C-level finds): a secret needs one; its name runs back to the
        # previous & or ; (both separate parameters in the wild). Each character is scanned a
        # bounded number of times, so this stays linear whatever the input.
        i = q + 1
        while i < hi:
            eq = s.find("=", i, hi)
            if eq == -1:
                break
            name = max(s.rfind("&", i, eq), s.rfind(";", i, eq), i - 1) + 1
            if is_secret_key(s[name:eq]):
                v = eq + 1
                if text_mode and _already_masked(s, v, hi):
                    i = v + len(MASK)
                    continue
                if v < hi:
                    out.append((v, hi))
                break
            i = eq + 1
    return out


def _already_masked(s: str, v: int, hi: int) -> bool:
    # Our own rendering ends a URL with "=***"; in a log line it is followed by a space or the
    # end of the line, and the text after it is the message, not a secret.
    end = v + len(MASK)
    return s.startswith(MASK, v) and (end >= hi or s[end].isspace())


def _apply(s: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return s
    spans.sort()
    out, pos = [], 0
    for a, b in spans:
        if b <= pos:
            continue
        a = max(a, pos)
        out.append(s[pos:a])
        out.append(MASK)
        pos = b
    out.append(s[pos:])
    return "".join(out)


def _scheme_end(url: str) -> int:
    """Index just after ``scheme://``, or -1 when ``url`` does not start with a scheme."""
    i = url.find("://")
    if i <= 0 or not url[0].isascii() or not url[0].isalpha():
        return -1
    if any(c not in _SCHEME_CHARS for c in url[:i]):
        return -1
    return i + 3


def redact_url(url: str) -> str:
    """``url`` with its userinfo and secret query values replaced by ``***``."""
    lo = _scheme_end(url)
    if lo == -1:
        return url
    return _apply(url, _spans(url, lo, len(url), text_mode=False))


def redact(text: str) -> str:
    """Hide the credentials of every URL inside free ``text`` (last line of defence).

    A URL runs from its scheme to the end of its line or the next ``://``: a raw password may hold
    spaces, so the word boundary cannot end it. Hiding a little more than needed is the safe
    direction. One pass, no regular expressions: linear in ``len(text)``.
    """
    spans: list[tuple[int, int]] = []
    n = len(text)
    floor = 0  # no scheme may start before the previous URL's '://'
    idx = text.find("://")
    while idx != -1:
        start = idx
        while start > floor and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < idx and not text[start].isalpha():
            start += 1
        nxt = text.find("://", idx + 3)
        eol = text.find("\n", idx + 3, n if nxt == -1 else nxt)
        hi = eol if eol != -1 else (n if nxt == -1 else nxt)
        if start < idx:
            spans.extend(_spans(text, idx + 3, hi, text_mode=True))
        floor = idx + 3
        idx = nxt
    return _apply(text, spans)


def _encode_userinfo(userinfo: str) -> str:
    out = []
    i, n = 0, len(userinfo)
    while i < n:
        c = userinfo[i]
        if c == "%" and i + 2 < n and userinfo[i + 1] in _HEX and userinfo[i + 2] in _HEX:
            out.append(userinfo[i : i + 3])
            i += 3
            continue
        if c in _UNRESERVED:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8"))
        i += 1
    return "".join(out)


class SecretUrl:
    """A URL whose credentials never show in str(), repr(), logs, config dumps or JSON.

    Usable as a pydantic field type: validated from a string, dumped as the redacted string.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str | SecretUrl):
        self._url = url._url if isinstance(url, SecretUrl) else str(url)

    def reveal(self) -> str:
        """The URL to connect to, userinfo percent-encoded. Never log the result."""
        lo = _scheme_end(self._url)
        at = self._url.rfind("@") if lo != -1 else -1
        if at <= lo:
            return self._url
        return self._url[:lo] + _encode_userinfo(self._url[lo:at]) + self._url[at:]

    def redacted(self) -> str:
        return redact_url(self._url)

    @property
    def scheme(self) -> str:
        lo = _scheme_end(self._url)
        return self._url[: lo - 3].lower() if lo != -1 else ""

    @property
    def has_credentials(self) -> bool:
        return self.redacted() != self._url

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"SecretUrl({self.redacted()!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SecretUrl) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.union_schema(
                [core_schema.is_instance_schema(cls), core_schema.str_schema()]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, _schema: Any, _handler: Any) -> dict[str, Any]:
        return {"type": "string", "format": "uri"}


class _RedactedMessage:
    """A record's message, formatted and redacted only when a handler emits it (then cached)."""

    __slots__ = ("_args", "_msg", "_text")

    def __init__(self, msg: Any, args: Any):
        self._msg, self._args, self._text = msg, args, None

    def __str__(self) -> str:
        if self._text is None:
            text = str(self._msg)
            if self._args:
                text = text % self._args
            self._text = redact(text)
        return self._text


class RedactingFilter(logging.Filter):
    """Makes every record's message redacted; install on root handlers.

    Handler filters run only for records that passed the level checks, and the message is
    formatted (once) only when the formatter asks for it: a debug line that is not emitted
    costs nothing, and one that is costs one linear pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, _RedactedMessage):
            record.msg, record.args = _RedactedMessage(record.msg, record.args), None
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
