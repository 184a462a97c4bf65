"""The Python API: one search from a notebook or a script, without command-line strings.

    from search import run
    result = run("hybrid", n_trials=16, executor="inline", overrides={"proxy.preset": "smoke"})
    result.front          # pandas: the Pareto front (refined accuracy ± SE, latency, ...)
    result.trials         # pandas: every trial's record
    result.dashboard      # Path of dashboard.html
    result.study          # the optuna.Study

Keyword arguments are the common settings; `overrides` takes any key of `python
run_search.py help` in its dotted form. Both are checked exactly as on the command line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

# Keyword -> the dotted key it sets.
SHORTCUTS = {"n_trials": "search.n_trials", "sampler": "search.sampler", "seed": "search.seed",
             "objectives": "search.objectives", "study_name": "search.study_name", "storage": "search.storage",
             "executor": "executor", "results_dir": "results_dir", "preset": "proxy.preset", "data": "data.name"}


@dataclass
class SearchResult:
    study: optuna.Study
    folder: Path
    front: pd.DataFrame
    trials: pd.DataFrame
    dashboard: Path
    trials_csv: Path


def _literal(value: Any) -> str:
    """A Python value as OmegaConf's dot-list parser reads it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}: {_literal(v)}" for k, v in value.items()) + "}"
    return str(value)


def to_args(space: str, overrides: dict[str, Any] | None = None, **settings: Any) -> list[str]:
    unknown = sorted(set(settings) - set(SHORTCUTS))
    if unknown:
        raise TypeError(f"run(): unknown keyword {unknown[0]!r} (use overrides={{'dotted.key': value}} for "
                        f"other settings; keywords: {', '.join(SHORTCUTS)})")
    dotted = {SHORTCUTS[k]: v for k, v in settings.items()} | dict(overrides or {})
    return [f"space={space}", *(f"{key}={_literal(value)}" for key, value in dotted.items())]


def run(space: str, overrides: dict[str, Any] | None = None, **settings: Any) -> SearchResult | None:
    """Run (or resume) a search and return its study, front, trials and report paths.
    Settings are checked as on the command line, before anything is created: bad ones raise
    `search.app.settings.SettingsError` or `search.app.campaign.BadInput` (one line each).
    With `dry_run=True` in `overrides` it prints the space and returns None."""
    from search.app.campaign import Campaign
    from search.report.tables import front_frame, trials_frame
    from search.app.settings import parse_args, validate

    checked = parse_args(to_args(space, overrides, **settings))
    validate(checked)
    campaign = Campaign.from_settings(checked)
    if checked.dry_run:
        print(campaign.describe())
        return None
    campaign.run()
    campaign.finish(interrupted=False)
    return SearchResult(campaign.study, campaign.folder, front_frame(campaign.study), trials_frame(campaign.study),
                        campaign.folder / "dashboard.html", campaign.folder / "trials.csv")
