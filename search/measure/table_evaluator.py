"""`TableEvaluator`: the engine's evaluator answered from a tabular benchmark.

Cheap metrics and latency are the table's; a training is one replicate drawn from the
architecture's stored seeds, so the noise a search sees is the benchmark's real noise, not
a model of it. The draw is seeded by the replay's seed and the architecture: the first
training of an architecture takes one stored seed, its replicates (refinement) the others,
in an order fixed per (replay seed, architecture), so a replay is repeatable.

Jobs are plain functions of plain data, like `ProxyEvaluator`'s, and return the same result
shapes (`search.engine.evaluator`). Each carries its simulated cost: a training's
`proxy_wall_time_s` (the table's training seconds) and a latency window's span
(`profile_s` per candidate), which a simulated executor turns into time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from search.measure.tables import Table, TableSpace


def table_latency_job(fields: dict[str, dict[str, Any]], span_s: float) -> dict[str, Any]:
    """A profiling window, answered from the table: it takes `span_s` (simulated)."""
    return {"started_at": 0.0, "finished_at": span_s, "fields": fields}


def table_training_job(accuracy: float, val_count: int, seed: int, wall_s: float) -> dict[str, Any]:
    """One replicate, answered from the table: one stored seed's accuracy."""
    return {"ok": True, "failure_reason": None,
            "fields": {"accuracy": accuracy, "val_count": val_count, "val_correct": round(accuracy * val_count),
                       "proxy_seed": seed, "proxy_wall_time_s": wall_s, "epochs_done": None,
                       "proxy_device": "table"}}


@dataclass
class TableEvaluator:
    """Proposes candidates with `space` and answers every measurement from `table`.
    `seed`: the replay's seed (also the first training's seed, as a search's proxy seed)."""

    table: Table
    space: TableSpace
    seed: int = 0

    def _row(self, record) -> int:
        return self.table.row[record.arch_hash]

    def propose(self, trial: optuna.Trial) -> dict[str, Any]:
        fields = self.space.sample(trial)
        if fields["arch_hash"] not in self.table.row:
            raise optuna.TrialPruned(f"{fields.get('layout', fields['arch_hash'])} is not in table {self.table.name}")
        return fields

    def reference_params(self) -> list[dict[str, Any]]:
        return self.space.reference_params()

    def cheap(self, record) -> dict[str, float]:
        row = self._row(record)
        return {"params": float(self.table.params[row]), "macs": float(self.table.macs[row])}

    def cached_latency(self, record) -> dict[str, Any] | None:
        return None  # measured in a (simulated) profiling window, as in a real search

    def latency_fields(self, row: int) -> dict[str, Any]:
        t = self.table
        low = None if t.latency_ci_low_ms is None else float(t.latency_ci_low_ms[row])
        high = None if t.latency_ci_high_ms is None else float(t.latency_ci_high_ms[row])
        return {"latency_ms": float(t.latency_ms[row]), "latency_ci_low_ms": low, "latency_ci_high_ms": high,
                "params": float(t.params[row]), "macs": float(t.macs[row]), "latency_window": "table"}

    def latency(self, records, remeasure: bool = False) -> tuple:
        fields = {r.arch_hash: self.latency_fields(self._row(r)) for r in records}
        return table_latency_job, (fields, self.table.profile_s * len(fields))

    def replicate_order(self, row: int) -> np.ndarray:
        """The order in which this replay hands out the row's stored accuracies."""
        return np.random.default_rng([self.seed, row]).permutation(self.table.stored(row))

    def train(self, record, seed: int | None = None, progress: Any = None, tag: Any = None) -> tuple:
        # Replicate k has seed `replicate_seed(self.seed, k)` = self.seed + k (search.measure.estimate).
        seed = self.seed if seed is None else seed
        row = self._row(record)
        order = self.replicate_order(row)
        accuracy = float(order[(seed - self.seed) % len(order)])  # beyond the stored seeds: they repeat
        return table_training_job, (accuracy, self.table.val_count, seed, float(self.table.train_s[row]))
