"""What a study holds, as tables: every trial, the Pareto front, and its hypervolume.

Everything here is read back from the Optuna storage, so a report can be made again at any
time (`trials.csv` is always a fresh copy of the storage, never a second source of truth).
Pareto fronts come from Optuna (`study.best_trials`, feasible trials only), hypervolumes from
Optuna's own `compute_hypervolume`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna._hypervolume import compute_hypervolume
from optuna.trial import FrozenTrial, TrialState

OBJECTIVE_COLUMNS = {"accuracy": "accuracy", "latency": "latency_ms", "macs": "macs", "params": "params"}
FRONT_COLUMNS = ["number", "layout", "family", "accuracy", "latency_ms", "latency_p90_ms", "macs", "params"]


class StudyFolderError(ValueError):
    """A results folder that holds no readable study (one line)."""


def open_study_dir(folder: Path, storage: str | None = None) -> optuna.Study:
    """The study stored in `results/<study>/study.db` (or in `storage`, by the folder's name)."""
    folder = Path(folder)
    if storage is None:
        db = folder / "study.db"
        if not db.is_file():  # SQLite would silently create an empty database
            raise StudyFolderError(f"{folder}: no study.db here (not a study folder, or give --storage)")
        storage = f"sqlite:///{db.resolve()}"
    names = optuna.study.get_all_study_names(storage)
    name = names[0] if len(names) == 1 else folder.name
    if name not in names:
        raise StudyFolderError(f"{folder}: storage holds studies {names}, none named {folder.name!r}")
    return optuna.load_study(study_name=name, storage=storage)


@dataclass(frozen=True)
class ReferencePoint:
    """Fixed hypervolume reference on normalised objectives: error (1 - accuracy) in [0, 1]
    and latency divided by `latency_ms`. The point is (1, 1): a trial slower than
    `latency_ms` or at zero accuracy adds nothing. Declared per space, so runs compare."""

    latency_ms: float

    def normalise(self, accuracy: float, latency_ms: float) -> tuple[float, float]:
        return 1.0 - accuracy, latency_ms / self.latency_ms


def objective_names(study: optuna.Study) -> list[str]:
    names = study.user_attrs.get("objectives")
    return list(names) if names else ["accuracy", "latency"][: len(study.directions)]


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, objectives, feasibility and every recorded metric."""
    names = objective_names(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = {"number": trial.number, "state": trial.state.name}
        if trial.values is not None:
            row.update({OBJECTIVE_COLUMNS[n]: v for n, v in zip(names, trial.values)})
        row["feasible"] = is_feasible(trial) if trial.state == TrialState.COMPLETE else None
        row.update({f"constraint_{k}": v for k, v in trial.constraints.items()})
        row.update({k: v for k, v in trial.user_attrs.items() if k not in row})
        row.update({f"param_{k}": v for k, v in trial.params.items()})
        row["datetime_start"] = trial.datetime_start
        row["datetime_complete"] = trial.datetime_complete
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.set_index("number", drop=False).sort_index()
    return frame


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    trials_frame(study).to_csv(tmp, index=False)
    tmp.replace(path)  # readers never see a half-written file
    return path


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Pareto-optimal feasible trials (Optuna's `best_trials`), one per architecture."""
    seen, front = set(), []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        key = trial.user_attrs.get("arch_hash", trial.number)
        if key not in seen:
            seen.add(key)
            front.append(trial)
    return front


def front_frame(study: optuna.Study) -> pd.DataFrame:
    frame = trials_frame(study)
    numbers = [t.number for t in front_trials(study)]
    if frame.empty or not numbers:
        return pd.DataFrame(columns=FRONT_COLUMNS)
    front = frame.loc[numbers]
    return front[[c for c in FRONT_COLUMNS if c in front]].sort_values("latency_ms")


def _normalised_points(trials: list[FrozenTrial], names: list[str], reference: ReferencePoint) -> np.ndarray:
    acc, lat = names.index("accuracy"), names.index("latency")
    points = [reference.normalise(t.values[acc], t.values[lat]) for t in trials]
    return np.array([p for p in points if p[0] < 1.0 and p[1] < 1.0]).reshape(-1, 2)


def hypervolume(study: optuna.Study, reference: ReferencePoint) -> float:
    """Hypervolume of the feasible accuracy-latency front against the fixed reference."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]
    points = _normalised_points(trials, objective_names(study), reference)
    return float(compute_hypervolume(points, np.ones(2))) if len(points) else 0.0


def hypervolume_history(study: optuna.Study, reference: ReferencePoint) -> pd.DataFrame:
    """Hypervolume after each finished trial, in trial order."""
    names = objective_names(study)
    done, rows = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if is_feasible(trial):
            done.append(trial)
        points = _normalised_points(done, names, reference)
        rows.append({"number": trial.number,
                     "hypervolume": float(compute_hypervolume(points, np.ones(2))) if len(points) else 0.0})
    return pd.DataFrame(rows, columns=["number", "hypervolume"])


def format_front(frame: pd.DataFrame) -> str:
    """The front as a plain-text table for the terminal."""
    if frame.empty:
        return "(no feasible finished trial yet)"
    shown = frame.copy()
    if "accuracy" in shown:
        shown["accuracy"] = shown["accuracy"].map("{:.3f}".format)
    for col in ("latency_ms", "latency_p90_ms"):
        if col in shown:
            shown[col] = shown[col].map("{:.2f}".format)
    if "macs" in shown:
        shown["macs"] = (shown["macs"] / 1e9).map("{:.2f}G".format)
    if "params" in shown:
        shown["params"] = (shown["params"] / 1e6).map("{:.1f}M".format)
    return shown.rename(columns={"number": "trial", "macs": "MACs"}).to_string(index=False)
