"""SIGINT, SIGTERM and SIGHUP: how every command stops, installed before anything slow runs.

Until a command says it can stop gracefully, a signal raises ``Interrupted`` in the main thread:
start-up (imports, config, model loading, engine builds) is abandoned at once, and whatever was
being written is removed by the ``finally`` blocks on the way out (``atomic_path``). ``serve``
switches to ``on_signal(callback)`` once its threads run, so a signal then starts its orderly
stop. The exit code is 128 + the signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; a KeyboardInterrupt, so every cleanup that handles Ctrl-C runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install() -> None:
    """Signals raise ``Interrupted`` from now on (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _raise)


def on_signal(callback: Callable[[int], None]) -> None:
    """Signals call ``callback(signum)`` instead of raising: the command stops on its own."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        callback(signum)

    for sig in SIGNALS:
        signal.signal(sig, handler)


def ignore() -> None:
    """Signals are ignored from now on: the process is already on its way out."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
