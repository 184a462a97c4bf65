"""A simulated executor: jobs take virtual time, nothing sleeps, nothing leaves the process.

A replay against a table (`search.app.replay`) drives the real driver and refinement with
it. A job's function runs at submit (a table answers at once) and its result says how long
it would have taken: a training's `proxy_wall_time_s`, a latency window's span
(`finished_at - started_at`). The job then holds a slot from its start to start + cost on a
`VirtualClock`. `wait` moves the clock to the earliest finish among the jobs asked about, so
the driver sees trainings end in the order and at the times a real run with `slots`
trainings at once would.

Like one node: `slots` trainings at once, and an exclusive job (profiling) starts when every
slot is free and holds them all until it ends.
"""
from __future__ import annotations

from typing import Any, Callable

from search.engine.executor import Job, JobFailed, LocalChannel


class VirtualClock:
    """Seconds since the replay began; only `SimulatedExecutor.wait` moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def job_cost(result: Any) -> float:
    """Seconds a job's result says it took: a latency window's span, or a training's wall time."""
    if isinstance(result, dict):
        if "finished_at" in result and "started_at" in result:
            return max(0.0, float(result["finished_at"]) - float(result["started_at"]))
        wall = (result.get("fields") or {}).get("proxy_wall_time_s")
        if wall is not None:
            return max(0.0, float(wall))
    return 0.0


class SimulatedExecutor:
    """`slots` trainings at once on one simulated node, in virtual time (`clock`)."""

    def __init__(self, slots: int = 2, clock: VirtualClock | None = None,
                 cost: Callable[[Any], float] = job_cost):
        if slots < 1:
            raise ValueError(f"slots={slots}: need at least one")
        self.slots = slots
        self.total_cpus = float(slots)
        self.total_gpus = 0.0
        self.clock = clock or VirtualClock()
        self.cost = cost
        self.free_at = [0.0] * slots  # when each slot is next free
        self.finish_at: dict[Job, float] = {}  # jobs submitted and not yet seen done
        self.results: dict[Job, tuple[str, Any]] = {}

    # ------------------------------------------------------------------ the protocol
    def capacity(self, num_cpus: float, num_gpus: float) -> int:
        return self.slots

    def profile_threads(self) -> int:
        return self.slots

    def trains_beside_profiling(self) -> bool:
        return False

    def put(self, value: Any) -> Any:
        return value

    def channel(self) -> LocalChannel:
        return LocalChannel()

    def submit(self, fn: Callable[..., Any], *args: Any, name: str, num_cpus: float = 1,
               num_gpus: float = 0) -> Job:
        outcome, cost = self._call(fn, args)
        slot = min(range(self.slots), key=lambda i: self.free_at[i])
        start = max(self.clock.now, self.free_at[slot])
        self.free_at[slot] = start + cost
        return self._queued(Job(name, submitted_at=self.clock.now), outcome, start + cost)

    def submit_exclusive(self, fn: Callable[..., Any], *args: Any, name: str) -> Job:
        outcome, cost = self._call(fn, args)
        start = max(self.clock.now, *self.free_at)  # waits for the node to be idle
        self.free_at = [start + cost] * self.slots
        if outcome[0] == "ok" and isinstance(outcome[1], dict) and "started_at" in outcome[1]:
            # The window's times on the virtual clock, as a real one's are on the wall clock.
            outcome = ("ok", {**outcome[1], "started_at": start, "finished_at": start + cost})
        return self._queued(Job(name, submitted_at=self.clock.now), outcome, start + cost)

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]:
        """Advance the clock to the earliest finish among `jobs` still running; return the
        jobs of `jobs` done by then. (`timeout` is real time: a simulation never waits.)"""
        pending = [self.finish_at[j] for j in jobs if j.outcome is None and j in self.finish_at]
        if pending:
            self.clock.now = max(self.clock.now, min(pending))
        for job in jobs:
            if job.outcome is None and self.finish_at.get(job, float("inf")) <= self.clock.now:
                job.outcome = self.results.pop(job)
                del self.finish_at[job]
        return [job for job in jobs if job.outcome is not None]

    def cancel(self, job: Job) -> None:
        self.finish_at.pop(job, None)
        self.results.pop(job, None)

    def shutdown(self) -> None:
        pass

    # ------------------------------------------------------------------ helpers
    def _call(self, fn: Callable[..., Any], args: tuple) -> tuple[tuple[str, Any], float]:
        try:
            value = fn(*args)
        except Exception as err:  # the caller decides what a failed job means
            return ("error", JobFailed(f"{type(err).__name__}: {err}")), 0.0
        return ("ok", value), self.cost(value)

    def _queued(self, job: Job, outcome: tuple[str, Any], finish: float) -> Job:
        self.finish_at[job] = finish
        self.results[job] = outcome
        return job
