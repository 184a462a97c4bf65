"""Output that outlives its reader: a search goes on when its stdout or stderr is closed.

`python run_search.py ... | head -1` closes the pipe after one line, and a dropped ssh
session takes the terminal with it. Python then raises BrokenPipeError (or EIO) at the next
`print`, wherever it is: in the progress line, in the middle of the driver's loop, or at
exit while flushing. A search should not die of its log: after the first failed write the
stream's file descriptor is pointed at /dev/null, and the run goes on and writes its reports.
"""
from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class Outliving:
    """A text stream that stops writing, silently, once its reader is gone."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._stream.write(text)
            except OSError:
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except OSError:
                self._lose()

    def _lose(self) -> None:
        """Point the descriptor at /dev/null, so the buffered rest (and the interpreter's own
        flush at exit) goes nowhere instead of raising again."""
        self.lost = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


def outlive_closed_output() -> None:
    """Wrap `sys.stdout` and `sys.stderr` (once) so that a closed one is dropped, not fatal."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, Outliving):
            setattr(sys, name, Outliving(stream))
