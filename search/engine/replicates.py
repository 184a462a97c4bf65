"""Replicates of a trained architecture: stored per architecture, combined into one estimate.

A trial's own training is its architecture's first replicate (its seed is the search seed).
Refinement (`search.refine`) adds more, each with a new seed on the same data slice. They are
kept in the study's user attributes, one list per architecture (`replicates:<arch hash>`):
a study attribute can still be written after the trial finished, and each replicate is
written the moment its training ends, so an interrupted refinement loses none. Optuna was
told the first replicate's accuracy, so every value its sampler sees has the same fidelity;
the refined estimate lives here and in the report.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import optuna
from optuna.trial import FrozenTrial

from search.measure.estimate import AccuracyEstimate, combine_replicates
from search.engine.record import TrialRecord

PREFIX = "replicates:"


@dataclass(frozen=True)
class Replicate:
    seed: int
    val_accuracy: float
    val_count: int
    wall_time_s: float | None = None
    ok: bool = True


def first_replicate(record: TrialRecord) -> Replicate | None:
    """The trial's own training, if it was trained and says how it was scored."""
    if not record.trained or record.accuracy is None or not record.val_count or record.proxy_seed is None:
        return None
    return Replicate(record.proxy_seed, record.accuracy, record.val_count, record.proxy_wall_time_s)


class ReplicateStore:
    """Extra replicates by architecture, in the study's user attributes."""

    def __init__(self, study: optuna.Study):
        self.study = study

    def extra(self, arch_hash: str) -> list[Replicate]:
        return [Replicate(**r) for r in self.study.user_attrs.get(PREFIX + arch_hash, [])]

    def add(self, arch_hash: str, replicate: Replicate) -> None:
        stored = [asdict(r) for r in self.extra(arch_hash)]
        self.study.set_user_attr(PREFIX + arch_hash, [*stored, asdict(replicate)])

    def all_extra(self) -> int:
        return sum(len(v) for k, v in self.study.user_attrs.items() if k.startswith(PREFIX))

    def replicates(self, trial: FrozenTrial) -> list[Replicate]:
        """Every replicate of the trial's architecture, its own training first."""
        record = TrialRecord.load(trial)
        first = first_replicate(record)
        return ([first] if first else []) + self.extra(record.arch_hash)

    def estimate(self, trial: FrozenTrial) -> AccuracyEstimate | None:
        replicates = self.replicates(trial)
        return combine_replicates(replicates) if replicates else None


REPROFILE_PREFIX = "reprofile:"


def _clean(measurement: dict) -> bool:
    return not measurement.get("contamination") and measurement.get("latency_ms") is not None


class LatencyHistory:
    """Every measurement of an architecture's latency, and the one rule that picks the one a
    report shows. The trial's record keeps the first (the search's); re-measurements
    (`search.engine.phases.ReprofilePhase`) are kept in the study's user attributes
    (`reprofile:<arch hash>`), oldest first, contaminated ones too, so nothing is lost.

    The rule (`preferred`): the latest clean measurement; when none is clean, the least
    contaminated one, still flagged. A contaminated number never replaces a clean one, so a
    re-profile on a busy machine cannot undo a good search measurement."""

    FIELDS = ("latency_ms", "latency_ci_low_ms", "latency_ci_high_ms", "window", "contamination")

    def __init__(self, study: optuna.Study):
        self.study = study

    def history(self, arch_hash: str) -> list[dict]:
        return list(self.study.user_attrs.get(REPROFILE_PREFIX + arch_hash, []))

    def add(self, arch_hash: str, measurement: dict) -> None:
        self.study.set_user_attr(REPROFILE_PREFIX + arch_hash, [*self.history(arch_hash), measurement])

    @staticmethod
    def first(record: TrialRecord) -> dict | None:
        """The record's own measurement, in the history's terms (None when never timed)."""
        if record.latency_ms is None:
            return None
        return {"latency_ms": record.latency_ms, "latency_ci_low_ms": record.latency_ci_low_ms,
                "latency_ci_high_ms": record.latency_ci_high_ms, "window": record.latency_window,
                "contamination": record.latency_contamination}

    def best(self, arch_hash: str, first: dict | None) -> dict | None:
        """The measurement to show among `first` (the record's) and the re-measurements."""
        return best_of([m for m in [first, *self.history(arch_hash)] if m is not None])

    def preferred(self, record: TrialRecord) -> TrialRecord:
        """`record` with its latency fields set to the preferred measurement (itself when it
        was never re-measured): what every report reads."""
        first = self.first(record)
        chosen = self.best(record.arch_hash, first)
        if chosen is None or chosen is first:
            return record
        return dataclasses.replace(
            record, latency_ms=chosen["latency_ms"], latency_ci_low_ms=chosen.get("latency_ci_low_ms"),
            latency_ci_high_ms=chosen.get("latency_ci_high_ms"), latency_window=chosen.get("window"),
            latency_contamination=chosen.get("contamination") or None)


def best_of(measurements: list[dict]) -> dict | None:
    """The latest clean measurement (list oldest first), else the least contaminated: the
    fastest, since a busy machine only ever slows a network down."""
    clean = [m for m in measurements if _clean(m)]
    if clean:
        return clean[-1]
    timed = [m for m in measurements if m.get("latency_ms") is not None]
    return min(timed, key=lambda m: m["latency_ms"]) if timed else None
