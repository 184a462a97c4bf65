"""The Optuna side of a search: samplers, storage and heartbeats.

`search.driver` runs trials and `search.record` says what a trial stores; this module only
knows how to make (or resume) a study and talk to its storage.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from search.engine.objectives import OBJECTIVES

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


def release_storage_session(storage: RDBStorage) -> None:
    """Close this thread's storage session. A write cut short by Ctrl-C leaves its SQLite
    transaction open, holding the database lock against every later write of this process;
    closing the session rolls it back."""
    storage.remove_session()


def record_heartbeat(storage: RDBStorage, trial: optuna.Trial) -> None:
    """Optuna records heartbeats from `Study.optimize` only; our ask/tell driver needs the
    trial's storage id for it, which Optuna keeps private (`Trial._trial_id`): read here and
    in `fail_orphan` only."""
    storage.record_heartbeat(trial._trial_id)


# Optuna's `constraints_func` stores a trial's constraints as one list under this system
# attribute; `Trial.set_constraint` stores one attribute per name instead.
DASHBOARD_CONSTRAINTS_KEY = "constraints"


def set_constraints(storage: RDBStorage, trial: optuna.Trial, constraints: dict[str, float]) -> None:
    """Store a trial's constraints (> 0 means violated) by name, and again as the positional
    list: optuna-dashboard 0.21 reads only that list (its "Infeasible" marking: any value > 0).
    Optuna 5 has no public writer for the list form, so it is written here with the trial's
    private storage id; `named_constraints` hides the positional copies again."""
    for key, value in constraints.items():
        trial.set_constraint(key, value)
    if constraints:
        positional = [float(value) for value in constraints.values()]
        storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS_KEY, positional)


def named_constraints(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The trial's constraints by name. `trial.constraints` also lists the positional copies
    that `set_constraints` writes for the dashboard, as "0", "1", ..."""
    positional = {str(i) for i in range(len(trial.system_attrs.get(DASHBOARD_CONSTRAINTS_KEY) or ()))}
    return {key: value for key, value in trial.constraints.items() if key not in positional}


def fail_orphan(storage: RDBStorage, trial: optuna.trial.FrozenTrial, attrs: dict) -> None:
    """End a RUNNING trial whose driver is known to be dead: FAIL, with `attrs` recorded."""
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def open_study(study_name: str, storage_url: str, objectives: list[str], sampler: optuna.samplers.BaseSampler,
               max_retries: int) -> tuple[optuna.Study, RDBStorage]:
    """Create or resume a study; also return its storage, which the driver writes heartbeats
    to. Heartbeats let a later run fail (and retry) trials left RUNNING by a killed driver."""
    with quiet_heartbeats():
        return _open_study(study_name, storage_url, objectives, sampler, max_retries)


def _open_study(study_name: str, storage_url: str, objectives: list[str], sampler: optuna.samplers.BaseSampler,
                max_retries: int) -> tuple[optuna.Study, RDBStorage]:
    storage = RDBStorage(
        storage_url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retries),
        engine_kwargs={"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else None,
    )
    wanted = [OBJECTIVES[o].direction for o in objectives]
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, load_if_exists=True,
                                directions=wanted)
    recorded = study.user_attrs.get("objectives")
    if [d.name.lower() for d in study.directions] != wanted or (recorded and recorded != objectives):
        raise ValueError(f"search.objectives={objectives}: study {study_name!r} was created with "
                         f"{recorded or 'other objectives'}; pick another search.study_name")
    study.set_user_attr("objectives", list(objectives))
    study.set_metric_names(list(objectives))
    return study, storage


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
