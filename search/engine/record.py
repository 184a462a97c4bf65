"""One trial's record: everything a trial stores, typed, in one place.

The driver fills a `TrialRecord` as the trial goes and saves it as Optuna user attributes
(one attribute per field, so optuna-dashboard and `trials.csv` show them). The report,
dashboard and export read records back with `TrialRecord.load`, never raw attribute keys:
a renamed field is a change here and nowhere else.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.engine.objectives import OBJECTIVES, PROXY_SCORES

# How a finished trial got its values.
TRAINED, REUSED, INFEASIBLE, FAILED, INTERRUPTED = "trained", "reused", "infeasible", "failed", "interrupted"


@dataclass
class TrialRecord:
    # What was asked: the candidate and its two networks.
    layout: str = ""
    family: str = ""
    arch_hash: str = ""
    target_name: str = ""
    proxy_name: str = ""
    c_block: str = ""
    t_block: str = ""
    t_per_stage: str = ""
    target_config: dict[str, Any] | None = None
    proxy_config: dict[str, Any] | None = None
    reference: bool = False  # one of the paper's layouts, enqueued first
    retry_of: int | None = None
    retry_count: int = 0
    # Cost of the target network (profiler).
    params: float | None = None
    macs: float | None = None
    latency_ms: float | None = None  # median
    latency_p90_ms: float | None = None
    latency_iqr_ms: float | None = None
    latency_samples: int | None = None
    latency_ci_low_ms: float | None = None  # 95% interval of the anchored median (bootstrap over rounds)
    latency_ci_high_ms: float | None = None
    latency_ci_rel_half_width: float | None = None  # the precision reached
    latency_rounds: int | None = None
    latency_reference: dict[str, Any] | None = None  # the network it is anchored to: arch hash, median ms
    latency_raw_median_ms: float | None = None  # before anchoring
    latency_window: str | None = None  # measurements of one window compare directly
    latency_contamination: str | None = None  # set when the machine was too busy to trust the number
    load_foreign_cpu: float | None = None  # cores other processes used while it was timed
    load_steal: float | None = None
    peak_memory_bytes: float | None = None
    profile_fingerprint: dict[str, Any] | None = None
    profile_settings: dict[str, Any] | None = None
    profile_node_id: str | None = None  # where latency was measured (a Ray node, or "local")
    profile_host: str | None = None
    # Accuracy of the proxy network.
    trained: bool = False
    accuracy: float | None = None  # this trial's own training; refined estimates: search.replicates
    val_count: int | None = None  # images scored
    val_correct: int | None = None
    head_accuracy: float | None = None  # on the slice's first head_count images (scored every epoch: val_curve)
    head_count: int | None = None
    head_correct: int | None = None
    tse: float | None = None  # mean training loss over the whole run
    tse_ema: float | None = None  # its moving average, weighted to the end of the run
    proxy_seed: int | None = None  # training seed: replicates of one architecture differ in it
    val_curve: list[float] | None = None
    train_loss_curve: list[float] | None = None
    images_per_sec: float | None = None
    proxy_wall_time_s: float | None = None
    epochs_done: int | None = None
    proxy_device: str | None = None
    train_started_at: float | None = None
    train_finished_at: float | None = None
    train_node_id: str | None = None
    train_host: str | None = None
    # Outcome.
    status: str | None = None  # TRAINED | REUSED | INFEASIBLE | FAILED | INTERRUPTED
    infeasible_reason: str | None = None
    failure_reason: str | None = None
    reused_from: int | None = None

    # Who the trial is, as opposed to what was measured: a reused result copies the rest.
    IDENTITY = ("reference", "retry_of", "retry_count", "status", "reused_from")
    # Older studies spelled some fields differently.
    LEGACY = {"val_accuracy": "accuracy"}

    # ------------------------------------------------------------------ values
    def value(self, name: str, score: str = "accuracy") -> float:
        """The objective's value for Optuna; a value never measured is the objective's worst.
        The "accuracy" objective is told the proxy score named `score` (`PROXY_SCORES`)."""
        if name == "accuracy":
            proxy_score = PROXY_SCORES[score]
            return proxy_score.told(getattr(self, proxy_score.field))
        objective = OBJECTIVES[name]
        value = getattr(self, objective.field)
        return objective.worst if value is None else float(value)

    def values(self, names: list[str], score: str = "accuracy") -> list[float]:
        return [self.value(n, score) for n in names]

    def metrics(self) -> dict[str, float]:
        """The measured numbers a budget can judge (see `Budget.violations`)."""
        return {k: float(v) for k in ("params", "macs", "latency_ms") if (v := getattr(self, k)) is not None}

    def measurements(self) -> dict[str, Any]:
        """Every field except the trial's identity: what a twin of the same architecture shares."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.IDENTITY}

    def retry_attrs(self, number: int, spent: int) -> dict[str, Any]:
        """What a queued rerun of this trial (trial `number`) is enqueued with: its identity,
        so a retried reference is still a reference, and the retries spent so far."""
        return {"retry_of": number, "retry_count": self.retry_count + spent, "reference": self.reference}

    def update(self, **changes: Any) -> None:
        for key, value in changes.items():
            if not hasattr(self, key):
                raise AttributeError(f"TrialRecord has no field {key!r}")
            setattr(self, key, value)

    # ------------------------------------------------------------------ storage
    def to_attrs(self) -> dict[str, Any]:
        """JSON-safe user attributes: unset fields left out, NaN/inf as None, tuples as lists."""
        return {f.name: _json(v) for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}

    def save(self, trial: optuna.Trial) -> None:
        for key, value in self.to_attrs().items():
            trial.set_user_attr(key, value)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "TrialRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        data = {cls.LEGACY.get(k, k): v for k, v in attrs.items()}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, trial: FrozenTrial | optuna.Trial) -> "TrialRecord":
        return cls.from_attrs(trial.user_attrs)


def _json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, list)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def record_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(TrialRecord)]

