"""Replay: the real search engine against a tabular benchmark, in simulated time.

`python -m search.replay bench=nb201-cifar10 search.sampler=tpe search.n_trials=64 seeds=0-19`

Each (sampler, seed) is one real Optuna study (RDB storage, in-memory SQLite) driven by the
same phases a search runs (`search.engine.phases`: the driver, refinement, the closing
re-profile), with a `TableEvaluator` for measurements and a `SimulatedExecutor` for time:
`slots` trainings at once (2 by default: a real search on a 2-core machine runs one
1-CPU training per core), each taking the table's training seconds on a virtual clock, so
trials overlap and finish in the order they would, with nothing sleeping.

Scoring: the study's front (`search.engine.front.front_trials`: one trial per architecture,
judged on the mean over its replicates) is scored with each member's TRUE accuracy (the
mean over the table's stored seeds) and latency, normalised as every report does
(`search.report.tables.ReferencePoint`: error in [0, 1], latency over the table's fixed
reference). HV regret = HV(the table's true front) - HV(the study's front). An evaluation
is one training: with refinement (`refine.trainings=R`), a budget of N evaluations is N - R
trials plus R replicates; without, the front after N finished trials is read from one run.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna

from search.engine.driver import DriverSettings, Status
from search.engine.front import front_trials
from search.engine.phases import DEFAULT_PHASES, Context
from search.engine.record import TrialRecord
from search.engine.refine import RefineSettings
from search.engine.simulated import SimulatedExecutor
from search.engine.samplers import DEFAULT_SAMPLER, make_sampler
from search.engine.study import finished_trials, open_study, quiet_heartbeats
from search.measure.table_evaluator import TableEvaluator
from search.measure.tables import Table, TableSpace
from search.report.tables import HV_LATENCY_MULTIPLE, ReferencePoint, compute_hypervolume
from search.space.settings import Budget

CHECKPOINTS = (16, 32, 64, 128)  # evaluations at which regret is reported
HYBRIDBENCH_CSV = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "hybridbench_cifar10_cpu.csv"


# ---------------------------------------------------------------------------- benchmarks
def load_bench(name: str) -> tuple[Table, TableSpace]:
    """A table and the space that samples it, by name: nb201-<dataset> or hybridbench[:csv path]."""
    if name.startswith("nb201-"):
        from search.measure.tables.nb201 import NB201Space, nb201_table

        return nb201_table(name.removeprefix("nb201-")), NB201Space()
    if name == "hybridbench" or name.startswith("hybridbench:"):
        from search.measure.tables.hybridbench import HybridSpace, hybridbench_table

        path = Path(name.partition(":")[2] or HYBRIDBENCH_CSV)
        table = hybridbench_table(path, c1_multiple=HV_LATENCY_MULTIPLE)
        return table, HybridSpace.for_table(table)
    raise ValueError(f"bench={name!r}: unknown; choose nb201-cifar10, nb201-cifar100, nb201-imagenet16-120 "
                     "or hybridbench[:path.csv]")


# ---------------------------------------------------------------------------- hypervolume
def normalised(table: Table, rows: Sequence[int]) -> np.ndarray:
    """Rows as minimised points (error, latency / reference), as `search.report.tables` does."""
    reference = ReferencePoint(latency_ms=table.reference_latency_ms)
    points = np.array([reference.normalise(table.mean_accuracy[r], table.latency_ms[r]) for r in rows]).reshape(-1, 2)
    return points[(points < 1.0).all(axis=1)]


def pareto_rows(table: Table) -> list[int]:
    """The table's true front: rows no other row beats on true accuracy and latency."""
    order = np.lexsort((-table.mean_accuracy, table.latency_ms))  # fastest first, then most accurate
    front, best = [], -math.inf
    for row in order:
        if table.mean_accuracy[row] > best:
            front.append(int(row))
            best = table.mean_accuracy[row]
    return front


def hypervolume_of(table: Table, rows: Sequence[int]) -> float:
    points = normalised(table, rows)
    return compute_hypervolume(points, np.ones(2)) if len(points) else 0.0


# ---------------------------------------------------------------------------- one replay
@dataclass
class Snapshot:
    evaluations: int
    front: list[int]  # table rows of the study's front
    hypervolume: float
    regret: float
    simulated_s: float


@dataclass
class Replay:
    sampler: str
    seed: int
    refine: int
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    trials: list[tuple[int, str, float]] = field(default_factory=list)  # number, arch hash, accuracy told
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU seconds: what the replay costs on an idle machine


class Replayer:
    """Replays searches on one table: `run(sampler, seed)` for the checkpoints up to `n_trials`."""

    def __init__(self, table: Table, space: TableSpace, slots: int = 2, enqueue_references: bool = True):
        self.table, self.space, self.slots = table, space, slots
        self.enqueue_references = enqueue_references
        self.true_front = pareto_rows(table)
        self.true_hv = hypervolume_of(table, self.true_front)

    def checkpoints(self, n_trials: int) -> list[int]:
        return sorted({c for c in CHECKPOINTS if c <= n_trials} | {n_trials})

    def run(self, sampler: str, seed: int, n_trials: int, refine: int = 0) -> Replay:
        started, cpu = time.perf_counter(), time.process_time()
        replay = Replay(sampler, seed, refine)
        if refine:  # refinement comes at the end: one study per budget
            for budget in self.checkpoints(n_trials):
                if budget > refine:
                    context = self._search(sampler, seed, budget - refine, refine, lambda ctx, status: None)
                    replay.snapshots[budget] = self._snapshot(context, budget)
        else:  # the front after N trials of one longer search is the front of an N-trial search
            wanted = self.checkpoints(n_trials)

            def watch(context: Context, status: Status) -> None:
                if status.finished in wanted and status.finished not in replay.snapshots:
                    replay.snapshots[status.finished] = self._snapshot(context, status.finished)

            context = self._search(sampler, seed, n_trials, 0, watch)
            replay.snapshots[n_trials] = self._snapshot(context, n_trials)
        replay.trials = [(t.number, TrialRecord.load(t).arch_hash, t.values[0]) for t in finished_trials(context.study)]
        replay.wall_s, replay.cpu_s = time.perf_counter() - started, time.process_time() - cpu
        return replay

    def search(self, sampler: str, seed: int, n_trials: int, refine: int = 0,
               time_budget_s: float | None = None) -> Snapshot:
        """One search of `n_trials` trials and `refine` replicates (within `time_budget_s` of
        simulated time, as `search.time_budget`); its front at the end."""
        context = self._search(sampler, seed, n_trials, refine, lambda ctx, status: None, time_budget_s)
        return self._snapshot(context, len(finished_trials(context.study)) + refine)

    def _search(self, sampler: str, seed: int, n_trials: int, refine: int,
                watch: Callable[[Context, Status], None], time_budget_s: float | None = None) -> Context:
        executor = SimulatedExecutor(self.slots)
        evaluator = TableEvaluator(self.table, self.space, seed)
        with quiet_heartbeats():
            study, storage = open_study(f"replay-{sampler}-{seed}", "sqlite://", ["accuracy", "latency"],
                                        make_sampler(sampler, seed, parallel=self.slots > 1), max_retries=1)
        if self.enqueue_references:  # as a real search does: the paper's layouts first
            for params in evaluator.reference_params():
                study.enqueue_trial(params, user_attrs={"reference": True})
        context = Context(study, storage, evaluator, executor,
                          DriverSettings(n_trials=n_trials, objectives=["accuracy", "latency"], budget=Budget()),
                          RefineSettings(trainings=refine), say=lambda line: None, clock=executor.clock,
                          sole_driver=True, deadline=None if time_budget_s is None else executor.clock() + time_budget_s)
        context.on_status = lambda status: watch(context, status)
        for phase in DEFAULT_PHASES:
            phase().run(context)
        return context

    def _snapshot(self, context: Context, evaluations: int) -> Snapshot:
        rows = [self.table.row[TrialRecord.load(t).arch_hash] for t in front_trials(context.study)]
        hv = hypervolume_of(self.table, rows)
        return Snapshot(evaluations, rows, hv, self.true_hv - hv, context.executor.clock())


# ---------------------------------------------------------------------------- many replays
@dataclass(frozen=True)
class Arm:
    """One line of a comparison: a sampler, with or without refinement."""

    label: str
    sampler: str
    refine: int = 0


DEFAULT_ARM = Arm(f"default ({DEFAULT_SAMPLER} + refinement)", DEFAULT_SAMPLER, RefineSettings().trainings)


Regrets = dict[str, dict[int, dict[int, float]]]  # arm label -> seed -> evaluations -> HV regret


def regret_table(results: dict[Arm, list[Replay]]) -> Regrets:
    return {arm.label: {r.seed: {b: s.regret for b, s in r.snapshots.items()} for r in replays}
            for arm, replays in results.items()}


def summary_rows(regrets: Regrets, budgets: Sequence[int], baseline: str = "random") -> list[dict]:
    """Per arm and budget: regret mean ± SE and median over seeds, and the paired Wilcoxon
    signed-rank test against the baseline arm on the same seeds (two-sided)."""
    from scipy.stats import wilcoxon

    base = regrets.get(baseline, {})
    rows = []
    for label, by_seed in regrets.items():
        for budget in budgets:
            mine = {seed: values[budget] for seed, values in by_seed.items() if budget in values}
            if not mine:
                continue
            values = np.array(list(mine.values()))
            row = {"bench": "", "arm": label, "evaluations": budget, "seeds": len(values),
                   "regret_mean": values.mean(),
                   "regret_se": values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan,
                   "regret_median": float(np.median(values)), "vs_random_median_ratio": math.nan,
                   "wilcoxon_p": math.nan}
            paired = {seed: values[budget] for seed, values in base.items() if budget in values}
            seeds = sorted(set(paired) & set(mine))
            if label != baseline and seeds:
                a, b = np.array([mine[s] for s in seeds]), np.array([paired[s] for s in seeds])
                if np.median(b) > 0:
                    row["vs_random_median_ratio"] = float(np.median(a) / np.median(b))
                if len(seeds) >= 5 and np.any(a != b):
                    row["wilcoxon_p"] = float(wilcoxon(a, b).pvalue)
            rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    """The summary as a markdown table."""
    lines = ["| bench | search | evals | seeds | HV regret mean ± SE | median | median / random's | Wilcoxon p vs random |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        ratio = "" if math.isnan(r["vs_random_median_ratio"]) else f"{r['vs_random_median_ratio']:.2f}"
        p = "" if math.isnan(r["wilcoxon_p"]) else f"{r['wilcoxon_p']:.2g}"
        lines.append(f"| {r['bench']} | {r['arm']} | {r['evaluations']} | {r['seeds']} | {r['regret_mean']:.4f} ± "
                     f"{r['regret_se']:.4f} | {r['regret_median']:.4f} | {ratio} | {p} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line
USAGE = ("usage: python -m search.replay bench=nb201-cifar10 search.sampler=tpe[,gp,...] search.n_trials=64 "
         "seeds=0-19 [refine.trainings=0] [slots=2]")


def parse_seeds(text: str) -> list[int]:
    """`0-19`, `3` or `1,4,7`."""
    seeds: list[int] = []
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"seeds={text!r}: write a range like 0-19, or numbers like 1,4,7")
        seeds.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    return seeds


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {"bench": "nb201-cifar10", "search.sampler": DEFAULT_SAMPLER, "search.n_trials": "64",
                               "seeds": "0-19", "refine.trainings": "0", "slots": "2"}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in options:
            raise ValueError(f"{arg!r}: unknown argument; {USAGE}")
        options[key] = value
    parsed: dict[str, Any] = {"bench": options["bench"], "samplers": options["search.sampler"].split(","),
                              "seeds": parse_seeds(options["seeds"])}
    for key, name, least in (("search.n_trials", "n_trials", 1), ("refine.trainings", "refine", 0), ("slots", "slots", 1)):
        try:
            parsed[name] = int(options[key])
        except ValueError:
            raise ValueError(f"{key}={options[key]!r}: not an integer") from None
        if parsed[name] < least:
            raise ValueError(f"{key}={parsed[name]}: must be at least {least}")
    if parsed["refine"] and parsed["refine"] >= min(parsed["n_trials"], CHECKPOINTS[0]):
        raise ValueError(f"refine.trainings={parsed['refine']}: must be below the smallest budget "
                         f"({min(parsed['n_trials'], CHECKPOINTS[0])} evaluations)")
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        table, space = load_bench(args["bench"])
        for name in args["samplers"]:
            make_sampler(name, 0, False)  # an unknown sampler is bad input, found before any replay
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    replayer = Replayer(table, space, args["slots"])
    arms = [Arm(name if not args["refine"] else f"{name} + refinement", name, args["refine"]) for name in args["samplers"]]
    if not any(a.label == "random" for a in arms):
        arms.append(Arm("random", "random"))
    print(f"replaying {', '.join(a.label for a in arms)} on {table.name} ({len(table.keys)} candidates; true front "
          f"{len(replayer.true_front)} members, HV {replayer.true_hv:.4f}), {args['n_trials']} evaluations, "
          f"seeds {args['seeds'][0]}..{args['seeds'][-1]} ({len(args['seeds'])}), {args['slots']} trainings at once",
          flush=True)
    results: dict[Arm, list[Replay]] = {}
    started = time.perf_counter()
    for arm in arms:
        results[arm] = [replayer.run(arm.sampler, seed, args["n_trials"], arm.refine) for seed in args["seeds"]]
        wall = sum(r.wall_s for r in results[arm])
        simulated = np.mean([r.snapshots[max(r.snapshots)].simulated_s for r in results[arm]])
        print(f"  {arm.label}: {wall:.1f} s of replay; a search took {simulated / 3600:.1f} h simulated", flush=True)
    rows = summary_rows(regret_table(results), replayer.checkpoints(args["n_trials"]))
    for row in rows:
        row["bench"] = table.name
    print(format_rows(rows))
    print(f"replay took {time.perf_counter() - started:.1f} s")
    return 0
