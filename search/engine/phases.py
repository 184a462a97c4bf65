"""A run is a list of phases: by default Search, then Refine, then Reprofile.

Each phase gets the run's shared `Context` and returns the seconds it held the profiling node
(the run's "where the time went" line counts them). A new strategy, say multi-fidelity
halving, is one new phase in the list that `search.app.campaign` builds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import optuna
from optuna.storages import RDBStorage

from search.engine.driver import Driver, DriverSettings, Status
from search.engine.evaluator import Evaluator
from search.engine.executor import Executor
from search.engine.front import front_trials
from search.engine.record import TrialRecord
from search.engine.refine import RefineSettings, Refiner, candidates, in_doubt
from search.engine.replicates import LatencyHistory, ReplicateStore


@dataclass
class Context:
    """What the phases of one run share."""

    study: optuna.Study
    storage: RDBStorage
    evaluator: Evaluator
    executor: Executor
    driver: DriverSettings
    refine: RefineSettings
    say: Callable[[str], None] = print
    on_status: Callable[[Status], None] = lambda status: None
    check_stop: Callable[[], None] = lambda: None
    sole_driver: bool = False
    clock: Callable[[], float] | None = None  # a replay's simulated clock; None: real time
    capacity: int = 1  # trainings at once: the search phase learns it from the executor
    deadline: float | None = None  # on the run's clock: start no work that would end after it (search.time_budget)
    results: dict[str, Any] = field(default_factory=dict)  # what a phase leaves for the next ones

    def now(self) -> float:
        return self.clock() if self.clock is not None else time.monotonic()


class Phase(Protocol):
    name: str

    def run(self, context: Context) -> float:
        """Do this phase's work; return the seconds it held the profiling node."""


class SearchPhase:
    """Ask Optuna for trials until enough have finished (`search.engine.driver`)."""

    name = "search"

    def run(self, context: Context) -> float:
        extra = {} if context.clock is None else {"clock": context.clock}
        driver = Driver(context.study, context.storage, context.evaluator, context.executor, context.driver,
                        on_status=context.on_status, sole_driver=context.sole_driver,
                        check_stop=context.check_stop, deadline=context.deadline, **extra)
        driver.run()
        context.capacity = driver.scheduler.capacity
        context.results["out_of_time"] = driver.out_of_time
        return driver.profiling_s


class RefinePhase:
    """Extra replicates where front membership is in doubt (`search.engine.refine`)."""

    name = "refine"

    def run(self, context: Context) -> float:
        refiner = Refiner(context.study, context.executor, context.refine, context.capacity, context.evaluator,
                          context.driver.trial_cpus, context.driver.trial_gpus,
                          on_event=lambda event: context.say(f"[refine] {event}"), check_stop=context.check_stop,
                          deadline=context.deadline, clock=context.now)
        if refiner.budget_left() > 0 and refiner.next_round():
            context.say(f"refining: up to {refiner.budget_left()} extra trainings where the front is in doubt")
        context.results["refined"] = refiner.run()
        return 0.0


class ReprofilePhase:
    """Time the front and the candidates in doubt once more, together, in one window, so the
    latencies the final front compares come from one window. Only those whose intervals
    overlap need it: the others' order is already clear, and a smaller window reaches its
    precision sooner. Each result joins the architecture's `LatencyHistory`."""

    name = "reprofile"

    def __init__(self, only_overlapping: bool = True):
        self.only_overlapping = only_overlapping  # False: time them all, even those already apart

    def run(self, context: Context) -> float:
        study = context.study
        if context.deadline is not None and context.now() >= context.deadline:
            context.say("re-profile skipped: the time budget is spent")
            return 0.0
        doubtful = [c.trial for c in in_doubt(candidates(study, ReplicateStore(study)), context.refine.margin_se)]
        history = LatencyHistory(study)
        unique = {r.arch_hash: r for r in (history.preferred(TrialRecord.load(t))
                                           for t in [*front_trials(study), *doubtful])}
        tangled = overlapping(list(unique.values())) if self.only_overlapping else list(unique.values())
        if len(tangled) < 2:
            return 0.0  # every interval stands apart already: their order is known
        context.say(f"re-profiling {len(tangled)} of {len(unique)} front and near-front candidates together "
                    "(those whose latency intervals overlap)")
        fn, args = context.evaluator.latency(tangled, remeasure=True)
        job = context.executor.submit_exclusive(fn, *args, name="reprofile_front")
        try:
            while not context.executor.wait([job], timeout=1.0):
                context.check_stop()
        except KeyboardInterrupt:
            context.executor.cancel(job)
            raise
        window = job.result()
        for arch_hash, fields in window["fields"].items():
            history.add(arch_hash, {
                "latency_ms": fields["latency_ms"], "latency_ci_low_ms": fields.get("latency_ci_low_ms"),
                "latency_ci_high_ms": fields.get("latency_ci_high_ms"), "window": fields.get("latency_window"),
                "contamination": fields.get("latency_contamination"), "at": window["finished_at"]})
        context.results["reprofiled"] = len(window["fields"])
        return window["finished_at"] - window["started_at"]


def overlapping(records: list[TrialRecord]) -> list[TrialRecord]:
    """The records whose latency interval overlaps another's (a record without one counts as
    overlapping): only their order needs a common window to settle."""
    def interval(r: TrialRecord) -> tuple[float, float]:
        if r.latency_ci_low_ms is None or r.latency_ci_high_ms is None:
            return float("-inf"), float("inf")
        return r.latency_ci_low_ms, r.latency_ci_high_ms

    return [r for r in records if any(o is not r and interval(o)[0] <= interval(r)[1] and interval(r)[0] <= interval(o)[1]
                                      for o in records)]


DEFAULT_PHASES: tuple[type, ...] = (SearchPhase, RefinePhase, ReprofilePhase)
