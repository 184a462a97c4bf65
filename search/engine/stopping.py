"""Ctrl-C, SIGTERM and SIGHUP stop a run, even when the signal lands inside a finalizer.

SIGHUP is what a dropped ssh session sends: by default it kills the driver silently and
leaves its trials RUNNING, so it stops the run as Ctrl-C does.

Python raises KeyboardInterrupt wherever the main thread happens to be. When that is a
finalizer (a weakref callback or `__del__`, which SQLAlchemy runs often), Python prints
"Exception ignored" and drops it: the run goes on as if nothing was asked. So the request is
also remembered, and the loops call `check()` at each turn to raise it again there. Inside
the storage's SQLAlchemy the handler does not raise at all (see `DEFER_IN`).
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType


class StopSignals:
    """Within `with StopSignals() as stop:`, SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt and set
    `stop.requested`; `stop.check()` raises it again if it was dropped. Outside the main thread
    (where handlers cannot be set) it only answers `check()`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))
    # Code an exception must not tear halfway: an interrupt inside SQLAlchemy (a commit, or its
    # weakref cleanup) can leave the session broken, so the very next write, the one recording
    # the interrupt, fails. There the request is only kept; `check()` raises it a moment later.
    DEFER_IN = ("sqlalchemy.",)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = "Ctrl-C"  # of the last request; the interrupt carries it (SIGTERM, ...)
        self._previous: dict[int, object] = {}
        self._previous_hook = sys.unraisablehook

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt(self.signal_name)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signal_name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if not _inside(frame, self.DEFER_IN):
            raise KeyboardInterrupt(self.signal_name)

    def _unraisable(self, unraisable) -> None:
        # The dropped interrupt is not lost (check() raises it again), so its traceback is noise.
        if not (self.requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            self._previous_hook(unraisable)

    def __enter__(self) -> StopSignals:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
            self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous:
            sys.unraisablehook = self._previous_hook
        self._previous = {}  # a later use from another thread must not restore these again


def _inside(frame: FrameType | None, modules: tuple[str, ...]) -> bool:
    """Whether any frame of the stack runs code of one of `modules` (name prefixes)."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(modules):
            return True
        frame = frame.f_back
    return False
