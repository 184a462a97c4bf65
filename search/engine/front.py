"""The study's Pareto front as the engine sees it: feasible trials, one per architecture,
judged on the refined accuracy (the mean over replicates) and the preferred latency."""
from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.engine.objectives import OBJECTIVES
from search.engine.record import TrialRecord
from search.engine.replicates import LatencyHistory, ReplicateStore


def objective_names(study: optuna.Study) -> list[str]:
    names = study.user_attrs.get("objectives")
    return list(names) if names else ["accuracy", "latency"][: len(study.directions)]


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def objective_values(trial: FrozenTrial, names: list[str], accuracy: float | None, latency: float | None) -> list[float]:
    """The trial's objective values as minimised numbers, with the refined accuracy and the
    preferred latency (`LatencyHistory.preferred`)."""
    values = list(trial.values)
    if accuracy is not None:
        values[names.index("accuracy")] = accuracy
    if latency is not None:
        values[names.index("latency")] = latency
    return [v if OBJECTIVES[n].direction == "minimize" else -v for n, v in zip(names, values)]


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Pareto-optimal feasible trials, one per architecture (its first trial), judged on the
    refined accuracy (the mean over replicates, `search.replicates`) and the other objectives."""
    names, store, history = objective_names(study), ReplicateStore(study), LatencyHistory(study)
    pool: dict[str, tuple[FrozenTrial, list[float]]] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.load(trial)
        if not record.trained or not is_feasible(trial) or record.arch_hash in pool:
            continue
        estimate, latency = store.estimate(trial), history.preferred(record).latency_ms
        pool[record.arch_hash] = (trial, objective_values(trial, names, estimate.mean if estimate else None, latency))
    points = list(pool.values())

    def dominated(v: list[float]) -> bool:
        return any(all(a <= b for a, b in zip(w, v)) and w != v for _, w in points)

    return sorted((t for t, v in points if not dominated(v)), key=lambda t: t.number)
