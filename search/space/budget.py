"""Ceilings on a candidate's cost: plain numbers, so the engine can judge them without torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """Optional ceilings on the target network (None: no ceiling); a trial above any of
    them is infeasible and not trained."""

    max_latency_ms: float | None = None
    max_macs: float | None = None
    max_params: float | None = None

    def keys(self) -> list[str]:
        return [k for k in ("latency_ms", "macs", "params") if getattr(self, f"max_{k}") is not None]

    def violations(self, metrics: dict[str, float]) -> dict[str, float]:
        """Relative excess per ceiling (> 0 means over budget) for the metrics known so far."""
        return {key: metrics[key] / getattr(self, f"max_{key}") - 1.0 for key in self.keys() if key in metrics}
