"""The Python API, used as the README shows it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from search.app.settings import SettingsError


@pytest.mark.slow  # a whole in-process search: minutes on a loaded 2-core machine
def test_run_returns_the_study_front_trials_and_dashboard(tiny_space: Path, tmp_path: Path, capsys):
    from search import run

    result = run(str(tiny_space), n_trials=2, executor="inline", results_dir=str(tmp_path), preset="smoke",
                 overrides={"profile.min_time_s": 0.05, "profile.min_iters": 3, "proxy.epochs": 2,
                            "proxy.train_size": 128, "proxy.val_size": 100, "refine.trainings": 0})
    assert len(result.study.trials) == 2 and len(result.trials) == 2
    assert isinstance(result.front, pd.DataFrame) and len(result.front) >= 1
    assert {"layout", "accuracy_mean", "accuracy_se", "latency_ms"} <= set(result.front.columns)
    assert result.dashboard.is_file() and result.trials_csv.is_file()
    assert result.folder == result.dashboard.parent
    assert "epoch 1/2, acc" in capsys.readouterr().out  # progress from inside a running training


def test_bad_settings_raise_before_anything_runs(tmp_path: Path):
    from search import run

    with pytest.raises(SettingsError, match="search.sampler"):
        run("hybrid", sampler="tpee", results_dir=str(tmp_path))
    with pytest.raises(TypeError, match="n_trial"):
        run("hybrid", n_trial=3)
    assert list(tmp_path.iterdir()) == []


def test_python_values_reach_the_settings_unchanged():
    from search.app.api import to_args
    from search.app.settings import parse_args

    settings = parse_args(to_args("hybrid", {"profile.resources": {"deploy_gpu": 1}, "search.objectives":
                                             ["accuracy", "latency", "params"]}, n_trials=3, data="cifar10"))
    assert dict(settings.profile.resources) == {"deploy_gpu": 1}
    assert list(settings.search.objectives) == ["accuracy", "latency", "params"] and settings.search.n_trials == 3
