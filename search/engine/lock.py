"""One driver per study: a lock file in the study folder, held for the whole run.

The lock is an `flock` on `<study>/driver.lock`, so the operating system drops it the moment
its driver dies, even by `kill -9`: a stale lock cannot exist on the machine that holds it.
The file records the holder's pid, host and start time, so a second driver can say whom it
is waiting for. (flock is local to one machine: two hosts sharing a study folder over a
network file system are not protected; give each its own study name.)
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class StudyLocked(RuntimeError):
    """Another live driver runs this study (one line)."""


class StudyLock:
    FILE = "driver.lock"

    def __init__(self, folder: Path):
        self.path = Path(folder) / self.FILE
        self._fd: int | None = None
        self.previous: dict | None = None  # the last holder's record, if one ran here before

    def acquire(self) -> "StudyLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise StudyLocked(f"{self.path.parent.name}: another driver runs this study (pid {holder.get('pid', '?')} "
                              f"on {holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it to "
                              "finish or stop it") from None
        self.previous = _read(fd) or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays as a harmless record
            self._fd = None

    def __enter__(self) -> "StudyLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
