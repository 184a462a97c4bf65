"""The evaluator seam: everything the engine measures comes from an `Evaluator`.

The engine (driver, refinement, phases) never builds a network. It asks an evaluator to
propose a candidate for an Optuna trial, for its instant metrics (params, MACs), for a cached
latency, and for jobs that measure latency or train one replicate. The jobs run wherever the
executor puts them, so they are plain functions of plain data (`Task`), and their results are
already in the trial record's terms (`TrialRecord` field names), so the engine only stores them.

Implementations: `search.measure.evaluator.ProxyEvaluator` trains proxies on real data and
times real networks; a table evaluator answers from a tabular benchmark (`search.replay`). A
new task (say, a dense proxy) is one new evaluator.

Result shapes, shared by every evaluator:
- a latency job returns `{"started_at": s, "finished_at": s, "fields": {arch_hash: fields}}`:
  the window's span (the profiling share counts it) and each candidate's latency fields
  (`latency_ms`, `latency_ci_low_ms`, ..., `params`, `macs`);
- a training job returns `{"ok": bool, "failure_reason": str | None, "fields": fields}` with at
  least `accuracy`, `val_count` and `proxy_seed` when it is ok.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import optuna

from search.engine.record import TrialRecord


# A job for an executor: `fn(*args)` runs there and returns plain data. A plain pair, so an
# evaluator needs nothing from the engine to build one.
Task = tuple[Callable[..., Any], tuple[Any, ...]]


@runtime_checkable
class Evaluator(Protocol):
    def propose(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample a candidate for `trial` and describe it: the record fields known before any
        measurement (`layout`, `family`, `arch_hash`, ...). May raise `optuna.TrialPruned`."""

    def reference_params(self) -> list[dict[str, Any]]:
        """The params of the candidates every study tries first (the paper's C1, ...)."""

    def cheap(self, record: TrialRecord) -> dict[str, float]:
        """Instant metrics (params, MACs) that a budget can reject a candidate on."""

    def cached_latency(self, record: TrialRecord) -> dict[str, Any] | None:
        """The candidate's latency fields from a cache, or None (then `latency` measures it)."""

    def latency(self, records: list[TrialRecord], remeasure: bool = False) -> Task:
        """A job that times these candidates together (it runs alone on the profiling node).
        `remeasure`: time them even if cached."""

    def train(self, record: TrialRecord, seed: int | None = None, progress: Any = None, tag: Any = None) -> Task:
        """A job that trains and scores one replicate (`seed`, or the search's seed). It puts
        `(tag, epoch, epochs, accuracy)` on `progress` (an executor's channel) after each epoch."""
