"""Refinement: spend extra trainings where front membership is in doubt.

After the search, every trained architecture has one replicate. A candidate is *in doubt*
when no other candidate beats it decisively: at no more latency, by more than `margin_se`
combined standard errors of accuracy. The front is in doubt by definition. In rounds, the
candidates in doubt with the fewest replicates get one more (a new seed, the same data
slice), until the budget of trainings is spent or nothing in doubt is below
`max_replicates`: successive halving by Pareto rank, which neither Optuna (no
multi-objective pruning) nor Ray Tune (single-metric schedulers) offers. Each replicate is
stored when it ends (`search.replicates`), so a rerun resumes where an interrupted one
stopped, with the budget that is left.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.measure import jobs
from search.measure.estimate import replicate_seed
from search.engine.executor import Executor, Job, JobFailed, WorkerLost
from search.engine.record import TrialRecord
from search.engine.settings import RefineSettings  # noqa: F401 (declared apart: read without torch)
from search.engine.replicates import LatencyHistory, Replicate, ReplicateStore


@dataclass(frozen=True)
class Contender:
    trial: FrozenTrial
    arch_hash: str
    mean: float
    se: float
    n: int
    latency_ms: float


def candidates(study: optuna.Study, store: ReplicateStore) -> list[Contender]:
    """Trained, feasible, finished architectures (one trial each) with their estimates."""
    seen: dict[str, Contender] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.load(trial)
        if record.reused_from is not None or record.arch_hash in seen or record.latency_ms is None:
            continue
        if any(v > 0 for v in trial.constraints.values()):
            continue
        estimate = store.estimate(trial)
        if estimate is not None:
            seen[record.arch_hash] = Contender(trial, record.arch_hash, estimate.mean, estimate.se, estimate.n,
                                               record.latency_ms)
    return list(seen.values())


def in_doubt(pool: list[Contender], margin_se: float) -> list[Contender]:
    """Candidates no other one beats decisively (at no more latency, by > margin SEs)."""
    def beaten(c: Contender) -> bool:
        return any(o is not c and o.latency_ms <= c.latency_ms
                   and o.mean - c.mean > margin_se * math.hypot(o.se, c.se) for o in pool)

    return [c for c in pool if not beaten(c)]


class Refiner:
    """Runs the extra replicates on the executor, `capacity` at a time."""

    def __init__(self, study: optuna.Study, executor: Executor, settings: RefineSettings, capacity: int,
                 train_args: Callable[[FrozenTrial, int], tuple[Any, ...]], num_cpus: float, num_gpus: float,
                 on_event: Callable[[str], None] = lambda event: None, check_stop: Callable[[], None] = lambda: None):
        """`check_stop` raises KeyboardInterrupt when a stop was asked for (`search.stopping`)."""
        self.study, self.executor, self.settings, self.capacity = study, executor, settings, capacity
        self.train_args, self.num_cpus, self.num_gpus = train_args, num_cpus, num_gpus
        self.on_event, self.check_stop = on_event, check_stop
        self.store = ReplicateStore(study)
        self.running: dict[Job, tuple[Contender, int]] = {}
        self.failures = 0  # failed replicates spend budget too, so a broken one cannot loop

    def budget_left(self) -> int:
        return self.settings.trainings - self.store.all_extra() - len(self.running) - self.failures

    def next_round(self) -> list[Contender]:
        busy = {c.arch_hash for c, _ in self.running.values()}
        doubtful = [c for c in in_doubt(candidates(self.study, self.store), self.settings.margin_se)
                    if c.n < self.settings.max_replicates and c.arch_hash not in busy]
        return sorted(doubtful, key=lambda c: (c.n, c.latency_ms))

    def run(self) -> int:
        """Refine until the budget is spent or nothing is in doubt; returns trainings done."""
        done = 0
        try:
            while True:
                self.check_stop()
                for candidate in self.next_round()[: max(0, min(self.budget_left(),
                                                              self.capacity - len(self.running)))]:
                    self._start(candidate)
                if not self.running:
                    return done
                for job in self.executor.wait(list(self.running), timeout=1.0):
                    done += self._finish(job)
        except KeyboardInterrupt:
            for job in self.running:
                self.executor.cancel(job)  # finished replicates are stored already
            raise

    def _start(self, candidate: Contender) -> None:
        k = candidate.n + len([1 for c, _ in self.running.values() if c.arch_hash == candidate.arch_hash])
        seed = replicate_seed(int(TrialRecord.load(candidate.trial).proxy_seed or 0), k)
        job = self.executor.submit(jobs.train_candidate, *self.train_args(candidate.trial, seed),
                                   name=f"replicate_{candidate.trial.number}_{k}", num_cpus=self.num_cpus,
                                   num_gpus=self.num_gpus)
        self.running[job] = (candidate, seed)

    def _finish(self, job: Job) -> int:
        candidate, seed = self.running.pop(job)
        label = f"trial {candidate.trial.number} replicate (seed {seed})"
        try:
            result = job.result()
        except (JobFailed, WorkerLost) as err:
            result = {"status": "failed", "failure_reason": str(err)}
        if result["status"] != "ok":
            self.failures += 1
            self.on_event(f"{label}: FAILED ({result['failure_reason']}); not counted")
            return 0
        self.store.add(candidate.arch_hash, Replicate(seed, result["val_accuracy"], result["val_count"],
                                                      result["wall_time_s"]))
        estimate = self.store.estimate(candidate.trial)
        self.on_event(f"{label}: acc {result['val_accuracy']:.3f}; estimate {estimate.mean:.3f} ± {estimate.se:.3f} "
                      f"(n={estimate.n})")
        return 1


def reprofile(study: optuna.Study, executor: Executor, trials: list[FrozenTrial], reference: dict[str, Any],
              latency_settings: dict[str, Any], cache_path: str | None) -> int:
    """Time `trials` (the front and the candidates in doubt) once more, together, in one
    interleaved window, so the latencies the final front compares come from one window; each
    result joins the architecture's `LatencyHistory`. Returns how many were re-timed."""
    unique = {TrialRecord.load(t).arch_hash: t for t in trials}
    if not unique:
        return 0
    targets = [TrialRecord.load(t).target_config for t in unique.values()]
    job = executor.submit_exclusive(jobs.profile_window_job, targets, reference, latency_settings, cache_path, True,
                                    name="reprofile_front")
    while not executor.wait([job], timeout=1.0):
        pass
    window = job.result()
    history = LatencyHistory(study)
    for arch_hash, result in window.items():
        history.add(arch_hash, {
            "latency_ms": result["median_ms"], "latency_ci_low_ms": result.get("ci_low_ms"),
            "latency_ci_high_ms": result.get("ci_high_ms"), "window": result.get("window"),
            "contamination": result.get("contamination") if result.get("contaminated") else None,
            "at": result.get("finished_at")})
    return len(window)
