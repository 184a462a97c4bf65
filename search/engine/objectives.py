"""The objectives a search can optimise: one table that every other module reads.

Settings check names against it, the study takes its directions, the driver takes each
trial's values from the trial record's `field`, and the report, dashboard and export name
and format columns with it. Adding an objective is one entry here (plus, where needed, the
measurement that fills its field in `search.record.TrialRecord`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    name: str  # as written in `search.objectives=[...]`
    direction: str  # "maximize" | "minimize"
    field: str  # the `TrialRecord` field that holds its value
    label: str  # column and axis title
    unit: str = ""  # unit of the shown value
    scale: float = 1.0  # shown value = value / scale
    fmt: str = "{:.2f}"
    budget_key: str | None = None  # the `Budget` ceiling on it (`max_<field>`), if any

    def format(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "?"
        return self.fmt.format(value / self.scale) + self.unit

    @property
    def worst(self) -> float:
        """The value a trial that was never measured gets: it can never join the front."""
        return 0.0 if self.direction == "maximize" else math.inf


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("accuracy", "maximize", "accuracy", "proxy accuracy", fmt="{:.3f}"),
    Objective("latency", "minimize", "latency_ms", "latency (ms)", budget_key="max_latency_ms"),
    Objective("macs", "minimize", "macs", "MACs", "G", 1e9, budget_key="max_macs"),
    Objective("params", "minimize", "params", "params", "M", 1e6, "{:.1f}", budget_key="max_params"),
    Objective("peak_memory", "minimize", "peak_memory_bytes", "peak memory", "MB", 1e6, "{:.1f}"),
)}
# The report and dashboard draw the accuracy-latency plane: every study has both, first.
REQUIRED = ("accuracy", "latency")


@dataclass(frozen=True)
class ProxyScore:
    """One score of a proxy training (`search.measure.proxy.SCORES`) that the search can tell
    Optuna as the "accuracy" objective (`proxy.score=`). The objective always maximizes, so a
    loss is told negated: the study's directions, and so its resume check, do not depend on
    which score it was told. Every score is kept in the record whichever is told."""

    name: str
    field: str  # the `TrialRecord` field that holds it
    higher_is_better: bool

    def told(self, value: float | None) -> float:
        """What Optuna is told; a score never measured is the worst a maximized value can be."""
        if value is None or not math.isfinite(value):
            return 0.0 if self.higher_is_better else -math.inf
        return float(value) if self.higher_is_better else -float(value)


PROXY_SCORES: dict[str, ProxyScore] = {s.name: s for s in (
    ProxyScore("accuracy", "accuracy", True),  # the whole validation slice
    ProxyScore("head_accuracy", "head_accuracy", True),  # its first val_head images (the per-epoch curve's)
    ProxyScore("tse", "tse", False),  # mean training loss over the run
    ProxyScore("tse_ema", "tse_ema", False),  # its moving average, weighted to the end of the run
)}


def objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f"objective {name!r}: unknown (choose from {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


def check_objectives(names: list[str]) -> None:
    """Raise ValueError (one line) unless `names` are known, distinct and start with REQUIRED."""
    for name in names:
        objective(name)
    if len(set(names)) != len(names):
        raise ValueError(f"{names}: an objective is named twice")
    if tuple(names[: len(REQUIRED)]) != REQUIRED:
        extras = [n for n in OBJECTIVES if n not in REQUIRED]
        raise ValueError(f"must start with {', '.join(REQUIRED)} (extras: {', '.join(extras)})")
