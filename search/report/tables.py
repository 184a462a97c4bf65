"""What a study holds, as tables: every trial, the Pareto front, and its hypervolume.

Everything here is read back from the Optuna storage, so a report can be made again at any
time (`trials.csv` is always a fresh copy of the storage, never a second source of truth).
Each trial's columns are its `TrialRecord`'s fields; objective columns are named by their
record field (see `search.objectives`). Pareto fronts come from Optuna (`study.best_trials`,
feasible trials only), hypervolumes from Optuna's own algorithm.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from search.engine.objectives import OBJECTIVES
from search.report.files import write_atomically
from search.engine.record import TrialRecord, record_fields
from search.engine.replicates import LatencyHistory, ReplicateStore
from search.space.space import PAPER_C1
from search.engine.front import front_trials, is_feasible, objective_names
from search.engine.study import named_constraints

# Shown beside the objectives in a front table.
FRONT_EXTRAS = ["latency_ci_low_ms", "latency_ci_high_ms", "latency_p90_ms", "macs", "params"]
ESTIMATE_COLUMNS = ["accuracy_mean", "accuracy_se", "replicates"]


def compute_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Optuna's hypervolume (WFG algorithm) of minimised points. Optuna 5 has no public
    function for it, so the private one is reached here and nowhere else."""
    from optuna._hypervolume import compute_hypervolume as wfg

    return float(wfg(points, reference))


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


HV_LATENCY_MULTIPLE = 2.0  # the hypervolume reference latency, in multiples of C1's latency


def c1_reference(study: optuna.Study) -> ReferencePoint | None:
    """The hypervolume reference measured in the study itself: latency at `HV_LATENCY_MULTIPLE`
    times the paper's C1 (enqueued first in every study whose space holds it). Latency is
    then normalised by a network timed on the same machine, so studies on different hardware
    compare, and a slow or loaded machine does not push every trial past the reference."""
    c1 = "-".join(PAPER_C1)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.load(trial)
        if record.layout == c1 and record.latency_ms:
            return ReferencePoint(latency_ms=HV_LATENCY_MULTIPLE * record.latency_ms)
    return None


def study_reference(study: optuna.Study, fallback: ReferencePoint) -> ReferencePoint:
    """The reference recorded in the study, else C1's, else `fallback` (the space's own)."""
    recorded = study.user_attrs.get("hv_reference_latency_ms")
    if recorded:
        return ReferencePoint(latency_ms=float(recorded))
    return c1_reference(study) or fallback


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, feasibility, its record's fields, constraints,
    params and times. A value the trial never measured is missing (NaN), not 0."""
    rows, history = [], LatencyHistory(study)
    for trial in study.get_trials(deepcopy=False):
        row = {"number": trial.number, "state": trial.state.name,
               "feasible": is_feasible(trial) if trial.state == TrialState.COMPLETE else None}
        record = TrialRecord.load(trial)
        row.update(vars(history.preferred(record)))  # re-timed with the front: `LatencyHistory`'s rule picks
        if remeasured := history.history(record.arch_hash):
            row.update(latency_first_ms=record.latency_ms, reprofiled=len(remeasured))
        row.update({f"constraint_{k}": v for k, v in named_constraints(trial).items()})
        row.update({f"param_{k}": v for k, v in trial.params.items()})
        row["datetime_start"] = trial.datetime_start
        row["datetime_complete"] = trial.datetime_complete
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else ["number", "state", "feasible", *record_fields()])
    if not frame.empty:
        frame = frame.set_index("number", drop=False).sort_index().join(estimates_frame(study))
    return frame


def _csv_cell(value: object) -> object:
    """Nested values as JSON, times as ISO 8601: every cell reads back without Python."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if value is pd.NaT:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    """Write `trials_frame` to `path` atomically: readers never see a half-written file."""
    path = Path(path)
    frame = trials_frame(study)
    frame = frame.apply(lambda column: column.map(_csv_cell)) if not frame.empty else frame
    return write_atomically(path, frame.to_csv(index=False))


def latency_warning(study: optuna.Study) -> str:
    """One line when every timed architecture's latency is flagged (measured while the
    machine was busy, even after re-measuring), else "": its front is then an order of
    noise, and two studies on one busy machine silently disagree."""
    history, flagged, timed = LatencyHistory(study), set(), set()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = history.preferred(TrialRecord.load(trial))
        if record.latency_ms is not None:
            timed.add(record.arch_hash)
            if record.latency_contamination:
                flagged.add(record.arch_hash)
    if not timed or flagged != timed:
        return ""
    return (f"warning: all {len(timed)} latencies were measured on a busy machine (flagged contaminated), so "
            "the front's latencies are not reliable; re-run with profile.clock=cpu, or on quieter hardware")


def estimates_frame(study: optuna.Study) -> pd.DataFrame:
    """Per trained trial: refined accuracy mean, its standard error and replicate count."""
    store, rows = ReplicateStore(study), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        estimate = store.estimate(trial) if TrialRecord.load(trial).trained else None
        if estimate is not None:
            rows.append({"number": trial.number, "accuracy_mean": estimate.mean, "accuracy_se": estimate.se,
                         "replicates": estimate.n})
    return pd.DataFrame(rows, columns=["number", *ESTIMATE_COLUMNS]).set_index("number")


def mark_ties(front: pd.DataFrame, margin_se: float = 2.0, latency_rel: float = 0.02) -> pd.Series:
    """For each front member, the members the data cannot separate from it: accuracies within
    `margin_se` combined standard errors and latencies within their confidence intervals
    (or `latency_rel` where none was measured)."""
    rows = front.to_dict("records")

    def half_width(row: dict) -> float:
        low, high = row.get("latency_ci_low_ms"), row.get("latency_ci_high_ms")
        if isinstance(low, float) and isinstance(high, float) and math.isfinite(low) and math.isfinite(high):
            return (high - low) / 2
        return latency_rel * row["latency_ms"]

    def tied(a: dict, b: dict) -> bool:
        close_acc = abs(a["accuracy_mean"] - b["accuracy_mean"]) <= margin_se * math.hypot(a["accuracy_se"],
                                                                                            b["accuracy_se"])
        return close_acc and abs(a["latency_ms"] - b["latency_ms"]) <= half_width(a) + half_width(b)

    return pd.Series([",".join(str(b["number"]) for b in rows if b is not a and tied(a, b)) for a in rows],
                     index=front.index, dtype=object)


def front_columns(study: optuna.Study) -> list[str]:
    fields = [OBJECTIVES[name].field for name in objective_names(study)]
    shown = [c for f in fields for c in (["accuracy", *ESTIMATE_COLUMNS] if f == "accuracy" else [f])]
    return list(dict.fromkeys(["number", "layout", "family", *shown, *FRONT_EXTRAS, "tied_with"]))


def front_frame(study: optuna.Study) -> pd.DataFrame:
    """The front, fastest first: refined accuracy with its SE and replicate count, the other
    objectives, and which members the data cannot tell apart (`tied_with`)."""
    frame = trials_frame(study)
    numbers = [t.number for t in front_trials(study)]
    columns = front_columns(study)
    if frame.empty or not numbers:
        return pd.DataFrame(columns=columns)
    front = frame.loc[numbers].sort_values("latency_ms")
    front["tied_with"] = mark_ties(front)
    return front[columns]


def _normalised_points(trials: list[FrozenTrial], names: list[str], reference: ReferencePoint) -> np.ndarray:
    acc, lat = names.index("accuracy"), names.index("latency")
    points = [reference.normalise(t.values[acc], t.values[lat]) for t in trials]
    return np.array([p for p in points if p[0] < 1.0 and p[1] < 1.0]).reshape(-1, 2)


def hypervolume(study: optuna.Study, reference: ReferencePoint) -> float:
    """Hypervolume of the feasible accuracy-latency front against the fixed reference."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]
    points = _normalised_points(trials, objective_names(study), reference)
    return compute_hypervolume(points, np.ones(2)) if len(points) else 0.0


def hypervolume_history(study: optuna.Study, reference: ReferencePoint) -> pd.DataFrame:
    """Hypervolume after each finished trial, in trial order."""
    names = objective_names(study)
    done, rows = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if is_feasible(trial):
            done.append(trial)
        points = _normalised_points(done, names, reference)
        rows.append({"number": trial.number,
                     "hypervolume": compute_hypervolume(points, np.ones(2)) if len(points) else 0.0})
    return pd.DataFrame(rows, columns=["number", "hypervolume"])


def format_front(frame: pd.DataFrame) -> str:
    """The front as a plain-text table for the terminal: accuracy as mean ± SE (n), each
    other objective in its own format, ties named."""
    if frame.empty:
        return "(no feasible finished trial yet)"
    formats = {o.field: o for o in OBJECTIVES.values()}
    shown, written = frame.copy(), {"accuracy"}  # columns already formatted as text
    if "accuracy_mean" in shown:  # one column: the refined mean ± SE (n), else the trial's own
        shown["accuracy"] = [f"{m:.3f} ± {s:.3f} (n={int(n)})" if math.isfinite(m) else f"{t:.3f}" for m, s, n, t in
                             zip(shown.pop("accuracy_mean"), shown.pop("accuracy_se"), shown.pop("replicates"),
                                 shown["accuracy"])]
    if {"latency_ms", "latency_ci_low_ms", "latency_ci_high_ms"} <= set(shown):
        # The median with its 95% interval; p90 stays in the frame (it is the first window's,
        # while a re-profiled median is the latest).
        shown["latency_ms"] = [_with_interval(m, lo, hi) for m, lo, hi in
                               zip(shown["latency_ms"], shown.pop("latency_ci_low_ms"), shown.pop("latency_ci_high_ms"))]
        shown = shown.drop(columns=["latency_p90_ms"], errors="ignore")
        written.add("latency_ms")
    for column in shown:
        if column in written:
            continue
        if column in formats:
            shown[column] = shown[column].map(formats[column].format)
        elif column.endswith("_ms"):
            shown[column] = shown[column].map("{:.2f}".format)
    if "tied_with" in shown:
        shown["tied_with"] = shown["tied_with"].map(lambda t: f"tied: {t}" if t else "")
    titles = {o.field: o.label for o in OBJECTIVES.values() if o.field not in ("latency_ms", "accuracy")}
    titles["latency_ms"] = "latency ms [95% CI]"
    return shown.rename(columns={"number": "trial", "tied_with": "", **titles}).to_string(index=False)


def _with_interval(median: float, low: float, high: float) -> str:
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (median, low, high)):
        return f"{median:.2f} [{low:.2f}, {high:.2f}]"
    return f"{median:.2f}" if isinstance(median, (int, float)) and math.isfinite(median) else "-"
