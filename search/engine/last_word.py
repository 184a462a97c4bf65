"""The driver's last word, said by a helper process when the driver cannot say it.

Ray's client ends a driver process at once (exit 1, no Python cleanup, not even `atexit`)
when the driver's local raylet dies, as it does when the whole cluster is stopped. Then no line
of ours would say why the search stopped. So a driver that joins a cluster starts this small
helper with a pipe to it. The driver writes to the pipe when it ends as planned, or once it has
said why it stops. If the pipe closes with nothing written, the driver died mid-sentence, and the
helper prints the line on the driver's stderr: the cluster was lost if its head does not answer,
else the driver was ended (killed, or by Ray).

    python -m search.last_word GCS_ADDRESS LOST_MESSAGE PID
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from pathlib import Path

from search.engine.probe import answers


class LastWord:
    """Starts the helper; `settle()` tells it that nothing needs saying (idempotent)."""

    def __init__(self, gcs: str, lost_message: str):
        home = str(Path(__file__).resolve().parent.parent)  # where `search` is, wherever the driver runs
        path = os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "search.engine.last_word", gcs, lost_message, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path},
            start_new_session=True)  # Ctrl-C in the terminal is the driver's, not the helper's
        atexit.register(self.settle)  # any exit Python sees (a traceback says enough); not Ray's

    def settle(self) -> None:
        try:
            self._proc.stdin.write(b"settled\n")
            self._proc.stdin.close()
        except (OSError, ValueError):  # closed already
            pass


def headanswers(gcs: str, tries: int = 3) -> bool:
    for attempt in range(tries):
        if attempt:
            time.sleep(1.0)  # between tries only: the line should not wait for nothing
        if answers(gcs, timeout=2.0):
            return True
    return False


def main(argv: list[str]) -> int:
    gcs, lost_message, pid = argv
    if sys.stdin.buffer.read():  # blocks until the driver ends, however it ends
        return 0
    if headanswers(gcs):
        line = (f"the search driver (pid {pid}) ended before it finished (killed, or ended by Ray); "
                f"finished trials are kept: re-run the same command to resume")
    else:
        line = lost_message
    print(f"error: {line}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
