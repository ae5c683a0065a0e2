"""The one stop-signal path: SIGTERM and SIGHUP unwind like Ctrl-C (`Stopped`), so every `finally` cleans up.

The command line installs it for the whole run (`install`); a block that must clean up
even when run without the command line (a build step's container) takes it for its own
duration (`handled`); a block that must not be cut short ignores them (`ignored`).
Only the main thread can set signal handlers: elsewhere these change nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType

from rk3576_build.core.errors import Stopped, raise_stopped

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None

__all__ = ["STOP_SIGNALS", "Stopped", "describe", "exit_code", "handled", "ignored", "install", "signum_of"]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """For the rest of the process: the stop signals raise `Stopped` (the command line's entry)."""
    if _main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, raise_stopped)


@contextmanager
def handled(handler: Handler = raise_stopped, signals: Iterable[int] = STOP_SIGNALS) -> Iterator[None]:
    """Inside the block `signals` go to `handler` (default: raise `Stopped`); the previous handlers come back."""
    if not _main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def ignored() -> AbstractContextManager[None]:
    """A block no stop signal and no Ctrl-C may cut short (e.g. releasing a shared board)."""
    return handled(signal.SIG_IGN, (*STOP_SIGNALS, signal.SIGINT))


def signum_of(exc: KeyboardInterrupt) -> int:
    """Which signal stopped the run: `Stopped` says; a plain KeyboardInterrupt is Ctrl-C (SIGINT)."""
    return exc.signum if isinstance(exc, Stopped) else signal.SIGINT


def exit_code(exc: KeyboardInterrupt) -> int:
    """The exit code of a run stopped by a signal: 128 + the signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
    return 128 + signum_of(exc)


def describe(exc: KeyboardInterrupt) -> str:
    """'interrupted' for Ctrl-C, else 'stopped by SIGTERM' (or SIGHUP)."""
    signum = signum_of(exc)
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
