"""Export an architecture from a study into the AsCAN model zoo, so timm builds it anywhere.

    python -m search.export results/<study> --trial N --name ascan_mynet [--force]

writes `<zoo>/ascan_mynet.yaml`: the target `ArchConfig` (`config:`) and where it came from
(`provenance:` study, trial, space, metrics, the device fingerprint of its latency, date).
`import ascan` registers every zoo file with timm, so afterwards
`timm.create_model("ascan_mynet", num_classes=10)` builds exactly that network.

The zoo is the per-user folder `$XDG_DATA_HOME/ascan-search/zoo` (by default
`~/.local/share/ascan-search/zoo`), or the first folder of `$ASCAN_ZOO_DIR` when that is set:
the folders `import ascan` reads. `--zoo-dir` writes elsewhere; other processes then find the
model only with that folder in `$ASCAN_ZOO_DIR`. Exporting over an existing name, or beside
an existing `<name>.safetensors`, needs `--force`; the built-in names (`ascan_tiny`, ...)
are never replaced. A refusal is one line on stderr and exit status 2.
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

from search.engine.record import TrialRecord
from search.engine.replicates import ReplicateStore
from search.report.files import write_atomically
from search.report.tables import StudyFolderError, is_feasible, objective_names, open_study_dir

MAX_NAME_CHARS = 100  # with its suffixes, a file name must stay under the usual 255-byte limit
METRIC_KEYS = ("accuracy", "latency_ms", "latency_p90_ms", "latency_iqr_ms", "latency_samples", "macs", "params",
               "peak_memory_bytes", "images_per_sec", "proxy_wall_time_s")


class ExportError(ValueError):
    """Why an export was refused (one line; exit status 2 on the command line)."""


def default_zoo_dir() -> Path:
    """Where exports go: the first `$ASCAN_ZOO_DIR` folder if set, else the per-user zoo."""
    return zoo.user_zoo_dirs()[0]


def one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "..."


def check_name(name: str) -> None:
    if len(name) > MAX_NAME_CHARS:
        raise ExportError(f"--name {name[:20]}...: {len(name)} characters; at most {MAX_NAME_CHARS}")
    if not name.startswith("ascan_") or not name.isidentifier() or name == "ascan_":
        raise ExportError(f"--name {name!r}: must be 'ascan_' followed by a Python identifier, e.g. ascan_mynet")
    if name in zoo.BUILTIN_NAMES:
        raise ExportError(f"--name {name}: a built-in model of the zoo; choose another name "
                          "(--force cannot replace it)")


def check_free(name: str, target: Path, force: bool) -> None:
    """Refuse to shadow a zoo file elsewhere, or to overwrite one here (or its weights) without --force."""
    if target.parent.exists() and not target.parent.is_dir():
        raise ExportError(f"--zoo-dir {target.parent}: not a folder")
    for folder in zoo.zoo_dirs():
        other = Path(folder) / f"{name}.yaml"
        if other.is_file() and other.resolve() != target.resolve():
            raise ExportError(f"--name {name}: already defined by {other}; choose another name or remove that file")
    if os.path.lexists(target) and not force:
        raise ExportError(f"--name {name}: {target} exists; use --force to replace it")
    weights = target.with_suffix(".safetensors")
    if os.path.lexists(weights) and not force:
        raise ExportError(f"--name {name}: {weights} exists (weights for an earlier export of that name); "
                          "use --force to replace the export and delete them")


def read_study(study_dir: Path, storage: str | None) -> tuple[optuna.Study, list[FrozenTrial]]:
    """The study and its trials, or one ExportError line saying why they cannot be read."""
    try:
        study = open_study_dir(study_dir, storage)
        return study, study.get_trials(deepcopy=False)
    except StudyFolderError as err:
        raise ExportError(str(err)) from None
    except Exception as err:
        # A bad URL or a corrupt file surfaces as an error of whichever storage backend the
        # URL names (SQLAlchemy's, the journal's, ...), so there is no one class to catch.
        where = f"--storage {storage}" if storage else f"{study_dir / 'study.db'}"
        raise ExportError(f"{where}: cannot read the study ({type(err).__name__}: {one_line(err)})") from None


def finished_trial(study: optuna.Study, trials: list[FrozenTrial], number: int, force: bool) -> FrozenTrial:
    """The trial to export: it must exist, have finished, and (unless forced) be feasible."""
    if not 0 <= number < len(trials):
        span = f"0..{len(trials) - 1}" if trials else "none yet"
        raise ExportError(f"--trial {number}: no such trial in study {study.study_name} (trials: {span})")
    trial = trials[number]
    record = TrialRecord.load(trial)
    if trial.state == TrialState.FAIL:
        reason = record.failure_reason or "no reason recorded"
        raise ExportError(f"--trial {number}: the trial failed ({reason}); pick a finished trial")
    if trial.state != TrialState.COMPLETE:
        raise ExportError(f"--trial {number}: the trial is {trial.state.name}, not finished")
    if record.target_config is None:
        raise ExportError(f"--trial {number}: no target_config recorded; was this study made by search?")
    if not is_feasible(trial) and not force:
        reason = record.infeasible_reason or "over budget"
        raise ExportError(f"--trial {number}: infeasible ({reason}), never trained; use --force to export it anyway")
    return trial


def zoo_record(study: optuna.Study, trial: FrozenTrial, name: str, study_dir: Path) -> dict[str, Any]:
    """What the zoo file holds: the exact target config and where it came from."""
    record = TrialRecord.load(trial)
    config = ArchConfig.from_dict(record.target_config)
    if record.arch_hash not in ("", config.arch_hash):
        raise ExportError(f"--trial {trial.number}: recorded hash {record.arch_hash} does not match its config "
                          f"({config.arch_hash}); the study was made by another version of ascan")
    estimate = ReplicateStore(study).estimate(trial)
    refined = {"accuracy_mean": estimate.mean, "accuracy_se": estimate.se, "replicates": estimate.n} if estimate else {}
    metrics = {**{k: getattr(record, k) for k in METRIC_KEYS}, **refined}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    provenance = {
        "study": study.study_name, "study_dir": str(Path(study_dir).resolve()), "trial": trial.number,
        "space": study.user_attrs.get("space"), "objectives": objective_names(study),
        "layout": record.layout or config.layout, "family": record.family or None, "arch_hash": config.arch_hash,
        "feasible": is_feasible(trial), "metrics": metrics, "proxy_config": record.proxy_config,
        "device": record.profile_fingerprint, "profile_settings": record.profile_settings,
        "reused_from": record.reused_from,
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
    study, trials = read_study(Path(study_dir), storage)
    trial = finished_trial(study, trials, trial_number, force)
    record = zoo_record(study, trial, name, Path(study_dir))
    text = (f"# AsCAN zoo entry written by `python -m search.export`; timm name: {name}\n"
            + yaml.safe_dump(record, sort_keys=False, default_flow_style=None))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # --force (checked above): weights of the architecture being replaced would not fit this one
        target.with_suffix(".safetensors").unlink(missing_ok=True)
        write_atomically(target, text)
    except OSError as err:
        raise ExportError(f"{err.filename or target.parent}: cannot write the export ({err.strerror})") from None
    zoo.register_zoo_file(target)  # usable at once here; other processes pick it up on `import ascan`
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.export", description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path, help="results/<study>")
    parser.add_argument("--trial", type=int, required=True, help="trial number (see the dashboard's front table)")
    parser.add_argument("--name", required=True, help="timm model name, ascan_<something>")
    parser.add_argument("--force", action="store_true", help="replace an exported model of that name")
    parser.add_argument("--zoo-dir", type=Path, help=f"default: first folder of ${zoo.ZOO_DIR_ENV}, else "
                        f"{zoo.user_zoo_dir()}; another folder is read by `import ascan` only if in ${zoo.ZOO_DIR_ENV}")
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
              "so `import ascan` finds it in other processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
