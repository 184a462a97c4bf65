"""A run is a list of phases: by default Search, then Refine, then Reprofile.

Each phase gets the run's shared `Context` and returns the seconds it held the profiling node
(the run's "where the time went" line counts them). A new strategy, say multi-fidelity
halving, is one new phase in the list that `search.app.campaign` builds.
"""
from __future__ import annotations

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
    results: dict[str, Any] = field(default_factory=dict)  # what a phase leaves for the next ones


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
                        check_stop=context.check_stop, **extra)
        driver.run()
        context.capacity = driver.scheduler.capacity
        return driver.profiling_s


class RefinePhase:
    """Extra replicates where front membership is in doubt (`search.engine.refine`)."""

    name = "refine"

    def run(self, context: Context) -> float:
        refiner = Refiner(context.study, context.executor, context.refine, context.capacity, context.evaluator,
                          context.driver.trial_cpus, context.driver.trial_gpus,
                          on_event=lambda event: context.say(f"[refine] {event}"), check_stop=context.check_stop)
        if refiner.budget_left() > 0 and refiner.next_round():
            context.say(f"refining: up to {refiner.budget_left()} extra trainings where the front is in doubt")
        context.results["refined"] = refiner.run()
        return 0.0


class ReprofilePhase:
    """Time the front and the candidates in doubt once more, together, in one window, so the
    latencies the final front compares come from one window. Each result joins the
    architecture's `LatencyHistory`."""

    name = "reprofile"

    def run(self, context: Context) -> float:
        study = context.study
        doubtful = [c.trial for c in in_doubt(candidates(study, ReplicateStore(study)), context.refine.margin_se)]
        unique = {TrialRecord.load(t).arch_hash: TrialRecord.load(t) for t in [*front_trials(study), *doubtful]}
        if len(unique) < 2:
            return 0.0  # one network needs no common window
        context.say(f"re-profiling {len(unique)} front and near-front candidates together")
        fn, args = context.evaluator.latency(list(unique.values()), remeasure=True)
        job = context.executor.submit_exclusive(fn, *args, name="reprofile_front")
        try:
            while not context.executor.wait([job], timeout=1.0):
                context.check_stop()
        except KeyboardInterrupt:
            context.executor.cancel(job)
            raise
        window = job.result()
        history = LatencyHistory(study)
        for arch_hash, fields in window["fields"].items():
            history.add(arch_hash, {
                "latency_ms": fields["latency_ms"], "latency_ci_low_ms": fields.get("latency_ci_low_ms"),
                "latency_ci_high_ms": fields.get("latency_ci_high_ms"), "window": fields.get("latency_window"),
                "contamination": fields.get("latency_contamination"), "at": window["finished_at"]})
        context.results["reprofiled"] = len(window["fields"])
        return window["finished_at"] - window["started_at"]


DEFAULT_PHASES: tuple[type, ...] = (SearchPhase, RefinePhase, ReprofilePhase)
