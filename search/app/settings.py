"""The run configuration: every key `run_search.py` accepts, its type, default and meaning.

Keys are set Hydra-style on the command line (`search.n_trials=40 proxy.epochs=3
executor=inline`); `config=results/<study>/config.yaml` starts from a saved study's settings
(later keys override it), and `key=a,b` sweeps: one run per value (`parse_sweep`).
The schema is the dataclasses below. A key that is a setting of one wing (proxy training and
latency timing in `search/measure/settings.py`, refinement in `search/engine/settings.py`,
the budget in `search/space/settings.py`) takes that field's default and help (`declared`,
`override`), so each default is written once; field metadata is the help text. Each key
is checked for name, repetition and type before OmegaConf merges it (so messages are
ours), then every value (`parse_args`), then the machine (`validate`: the space reads, the
data is there, paths writable, devices present, storage URL usable) before anything is
created. Any problem is a one-line `SettingsError` naming the key and (clipped) value.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math
import os
import re
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from search.engine.objectives import OBJECTIVES, PROXY_SCORES, check_objectives
from search.engine.probe import connect_error
from search.engine.settings import RefineSettings
from search.engine.samplers import DEFAULT_SAMPLER, SAMPLERS as SAMPLER_REGISTRY, sampler_class
from search.measure.settings import CLOCKS, PRESETS, LatencySettings, ProxySettings
from search.space import safe_yaml
from search.space.settings import DEVICE_HELP, DTYPES, Budget, is_device


class SettingsError(ValueError):
    """A bad command-line key or value (one line, bounded length)."""

    def __init__(self, message: str):
        message = " ".join(message.split())
        super().__init__(message if len(message) <= 300 else message[:297] + "...")


def _key(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A setting only the command line has (the wings' own are `declared` or `override`)."""
    return field(default=default, metadata={"help": help, "choices": choices})


def _wing_field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def declared(cls: type, name: str) -> Any:
    """A key whose default and help are those of the wing's own settings field `cls.name`."""
    wing = _wing_field(cls, name)
    if wing.default_factory is not dataclasses.MISSING:
        return field(default_factory=wing.default_factory, metadata=wing.metadata)
    return field(default=wing.default, metadata=wing.metadata)


def override(cls: type, name: str, otherwise: str) -> Any:
    """A key that overrides the wing's field `cls.name` where given; unset (None), the value
    comes from elsewhere (`otherwise`: the preset's, the space's)."""
    meta = _wing_field(cls, name).metadata
    return field(default=None, metadata={"help": f"{meta['help']}; default: {otherwise}",
                                         "choices": meta.get("choices")})


SAMPLERS = tuple(SAMPLER_REGISTRY)
EXECUTORS = ("ray", "inline")


@dataclass
class SearchSettings:
    n_trials: int = _key(16, "finished trials wanted; a rerun resumes until this many exist")
    sampler: str = _key(DEFAULT_SAMPLER, "Optuna sampler: a name, or any optuna BaseSampler subclass as package.module:Class", SAMPLERS)
    seed: int = _key(0, "seed of the sampler and the proxy training (0 to 2**32-1)")
    study_name: Optional[str] = _key(None, "letters, digits and ._+=- (at most 100); default: <space>-<data>-<preset>-s<seed>")
    storage: Optional[str] = _key(None, "SQLAlchemy URL; default: sqlite:///<results_dir>/<study>/study.db")
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "latency"], metadata={
        "help": "objectives: accuracy, latency, then any extras (the table in search/engine/objectives.py)",
        "choices": tuple(OBJECTIVES)})
    max_retries: int = _key(1, "re-runs of a trial whose worker died")
    enqueue_references: bool = _key(True, "try the paper's C1 and symmetric layouts first")
    time_budget: Optional[str] = _key(None, "wall time of the whole run, e.g. 20m, 90s, 1.5h: no trial or refinement "
                                            "training starts that would end after it; default: none")


@dataclass
class RaySettings:
    address: Optional[str] = _key(None, "host:port of a running cluster to join; default: start a local one")
    num_cpus: Optional[int] = _key(None, "CPUs of the local cluster (>= 1); default: all")
    trial_cpus: float = _key(1.0, "CPUs per proxy training (> 0)")
    trial_gpus: Optional[float] = _key(None, "GPUs per proxy training (>= 0); default: 1 when the cluster has GPUs")
    max_concurrent: Optional[int] = _key(None, "trials in flight at once (>= 1); default: as many as resources allow")
    pending_timeout_s: float = _key(30.0, "a job that no node can run is an error after this many seconds (> 0)")


@dataclass
class RefineOverrides:
    trainings: int = declared(RefineSettings, "trainings")
    max_replicates: int = declared(RefineSettings, "max_replicates")
    margin_se: float = declared(RefineSettings, "margin_se")


@dataclass
class DataSettings:
    name: str = _key("cifar10", "dataset", ("cifar10", "fashion_mnist", "imagefolder"))
    root: Optional[str] = _key(None, "file or folder of the dataset; default: looked up (see search/measure/data.py)")
    download: bool = _key(False, "cifar10 only: when it is not found, fetch it (170 MB, checksum verified) into "
                                 "data.root or ~/.cache/ascan-search")


@dataclass
class ProxyOverrides:
    preset: str = _key("default", "proxy training recipe", tuple(PRESETS))
    epochs: Optional[int] = override(ProxySettings, "epochs", "the preset's")
    batch_size: Optional[int] = override(ProxySettings, "batch_size", "the preset's")
    lr: Optional[float] = override(ProxySettings, "lr", "the preset's")
    train_size: Optional[int] = override(ProxySettings, "train_size", "the preset's")
    val_size: Optional[int] = override(ProxySettings, "val_size", "the preset's")
    device: Optional[str] = override(ProxySettings, "device", "auto")
    score: Optional[str] = override(ProxySettings, "score", "the preset's")


@dataclass
class BudgetOverrides:
    max_latency_ms: Optional[float] = override(Budget, "max_latency_ms", "the space's")
    max_macs: Optional[float] = override(Budget, "max_macs", "the space's")
    max_params: Optional[float] = override(Budget, "max_params", "the space's")


@dataclass
class ProfileOverrides:
    device: Optional[str] = override(LatencySettings, "device", "the space's target device")
    batch_size: Optional[int] = override(LatencySettings, "batch_size", "the space's")
    dtype: Optional[str] = override(LatencySettings, "dtype", "the space's")
    compile: Optional[bool] = override(LatencySettings, "compile", "the space's")
    img_size: Optional[int] = override(LatencySettings, "img_size", "the space's target size")
    min_time_s: float = declared(LatencySettings, "min_time_s")
    min_iters: int = declared(LatencySettings, "min_iters")
    clock: str = declared(LatencySettings, "clock")
    target_rel_ci: float = declared(LatencySettings, "target_rel_ci")
    max_time_s: float = declared(LatencySettings, "max_time_s")
    cache: Optional[str] = _key(None, "profile cache file; default: <results_dir>/profile_cache.sqlite, shared by studies")
    node: Optional[str] = _key(None, "Ray: the node that measures latency (node id prefix, IP or host); "
                                     "default: the driver's")
    resources: dict[str, float] = field(default_factory=dict, metadata={
        "help": "Ray: or the node offering these custom resources, e.g. {deploy_gpu: 1}", "choices": None})


@dataclass
class RunSettings:
    space: str = _key(MISSING, "a spec name (looked up in $ASCAN_SPACES, then the shipped specs) or a YAML path")
    executor: str = _key("ray", "where trials run", EXECUTORS)
    results_dir: str = _key("results", "folder of the study folders (created if missing)")
    dry_run: bool = _key(False, "show the space and settings, train nothing")
    quick: bool = _key(False, "a few-minute demonstration of the whole flow: the defaults of QUICK in "
                              "search/app/settings.py (small proxies, small loosely timed targets); its numbers "
                              "are not for decisions")
    search: SearchSettings = field(default_factory=SearchSettings)
    refine: RefineOverrides = field(default_factory=RefineOverrides)
    ray: RaySettings = field(default_factory=RaySettings)
    data: DataSettings = field(default_factory=DataSettings)
    proxy: ProxyOverrides = field(default_factory=ProxyOverrides)
    budget: BudgetOverrides = field(default_factory=BudgetOverrides)
    profile: ProfileOverrides = field(default_factory=ProfileOverrides)


# What quick=true changes, unless the command line sets the key itself: a few trainings of a
# small proxy, latency of 64-pixel targets timed in short windows to a 5% interval, and two
# refinement trainings, on the inline executor (no cluster to start).
QUICK = {"executor": "inline", "search.n_trials": 6, "proxy.preset": "smoke", "refine.trainings": 2,
         "profile.img_size": 64, "profile.target_rel_ci": 0.05, "profile.min_time_s": 0.1, "profile.min_iters": 3,
         "profile.max_time_s": 5.0}


def all_keys(node: Any = None, prefix: str = "") -> dict[str, Any]:
    """Every dotted key with its default, in declaration order."""
    node = OmegaConf.structured(RunSettings) if node is None else node
    keys: dict[str, Any] = {}
    for name in node:
        value = node._get_node(name)
        path = f"{prefix}{name}"
        if OmegaConf.is_dict(value) and dataclasses.is_dataclass(OmegaConf.get_type(value)):
            keys.update(all_keys(value, path + "."))
        else:  # a leaf: a value, a list, or a free-form mapping such as profile.resources
            keys[path] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value._value()
    return keys


def _fields(cls: type = RunSettings, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every dotted key's dataclass field, in declaration order."""
    found: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            found.update(_fields(type(nested), f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = f
    return found


def help_text() -> str:
    lines = ["usage: python run_search.py space=NAME [key=value ...]",
             "       python run_search.py config=results/<study>/config.yaml [key=value ...]  # rerun a saved study",
             "       python run_search.py space=hybrid,paper [key=value ...]  # a sweep: one study per value",
             "", "keys: default; meaning [allowed values]"]
    defaults, fields_ = all_keys(), _fields()
    width = max(map(len, defaults))
    for key, default in defaults.items():
        meta = fields_[key].metadata if key in fields_ else {}
        shown = "(required)" if default == MISSING else repr(default)
        choices = f" [{' | '.join(meta['choices'])}]" if meta.get("choices") else ""
        lines.append(f"  {key:<{width}}  {shown}; {meta.get('help', '')}{choices}".rstrip("; "))
    return "\n".join(lines)


# Names people type for an allowed value: matched before spelling (`suggest`).
ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
           "local": "inline", "serial": "inline", "nsgaii": "nsga2", "nsga-ii": "nsga2", "bayes": "gp",
           "gpu": "cuda", "quick": "smoke", "acc": "accuracy", "time": "latency"}


def suggest(value: Any, allowed: Any) -> str:
    """' (did you mean 'x'?)' for a value close to one allowed: same letters in another case,
    a known alias, or a near spelling; '' when nothing is close."""
    allowed = [str(a) for a in allowed]
    text = str(value).strip().lower()
    by_case = {a.lower(): a for a in allowed}
    match = by_case.get(text) or (ALIASES.get(text) if ALIASES.get(text) in allowed else None)
    if match is None:
        close = difflib.get_close_matches(text, list(by_case), n=1)
        match = by_case[close[0]] if close else None
    return f" (did you mean {match!r}?)" if match is not None else ""


def help_markdown() -> str:
    """The settings reference page (docs/settings.md), generated from the schema:
    `python run_search.py help --markdown > docs/settings.md`."""
    lines = ["# Settings reference", "",
             "<!-- generated by `python run_search.py help --markdown > docs/settings.md`; do not edit -->", "",
             "Every key of `python run_search.py`, as `key=value` on the command line (or `overrides=` of",
             "the Python API). `key=a,b` runs one study per value; `config=results/<study>/config.yaml`",
             "starts from a saved study's settings. A key that is a setting of one part of the tool",
             "(proxy training, latency timing, refinement, the budget) shows that part's own default.",
             f"`quick=true` sets these unless given: {', '.join(f'`{k}={v}`' for k, v in QUICK.items())}."]
    section = None
    fields_ = _fields()
    for key, default in all_keys().items():
        group = key.split(".")[0] if "." in key else "run"
        if group != section:
            section = group
            lines += ["", f"## {group}", "", "| key | default | meaning |", "|---|---|---|"]
        meta = fields_[key].metadata
        shown = "(required)" if default == MISSING else f"`{default!r}`"
        choices = f"; allowed: {', '.join(f'`{c}`' for c in meta['choices'])}" if meta.get("choices") else ""
        lines.append(f"| `{key}` | {shown} | {meta.get('help', '')}{choices} |".replace("<", "&lt;").replace(">", "&gt;"))
    return "\n".join(lines) + "\n"


def _clip(value: Any, limit: int = 80) -> str:
    """`value` as a message shows it: repr'd strings, at most `limit` characters."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _split(arg: str) -> tuple[str, str]:
    if "=" not in arg:
        raise SettingsError(f"{_clip(arg)}: expected key=value (try 'help')")
    key, value = arg.split("=", 1)
    return key.lstrip("+"), value


def _read_config(value: str) -> dict:
    """A saved `config.yaml` (what `to_yaml` writes) as a plain mapping."""
    path = Path(value).expanduser()
    try:
        data = safe_yaml.load(path.read_bytes()) if path.stat().st_size <= safe_yaml.MAX_BYTES else None
    except OSError as err:
        raise SettingsError(f"config={_clip(value)}: cannot read ({err.strerror or err})") from None
    except safe_yaml.YamlError as err:
        raise SettingsError(f"config={_clip(value)}: {err}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config={_clip(value)}: expected a mapping of settings (a saved config.yaml)")
    return data


def parse_sweep(argv: list[str]) -> list[RunSettings]:
    """Like `parse_args`, but `key=a,b` gives one `RunSettings` per value (several such keys:
    every combination). A list value in brackets (`[a,b]`) is one value, not a sweep."""
    choices = []
    for arg in argv:
        key, value = _split(arg)
        if "," in value and not value.lstrip().startswith(("[", "{", "'", '"')):
            values = value.split(",")
            if not all(v.strip() for v in values) or len(set(values)) < len(values):
                raise SettingsError(f"{key}={_clip(value)}: a sweep needs distinct, non-empty values")
            choices.append([f"{key}={v}" for v in values])
        else:
            choices.append([arg])
    runs = [parse_args(list(combo)) for combo in itertools.product(*choices)]
    names = {run.search.study_name for run in runs}
    if len(runs) > 1 and len(names) == 1 and None not in names:
        raise SettingsError(f"search.study_name={_clip(names.pop())}: one name for the {len(runs)} runs of a sweep "
                            "would mix them in one study; leave it unset or sweep it too")
    return runs


def parse_args(argv: list[str]) -> RunSettings:
    """`["space=hybrid", "search.n_trials=4"]` -> a checked `RunSettings`. A `config=FILE`
    argument is read first; the other keys override it."""
    schema = OmegaConf.structured(RunSettings)
    saved: list[dict] = []
    dotlist = []
    given: dict[str, str] = {}
    for arg in argv:
        key, value = _split(arg)
        if key != "config" and key not in all_keys():
            hint = suggest(key, all_keys())
            raise SettingsError(f"{_clip(key)}: unknown key" + (hint or " (try 'help')"))
        if key in given:  # the last one silently winning would hide a typo
            raise SettingsError(f"{key}: given twice ({_clip(given[key], 30)} and {_clip(value, 30)}); keep one")
        given[key] = value
        if key == "config":
            saved.append(_read_config(value))
            continue
        try:  # OmegaConf reads each value as YAML: refuse aliases, deep nesting, control characters first
            parsed = safe_yaml.load(value)
        except safe_yaml.YamlError as err:
            raise SettingsError(f"{key}={_clip(value)}: {err}") from None
        if isinstance(parsed, dict) and any(v is None and ":" in str(k) for k, v in parsed.items()):
            # YAML reads {deploy_gpu:1} as one key "deploy_gpu:1" with no value
            raise SettingsError(f"{key}={_clip(value)}: write a space after each colon, e.g. {{deploy_gpu: 1}}")
        _check_type(key, value, parsed)
        dotlist.append(arg)
    if safe_yaml.load(given.get("quick", "false")) is True:
        dotlist = [f"{k}={v}" for k, v in QUICK.items() if k not in given] + dotlist
    try:
        merged = OmegaConf.merge(schema, *saved, OmegaConf.from_dotlist(dotlist))
        settings: RunSettings = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except MissingMandatoryValue:
        raise SettingsError("space: missing; name a space (space=hybrid) or a saved config (config=FILE); "
                            "try 'help'") from None
    except OmegaConfBaseException as err:  # a saved config's value (command-line values are checked above)
        key = getattr(err, "full_key", None) or "?"
        raise SettingsError(f"{_clip(key)}: {_type_rule(key) or str(err).splitlines()[0]}") from None
    _check_choices(settings)
    _check_values(settings)
    return settings


@functools.cache
def _types() -> dict[str, Any]:
    """Every dotted key's declared type (`Optional[int]`, `list[str]`, ...)."""
    def walk(cls: type, prefix: str) -> dict[str, Any]:
        found = {}
        for name, hint in typing.get_type_hints(cls).items():
            found.update(walk(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else {prefix + name: hint})
        return found

    return walk(RunSettings, "")


def _type_rule(key: str) -> str:
    """What a value of `key` must be, in words ('' for an unknown key)."""
    hint = _types().get(key)
    if hint is None:
        return ""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    optional = " (or null)" if base is not hint else ""
    rule = {int: "a whole number", float: "a number", bool: "true or false", str: "a word"}.get(base)
    if typing.get_origin(base) is list:
        rule = "a list in brackets, e.g. [accuracy,latency]"
    elif typing.get_origin(base) is dict:
        rule = "a mapping in braces, e.g. {deploy_gpu: 1}"
    return f"expected {rule}{optional}"


def _reads_as(kind: type, parsed: Any) -> bool:
    """A string OmegaConf converts, e.g. 1e9 (YAML 1.1 reads it as a string) to a float."""
    try:
        return isinstance(parsed, str) and kind(parsed) is not None
    except ValueError:
        return False


def _check_type(key: str, text: str, parsed: Any) -> None:
    """A command-line value has its key's type, so no OmegaConf message reaches the user."""
    hint = _types()[key]
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        if parsed is None:
            return
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    base = typing.get_origin(hint) or hint
    number = isinstance(parsed, (int, float)) and not isinstance(parsed, bool) or _reads_as(float, parsed)
    ok = {int: isinstance(parsed, int) and not isinstance(parsed, bool) or _reads_as(int, parsed), float: number,
          bool: isinstance(parsed, bool), str: isinstance(parsed, str) or number,
          list: isinstance(parsed, list), dict: isinstance(parsed, dict)}.get(base, True)
    if not ok:
        raise SettingsError(f"{key}={_clip(text)}: {_type_rule(key)}")


def _check_choices(s: RunSettings) -> None:
    def choose(key: str, value: Any, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise SettingsError(f"{key}={_clip(value)}: choose one of {', '.join(allowed)}" + suggest(value, allowed))

    choose("executor", s.executor, EXECUTORS)
    choose("profile.clock", s.profile.clock, CLOCKS)
    if s.profile.dtype is not None:
        choose("profile.dtype", s.profile.dtype, DTYPES)
    if ":" in s.search.sampler:  # a sampler class by import path: importable and a sampler, checked now
        try:
            sampler_class(s.search.sampler)
        except ValueError as err:
            raise SettingsError(str(err)) from None
    else:
        choose("search.sampler", s.search.sampler, SAMPLERS)
    if s.proxy.score is not None:
        choose("proxy.score", s.proxy.score, tuple(PROXY_SCORES))
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


def _check_values(s: RunSettings) -> None:
    """Ranges of every number, name and device string (nothing here looks at the machine)."""
    def need(key: str, ok: bool, rule: str) -> None:
        if not ok:
            value = s
            for part in key.split("."):
                value = getattr(value, part)
            raise SettingsError(f"{key}={_clip(value)}: {rule}")

    def number(key: str, low: float, *, above: bool = False, high: float = math.inf, optional: bool = True) -> None:
        value = s
        for part in key.split("."):
            value = getattr(value, part)
        if value is None and optional:
            return
        ok = value is not None and math.isfinite(value) and (value > low if above else value >= low) and value <= high
        bound = f"{'>' if above else '>='} {low:g}" + (f" and <= {high:.10g}" if high < math.inf else "")
        need(key, ok, f"must be a finite number {bound}")

    number("search.seed", 0, high=2**32 - 1)
    duration_s(s.search.time_budget)
    if s.search.study_name is not None:
        check_study_name(s.search.study_name)
    number("ray.num_cpus", 1)
    number("ray.max_concurrent", 1)
    number("ray.trial_cpus", 0, above=True)
    number("ray.trial_gpus", 0)
    number("ray.pending_timeout_s", 0, above=True, high=86400)
    number("refine.trainings", 0, high=10_000)
    number("refine.max_replicates", 1, high=100)
    number("refine.margin_se", 0, above=True, high=100)
    if s.ray.address is not None:
        need("ray.address", bool(re.fullmatch(r"auto|(ray://)?[\w.\-]+:\d{1,5}", s.ray.address)),
             "expected auto or host:port (e.g. 127.0.0.1:6379)")
    for key in ("epochs", "batch_size", "train_size", "val_size"):
        number(f"proxy.{key}", 1)
    number("proxy.lr", 0, above=True, high=10)
    for key in ("max_latency_ms", "max_macs", "max_params"):
        number(f"budget.{key}", 0, above=True)
    number("profile.batch_size", 1, high=4096)
    number("profile.img_size", 8, high=2048)
    number("profile.min_time_s", 0, above=True, high=3600)
    number("profile.min_iters", 1, high=1_000_000, optional=False)
    number("profile.target_rel_ci", 0, above=True, high=1)
    number("profile.max_time_s", 0, above=True, high=86400)
    for key in ("proxy.device", "profile.device"):
        device = getattr(getattr(s, key.split(".")[0]), "device")
        need(key, device is None or is_device(device), f"choose {DEVICE_HELP}")


DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|min|h)?\s*")
DURATION_UNITS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def duration_s(text: str | None, key: str = "search.time_budget") -> float | None:
    """Seconds of a duration written as 1200, 90s, 20m or 1.5h (None stays None)."""
    if text is None:
        return None
    match = DURATION.fullmatch(str(text))
    seconds = float(match[1]) * DURATION_UNITS[match[2]] if match else math.nan
    if not 0 < seconds <= 30 * 86400:
        raise SettingsError(f"{key}={_clip(text)}: expected a duration such as 20m, 90s or 1.5h "
                            "(more than 0, at most 30 days)")
    return seconds


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}")


def check_study_name(name: str, key: str = "search.study_name") -> None:
    """A study name becomes a folder under results_dir: one safe path component."""
    if not STUDY_NAME.fullmatch(name) or ".." in name:
        raise SettingsError(f"{key}={_clip(name)}: must be one folder name of at most 100 letters, digits and "
                            "._+=- (starting with a letter or digit, no '..')")


def validate(s: RunSettings) -> None:
    """Check what the settings ask of this machine, before anything is created: the data set
    and proxy preset exist, devices are present, results_dir, the profile cache and a sqlite
    storage can be written, a storage URL parses, a Ray address answers. Creates nothing (a
    probe file is made and removed in an existing folder). Raises `SettingsError`."""
    from search.measure.data import DATASETS
    from search.measure.proxy import PRESETS, preset

    if s.data.name not in DATASETS:
        raise SettingsError(f"data.name={_clip(s.data.name)}: choose one of {', '.join(DATASETS)}"
                            + suggest(s.data.name, DATASETS))
    if s.proxy.preset not in PRESETS:
        raise SettingsError(f"proxy.preset={_clip(s.proxy.preset)}: choose one of {', '.join(PRESETS)}"
                            + suggest(s.proxy.preset, PRESETS))
    _check_space(s.space)
    if not s.dry_run:
        _check_data(s)
    overrides = {k: v for k, v in dataclasses.asdict(s.proxy).items() if k != "preset" and v is not None}
    try:
        preset(s.proxy.preset, **overrides)
    except ValueError as err:  # ProxySettings' own rules, e.g. warm-up vs epochs
        raise SettingsError(f"proxy: {err}") from None
    for key in ("proxy.device", "profile.device"):
        _check_device(key, getattr(getattr(s, key.split(".")[0]), "device"))
    results = Path(s.results_dir).expanduser()
    _check_writable_dir("results_dir", s.results_dir, results)
    if s.profile.cache is not None:
        cache = Path(s.profile.cache).expanduser()
        if os.path.isdir(cache):
            raise SettingsError(f"profile.cache={_clip(s.profile.cache)}: is a directory, expected a file path")
        if not os.path.isdir(cache.parent) and not _inside(cache.parent, results):
            raise SettingsError(f"profile.cache={_clip(s.profile.cache)}: folder {_clip(str(cache.parent))} does not "
                                "exist (create it, or put the cache inside results_dir)")
        _check_writable_dir("profile.cache", s.profile.cache, cache.parent)
    if s.search.storage is not None:
        _check_storage(s.search.storage)
    if s.executor == "ray" and s.ray.address not in (None, "auto"):
        _check_reachable(s.ray.address)


def _check_space(name: str) -> None:
    """The spec reads and builds (so a sweep's last space is checked before its first runs)."""
    from search.space.space import SpecError, load_space

    try:
        load_space(name)
    except SpecError as err:
        raise SettingsError(str(err)) from None  # it names the spec file or the space


def _check_data(s: RunSettings) -> None:
    """The data set is where the settings say, or will be downloaded (read later, in full)."""
    from search.measure.data import DataError, find_dataset_root

    try:
        find_dataset_root(s.data.name, s.data.root)
    except DataError as err:
        if not (s.data.download and s.data.name == "cifar10"):
            raise SettingsError(str(err)) from None


def _check_device(key: str, device: str | None) -> None:
    if device is None or not device.startswith("cuda"):
        return
    import torch

    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise SettingsError(f"{key}={device}: CUDA is not available on this machine (use cpu or auto)")
    if index >= torch.cuda.device_count():
        raise SettingsError(f"{key}={device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_writable_dir(key: str, given: str, folder: Path) -> None:
    """`folder` exists and takes files, or its nearest existing parent does (so it can be made)."""
    shown = f"{key}={_clip(given)}"
    if any(len(os.fsencode(part)) > 255 for part in folder.parts) or len(os.fsencode(str(folder))) >= 4096:
        raise SettingsError(f"{shown}: path or file name too long")
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if os.path.islink(existing) and not os.path.exists(existing):
        raise SettingsError(f"{shown}: {_clip(str(existing))} is a dangling symbolic link")
    if existing.exists() and not existing.is_dir():
        raise SettingsError(f"{shown}: {_clip(str(existing))} is a file, not a folder")
    if not existing.exists():
        raise SettingsError(f"{shown}: {_clip(str(existing))} cannot be created")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ascan-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        where = "" if existing == folder else f" (in {_clip(str(existing))})"
        raise SettingsError(f"{shown}: cannot write{where}: {err.strerror or err}") from None


def _check_storage(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except NoSuchModuleError:  # a subclass of ArgumentError: first
        raise SettingsError(f"search.storage={_clip(url)}: unknown database kind {_clip(parsed.drivername)}") from None
    except ArgumentError:
        raise SettingsError(f"search.storage={_clip(url)}: not a SQLAlchemy URL (e.g. sqlite:///path/study.db)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        if not os.path.isdir(folder):
            raise SettingsError(f"search.storage={_clip(url)}: folder {_clip(str(folder))} does not exist")
        _check_writable_dir("search.storage", url, folder)


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    if (error := connect_error(address, timeout_s)) is not None:
        raise SettingsError(f"ray.address={_clip(address)}: no Ray cluster answers there ({error})")


def to_yaml(settings: RunSettings) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(settings))
