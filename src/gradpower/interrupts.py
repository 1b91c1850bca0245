"""Ctrl-C, SIGTERM and SIGUSR2 (SLURM's warning before a time limit or a preemption) at safe points: start-up
stops cleanly, training stops at a step boundary.

Raising ``KeyboardInterrupt`` at an arbitrary byte of an import or a
checkpoint write leaves half-initialised modules or files behind, and some
libraries swallow it. So the first SIGINT/SIGTERM/SIGUSR2 only records the request
(:func:`deferred`); the program checks it where stopping is safe
(:func:`raise_if_requested` during start-up, the training loop between
steps, where it also writes a checkpoint). A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_requested: list[str] = []
#: The signals that ask a run to stop at its next safe point.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def _record(signum: int, frame: Any) -> None:
    _requested.append(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Record the :data:`STOP_SIGNALS` instead of acting on them inside the block (main thread only).

    Nested blocks share the outer block's pending request; leaving a block
    restores the handlers it found.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    outer = previous[signal.SIGINT] is _record
    if not outer:
        _requested.clear()
    for sig in previous:
        signal.signal(sig, _record)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not outer:
            _requested.clear()


def requested() -> str | None:
    """The name of the first signal received since :func:`defer`, if any."""
    return _requested[0] if _requested else None


def raise_if_requested() -> None:
    """At a safe point of start-up: stop now if a signal arrived."""
    if _requested:
        raise KeyboardInterrupt(_requested[0])
