"""The engine's settings, declared where the command line's schema can read them without
importing the engine's heavier modules (optuna, the measurement jobs)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RefineSettings:
    trainings: int = field(default=4, metadata={
        "help": "extra trainings after the search where front membership is in doubt (0: off)"})
    max_replicates: int = field(default=3, metadata={
        "help": "trainings per architecture at most, its first one included (>= 1)"})
    margin_se: float = field(default=2.0, metadata={
        "help": "in doubt: not beaten by more than this many standard errors (> 0)"})
