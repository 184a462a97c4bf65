"""The Optuna side of a search: samplers, storage, and what a trial records.

`search.driver` runs trials; this module only knows how to make a study and how to turn
measurements into objective values, constraints and user attributes.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

OBJECTIVE_DIRECTIONS = {"accuracy": "maximize", "latency": "minimize", "macs": "minimize", "params": "minimize"}
HEARTBEAT_S = 20  # a RUNNING trial with no heartbeat for GRACE_S belonged to a dead driver
GRACE_S = 60


@contextmanager
def quiet_heartbeats() -> Iterator[None]:
    """Optuna flags heartbeats as experimental and meant for `Study.optimize`; our ask/tell
    driver records them itself on purpose, so those two warnings are noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


class GridSampler(optuna.samplers.BruteForceSampler):
    """Optuna's exhaustive sampler, minus its `study.stop()` when the grid is used up: that
    call only works inside `Study.optimize`, and our driver caps `n_trials` at the grid size."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def release_storage_session(study: optuna.Study) -> None:
    """Close this thread's storage session. A write cut short by Ctrl-C leaves its SQLite
    transaction open, holding the database lock against every later write of this process;
    closing the session rolls it back. (Optuna wraps the RDB storage in a cache: unwrap it.)"""
    storage = getattr(study._storage, "_backend", study._storage)
    if isinstance(storage, RDBStorage):
        storage.remove_session()


def make_sampler(name: str, seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    """A sampler by name, always seeded. TPE uses the constant liar when trials overlap."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return GridSampler(seed=seed)
    raise ValueError(f"search.sampler={name!r}: unknown")


def open_study(study_name: str, storage_url: str, objectives: list[str], sampler: optuna.samplers.BaseSampler,
               max_retries: int) -> optuna.Study:
    """Create or resume a study. Heartbeats let a later run fail (and retry) trials left
    RUNNING by a driver that was killed."""
    with quiet_heartbeats():
        return _open_study(study_name, storage_url, objectives, sampler, max_retries)


def _open_study(study_name: str, storage_url: str, objectives: list[str], sampler: optuna.samplers.BaseSampler,
                max_retries: int) -> optuna.Study:
    storage = RDBStorage(
        storage_url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retries),
        engine_kwargs={"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else None,
    )
    study = optuna.create_study(
        study_name=study_name, storage=storage, sampler=sampler, load_if_exists=True,
        directions=[OBJECTIVE_DIRECTIONS[o] for o in objectives],
    )
    existing = [d.name.lower() for d in study.directions]
    wanted = [OBJECTIVE_DIRECTIONS[o] for o in objectives]
    if existing != wanted:
        raise ValueError(f"search.objectives={objectives}: study {study_name!r} was created with other objectives; "
                         "pick another search.study_name")
    return study


def objective_values(objectives: list[str], accuracy: float, metrics: dict[str, float]) -> list[float]:
    values = {"accuracy": accuracy, "latency": metrics["latency_ms"], "macs": metrics["macs"],
              "params": metrics["params"]}
    return [float(values[o]) for o in objectives]


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def clean_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """User attributes must be JSON: turn NaN/inf into None and tuples into lists."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, (tuple, list)):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return {key: clean(value) for key, value in attrs.items()}
