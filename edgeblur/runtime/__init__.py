"""Runtimes execute a network; they know nothing of what the network detects."""

from edgeblur.runtime.base import Runtime, RuntimeSettings

__all__ = ["Runtime", "RuntimeSettings"]
