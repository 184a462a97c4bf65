"""Settings vocabulary that needs no torch: where and in which precision a network runs,
the budget's ceilings, and `setting()`, which declares a settings field with its help.

It lives apart from `spec.py` (which imports `ascan`, hence torch) so that the command line's
schema can be read, and `run_search.py help` answered, without importing torch.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Where and in which precision a network runs: the spec's target, the command line and the
# profiler all read these. A device is one of DEVICES or `cuda:N` (`is_device`).
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "auto, cpu, cuda or cuda:N"
DEVICE_CHOICES = (*DEVICES, "cuda:N")  # as help shows them


def is_device(name: object) -> bool:
    return isinstance(name, str) and (name in DEVICES or re.fullmatch(r"cuda:\d{1,2}", name) is not None)


def setting(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    """A settings field with its meaning (and allowed values), which `run_search.py help`
    and the settings reference show: the default and the help are written once, here."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Budget:
    """Optional ceilings on the target network (None: no ceiling); a trial above any of
    them is infeasible and not trained."""

    max_latency_ms: float | None = setting(None, "latency ceiling in ms (> 0)")
    max_macs: float | None = setting(None, "MACs ceiling (> 0)")
    max_params: float | None = setting(None, "parameter ceiling (> 0)")

    def keys(self) -> list[str]:
        return [k for k in ("latency_ms", "macs", "params") if getattr(self, f"max_{k}") is not None]

    def violations(self, metrics: dict[str, float]) -> dict[str, float]:
        """Relative excess per ceiling (> 0 means over budget) for the metrics known so far."""
        return {key: metrics[key] / getattr(self, f"max_{key}") - 1.0 for key in self.keys() if key in metrics}
