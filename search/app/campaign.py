"""One search from settings to results: the wiring behind `run_search.py`.

Resolves the space, data, study name, storage and executor from `RunSettings`, runs the
driver with a progress line, and writes what a study leaves in `results/<study>/`.
"""
from __future__ import annotations

import dataclasses
import errno
import math
import os
import sqlite3
import re
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from ascan import ArchConfig

from search.report.dashboard import write_dashboard
from search.report.files import write_atomically
from search.measure.data import DataError, load_dataset, stratified_split
from search.engine.driver import DriverSettings, Status
from search.engine.executor import ClusterError, InlineExecutor, RayExecutor
from search.engine.lock import StudyLock, StudyLocked
from search.measure.profile_cache import ProfileCache, ProfileError
from search.measure.proxy import ProxySettings
from search.measure.proxy import preset as proxy_preset
from search.engine.record import REUSED, TrialRecord
from search.engine.phases import DEFAULT_PHASES, Context, Phase
from search.engine.refine import RefineSettings
from search.measure.evaluator import ProxyEvaluator
from search.report.tables import (HV_LATENCY_MULTIPLE, ReferencePoint, c1_reference, front_frame, front_trials, format_front,
                     hypervolume, latency_warning, study_reference, write_trials_csv)
from search.app.settings import RunSettings, SettingsError, check_study_name, duration_s, to_yaml
from search.space.space import SearchSpace, SpecError, describe, load_space
from search.space.spec import Budget
from search.engine.stopping import StopSignals
from search.engine.samplers import make_sampler
from search.engine.study import finished_trials, open_study


class BadInput(ValueError):
    """Settings that cannot run (bad space, missing data, ...): one line, exit status 2."""


class DiskFull(RuntimeError):
    """The disk filled up (or a file-size limit was hit) while the run wrote something: one
    line naming the file, exit status 1; finished trials are kept and a rerun resumes."""


FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def disk_full(error: BaseException, where: Path | str) -> DiskFull | None:
    """`error` as a `DiskFull` naming `where` when a full disk is its cause (anywhere in its
    chain: SQLite says "database or disk is full" through SQLAlchemy and Optuna), else None."""
    if isinstance(error, DiskFull):
        return error
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            why = os.strerror(seen.errno)
        elif "database or disk is full" in str(seen):
            why = "database or disk is full"
        else:
            seen = seen.__cause__ or seen.__context__
            continue
        return DiskFull(f"disk full writing {where} ({why}); free some space, then re-run the same command "
                        "to resume")
    return None


def _sqlite_file(url: str) -> Path | None:
    """The file behind a `sqlite:///` storage URL (None for other storages or in-memory)."""
    prefix = "sqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) and url != prefix + ":memory:" else None


def check_storage_file(url: str, shown: Path | str) -> None:
    """A SQLite study file that exists must be a sound database: a truncated or overwritten
    one would otherwise surface later as a long SQLAlchemy traceback. One line, `BadInput`."""
    path = _sqlite_file(url)
    if path is None or not path.exists():
        return
    problem = ""
    try:
        # Read-write, like Optuna: a hot journal left by a killed driver is rolled back, not an error.
        with closing(sqlite3.connect(path)) as conn:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            problem = "" if verdict == "ok" else verdict
    except sqlite3.Error as err:
        problem = str(err)
    if problem:
        raise BadInput(f"{shown}: not a readable Optuna storage ({' '.join(problem.split())[:200]}); move it "
                       "away to start the study again, or restore it from a copy")


# How a training runs, not what it measures: a resumed study may change these.
RUN_ONLY_PROXY_KEYS = ("seed", "num_threads", "device", "eval_batch_size", "amp_dtype", "channels_last")


def study_name_for(space: SearchSpace, settings: RunSettings) -> str:
    preset = "quick" if settings.quick else settings.proxy.preset  # a quick study's latencies are not comparable
    return settings.search.study_name or f"{space.name}-{settings.data.name}-{preset}-s{settings.search.seed}"


def resolve_proxy(settings: RunSettings) -> ProxySettings:
    """The proxy recipe: the preset with the command line's values, the search seed and, on
    Ray, one thread per CPU a training asks for. Raises ValueError for an impossible recipe."""
    overrides = {k: v for k, v in dataclasses.asdict(settings.proxy).items() if k != "preset" and v is not None}
    overrides.setdefault("seed", settings.search.seed)
    if settings.executor == "ray":
        overrides.setdefault("num_threads", max(1, int(settings.ray.trial_cpus)))
    return proxy_preset(settings.proxy.preset, **overrides)


def reference_point(space: SearchSpace) -> ReferencePoint:
    """The space's declared hypervolume reference: used until the study has timed C1."""
    return ReferencePoint(latency_ms=space.reference_latency_ms)


def record_reference(study: optuna.Study, space: SearchSpace) -> ReferencePoint:
    """Fix the study's hypervolume reference once C1 is timed (see `report.c1_reference`), and
    say in the study which it is, so every later report uses the same."""
    reference = study_reference(study, reference_point(space))
    if "hv_reference_latency_ms" not in study.user_attrs and c1_reference(study) is not None:
        study.set_user_attr("hv_reference_latency_ms", reference.latency_ms)
        study.set_user_attr("hv_reference", f"{HV_LATENCY_MULTIPLE:g} x the latency of the paper's C1 in this study")
    return reference


@dataclass
class Campaign:
    settings: RunSettings
    space: SearchSpace
    study_name: str
    folder: Path
    storage_url: str
    num_classes: int
    in_chans: int
    dataset: Any = None  # loaded once here; trainings get it through the executor (`put`)
    phases: tuple[Phase, ...] = dataclasses.field(default_factory=lambda: tuple(p() for p in DEFAULT_PHASES))
    timing: dict[str, float] = dataclasses.field(default_factory=dict)  # this run's phases, in seconds
    profiling: dict[str, float] = dataclasses.field(default_factory=dict)  # of which the profiling node was held
    stop: StopSignals = dataclasses.field(default_factory=StopSignals)  # Ctrl-C and SIGTERM, while `run` runs
    _stop_reported: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # taken once, never released
    started: float = dataclasses.field(default_factory=time.monotonic)  # search.time_budget counts from here
    out_of_time: bool = False  # the time budget ended the search before n_trials

    @classmethod
    def from_settings(cls, settings: RunSettings) -> "Campaign":
        try:
            space = load_space(settings.space)
        except SpecError as err:
            raise BadInput(str(err)) from None
        if settings.dry_run:
            return cls(settings, space, study_name_for(space, settings), Path(settings.results_dir), "", 0, 0)
        try:
            dataset = load_dataset(settings.data.name, settings.data.root, download=settings.data.download)
        except DataError as err:
            raise BadInput(str(err)) from None
        name = study_name_for(space, settings)
        try:
            check_study_name(name, "search.study_name (derived from the space's name)")
            proxy = resolve_proxy(settings)
            # The data split every trial will make: a slice the data cannot give fails here, once.
            stratified_split(dataset.y_train, val_size=proxy.val_size, seed=proxy.data_seed,
                             train_size=proxy.train_size)
        except (SettingsError, DataError, ValueError) as err:
            raise BadInput(str(err)) from None
        folder = Path(settings.results_dir) / name
        storage = settings.search.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
        return cls(settings, space, name, folder, storage, dataset.num_classes, dataset.in_chans, dataset)

    # ------------------------------------------------------------------ pieces
    def describe(self) -> str:
        return describe(self.space)

    def header(self) -> str:
        s = self.settings
        text = (f"study {self.study_name}: space {self.space.name} ({self.space.count()} candidates), "
                f"{self.n_trials} trials, sampler {s.search.sampler} (seed {s.search.seed}), "
                f"executor {s.executor}, data {s.data.name}, proxy preset {s.proxy.preset}\n"
                f"storage {self.storage_url}")
        if not s.quick:
            return text
        note = QUICK_NOTE.format(images=resolve_proxy(s).train_size, img_size=s.profile.img_size or self.space.target.img_size,
                                 ci=s.profile.target_rel_ci)
        return note + "\n" + text

    def doing(self) -> str:
        """What the run is doing now, for the heartbeat line."""
        phase = next((p for p in ("search_s", "refine_s", "reprofile_s") if p not in self.timing), "reports")
        return {"search_s": "training and timing trials", "refine_s": "refining the front",
                "reprofile_s": "re-profiling the front together", "reports": "writing the reports"}[phase]

    def proxy_settings(self) -> dict[str, Any]:
        try:
            return resolve_proxy(self.settings).to_dict()
        except ValueError as err:
            raise BadInput(f"proxy: {err}") from None

    def latency_settings(self, threads: int) -> dict[str, Any]:
        target, profile = self.space.target, self.settings.profile
        return dict(device=profile.device or target.device, batch_size=profile.batch_size or target.batch_size,
                    img_size=profile.img_size or target.img_size, dtype=profile.dtype or target.dtype,
                    channels_last=target.channels_last,
                    compile=target.compile if profile.compile is None else profile.compile, num_threads=max(1, int(threads)),
                    min_time_s=profile.min_time_s, min_iters=profile.min_iters, clock=profile.clock,
                    target_rel_ci=profile.target_rel_ci, max_time_s=profile.max_time_s)

    def reference_network(self) -> ArchConfig:
        """What every profiling window times in each round: C1's target, else the space's
        first candidate (fixed for the study, so its windows share one scale)."""
        references = self.space.reference_candidates()
        return self.space.target_config(references[0] if references else next(iter(self.space.enumerate())))

    def budget(self) -> Budget:
        """The command line's ceilings where given, else the space's."""
        given = {k: v for k, v in dataclasses.asdict(self.settings.budget).items() if v is not None}
        return dataclasses.replace(self.space.budget, **given)

    def make_executor(self):
        """The executor, connected: a cluster that cannot be reached, or that has no node for
        the profiling request, is a one-line `BadInput` before anything is written."""
        if self.settings.executor == "inline":
            return InlineExecutor()
        ray, profile = self.settings.ray, self.settings.profile
        try:
            # Ray's files stay under results/ (a short path: Ray's socket paths must fit 107 bytes).
            return RayExecutor(ray.address, ray.num_cpus, Path(self.settings.results_dir) / ".ray",
                               profile_node=profile.node, profile_resources=dict(profile.resources) or None,
                               pending_timeout_s=ray.pending_timeout_s, on_lost=self.report_stop)
        except ClusterError as err:
            raise BadInput(str(err)) from None

    # ------------------------------------------------------------------ running
    @property
    def n_trials(self) -> int:
        """Finished trials wanted: a grid stops at the size of the space."""
        s = self.settings.search
        return min(s.n_trials, self.space.count()) if s.sampler == "grid" else s.n_trials

    @property
    def deadline(self) -> float | None:
        """When the run must end (time.monotonic), or None without `search.time_budget`."""
        budget = duration_s(self.settings.search.time_budget)
        return None if budget is None else self.started + budget

    def open_study(self) -> optuna.Study:
        s = self.settings.search
        parallel = self.settings.executor == "ray"
        check_storage_file(self.storage_url, self.storage_file())
        try:
            study, self.storage = open_study(self.study_name, self.storage_url, s.objectives,
                                             make_sampler(s.sampler, s.seed, parallel), s.max_retries)
        except ValueError as err:
            raise BadInput(str(err)) from None
        recorded = study.user_attrs.get("space")
        if recorded not in (None, self.space.name):
            raise BadInput(f"space={self.space.name}: study {self.study_name!r} was made with space {recorded!r}; "
                           "pick another search.study_name")
        study.set_user_attr("space", self.space.name)
        self._check_latency_settings(study)
        self._check_proxy_recipe(study)
        if s.enqueue_references and not study.get_trials(deepcopy=False):
            for params in self.evaluator.reference_params():
                study.enqueue_trial(params, user_attrs={"reference": True})
        return study

    def _check_latency_settings(self, study: optuna.Study) -> None:
        """Latencies measured under other settings (threads, batch, clock, ...) do not compare:
        a resumed study must keep its own, or take another name."""
        self._check_recorded(study, "latency_settings", self.latency_settings(self._threads), "latency", "latencies")

    def _check_proxy_recipe(self, study: optuna.Study) -> None:
        """Scores of another recipe (slice, epochs, images, score, ...) do not compare either. A
        study made before recipes were recorded is judged by its trials' slice size."""
        wanted = {k: v for k, v in self.proxy_settings().items() if k not in RUN_ONLY_PROXY_KEYS}
        if "proxy_recipe" not in study.user_attrs:
            counts = {TrialRecord.load(t).val_count for t in finished_trials(study)} - {None}
            if counts and counts != {wanted["val_size"]}:
                study.set_user_attr("proxy_recipe", {**wanted, "val_size": sorted(counts)[0]})
        self._check_recorded(study, "proxy_recipe", wanted, "accuracy", "accuracies")

    def _check_recorded(self, study: optuna.Study, key: str, wanted: dict[str, Any], what: str, whats: str) -> None:
        recorded = study.user_attrs.get(key)
        if recorded is None:
            study.set_user_attr(key, wanted)
            return
        changed = sorted(k for k in set(wanted) | set(recorded) if wanted.get(k) != recorded.get(k))
        if changed:
            diff = ", ".join(f"{k} {recorded.get(k)!r} -> {wanted.get(k)!r}" for k in changed[:3])
            raise BadInput(f"study {self.study_name!r} measured {what} with other settings ({diff}); its {whats} "
                           "would not compare with new ones: use the same settings or another search.study_name")

    def run(self) -> None:
        """Run the search. Nothing is written before the cluster answers; the study folder's
        lock keeps a second driver out; SIGTERM stops the run as Ctrl-C does (unfinished trials
        are marked interrupted and queued again, finished ones are kept)."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        executor = self.make_executor()
        self._threads = executor.profile_threads()
        self.evaluator = self.make_evaluator(executor)
        try:
            try:
                ProfileCache(self.cache_path())  # an unreadable cache is bad input, found before any trial
            except ProfileError as err:
                raise BadInput(f"profile.cache: {err}") from None
            self.folder.mkdir(parents=True, exist_ok=True)
            with StudyLock(self.folder), self.stop:
                self.study = self.open_study()
                write_atomically(self.folder / "config.yaml", to_yaml(self.settings))
                self._drive(self.study, executor)
        except StudyLocked as err:
            raise BadInput(str(err)) from None
        except Exception as err:
            if (full := disk_full(err, self.storage_file())) is None:
                raise
            raise full from None
        finally:
            executor.shutdown()

    def make_evaluator(self, executor) -> ProxyEvaluator:
        return ProxyEvaluator(self.space, executor.put(self.dataset), self.proxy_settings(),
                              self.latency_settings(executor.profile_threads()), str(self.cache_path()),
                              self.reference_network().to_dict(), self.num_classes, self.in_chans)

    def driver_settings(self, executor) -> DriverSettings:
        s = self.settings
        return DriverSettings(
            n_trials=self.n_trials, objectives=list(s.search.objectives), budget=self.budget(),
            max_retries=s.search.max_retries, trial_cpus=s.ray.trial_cpus, trial_gpus=self._trial_gpus(executor),
            max_concurrent=s.ray.max_concurrent, score=self.proxy_settings().get("score") or "accuracy")

    def _drive(self, study: optuna.Study, executor) -> None:
        r = self.settings.refine
        progress = Progress(study, lambda: record_reference(study, self.space), self.n_trials,
                            on_trial=self.write_reports)
        context = Context(study, self.storage, self.evaluator, executor, self.driver_settings(executor),
                          RefineSettings(trainings=r.trainings, max_replicates=r.max_replicates, margin_se=r.margin_se),
                          say=lambda line: print(line, flush=True), on_status=progress, check_stop=self.stop.check,
                          sole_driver=True, deadline=self.deadline)
        for phase in self.phases:
            started = time.monotonic()
            self.profiling[phase.name] = phase.run(context)
            self.stop.check()  # a stop dropped inside a finalizer ends the run before the next phase
            self.timing[phase.name] = time.monotonic() - started
        self.out_of_time = bool(context.results.get("out_of_time"))

    def time_line(self) -> str:
        """Where this run's time went, phase by phase; the profiling share is time no training
        could use on the profiling node (the search's windows, the closing re-profile)."""
        t, held = self.timing, self.profiling
        if len(t) < len(self.phases):
            return ""
        total, profiling = sum(t.values()), sum(held.values())
        parts = [f"{name} {seconds:.0f} s" + (f" (profiling {held[name]:.0f} s)" if held.get(name) else "")
                 for name, seconds in t.items()]
        return (f"time: {', '.join(parts)}; profiling {profiling:.0f} s of {total:.0f} s "
                f"({profiling / max(total, 1e-9):.0%})")

    def _trial_gpus(self, executor) -> float:
        wanted = self.settings.ray.trial_gpus
        return float(wanted) if wanted is not None else (1.0 if executor.total_gpus else 0.0)

    def cache_path(self) -> Path:
        return Path(self.settings.profile.cache or Path(self.settings.results_dir) / "profile_cache.sqlite")

    def shortfall(self) -> str:
        """Why the run ended with fewer finished trials than asked (empty when it did not)."""
        finished = len(finished_trials(self.study))
        if finished >= self.n_trials or self.out_of_time:
            return ""  # a time budget that ends the search early is what was asked for, not a failure
        failed = len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
        return (f"only {finished} of {self.n_trials} trials finished ({failed} failed; see failure_reason in "
                f"{self.folder / 'trials.csv'}); re-run the same command to retry")

    def report_stop(self, message: str) -> None:
        """Say once, on stderr, why the cluster stopped the run (the driver and the executor's
        head watch may both see it)."""
        if self._stop_reported.acquire(blocking=False):  # atomic: two threads cannot both pass
            print(f"error: {message}", file=sys.stderr, flush=True)

    def storage_file(self) -> Path | str:
        """The study's storage, as a user would name it."""
        return self.folder / "study.db" if not self.settings.search.storage else self.storage_url

    def write_reports(self) -> tuple[Path, Path]:
        """Rewrite `trials.csv` and `dashboard.html` from the storage (each atomically). A full
        disk is a `DiskFull` naming the file (its temporary file is gone already)."""
        reference = record_reference(self.study, self.space)
        written = []
        for path, write in ((self.folder / "trials.csv", lambda p: write_trials_csv(self.study, p)),
                            (self.folder / "dashboard.html", lambda p: write_dashboard(self.study, p, reference))):
            try:
                written.append(write(path))
            except Exception as err:
                if (full := disk_full(err, path)) is None:
                    raise
                raise full from None
        return written[0], written[1]

    def finish(self, interrupted: bool) -> str:
        study = getattr(self, "study", None)
        if study is None:
            return ""
        try:
            csv, dashboard = self.write_reports()
        except DiskFull as err:
            if not interrupted:
                raise
            self.report_stop(str(err))  # interrupted on a full disk: that line, not the file list
            return ""
        finished = finished_trials(study)
        reused = sum(TrialRecord.load(t).status == REUSED for t in finished)
        lines = [] if interrupted else [
            "", f"{len(finished)} finished trials ({reused} reused an earlier result of the same architecture)",
            "Pareto front (feasible; latency from the closing re-profile where one ran"
            + ("; DEMONSTRATION numbers" if self.settings.quick else "") + "):", format_front(front_frame(study))]
        if not interrupted and (time_line := self.time_line()):
            lines.append(time_line)
        if not interrupted and self.out_of_time:
            lines.append(f"search.time_budget={self.settings.search.time_budget} ended the search at {len(finished)} of "
                         f"{self.n_trials} trials; the same command with a longer budget adds the rest")
        if not interrupted and (warning := latency_warning(study)):
            lines.append(warning)
        lines += ["", f"dashboard: {dashboard}", f"trials:    {csv}", f"storage:   {self.storage_url}",
                  f"config:    {self.folder / 'config.yaml'}"]
        if not interrupted and self.settings.quick:  # the whole flow, findings included
            lines.append(f"findings:  {self.write_findings()}")
        if not interrupted:
            lines += ["", *next_steps(study, self.folder, dashboard, self.budget().max_latency_ms, self.settings.quick)]
        text = "\n".join(lines)
        if interrupted:
            print(text, file=sys.stderr)
        return text

    def write_findings(self) -> Path:
        """The paper's claims checked on this study (`python -m search.findings`): findings.md."""
        from search.report.findings import build_report, write_findings

        markdown, _ = write_findings(build_report([self.folder], self.budget().max_latency_ms), self.folder)
        return markdown


QUICK_NOTE = ("quick start: a DEMONSTRATION of the whole flow (a small proxy on {images} images, latency of "
              "{img_size}-pixel targets timed to a loose {ci:.0%} interval); its numbers are not for decisions")


def export_pick(front: Any, max_latency_ms: float | None) -> Any:
    """The front member to export: the most accurate (within the latency budget, if any), and
    of the members tied with it (`tied_with`), the fastest. None for an empty front."""
    within = front if max_latency_ms is None else front[front["latency_ms"] <= max_latency_ms]
    if within.empty:
        return None
    best = within.loc[within["accuracy_mean"].idxmax()]
    tied = {int(best["number"]), *(int(n) for n in str(best["tied_with"] or "").split(",") if n)}
    return within[within["number"].isin(tied)].sort_values("latency_ms").iloc[0]


def next_steps(study: optuna.Study, folder: Path, dashboard: Path, max_latency_ms: float | None,
               quick: bool = False) -> list[str]:
    """What to do after a run: open the dashboard, export the pick, check the paper's claims."""
    lines = ["next:", f"  open the dashboard:  {dashboard}"]
    pick = export_pick(front_frame(study), max_latency_ms)
    if pick is not None:
        name = "ascan_" + re.sub(r"[^a-z0-9]+", "_", f"{folder.name}_t{int(pick['number'])}".lower()).strip("_")
        within = "" if max_latency_ms is None else f" within {max_latency_ms:g} ms"
        lines += [f"  export the pick:     python -m search.export {folder} --trial {int(pick['number'])} --name {name}",
                  f"                       (trial {int(pick['number'])}: the most accurate{within}, the fastest of "
                  "its ties; the export records the latency the front shows)"]
    lines.append(f"  check the claims:    python -m search.findings {folder}")
    if quick:
        lines.append("  then the real search (about 15 min on 2 idle CPU cores): drop quick=true")
    return lines


class Progress:
    """Shows a search as it goes: one line per event (a plain log where stdout is not a
    terminal, a tqdm bar above the lines where it is), with done/total, trainings running,
    front size, hypervolume and an ETA that counts the work in flight. After a trial ends it
    rewrites `trials.csv` and `dashboard.html` (`on_trial`), at most every `write_every_s`."""

    def __init__(self, study: optuna.Study, reference: Callable[[], ReferencePoint], total: int,
                 on_trial: Callable[[], object] = lambda: None, stream=None, write_every_s: float = 30.0):
        self.study, self.reference, self.total = study, reference, total
        self.on_trial, self.write_every_s = on_trial, write_every_s
        self.stream = stream or sys.stdout
        self.start_finished = len(finished_trials(study))
        self.last_write = -math.inf
        self.bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=self.start_finished, unit="trial", file=self.stream,
                            dynamic_ncols=True, leave=False)

    def eta(self, status: Status) -> float:
        """Seconds left: finished trials set the pace, and each training in flight counts as
        the share of a trial that its elapsed time is of the mean trial time."""
        done_now = status.finished - self.start_finished
        if done_now <= 0:
            return math.nan
        per_trial = status.elapsed_s / done_now
        in_flight = sum(min(0.9, age / per_trial) for age in status.training_ages_s)
        return max(0.0, (status.total - status.finished - in_flight) * per_trial)

    def __call__(self, status: Status) -> None:
        front = len(front_trials(self.study))
        hv = hypervolume(self.study, self.reference())
        line = (f"[{status.finished:>3}/{status.total}] {status.event} | running {status.running} | front {front} "
                f"| HV {hv:.3f} | {_clock(status.elapsed_s)} elapsed, ETA {_clock(self.eta(status))}")
        if self.bar is not None:
            self.bar.n = status.finished
            self.bar.set_postfix_str(f"front {front}, HV {hv:.3f}", refresh=False)
            self.bar.write(line)
        else:
            print(line, file=self.stream, flush=True)
        if time.monotonic() - self.last_write >= self.write_every_s:
            self.last_write = time.monotonic()
            self.on_trial()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
