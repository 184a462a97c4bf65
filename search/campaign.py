"""One search from settings to results: the wiring behind `run_search.py`.

Resolves the space, data, study name, storage and executor from `RunSettings`, runs the
driver with a progress line, and writes what a study leaves in `results/<study>/`.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from .dashboard import write_dashboard
from .data import DataError, load_dataset
from .driver import Driver, DriverSettings, Status
from .executor import InlineExecutor, RayExecutor
from .proxy import preset as proxy_preset
from .report import ReferencePoint, front_frame, front_trials, format_front, hypervolume, write_trials_csv
from .settings import RunSettings, to_yaml
from .space import SearchSpace, SpecError, describe, load_space
from .spec import Budget
from .study import finished_trials, make_sampler, open_study


class BadInput(ValueError):
    """Settings that cannot run (bad space, missing data, ...): one line, exit status 2."""


def study_name_for(space: SearchSpace, settings: RunSettings) -> str:
    return settings.search.study_name or f"{space.name}-{settings.data.name}-{settings.proxy.preset}-s{settings.search.seed}"


def reference_point(space: SearchSpace) -> ReferencePoint:
    return ReferencePoint(latency_ms=space.reference_latency_ms)


@dataclass
class Campaign:
    settings: RunSettings
    space: SearchSpace
    study_name: str
    folder: Path
    storage_url: str
    num_classes: int
    in_chans: int

    @classmethod
    def from_settings(cls, settings: RunSettings) -> "Campaign":
        try:
            space = load_space(settings.space)
        except SpecError as err:
            raise BadInput(str(err)) from None
        if settings.dry_run:
            return cls(settings, space, study_name_for(space, settings), Path(settings.results_dir), "", 0, 0)
        try:
            dataset = load_dataset(settings.data.name, settings.data.root)
        except DataError as err:
            raise BadInput(str(err)) from None
        name = study_name_for(space, settings)
        folder = Path(settings.results_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        storage = settings.search.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
        return cls(settings, space, name, folder, storage, dataset.num_classes, dataset.in_chans)

    # ------------------------------------------------------------------ pieces
    def describe(self) -> str:
        return describe(self.space)

    def header(self) -> str:
        s = self.settings
        return (f"study {self.study_name}: space {self.space.name} ({self.space.count()} candidates), "
                f"{self.n_trials} trials, sampler {s.search.sampler} (seed {s.search.seed}), "
                f"executor {s.executor}, data {s.data.name}, proxy preset {s.proxy.preset}\n"
                f"storage {self.storage_url}")

    def proxy_settings(self) -> dict[str, Any]:
        overrides = {k: v for k, v in dataclasses.asdict(self.settings.proxy).items() if k != "preset" and v is not None}
        overrides.setdefault("seed", self.settings.search.seed)
        if self.settings.executor == "ray":
            overrides.setdefault("num_threads", max(1, int(self.settings.ray.trial_cpus)))
        try:
            return proxy_preset(self.settings.proxy.preset, **overrides).to_dict()
        except ValueError as err:
            raise BadInput(f"proxy: {err}") from None

    def latency_settings(self, total_cpus: float) -> dict[str, Any]:
        target, profile = self.space.target, self.settings.profile
        return dict(device=profile.device or target.device, batch_size=profile.batch_size or target.batch_size,
                    img_size=target.img_size, dtype=target.dtype, channels_last=target.channels_last,
                    compile=target.compile, num_threads=max(1, int(total_cpus)),
                    min_time_s=profile.min_time_s, min_iters=profile.min_iters)

    def budget(self) -> Budget:
        """The command line's ceilings where given, else the space's."""
        given = {k: v for k, v in dataclasses.asdict(self.settings.budget).items() if v is not None}
        return dataclasses.replace(self.space.budget, **given)

    def make_executor(self):
        if self.settings.executor == "inline":
            return InlineExecutor()
        ray = self.settings.ray
        # Ray's files stay under results/ (a short path: Ray's socket paths must fit 107 bytes).
        return RayExecutor(ray.address, ray.num_cpus, Path(self.settings.results_dir) / ".ray")

    # ------------------------------------------------------------------ running
    @property
    def n_trials(self) -> int:
        """Finished trials wanted: a grid stops at the size of the space."""
        s = self.settings.search
        return min(s.n_trials, self.space.count()) if s.sampler == "grid" else s.n_trials

    def open_study(self) -> optuna.Study:
        s = self.settings.search
        parallel = self.settings.executor == "ray"
        try:
            study = open_study(self.study_name, self.storage_url, s.objectives,
                               make_sampler(s.sampler, s.seed, parallel), s.max_retries)
        except ValueError as err:
            raise BadInput(str(err)) from None
        study.set_user_attr("objectives", list(s.objectives))
        study.set_user_attr("space", self.space.name)
        if s.enqueue_references and not study.get_trials(deepcopy=False):
            for candidate in self.space.reference_candidates():
                study.enqueue_trial(self.space.params_for(candidate), user_attrs={"reference": True})
        return study

    def run(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        (self.folder / "config.yaml").write_text(to_yaml(self.settings))
        self.study = study = self.open_study()
        executor = self.make_executor()
        driver_settings = DriverSettings(
            n_trials=self.n_trials, objectives=list(self.settings.search.objectives), budget=self.budget(),
            data_name=self.settings.data.name, data_root=self.settings.data.root,
            proxy_settings=self.proxy_settings(), latency_settings=self.latency_settings(executor.total_cpus),
            cache_path=str(self.cache_path()), num_classes=self.num_classes, in_chans=self.in_chans,
            max_retries=self.settings.search.max_retries, trial_cpus=self.settings.ray.trial_cpus,
            trial_gpus=self._trial_gpus(executor), max_concurrent=self.settings.ray.max_concurrent)
        progress = Progress(study, reference_point(self.space), self.n_trials)
        Driver(study, self.space, executor, driver_settings, on_status=progress).run()

    def _trial_gpus(self, executor) -> float:
        wanted = self.settings.ray.trial_gpus
        return float(wanted) if wanted is not None else (1.0 if executor.total_gpus else 0.0)

    def cache_path(self) -> Path:
        return Path(self.settings.profile.cache or Path(self.settings.results_dir) / "profile_cache.sqlite")

    def finish(self, interrupted: bool) -> str:
        study = getattr(self, "study", None)
        if study is None:
            return ""
        csv = write_trials_csv(study, self.folder / "trials.csv")
        dashboard = write_dashboard(study, self.folder / "dashboard.html", reference_point(self.space))
        finished = finished_trials(study)
        reused = sum("reused_from" in t.user_attrs for t in finished)
        lines = [] if interrupted else [
            "", f"{len(finished)} finished trials ({reused} reused an earlier result of the same architecture)",
            "Pareto front (feasible):", format_front(front_frame(study))]
        lines += ["", f"dashboard: {dashboard}", f"trials:    {csv}", f"storage:   {self.storage_url}",
                  f"config:    {self.folder / 'config.yaml'}"]
        text = "\n".join(lines)
        if interrupted:
            print(text, file=sys.stderr)
        return text


class Progress:
    """Prints one line per finished trial: done/total, running, front size, hypervolume, ETA."""

    def __init__(self, study: optuna.Study, reference: ReferencePoint, total: int, stream=None):
        self.study, self.reference, self.total = study, reference, total
        self.stream = stream or sys.stdout
        self.start_finished = len(finished_trials(study))

    def __call__(self, status: Status) -> None:
        done_now = status.finished - self.start_finished
        remaining = max(0, status.total - status.finished)
        eta = status.elapsed_s / done_now * remaining if done_now > 0 else math.nan
        front = len(front_trials(self.study))
        hv = hypervolume(self.study, self.reference)
        print(f"[{status.finished:>3}/{status.total}] {status.event} | running {status.running} | front {front} "
              f"| HV {hv:.3f} | {_clock(status.elapsed_s)} elapsed, ETA {_clock(eta)}", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
