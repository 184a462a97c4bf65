"""The helper that says why a driver stopped when Ray ends the driver at once (exit 1, no
Python cleanup). Real processes: a driver stand-in ends in each way a driver can."""
from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from studies import REPO

LOST = "lost the Ray cluster at 127.0.0.1:1: its head no longer answers; re-run the same command to resume"


def _driver(gcs: str, ending: str, tmp_path) -> subprocess.CompletedProcess:
    """A stand-in driver: starts the helper, then ends with `ending` (run in another folder,
    as a driver may be)."""
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from search.engine.last_word import LastWord
        word = LastWord({gcs!r}, {LOST!r})
        {ending}
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once this closes


def test_a_driver_ended_at_once_with_its_head_gone_gets_the_lost_line(tmp_path):
    proc = _driver(_closed_port(), "os._exit(1)", tmp_path)  # what Ray does when the raylet dies
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"error: {LOST}"], proc.stderr


def test_a_driver_ended_at_once_with_its_head_alive_gets_a_line_naming_it(tmp_path):
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        gcs = f"127.0.0.1:{head.getsockname()[1]}"
        proc = _driver(gcs, "os._exit(1)", tmp_path)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "ended before it finished" in lines[0] and "re-run the same command" in lines[0], lines


@pytest.mark.parametrize("ending", ["word.settle(); os._exit(1)", "sys.exit(0)", "raise SystemExit(3)"])
def test_a_driver_that_said_its_word_or_ended_in_python_gets_no_line(tmp_path, ending):
    proc = _driver(_closed_port(), ending, tmp_path)
    assert proc.stderr == "", proc.stderr
