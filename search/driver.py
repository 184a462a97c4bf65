"""The ask/tell driver: asks Optuna for trials, runs them cheap-first, tells the results.

A trial goes through tiers, stopping at the first that decides it:
1. sample a candidate; an architecture already finished is reused, not retrained;
2. params and MACs (analytic, instant) against the budget;
3. latency from the profile cache, or measured with the whole device reserved;
4. latency against the budget; an over-budget trial is recorded infeasible, not trained;
5. proxy training on a worker -> accuracy.

Only this process writes to the study, so SQLite storage is safe. Profiling is exclusive:
while a profiling job waits or runs, no training is started, and the job itself asks for
every CPU and GPU of the cluster, so it starts only once running trainings have finished.
To pay that drain rarely, the driver asks a few trials ahead and profiles them together.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ascan import ArchConfig

from . import jobs
from .executor import Job, JobFailed, WorkerLost
from .space import Candidate, SearchSpace
from .spec import Budget
from .study import (clean_attrs, finished_trials, objective_values, quiet_heartbeats,
                    release_storage_session)

INTERRUPTED = "interrupted: the driver was stopped (Ctrl-C); re-run the same command to resume"


@dataclass
class DriverSettings:
    n_trials: int
    objectives: list[str]
    budget: Budget
    data_name: str
    data_root: str | None
    proxy_settings: dict[str, Any]
    latency_settings: dict[str, Any]
    cache_path: str | None
    num_classes: int
    in_chans: int
    max_retries: int = 1
    trial_cpus: float = 1.0
    trial_gpus: float = 0.0
    max_concurrent: int | None = None
    max_failures: int | None = None  # stop after this many failed trials in one run


@dataclass(eq=False)
class Plan:
    """A trial in flight and everything known about it so far."""

    trial: optuna.Trial
    candidate: Candidate
    target: ArchConfig
    proxy: ArchConfig
    attrs: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    job: Job | None = None
    twin_of: "Plan | None" = None


@dataclass
class Status:
    finished: int
    total: int
    running: int
    elapsed_s: float
    event: str = ""


class Driver:
    def __init__(self, study: optuna.Study, space: SearchSpace, executor: Any, settings: DriverSettings,
                 on_status: Callable[[Status], None] | None = None):
        self.study, self.space, self.executor, self.settings = study, space, executor, settings
        self.on_status = on_status or (lambda status: None)
        self.capacity = settings.max_concurrent or executor.capacity(settings.trial_cpus, settings.trial_gpus)
        self.to_profile: list[Plan] = []
        self.profiling: Plan | None = None
        self.ready: list[Plan] = []
        self.training: list[Plan] = []
        self.twins: list[Plan] = []
        self.window_open = False
        self.failed_this_run = 0
        self.started = time.monotonic()
        self.by_arch = {t.user_attrs.get("arch_hash"): t for t in finished_trials(study)}

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        with quiet_heartbeats():
            self._run()

    def _run(self) -> None:
        optuna.storages.fail_stale_trials(self.study)
        try:
            while self._want_more() or self._in_flight():
                self._ask_ahead()
                self._schedule()
                self._collect(timeout=1.0)
                self._heartbeat()
            if self._finished() < self.settings.n_trials:
                self._status(f"stopped: {self.failed_this_run} trials failed in this run (see failure_reason)")
        except KeyboardInterrupt:
            self._interrupt()
            raise
        finally:
            self.executor.shutdown()

    def _finished(self) -> int:
        return len(finished_trials(self.study))

    def _in_flight(self) -> list[Plan]:
        current = [self.profiling] if self.profiling else []
        return self.to_profile + current + self.ready + self.training + self.twins

    def _want_more(self) -> bool:
        limit = self.settings.max_failures or max(10, 2 * self.settings.n_trials)
        if self.failed_this_run >= limit:
            return False
        return self._finished() + len(self._in_flight()) < self.settings.n_trials

    def _status(self, event: str) -> None:
        self.on_status(Status(self._finished(), self.settings.n_trials, len(self.training),
                              time.monotonic() - self.started, event))

    # ------------------------------------------------------------------ tiers 1-3: ask
    def _ask_ahead(self) -> None:
        while self._want_more() and len(self._in_flight()) < 2 * self.capacity:
            trial = self.study.ask()
            try:
                plan = self._plan(trial)
            except optuna.TrialPruned as reason:  # a sample in a hole of the space's ranges
                self.study.tell(trial, state=TrialState.PRUNED)
                self._status(f"trial {trial.number}: pruned ({reason})")
                continue
            self._route(plan)

    def _plan(self, trial: optuna.Trial) -> Plan:
        candidate = self.space.sample(trial)
        target = self.space.target_config(candidate)
        proxy = self.space.proxy_config(candidate, num_classes=self.settings.num_classes)
        if proxy.in_chans != self.settings.in_chans:
            proxy = proxy.replace(in_chans=self.settings.in_chans)
        attrs = {
            "layout": candidate.layout, "family": self.space.family(candidate), "arch_hash": target.arch_hash,
            "target_name": target.short_name(), "proxy_name": proxy.short_name(), "c_block": target.c_block,
            "t_per_stage": "-".join(str(t) for t in target.t_counts),
            "target_config": target.to_dict(), "proxy_config": proxy.to_dict(),
        }
        return Plan(trial, candidate, target, proxy, attrs)

    def _route(self, plan: Plan) -> None:
        twin = self.by_arch.get(plan.attrs["arch_hash"])
        if twin is not None:
            self._reuse(plan, twin)
            return
        running_twin = next((p for p in self._in_flight() if p.attrs["arch_hash"] == plan.attrs["arch_hash"]), None)
        if running_twin is not None:
            plan.twin_of = running_twin
            self.twins.append(plan)
            return
        plan.metrics.update(jobs.cheap_metrics(plan.target))
        if self._over_budget(plan):
            return
        cached = jobs.cached_profile(plan.target, self.settings.latency_settings, self.settings.cache_path)
        if cached is not None:
            self._take_profile(plan, cached)
        else:
            self.to_profile.append(plan)

    def _over_budget(self, plan: Plan) -> bool:
        over = {k: v for k, v in self.settings.budget.violations(plan.metrics).items() if v > 0}
        if over:
            self._tell_infeasible(plan, over)
        return bool(over)

    def _take_profile(self, plan: Plan, profile: dict[str, Any]) -> None:
        plan.metrics.update(params=profile["params"], macs=profile["macs"], latency_ms=profile["median_ms"])
        plan.attrs.update(latency_p90_ms=profile["p90_ms"], latency_iqr_ms=profile["iqr_ms"],
                          latency_samples=profile["n_samples"], peak_memory_bytes=profile.get("peak_memory_bytes"),
                          profile_fingerprint=profile.get("fingerprint"), profile_settings=profile.get("settings"))
        if not self._over_budget(plan):
            self.ready.append(plan)

    # ------------------------------------------------------------------ scheduling
    def _schedule(self) -> None:
        """Start trainings, or hold them while a profiling window is open.

        A window opens when training has nothing ready to start and candidates wait for a
        latency; it stays open until all of them are measured, one exclusive job at a time.
        """
        if self.window_open and not self.to_profile and self.profiling is None:
            self.window_open = False
        if not self.window_open:
            while len(self.training) < self.capacity and self.ready:
                self._start_training(self.ready.pop(0))
            self.window_open = bool(self.to_profile) and not self.ready
        if self.window_open and self.profiling is None and self.to_profile:
            plan = self.profiling = self.to_profile.pop(0)
            plan.job = self.executor.submit(
                jobs.profile_target, plan.target.to_dict(), self.settings.latency_settings,
                self.settings.cache_path, name=f"profile_trial_{plan.trial.number}",
                num_cpus=self.executor.total_cpus, num_gpus=self.executor.total_gpus)

    def _start_training(self, plan: Plan) -> None:
        plan.job = self.executor.submit(
            jobs.train_candidate, plan.proxy.to_dict(), self.settings.data_name, self.settings.data_root,
            self.settings.proxy_settings, name=f"train_trial_{plan.trial.number}",
            num_cpus=self.settings.trial_cpus, num_gpus=self.settings.trial_gpus)
        self.training.append(plan)

    # ------------------------------------------------------------------ tiers 3-5: results
    def _collect(self, timeout: float) -> None:
        jobs_now = [p.job for p in self.training + ([self.profiling] if self.profiling else [])]
        done = set(self.executor.wait(jobs_now, timeout)) if jobs_now else set()
        if self.profiling is not None and self.profiling.job in done:
            plan, self.profiling = self.profiling, None
            try:
                self._take_profile(plan, plan.job.result())
            except (JobFailed, WorkerLost) as err:
                self._tell_failed(plan, f"profiling failed: {err}", retry=isinstance(err, WorkerLost))
        for plan in [p for p in self.training if p.job in done]:
            self.training.remove(plan)
            try:
                result = plan.job.result()
            except WorkerLost as err:
                self._tell_failed(plan, f"worker died during proxy training: {err}", retry=True)
                continue
            except JobFailed as err:
                self._tell_failed(plan, f"proxy training raised {err}", retry=False)
                continue
            self._tell_trained(plan, result)

    def _heartbeat(self) -> None:
        storage = self.study._storage
        for plan in self._in_flight():
            storage.record_heartbeat(plan.trial._trial_id)

    # ------------------------------------------------------------------ telling Optuna
    def _set_constraints(self, trial: optuna.Trial, violations: dict[str, float]) -> None:
        for key in self.settings.budget.keys():
            trial.set_constraint(key, violations.get(key, -1.0))

    def _tell_trained(self, plan: Plan, result: dict[str, Any]) -> None:
        plan.attrs.update(
            trained=True, val_accuracy=result["val_accuracy"], val_curve=result["curve"],
            train_loss_curve=result["train_loss_curve"], images_per_sec=result["images_per_sec"],
            proxy_wall_time_s=result["wall_time_s"], epochs_done=result["epochs_done"],
            proxy_device=result["device"], failure_reason=result["failure_reason"],
            train_started_at=result["started_at"], train_finished_at=result["finished_at"])
        if result["status"] != "ok":
            self._tell_failed(plan, f"proxy training failed: {result['failure_reason']}", retry=False)
            return
        self._complete(plan, result["val_accuracy"], self.settings.budget.violations(plan.metrics))

    def _tell_infeasible(self, plan: Plan, over: dict[str, float]) -> None:
        reason = ", ".join(f"{k} {v:+.0%} over budget" for k, v in over.items())
        plan.attrs.update(trained=False, infeasible_reason=reason)
        # Not trained, so accuracy is unknown: 0.0 keeps it off the front, and the constraint
        # marks it infeasible for the sampler and the report. Over budget before profiling,
        # its latency is unknown too: infinite.
        plan.metrics.setdefault("latency_ms", float("inf"))
        self._complete(plan, 0.0, over)

    def _complete(self, plan: Plan, accuracy: float, violations: dict[str, float]) -> None:
        self._set_constraints(plan.trial, violations)
        attrs = {**plan.attrs, **{k: v for k, v in plan.metrics.items()}}
        for key, value in clean_attrs(attrs).items():
            plan.trial.set_user_attr(key, value)
        values = objective_values(self.settings.objectives, accuracy, plan.metrics)
        frozen = self.study.tell(plan.trial, values)
        if plan.attrs.get("trained"):
            self.by_arch[plan.attrs["arch_hash"]] = frozen
        self._status(f"trial {plan.trial.number} {plan.candidate.layout}: " + (
            f"acc {accuracy:.3f}, {plan.metrics['latency_ms']:.2f} ms" if plan.attrs.get("trained")
            else f"infeasible, not trained ({plan.attrs['infeasible_reason']})"))
        self._release_twins(plan, frozen)

    def _reuse(self, plan: Plan, twin: optuna.trial.FrozenTrial) -> None:
        for key, value in twin.user_attrs.items():
            plan.trial.set_user_attr(key, value)
        plan.trial.set_user_attr("reused_from", twin.number)
        # Judge the twin's measurements against today's budget, which may differ from its run's.
        metrics = {k: twin.user_attrs[k] for k in ("params", "macs", "latency_ms") if k in twin.user_attrs}
        self._set_constraints(plan.trial, self.settings.budget.violations(metrics))
        self.study.tell(plan.trial, twin.values)
        self._status(f"trial {plan.trial.number} {plan.candidate.layout}: same architecture as trial "
                     f"{twin.number}, result reused")

    def _release_twins(self, original: Plan, frozen: optuna.trial.FrozenTrial | None) -> None:
        for twin in [p for p in self.twins if p.twin_of is original]:
            self.twins.remove(twin)
            twin.twin_of = None
            if frozen is not None and original.attrs.get("trained"):
                self._reuse(twin, frozen)
            else:
                self._route(twin)

    def _tell_failed(self, plan: Plan, reason: str, retry: bool) -> None:
        plan.trial.set_user_attr("failure_reason", reason)
        for key, value in clean_attrs({**plan.attrs, **plan.metrics}).items():
            if key != "failure_reason":
                plan.trial.set_user_attr(key, value)
        self.study.tell(plan.trial, state=TrialState.FAIL)
        self.failed_this_run += 1
        retries = int(plan.trial.user_attrs.get("retry_count", 0))
        if retry and retries < self.settings.max_retries:
            self.study.enqueue_trial(plan.trial.params, user_attrs={"retry_of": plan.trial.number,
                                                                    "retry_count": retries + 1})
        self._release_twins(plan, None)
        self._status(f"trial {plan.trial.number} {plan.candidate.layout}: FAILED ({reason})"
                     + (" - will retry" if retry and retries < self.settings.max_retries else ""))

    def _interrupt(self) -> None:
        """Ctrl-C: unfinished trials end FAIL (marked interrupted) and are queued again, so the
        same command resumes them; finished trials are already safe in storage."""
        release_storage_session(self.study)
        for plan in self._in_flight():
            if plan.job is not None:
                self.executor.cancel(plan.job)
            try:
                plan.trial.set_user_attr("failure_reason", INTERRUPTED)
                self.study.tell(plan.trial, state=TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
                continue  # its result was stored just before the interrupt: keep it
            self.study.enqueue_trial(plan.trial.params, user_attrs={"retry_of": plan.trial.number})
