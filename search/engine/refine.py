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
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.measure.estimate import SEED_SD, binomial_se, replicate_seed
from search.engine.evaluator import Evaluator
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
    latencies = LatencyHistory(study)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = latencies.preferred(TrialRecord.load(trial))  # the latency the report shows
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


def replicates_needed(seed_sd: float, val_se: float, gap: float) -> int | None:
    """The fewest replicates n with sqrt(seed_sd**2 / n + val_se**2) <= gap / 2: enough for a
    front member's SE to fall under half the gap to its neighbour. None when the validation
    part alone (common to every replicate) is that large: then no number of seeds suffices,
    only a larger validation slice."""
    room = (gap / 2) ** 2 - val_se**2
    if not room > 0:
        return None
    return max(1, math.ceil(seed_sd**2 / room))


def replicate_rule(pool: list[Contender], val_count: int, max_replicates: int, seed_sd: float = SEED_SD) -> str:
    """The rule behind `refine.max_replicates`, with this study's numbers: the typical (median)
    accuracy gap between latency neighbours on the front, and the replicates it asks for."""
    front = sorted((c for c in pool if not any(o.latency_ms <= c.latency_ms and o.mean > c.mean for o in pool)),
                   key=lambda c: c.latency_ms)
    gaps = sorted(abs(a.mean - b.mean) for a, b in zip(front, front[1:]))
    if not gaps:
        return f"the front has {len(front)} member: no gap between neighbours to resolve"
    gap = gaps[len(gaps) // 2]
    val_se = binomial_se(statistics.fmean(c.mean for c in front), val_count)
    n = replicates_needed(seed_sd, val_se, gap)
    need = (f"{n} replicates" if n is not None
            else "more than any number of replicates (the validation slice's SE alone exceeds half the gap)")
    return (f"rule: a front member needs SE < half the typical gap between front neighbours ({100 * gap:.2f} points, "
            f"median of {len(gaps)}); with seed SD {100 * seed_sd:.1f} points and validation SE {100 * val_se:.2f} "
            f"points ({val_count} images) that is {need}; refine.max_replicates={max_replicates}")


class Refiner:
    """Runs the extra replicates on the executor, `capacity` at a time."""

    def __init__(self, study: optuna.Study, executor: Executor, settings: RefineSettings, capacity: int,
                 evaluator: Evaluator, num_cpus: float, num_gpus: float,
                 on_event: Callable[[str], None] = lambda event: None, check_stop: Callable[[], None] = lambda: None,
                 deadline: float | None = None, clock: Callable[[], float] = time.monotonic):
        """`check_stop` raises KeyboardInterrupt when a stop was asked for (`search.stopping`).
        `deadline` (on `clock`): start no replicate that would end after it, judged by the
        architecture's first training time."""
        self.study, self.executor, self.settings, self.capacity = study, executor, settings, capacity
        self.evaluator, self.num_cpus, self.num_gpus = evaluator, num_cpus, num_gpus
        self.on_event, self.check_stop = on_event, check_stop
        self.store = ReplicateStore(study)
        self.running: dict[Job, tuple[Contender, int]] = {}
        self.failures = 0  # failed replicates spend budget too, so a broken one cannot loop
        self.deadline, self.clock = deadline, clock
        self.out_of_time = False  # the deadline kept a replicate from starting

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
        pool = candidates(self.study, self.store)
        if pool:
            counts = [TrialRecord.load(c.trial).val_count for c in pool]
            self.on_event(replicate_rule(pool, max((n for n in counts if n), default=1), self.settings.max_replicates))
        try:
            while True:
                self.check_stop()
                for candidate in self.next_round()[: max(0, min(self.budget_left(),
                                                              self.capacity - len(self.running)))]:
                    if not self._fits(candidate):
                        self.out_of_time = True
                        break
                    self._start(candidate)
                if not self.running:
                    if self.out_of_time:
                        self.on_event("stopped: the time budget would not fit another training")
                    return done
                for job in self.executor.wait(list(self.running), timeout=1.0):
                    done += self._finish(job)
        except KeyboardInterrupt:
            for job in self.running:
                self.executor.cancel(job)  # finished replicates are stored already
            raise

    def _fits(self, candidate: Contender) -> bool:
        if self.deadline is None:
            return True
        seconds = TrialRecord.load(candidate.trial).proxy_wall_time_s or 0.0
        return self.clock() + seconds <= self.deadline

    def _start(self, candidate: Contender) -> None:
        k = candidate.n + len([1 for c, _ in self.running.values() if c.arch_hash == candidate.arch_hash])
        record = TrialRecord.load(candidate.trial)
        seed = replicate_seed(int(record.proxy_seed or 0), k)
        fn, args = self.evaluator.train(record, seed)
        job = self.executor.submit(fn, *args, name=f"replicate_{candidate.trial.number}_{k}", num_cpus=self.num_cpus,
                                   num_gpus=self.num_gpus)
        self.running[job] = (candidate, seed)

    def _finish(self, job: Job) -> int:
        candidate, seed = self.running.pop(job)
        label = f"trial {candidate.trial.number} replicate (seed {seed})"
        try:
            result = job.result()
        except (JobFailed, WorkerLost) as err:
            result = {"ok": False, "failure_reason": str(err)}
        if not result["ok"]:
            self.failures += 1
            self.on_event(f"{label}: FAILED ({result['failure_reason']}); not counted")
            return 0
        fields = result["fields"]
        self.store.add(candidate.arch_hash, Replicate(seed, fields["accuracy"], fields["val_count"],
                                                      fields.get("proxy_wall_time_s")))
        estimate = self.store.estimate(candidate.trial)
        self.on_event(f"{label}: acc {fields['accuracy']:.3f}; estimate {estimate.mean:.3f} ± {estimate.se:.3f} "
                      f"(n={estimate.n})")
        return 1
