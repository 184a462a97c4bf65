"""The run configuration: every key `run_search.py` accepts, its type and default.

Keys are set Hydra-style on the command line (`search.n_trials=40 proxy.epochs=3
executor=inline`). OmegaConf checks names and types against the dataclasses below; an
unknown key or a bad value becomes a one-line `SettingsError` with close matches.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .objectives import OBJECTIVES, check_objectives


class SettingsError(ValueError):
    """A bad command-line key or value (one line)."""


@dataclass
class SearchSettings:
    n_trials: int = 16  # finished trials wanted; a rerun resumes until this many exist
    sampler: str = "tpe"  # tpe | nsga2 | gp | random | grid
    seed: int = 0
    study_name: Optional[str] = None  # default: derived from space, data and seed
    storage: Optional[str] = None  # SQLAlchemy URL; default: sqlite:///results/<study>/study.db
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "latency"])  # + see search/objectives.py
    max_retries: int = 1  # re-runs of a trial whose worker died
    enqueue_references: bool = True  # the paper's C1 and symmetric layouts first


@dataclass
class RefineOverrides:
    trainings: int = 8  # extra trainings after the search, where the front is in doubt (0: off)
    max_replicates: int = 3  # trainings per architecture at most, its first one included
    margin_se: float = 2.0  # in doubt: not beaten by more than this many standard errors


@dataclass
class RaySettings:
    address: Optional[str] = None  # join a running cluster; default: start a local one
    num_cpus: Optional[int] = None  # CPUs of the local cluster; default: all
    trial_cpus: float = 1.0  # CPUs per proxy training
    trial_gpus: Optional[float] = None  # GPUs per proxy training; default: 1 when the cluster has GPUs
    max_concurrent: Optional[int] = None  # default: as many as the resources allow
    pending_timeout_s: float = 30.0  # a job no node can run is an error after this long


@dataclass
class DataSettings:
    name: str = "cifar10"  # cifar10 | fashion_mnist | imagefolder
    root: Optional[str] = None


@dataclass
class ProxyOverrides:
    preset: str = "default"  # smoke | default | thorough
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    train_size: Optional[int] = None
    val_size: Optional[int] = None
    device: Optional[str] = None  # default: cuda when present, else cpu


@dataclass
class BudgetOverrides:
    max_latency_ms: Optional[float] = None  # ceilings; default: the space's own
    max_macs: Optional[float] = None
    max_params: Optional[float] = None


@dataclass
class ProfileOverrides:
    device: Optional[str] = None  # default: the space's target device
    batch_size: Optional[int] = None
    min_time_s: float = 1.0
    min_iters: int = 10
    cache: Optional[str] = None  # default: results/profile_cache.sqlite, shared by studies
    node: Optional[str] = None  # Ray: the node that measures latency (id prefix, IP or host); default: the driver's
    resources: dict[str, float] = field(default_factory=dict)  # Ray: or the node with these custom resources


@dataclass
class RunSettings:
    space: str = MISSING  # a spec name (looked up in $ASCAN_SPACES, then the shipped specs) or a path to a YAML file
    executor: str = "ray"  # ray | inline
    results_dir: str = "results"
    dry_run: bool = False
    search: SearchSettings = field(default_factory=SearchSettings)
    refine: RefineOverrides = field(default_factory=RefineOverrides)
    ray: RaySettings = field(default_factory=RaySettings)
    data: DataSettings = field(default_factory=DataSettings)
    proxy: ProxyOverrides = field(default_factory=ProxyOverrides)
    budget: BudgetOverrides = field(default_factory=BudgetOverrides)
    profile: ProfileOverrides = field(default_factory=ProfileOverrides)


SAMPLERS = ("tpe", "nsga2", "gp", "random", "grid")
EXECUTORS = ("ray", "inline")


def all_keys(node: Any = None, prefix: str = "") -> dict[str, Any]:
    """Every dotted key with its default, in declaration order."""
    node = OmegaConf.structured(RunSettings) if node is None else node
    keys: dict[str, Any] = {}
    for name in node:
        value = node._get_node(name)
        path = f"{prefix}{name}"
        if OmegaConf.is_dict(value):
            keys.update(all_keys(value, path + "."))
        else:
            keys[path] = value._value()
    return keys


def help_text() -> str:
    lines = ["usage: python run_search.py space=NAME [key=value ...]", "", "keys (default):"]
    width = max(len(k) for k in all_keys())
    for key, default in all_keys().items():
        shown = "(required)" if default == MISSING else repr(default)
        lines.append(f"  {key:<{width}}  {shown}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> RunSettings:
    """`["space=hybrid", "search.n_trials=4"]` -> a checked `RunSettings`."""
    schema = OmegaConf.structured(RunSettings)
    for arg in argv:
        if "=" not in arg:
            raise SettingsError(f"{arg!r}: expected key=value (try 'help')")
        key = arg.split("=", 1)[0].lstrip("+")
        if key not in all_keys():
            hint = difflib.get_close_matches(key, all_keys(), n=3)
            raise SettingsError(f"{key}: unknown key" + (f" (did you mean {', '.join(hint)}?)" if hint else " (try 'help')"))
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(argv))
        settings: RunSettings = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        reason = str(err).splitlines()[0]
        raise SettingsError(f"{key}: {reason}") from None
    _check_choices(settings)
    return settings


def _check_choices(s: RunSettings) -> None:
    def choose(key: str, value: Any, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            hint = difflib.get_close_matches(str(value), allowed, n=1)
            raise SettingsError(f"{key}={value!r}: choose one of {', '.join(allowed)}"
                                + (f" (did you mean {hint[0]!r}?)" if hint else ""))

    choose("executor", s.executor, EXECUTORS)
    choose("search.sampler", s.search.sampler, SAMPLERS)
    for objective in s.search.objectives:
        choose("search.objectives", objective, tuple(OBJECTIVES))
    try:
        check_objectives(list(s.search.objectives))
    except ValueError as err:
        raise SettingsError(f"search.objectives: {err}") from None
    if s.search.n_trials < 1:
        raise SettingsError(f"search.n_trials={s.search.n_trials}: must be at least 1")
    if s.search.max_retries < 0:
        raise SettingsError(f"search.max_retries={s.search.max_retries}: must be 0 or more")
    if s.ray.trial_cpus <= 0:
        raise SettingsError(f"ray.trial_cpus={s.ray.trial_cpus}: must be positive")


def to_yaml(settings: RunSettings) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(settings))
