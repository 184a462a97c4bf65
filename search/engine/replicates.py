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


class LatencyHistory:
    """Re-measurements of an architecture's latency (`search.refine.reprofile`), in the study's
    user attributes (`reprofile:<arch hash>`), oldest first. The trial's record keeps its
    first measurement; the report uses the latest, which the front's members share a window in."""

    def __init__(self, study: optuna.Study):
        self.study = study

    def history(self, arch_hash: str) -> list[dict]:
        return list(self.study.user_attrs.get(REPROFILE_PREFIX + arch_hash, []))

    def latest(self, arch_hash: str) -> dict | None:
        history = self.history(arch_hash)
        return history[-1] if history else None

    def add(self, arch_hash: str, measurement: dict) -> None:
        self.study.set_user_attr(REPROFILE_PREFIX + arch_hash, [*self.history(arch_hash), measurement])
