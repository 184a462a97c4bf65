"""Shared pieces for tests that run real (tiny) studies."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import statistics

import optuna
from optuna.trial import TrialState

from search.measure import jobs
from search.app.campaign import Campaign
from search.app.settings import parse_args
from search.space.space import load_space

REPO = Path(__file__).resolve().parent.parent
TINY_SPACE = """\
description: four small layouts for tests
layouts: [CC-CCCT-CCTT-CTTT, CC-CCCC-CCTT-TTTT, CC-CCCC-CCCT-CCCT, CC-CCCC-CCCC-CCTT]
stages: [{width: 32}, {width: 64}, {width: 128}, {width: 128}]
network: {stem_width: 32, head_width: 128, head_dim: 32}
target: {img_size: 64, batch_size: 1, dtype: float32, device: cpu, channels_last: true, compile: false}
proxy: {width_mult: 0.25, img_size: 16, stem_stride: 1, head_dim: 16}
report: {reference_latency_ms: 50}
"""
FAST = ["proxy.preset=smoke", "profile.min_time_s=0.05", "profile.min_iters=3", "profile.max_time_s=5",
        "profile.target_rel_ci=0.05"]  # tiny networks: precise enough to rank in a second


def write_tiny_space(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


def cli(*args: str, results: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "run_search.py"), *args, f"results_dir={results}"],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def load(results: Path, space: str) -> optuna.Study:
    (folder,) = [p for p in results.iterdir() if p.is_dir() and p.name.startswith(space)]
    return optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def make_tiny_study(base: Path) -> Path:
    """Run the tiny study once under `base` (a session-wide folder) and return its folder."""
    made = base / "study_folder.txt"
    if not made.exists():
        base.mkdir(parents=True, exist_ok=True)
        spec = write_tiny_space(base)
        space = load_space(spec)
        # A ceiling at the median MACs of the four layouts, whatever the exact MAC formula.
        macs = statistics.median(jobs.cheap_metrics(space.target_config(c))["macs"] for c in space.enumerate())
        settings = parse_args([f"space={spec}", f"results_dir={base / 'results'}", "executor=inline",
                               "search.n_trials=4", "search.sampler=random", "search.seed=0", f"budget.max_macs={macs}",
                               *FAST, "proxy.epochs=1", "proxy.train_size=128", "proxy.val_size=100"])
        campaign = Campaign.from_settings(settings)
        campaign.run()
        campaign.finish(interrupted=False)
        made.write_text(str(campaign.folder))
    return Path(made.read_text())
