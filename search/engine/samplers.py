"""The samplers a search can use, by name: a registry, and any other Optuna sampler by path.

Optuna is imported inside the factories, so the command line's schema (which lists the names)
is read without it.
"""
from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


def _tpe(seed: int, parallel: bool) -> "BaseSampler":
    import optuna

    return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel, multivariate=True)  # a liar when trials overlap


def _nsga2(seed: int, parallel: bool) -> "BaseSampler":
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)


def _gp(seed: int, parallel: bool) -> "BaseSampler":
    import optuna

    return optuna.samplers.GPSampler(seed=seed)


def _random(seed: int, parallel: bool) -> "BaseSampler":
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _grid(seed: int, parallel: bool) -> "BaseSampler":
    import optuna

    from search.engine.study import GridSampler

    with warnings.catch_warnings():  # "experimental since v3.1": noise to a user who asked for it
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return GridSampler(seed=seed)


# Each made from (seed, parallel). A new built-in is one entry.
SAMPLERS: dict[str, Callable[[int, bool], "BaseSampler"]] = {
    "tpe": _tpe, "nsga2": _nsga2, "gp": _gp, "random": _random, "grid": _grid}
# Replayed against NAS-Bench-201 (docs/replay.md), GP with refinement has half of random
# search's hypervolume regret at 64 evaluations; TPE with refinement three quarters.
DEFAULT_SAMPLER = "gp"


def sampler_class(path: str) -> type:
    """The class named `package.module:Class`; ValueError (one line) if it is not a sampler."""
    import optuna

    module_name, _, class_name = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"search.sampler={path!r}: cannot import it ({err})") from None
    if not (isinstance(found, type) and issubclass(found, optuna.samplers.BaseSampler)):
        raise ValueError(f"search.sampler={path!r}: not a subclass of optuna.samplers.BaseSampler")
    return found


def make_sampler(name: str, seed: int, parallel: bool) -> "BaseSampler":
    """A sampler by name (`SAMPLERS`) or import path (`package.module:Class`), always seeded."""
    if name in SAMPLERS:
        return SAMPLERS[name](seed, parallel)
    if ":" not in name:
        raise ValueError(f"search.sampler={name!r}: unknown; choose one of {', '.join(SAMPLERS)} "
                         "or name a class as package.module:Class")
    cls = sampler_class(name)
    try:
        return cls(seed=seed)
    except TypeError as err:
        raise ValueError(f"search.sampler={name!r}: it must take a seed keyword ({err})") from None
