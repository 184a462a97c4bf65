"""Export an architecture from a study into the AsCAN model zoo, so timm builds it anywhere.

    python -m search.export results/<study> --trial N --name ascan_mynet [--force]

writes `<zoo>/ascan_mynet.yaml`: the target `ArchConfig` (`config:`) and where it came from
(`provenance:` study, trial, space, metrics, the device fingerprint of its latency, date).
`import ascan` registers every zoo file with timm, so afterwards
`timm.create_model("ascan_mynet", num_classes=10)` builds exactly that network.

The zoo is `ascan/zoo/` (shipped with the package), or the first folder of `$ASCAN_ZOO_DIR`
when that is set, or `--zoo-dir`. Exporting over an existing name needs `--force`; the
built-in names (`ascan_tiny`, ...) are never replaced.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from ascan import ArchConfig, zoo

from .report import StudyFolderError, is_feasible, objective_names, open_study_dir

METRIC_KEYS = ("accuracy", "latency_ms", "latency_p90_ms", "latency_iqr_ms", "latency_samples", "macs", "params",
               "peak_memory_bytes", "images_per_sec", "proxy_wall_time_s")


class ExportError(ValueError):
    """Why an export was refused (one line; exit status 2 on the command line)."""


def default_zoo_dir() -> Path:
    """Where exports go: the first `$ASCAN_ZOO_DIR` folder if set, else the package's zoo."""
    extra = [p for p in os.environ.get(zoo.ZOO_DIR_ENV, "").split(os.pathsep) if p]
    return Path(extra[0]) if extra else zoo.ZOO_DIR


def check_name(name: str) -> None:
    if not name.startswith("ascan_") or not name.isidentifier() or name == "ascan_":
        raise ExportError(f"--name {name!r}: must be 'ascan_' followed by a Python identifier, e.g. ascan_mynet")
    if name in zoo.BUILTIN_NAMES:
        raise ExportError(f"--name {name}: a built-in model of the zoo; choose another name "
                          "(--force cannot replace it)")


def check_free(name: str, target: Path, force: bool) -> None:
    """Refuse to shadow a zoo file elsewhere, or to overwrite one here without --force."""
    for folder in zoo.zoo_dirs():
        other = Path(folder) / f"{name}.yaml"
        if other.is_file() and other.resolve() != target.resolve():
            raise ExportError(f"--name {name}: already defined by {other}; choose another name or remove that file")
    if target.exists() and not force:
        raise ExportError(f"--name {name}: {target} exists; use --force to replace it")


def finished_trial(study: optuna.Study, number: int, force: bool) -> FrozenTrial:
    """The trial to export: it must exist, have finished, and (unless forced) be feasible."""
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        span = f"0..{len(trials) - 1}" if trials else "none yet"
        raise ExportError(f"--trial {number}: no such trial in study {study.study_name} (trials: {span})")
    trial = trials[number]
    if trial.state == TrialState.FAIL:
        reason = trial.user_attrs.get("failure_reason", "no reason recorded")
        raise ExportError(f"--trial {number}: the trial failed ({reason}); pick a finished trial")
    if trial.state != TrialState.COMPLETE:
        raise ExportError(f"--trial {number}: the trial is {trial.state.name}, not finished")
    if "target_config" not in trial.user_attrs:
        raise ExportError(f"--trial {number}: no target_config recorded; was this study made by search?")
    if not is_feasible(trial) and not force:
        reason = trial.user_attrs.get("infeasible_reason", "over budget")
        raise ExportError(f"--trial {number}: infeasible ({reason}), never trained; use --force to export it anyway")
    return trial


def zoo_record(study: optuna.Study, trial: FrozenTrial, name: str, study_dir: Path) -> dict[str, Any]:
    """What the zoo file holds: the exact target config and where it came from."""
    attrs = trial.user_attrs
    config = ArchConfig.from_dict(attrs["target_config"])
    if attrs.get("arch_hash") not in (None, config.arch_hash):
        raise ExportError(f"--trial {trial.number}: recorded hash {attrs['arch_hash']} does not match its config "
                          f"({config.arch_hash}); the study was made by another version of ascan")
    values = dict(zip(objective_names(study), trial.values))
    metrics = {"accuracy": values.get("accuracy"), **{k: attrs.get(k) for k in METRIC_KEYS if k in attrs}}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    provenance = {
        "study": study.study_name, "study_dir": str(Path(study_dir).resolve()), "trial": trial.number,
        "space": study.user_attrs.get("space"), "objectives": objective_names(study),
        "layout": attrs.get("layout", config.layout), "family": attrs.get("family"), "arch_hash": config.arch_hash,
        "feasible": is_feasible(trial), "metrics": metrics, "proxy_config": attrs.get("proxy_config"),
        "device": attrs.get("profile_fingerprint"), "profile_settings": attrs.get("profile_settings"),
        "reused_from": attrs.get("reused_from"),
        "trial_finished": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return {"name": name, "description": f"{config.short_name()}: trial {trial.number} of study {study.study_name}",
            "config": config.to_dict(), "provenance": {k: v for k, v in provenance.items() if v is not None}}


def export_trial(study_dir: Path, trial_number: int, name: str, force: bool = False, zoo_dir: Path | None = None,
                 storage: str | None = None) -> Path:
    """Write trial `trial_number` of the study in `study_dir` to `<zoo_dir>/<name>.yaml`, register
    it with timm in this process too, and return the file's path. Raises ExportError."""
    check_name(name)
    target = Path(zoo_dir or default_zoo_dir()) / f"{name}.yaml"
    check_free(name, target, force)
    try:
        study = open_study_dir(Path(study_dir), storage)
    except StudyFolderError as err:
        raise ExportError(str(err)) from None
    trial = finished_trial(study, trial_number, force)
    record = zoo_record(study, trial, name, Path(study_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    stale_weights = target.with_suffix(".safetensors")
    if stale_weights.exists():  # weights of the architecture being replaced would not fit this one
        stale_weights.unlink()
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(f"# AsCAN zoo entry written by `python -m search.export`; timm name: {name}\n"
                   + yaml.safe_dump(record, sort_keys=False, default_flow_style=None))
    tmp.replace(target)
    zoo.register_zoo_file(target)  # usable at once here; other processes pick it up on `import ascan`
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.export", description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path, help="results/<study>")
    parser.add_argument("--trial", type=int, required=True, help="trial number (see the dashboard's front table)")
    parser.add_argument("--name", required=True, help="timm model name, ascan_<something>")
    parser.add_argument("--force", action="store_true", help="replace an exported model of that name")
    parser.add_argument("--zoo-dir", type=Path, help=f"default: first folder of ${zoo.ZOO_DIR_ENV}, else {zoo.ZOO_DIR}")
    parser.add_argument("--storage", help="Optuna storage URL, when the study is not in <study_dir>/study.db")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        path = export_trial(args.study_dir, args.trial, args.name, args.force, args.zoo_dir, args.storage)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}\nuse it: import ascan, timm; timm.create_model({args.name!r}, num_classes=...)")
    if path.parent.resolve() not in {Path(d).resolve() for d in zoo.zoo_dirs()}:
        print(f"note: {path.parent} is not a zoo folder; set {zoo.ZOO_DIR_ENV}={path.parent} "
              "so `import ascan` finds it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
