"""A line on stdout whenever a run has said nothing for a while, so a terminal never looks stuck.

Profiling windows and long epochs can take minutes without an event to report. `Heartbeat`
watches what the run prints and, after `every_s` seconds of silence, prints one line saying
how long the run has taken and what it is doing (`doing()`).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable


class _Watched:
    """A stream that remembers when it was last written to."""

    def __init__(self, stream: Any):
        self._stream, self.last_write = stream, time.monotonic()

    def write(self, text: str) -> int:
        self.last_write = time.monotonic()
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding...
        return getattr(self._stream, name)


class Heartbeat:
    def __init__(self, doing: Callable[[], str], every_s: float = 15.0):
        self.doing, self.every_s = doing, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.started = time.monotonic()
        self._original, sys.stdout = sys.stdout, _Watched(sys.stdout)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        sys.stdout = self._original

    def _watch(self) -> None:
        watched = sys.stdout
        while not self._stop.wait(1.0):
            if time.monotonic() - watched.last_write >= self.every_s:
                minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
                print(f"... {self.doing()} ({minutes}m{seconds:02d}s elapsed)", file=watched, flush=True)
