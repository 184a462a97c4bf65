"""The Ray executor for real: trials overlap in time, and a worker killed with SIGKILL in the
middle of a training loses nothing (its trial fails with the reason and is retried)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from studies import FAST, REPO, complete, load

pytestmark = pytest.mark.slow  # starts a Ray cluster


def _training_workers() -> list[int]:
    """PIDs of Ray workers busy with a proxy training (Ray titles them `ray::<task name>`)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[1:] if "ray::train_trial" in line]


def test_ray_trials_overlap_and_a_killed_worker_loses_nothing(tiny_space: Path, tmp_path: Path):
    results = tmp_path / "results"
    args = [sys.executable, str(REPO / "run_search.py"), f"space={tiny_space}", "executor=ray", "ray.num_cpus=2",
            "search.n_trials=4", "search.max_retries=1", *FAST, "proxy.epochs=6", f"results_dir={results}"]
    driver = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and driver.poll() is None:
        workers = _training_workers()
        if workers:  # killed while its task runs: a short smoke training can end within a second
            victim = workers[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
    output, _ = driver.communicate(timeout=400)
    assert victim is not None, "no training worker was seen\n" + output[-3000:]
    assert driver.returncode == 0, output[-3000:]

    study = load(results, "tiny")
    finished = complete(study)
    assert len(finished) == 4
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) >= 1
    dead = failed[0]
    assert "worker died" in dead.user_attrs["failure_reason"]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == dead.number]
    assert retry and retry[0].params == dead.params and retry[0].state == TrialState.COMPLETE
    assert TrialState.RUNNING not in {t.state for t in study.trials}

    # Two trainings really ran at the same time: some pair of intervals overlaps.
    spans = sorted((t.user_attrs["train_started_at"], t.user_attrs["train_finished_at"])
                   for t in finished if "train_started_at" in t.user_attrs)
    assert any(later_start < earlier_end for (_, earlier_end), (later_start, _) in zip(spans, spans[1:])), spans
    # Ray's files stay inside the results folder.
    assert (results / ".ray").is_dir()
