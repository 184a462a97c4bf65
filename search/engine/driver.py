"""The ask/tell driver: asks Optuna for trials, runs them cheap-first, tells the results.

Each trial in flight is a `Plan` with an explicit `Stage`:

    ASKED ──► CHECKED ──► PROFILING ──► PROFILED ──► TRAINING ──► TOLD
      │  (params, MACs    (latency,      (waits for a     (proxy
      │   within budget)   exclusive)     training slot)   accuracy)
      ├──► TWIN: the same architecture is in flight; waits for it, then reuses its result
      └──► INFEASIBLE (over budget: never trained) / FAILED (from any stage with a job)

A cached latency skips CHECKED → PROFILED directly; an architecture that already finished is
reused at once. Three small objects share the work: `Scheduler` decides what starts when
(the exclusive profiling window), `Recorder` does every write to the study (values,
constraints, the trial record, retries, heartbeats), and `Driver` moves plans between
stages. Only this process writes to the study, so SQLite storage is safe.
"""
from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from search.engine.evaluator import Evaluator
from search.engine.executor import ClusterError, Executor, Job, JobFailed, WorkerLost
from search.engine.record import FAILED, INFEASIBLE, INTERRUPTED, REUSED, TRAINED, TrialRecord
from search.space.settings import Budget
from search.engine.study import (fail_orphan, finished_trials, quiet_heartbeats, record_heartbeat, release_storage_session,
                    set_constraints)

INTERRUPTED_REASON = "interrupted: the driver was stopped ({}); re-run the same command to resume"  # {}: the signal
ORPHAN_REASON = "orphaned: its driver died before the trial finished; queued again"


class Stage(Enum):
    ASKED = "asked"
    CHECKED = "cheap-checked"  # within the params/MACs budget; waits for a latency
    PROFILING = "profiling"
    PROFILED = "profiled"  # within the whole budget; waits for a training slot
    TRAINING = "training"
    TWIN = "twin"  # the same architecture is in flight: wait for its result
    TOLD = "told"
    INFEASIBLE = "infeasible"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self in (Stage.TOLD, Stage.INFEASIBLE, Stage.FAILED)


@dataclass
class DriverSettings:
    n_trials: int
    objectives: list[str]
    budget: Budget
    max_retries: int = 1
    trial_cpus: float = 1.0
    trial_gpus: float = 0.0
    max_concurrent: int | None = None
    max_failures: int | None = None  # stop after this many failed trials in one run
    score: str = "accuracy"  # the evaluator's score told as the accuracy objective (`objectives.PROXY_SCORES`)


@dataclass(eq=False)
class Plan:
    """A trial in flight: its record so far (the candidate as the evaluator described it) and its stage."""

    trial: optuna.Trial
    record: TrialRecord
    stage: Stage = Stage.ASKED
    job: Job | None = None
    twin_of: "Plan | None" = None
    since: int = 0  # when it entered its stage (a counter): queues are first come, first served
    started: float = 0.0  # the driver's clock when it entered its stage

    @property
    def label(self) -> str:
        return f"trial {self.trial.number} {self.record.layout}"


@dataclass
class Status:
    finished: int
    total: int
    running: int
    elapsed_s: float
    event: str = ""
    training_ages_s: tuple[float, ...] = ()  # how long each running training has run


class Scheduler:
    """What starts when: trainings up to capacity, except while a profiling window is open.

    Latency must be measured with the device to itself. A window opens when no training is
    ready to start and candidates wait for a latency; it stays open (no training starts)
    until all of them are measured, one exclusive job at a time. Asking a few trials ahead
    lets one window serve several candidates, so the drain before it is paid rarely.
    """

    def __init__(self, capacity: int, trains_beside_profiling: bool = False):
        self.capacity = capacity
        self.beside = trains_beside_profiling  # other nodes train while one profiles
        self.window_open = False

    def next(self, plans: list[Plan]) -> tuple[list[Plan], list[Plan]]:
        """The plans to start training now, and the plans to profile together now."""
        waiting = sorted((p for p in plans if p.stage is Stage.CHECKED), key=lambda p: p.since)
        profiling = any(p.stage is Stage.PROFILING for p in plans)
        ready = sorted((p for p in plans if p.stage is Stage.PROFILED), key=lambda p: p.since)
        training = sum(p.stage is Stage.TRAINING for p in plans)
        if self.window_open and not waiting and not profiling:
            self.window_open = False
        to_train: list[Plan] = []
        if not self.window_open or self.beside:
            to_train = ready[: max(0, self.capacity - training)]
            self.window_open = bool(waiting) and len(to_train) == len(ready)
        to_profile = waiting if self.window_open and not profiling else []
        return to_train, to_profile


class Recorder:
    """Every write to the study: the record, values and constraints, failures and retries,
    heartbeats. Nothing else in the driver touches Optuna's storage."""

    def __init__(self, study: optuna.Study, storage: RDBStorage, objectives: list[str], budget: Budget,
                 max_retries: int, score: str = "accuracy"):
        self.study, self.storage, self.objectives, self.budget = study, storage, objectives, budget
        self.max_retries = max_retries
        self.score = score  # the proxy score told as the accuracy objective (`objectives.PROXY_SCORES`)

    def heartbeat(self, plans: list[Plan]) -> None:
        for plan in plans:
            record_heartbeat(self.storage, plan.trial)

    def tell(self, plan: Plan) -> FrozenTrial:
        """Store the record, constraints (budget judged now) and values of a finished trial."""
        violations = self.budget.violations(plan.record.metrics())
        set_constraints(self.storage, plan.trial, {key: violations.get(key, -1.0) for key in self.budget.keys()})
        plan.record.save(plan.trial)
        return self.study.tell(plan.trial, plan.record.values(self.objectives, self.score))

    def fail(self, plan: Plan, reason: str, retry: bool, status: str = FAILED) -> bool:
        """End the trial FAIL with its reason; queue the same params again if `retry` and the
        retry allowance is left. Returns whether a retry was queued."""
        plan.record.update(failure_reason=reason, status=status)
        plan.record.save(plan.trial)
        self.study.tell(plan.trial, state=TrialState.FAIL)
        retries = plan.record.retry_count
        retry = retry and retries < self.max_retries
        if retry:
            self.study.enqueue_trial(plan.trial.params, user_attrs=plan.record.retry_attrs(plan.trial.number, 1))
        return retry

    def fail_orphans(self) -> int:
        """Trials left RUNNING by a driver that is known to be dead end FAIL and are queued
        again (as after Ctrl-C: not the trial's fault, so no retry is spent)."""
        orphans = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in orphans:
            record = TrialRecord.load(trial)
            fail_orphan(self.storage, trial, {"failure_reason": ORPHAN_REASON, "status": INTERRUPTED})
            self.study.enqueue_trial(trial.params, user_attrs=record.retry_attrs(trial.number, 0))
        return len(orphans)

    def interrupt(self, plan: Plan, signal_name: str = "Ctrl-C") -> None:
        """Ctrl-C: end an unfinished trial FAIL and queue it again, so the same command resumes
        it. One whose result was stored just before the interrupt is kept."""
        try:
            plan.record.update(failure_reason=INTERRUPTED_REASON.format(signal_name), status=INTERRUPTED)
            plan.record.save(plan.trial)
            self.study.tell(plan.trial, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            return
        self.study.enqueue_trial(plan.trial.params, user_attrs=plan.record.retry_attrs(plan.trial.number, 0))


class Driver:
    def __init__(self, study: optuna.Study, storage: RDBStorage, evaluator: Evaluator, executor: Executor,
                 settings: DriverSettings, on_status: Callable[[Status], None] | None = None,
                 sole_driver: bool = False, check_stop: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, deadline: float | None = None):
        """`sole_driver`: the caller holds the study's lock (`search.lock`), so a RUNNING trial
        found at the start belongs to a dead driver and is retried at once, not after the
        heartbeat grace period. `check_stop` raises KeyboardInterrupt when a stop was asked
        for (`search.engine.stopping`); the loop calls it at each turn. `clock` gives the seconds
        that progress and ages count in (a replay's simulated clock). `deadline` (on `clock`):
        ask no trial that would end after it, at this run's pace so far (`search.time_budget`)."""
        self.study, self.evaluator, self.executor, self.settings = study, evaluator, executor, settings
        self.clock_s = clock
        self.check_stop = check_stop
        self.sole_driver = sole_driver
        self.on_status = on_status or (lambda status: None)
        capacity = settings.max_concurrent or executor.capacity(settings.trial_cpus, settings.trial_gpus)
        self.scheduler = Scheduler(capacity, executor.trains_beside_profiling())
        self.recorder = Recorder(study, storage, settings.objectives, settings.budget, settings.max_retries,
                                 settings.score)
        self.storage = storage
        self.plans: list[Plan] = []  # in flight: every stage but the final ones
        self.failed_this_run = 0
        self.trained_this_run = 0
        self._finished_count: int | None = None
        self.deadline = deadline
        self.out_of_time = False  # the deadline stopped the asking
        self.window_s: dict[float, float] = {}  # this run's profiling windows: start time -> seconds
        self.ticks = itertools.count()
        self.started = self.clock_s()
        self.channel = executor.channel()  # epoch progress from running trainings
        self.channel.listener = self._progress
        self.by_arch = {t.user_attrs.get("arch_hash"): t for t in finished_trials(study)
                        if TrialRecord.load(t).trained}
        # Stages that run a job: what the job is called in messages, and what takes its result.
        self.on_done = {Stage.PROFILING: ("profiling", self._profiled),
                        Stage.TRAINING: ("proxy training", self._trained)}

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        with quiet_heartbeats():
            self._run()

    def _run(self) -> None:
        if self.sole_driver:
            if orphans := self.recorder.fail_orphans():
                self._status(f"{orphans} trials left running by a dead driver were queued again")
        else:
            optuna.storages.fail_stale_trials(self.study)
        try:
            while self._want_more() or self.plans:
                self.check_stop()
                self._ask_ahead()
                self._start()
                self._collect(timeout=1.0)
                self.recorder.heartbeat(self.plans)
            if self._finished() < self.settings.n_trials:
                self._status("stopped: the time budget would not fit another trial" if self.out_of_time else
                             f"stopped: {self.failed_this_run} trials failed in this run (see failure_reason)")
            else:
                self.out_of_time = False  # the deadline only held asking back for a while: it ended nothing
        except KeyboardInterrupt as stop:
            self._interrupt(signal_name=str(stop) if str(stop).startswith("SIG") else "Ctrl-C")
            raise
        except ClusterError:  # nothing in flight can finish, and there is nobody to cancel
            self._interrupt(cancel=False)
            raise
        except Exception:  # a full disk, a broken storage: still leave nothing RUNNING if we can
            with contextlib.suppress(Exception):
                self._interrupt()
            raise

    def _finished(self) -> int:
        """Finished trials in the study. Counted again only after this driver told one, unless
        another driver may be telling too: reading every trial at each turn of the loop was
        most of a replay's time."""
        if self._finished_count is None or not self.sole_driver:
            self._finished_count = len(finished_trials(self.study))
        return self._finished_count

    def _want_more(self) -> bool:
        limit = self.settings.max_failures or max(10, 2 * self.settings.n_trials)
        if self.failed_this_run >= limit:
            return False
        return self._finished() + len(self.plans) < self.settings.n_trials and not self._late()

    def _late(self) -> bool:
        """Whether a trial asked now would end after the deadline. Its end is judged at this
        run's pace (seconds per trained trial so far: parallel trainings and profiling windows
        included) behind the trials already in flight; before the first, only a passed
        deadline counts."""
        if self.deadline is None:
            return False
        now = self.clock_s()
        late = now >= self.deadline
        if self.trained_this_run:
            pace = (now - self.started) / self.trained_this_run
            late = now + pace * (len(self.plans) + 1) > self.deadline
        self.out_of_time = self.out_of_time or late
        return late

    def _status(self, event: str) -> None:
        now = self.clock_s()
        ages = tuple(now - p.started for p in self.plans if p.stage is Stage.TRAINING)
        self.on_status(Status(self._finished(), self.settings.n_trials, len(ages), now - self.started, event, ages))

    def _move(self, plan: Plan, stage: Stage) -> None:
        plan.stage, plan.since, plan.started = stage, next(self.ticks), self.clock_s()
        if stage.done:
            self.plans.remove(plan)
            self._finished_count = None

    # ------------------------------------------------------------------ asking and routing
    def _ask_ahead(self) -> None:
        while self._want_more() and len(self.plans) < 2 * self.scheduler.capacity:
            trial = self.study.ask()
            record_heartbeat(self.storage, trial)  # from now on a dead driver's trial goes stale
            try:
                plan = self._plan(trial)
            except optuna.TrialPruned as reason:  # a sample in a hole of the space's ranges
                self.study.tell(trial, state=TrialState.PRUNED)
                self._status(f"trial {trial.number}: pruned ({reason})")
                continue
            self.plans.append(plan)
            self._route(plan)

    def _plan(self, trial: optuna.Trial) -> Plan:
        record = TrialRecord.load(trial)  # what was enqueued with it: reference, retry_of
        record.update(**self.evaluator.propose(trial))
        return Plan(trial, record)

    def _route(self, plan: Plan) -> None:
        """ASKED: reuse a finished twin, wait for one in flight, or check the cheap budget and
        look for a cached latency."""
        twin = self.by_arch.get(plan.record.arch_hash)
        if twin is not None:
            self._reuse(plan, twin)
            return
        running = next((p for p in self.plans if p is not plan and p.stage is not Stage.TWIN
                        and p.record.arch_hash == plan.record.arch_hash), None)
        if running is not None:
            plan.twin_of = running
            self._move(plan, Stage.TWIN)
            return
        plan.record.update(**self.evaluator.cheap(plan.record))
        if self._over_budget(plan):
            return
        cached = self.evaluator.cached_latency(plan.record)
        if cached is None:
            self._move(plan, Stage.CHECKED)
        else:
            self._take_profile(plan, cached)

    def _over_budget(self, plan: Plan) -> bool:
        over = {k: v for k, v in self.settings.budget.violations(plan.record.metrics()).items() if v > 0}
        if over:
            reason = ", ".join(f"{k} {v:+.0%} over budget" for k, v in over.items())
            plan.record.update(trained=False, infeasible_reason=reason, status=INFEASIBLE)
            self.recorder.tell(plan)
            self._move(plan, Stage.INFEASIBLE)
            self._status(f"{plan.label}: infeasible, not trained ({reason})")
            self._release_twins(plan, None)
        return bool(over)

    def _take_profile(self, plan: Plan, fields: dict[str, Any]) -> None:
        plan.record.update(**fields)
        if not self._over_budget(plan):
            self._move(plan, Stage.PROFILED)

    # ------------------------------------------------------------------ starting jobs
    def _start(self) -> None:
        self.check_stop()  # an inline job runs to its end here: a stop kept meanwhile must not wait for it
        to_train, to_profile = self.scheduler.next(self.plans)
        for plan in to_train:
            fn, args = self.evaluator.train(plan.record, None, self.channel, plan.trial.number)
            plan.job = self.executor.submit(fn, *args, name=f"train_trial_{plan.trial.number}",
                                            num_cpus=self.settings.trial_cpus, num_gpus=self.settings.trial_gpus)
            self._move(plan, Stage.TRAINING)
        if to_profile:
            fn, args = self.evaluator.latency([p.record for p in to_profile])
            job = self.executor.submit_exclusive(
                fn, *args, name=f"profile_trials_{'_'.join(str(p.trial.number) for p in to_profile)}")
            for plan in to_profile:  # one job, one window: each takes its own result
                plan.job = job
                self._move(plan, Stage.PROFILING)

    # ------------------------------------------------------------------ results
    def _collect(self, timeout: float) -> None:
        stages = list(self.on_done)
        running = sorted((p for p in self.plans if p.job is not None and p.stage in self.on_done),
                         key=lambda p: (stages.index(p.stage), p.since))
        done = set(self.executor.wait([p.job for p in running], timeout)) if running else set()
        for message in self.channel.drain():
            self._progress(message)
        for plan in [p for p in running if p.job in done]:
            job, plan.job = plan.job, None
            what, take = self.on_done[plan.stage]
            try:
                result = job.result()
            except WorkerLost as err:
                self._fail(plan, f"worker died during {what}: {err}", retry=True)
                continue
            except JobFailed as err:
                self._fail(plan, f"{what} raised {err}", retry=False)
                continue
            take(plan, result)

    def _progress(self, message: tuple) -> None:
        """An epoch of a running training ended."""
        number, epoch, epochs, accuracy = message
        plan = next((p for p in self.plans if p.trial.number == number), None)
        if plan is not None and epoch < epochs:  # the last epoch's result comes with the trial's end
            self._status(f"{plan.label}: epoch {epoch}/{epochs}, acc {accuracy:.3f} so far")
        self.check_stop()  # inline, this runs inside the training: a stop kept by the status line ends it

    def _profiled(self, plan: Plan, window: dict[str, Any]) -> None:
        self.window_s[window["started_at"]] = window["finished_at"] - window["started_at"]  # once per window
        self._take_profile(plan, window["fields"][plan.record.arch_hash])

    @property
    def profiling_s(self) -> float:
        """Seconds this run's profiling windows held their node (training waits meanwhile)."""
        return sum(self.window_s.values())

    def _trained(self, plan: Plan, result: dict[str, Any]) -> None:
        plan.record.update(**result["fields"])
        if not result["ok"]:
            self._fail(plan, f"proxy training failed: {result['failure_reason']}", retry=False)
            return
        plan.record.update(trained=True, status=TRAINED)
        frozen = self.recorder.tell(plan)
        self.trained_this_run += 1
        self.by_arch[plan.record.arch_hash] = frozen
        self._move(plan, Stage.TOLD)
        self._status(f"{plan.label}: acc {plan.record.accuracy:.3f}, {plan.record.latency_ms:.2f} ms")
        self._release_twins(plan, frozen)

    def _fail(self, plan: Plan, reason: str, retry: bool) -> None:
        retried = self.recorder.fail(plan, reason, retry)
        self.failed_this_run += 1
        self._move(plan, Stage.FAILED)
        self._release_twins(plan, None)
        self._status(f"{plan.label}: FAILED ({reason})" + (" - will retry" if retried else ""))

    # ------------------------------------------------------------------ twins
    def _reuse(self, plan: Plan, twin: FrozenTrial) -> None:
        plan.record.update(**TrialRecord.load(twin).measurements())
        plan.record.update(status=REUSED, reused_from=twin.number)
        self.recorder.tell(plan)  # the twin's measurements, judged against today's budget
        self._move(plan, Stage.TOLD)
        self._status(f"{plan.label}: same architecture as trial {twin.number}, result reused")

    def _release_twins(self, original: Plan, frozen: FrozenTrial | None) -> None:
        for twin in [p for p in self.plans if p.twin_of is original]:
            twin.twin_of = None
            if frozen is not None:
                self._reuse(twin, frozen)
            else:
                twin.stage = Stage.ASKED
                self._route(twin)

    # ------------------------------------------------------------------ Ctrl-C
    def _interrupt(self, cancel: bool = True, signal_name: str = "Ctrl-C") -> None:
        """Unfinished trials end FAIL (marked interrupted) and are queued again, so the same
        command resumes them; finished trials are already safe in storage."""
        release_storage_session(self.storage)
        for plan in list(self.plans):
            if cancel and plan.job is not None:
                self.executor.cancel(plan.job)
            self.recorder.interrupt(plan, signal_name)
