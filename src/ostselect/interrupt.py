"""Stopping a long run on Ctrl-C or SIGTERM without losing the write in flight.

A shard is written atomically (temp file, then `os.replace`), so an interrupt can never leave a
half-written shard; but one landing between a shard's rejects file and its rows would throw away
minutes of finished work. `deferred_signals` holds SIGINT/SIGTERM for the few milliseconds of such
a write and delivers them right after; `stop_on_signals` turns both into `Interrupted`, so a
command can say what was kept and how to continue (SIGTERM's default would kill it silently).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130  # what shells report for a job stopped by Ctrl-C (128 + SIGINT)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; a `KeyboardInterrupt`, so code that expects Ctrl-C still works."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)


def _in_main_thread() -> bool:
    # Python runs signal handlers, and lets them be installed, in the main thread only.
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_on_signals(signums: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM raise `Interrupted` (a no-op outside the main thread)."""
    if not _in_main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def deferred_signals(signums: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then hand the first one to the handler that was
    in place (ours, Python's KeyboardInterrupt, or the default action). For writes that must
    finish once begun; a no-op outside the main thread."""
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    old = {s: signal.signal(s, hold) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            _deliver(pending[0], old[pending[0]])


def _deliver(signum: int, handler: Any) -> None:
    """Do what `handler` (as returned by `signal.signal`) would have done with `signum`."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # handler restored: the default action (e.g. terminate)
    # SIG_IGN, or None (a handler not installed from Python): nothing to do
