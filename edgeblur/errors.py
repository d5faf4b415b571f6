"""Errors a user can cause. Each message is one sentence: the thing, the problem, the fix.

``cli.py`` prints these to stderr and exits 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class EdgeblurError(Exception):
    """Base of every user-facing error."""

    exit_code = 2


class ConfigError(EdgeblurError):
    """A configuration file or option is invalid."""


class ModelMissing(EdgeblurError):
    """A model file is not in the cache or not where the config points."""


class ModelFetchError(EdgeblurError):
    """A pinned model package could not be downloaded, verified or converted."""


class SourceUnavailable(EdgeblurError):
    """An input file, folder or camera cannot be opened or decoded."""


class UnsupportedInput(EdgeblurError):
    """An input exists but is not a format edgeblur can read."""


class OutputExists(EdgeblurError):
    """An output would overwrite an existing file without --force."""


class OutputUnwritable(EdgeblurError):
    """An output cannot be written: a read-only or full disk, a missing permission."""
