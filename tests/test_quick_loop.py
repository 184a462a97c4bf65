"""The quick loop, `pytest -m "not slow"`, starts no Ray and no search process: conftest's audit
hook refuses both in a test not marked slow. These tests are not marked, so they meet the hook."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster import RAY
from studies import REPO


def test_a_search_process_is_refused_in_a_quick_test(tmp_path: Path):
    with pytest.raises(RuntimeError, match=r"test_quick_loop.py::\S+ starts a search process .* add @pytest.mark.slow"):
        subprocess.run([sys.executable, str(REPO / "run_search.py"), "help"], cwd=tmp_path)


def test_ray_is_refused_in_a_quick_test(tmp_path: Path):
    with pytest.raises(RuntimeError, match=r"starts Ray .* add @pytest.mark.slow"):
        subprocess.run([str(RAY), "start", "--head", f"--temp-dir={tmp_path}"], cwd=tmp_path)


def test_other_processes_still_start(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout == "ok\n"
