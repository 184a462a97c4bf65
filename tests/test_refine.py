"""Refinement: replicates grouped by architecture, new seeds, a front from refined estimates."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from optuna.distributions import CategoricalDistribution

from search.app.campaign import Campaign
from search.engine.executor import InlineExecutor
from search.engine.record import TrialRecord
from search.engine.refine import Refiner, RefineSettings, candidates, in_doubt
from search.engine.replicates import LatencyHistory, Replicate, ReplicateStore
from search.report.tables import format_front, front_frame, front_trials, trials_frame
from search.app.settings import parse_args

from studies import FAST, complete


def _study(rows: list[dict], constraints: list[float] | None = None) -> optuna.Study:
    """A real (in-memory storage) study of trained trials with known accuracy and latency."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency"])
    for i, row in enumerate(rows):
        record = TrialRecord(layout=row.get("layout", f"L{i}"), arch_hash=f"h{i}", trained=row.get("trained", True),
                             accuracy=row["acc"], latency_ms=row["lat"], val_count=2000, proxy_seed=0,
                             latency_ci_low_ms=row.get("ci", (None, None))[0],
                             latency_ci_high_ms=row.get("ci", (None, None))[1])
        study.add_trial(create_trial(
            state=row.get("state", TrialState.COMPLETE), values=[row["acc"], row["lat"]] if "state" not in row else None,
            params={"layout": record.layout}, distributions={"layout": CategoricalDistribution([record.layout])},
            user_attrs=record.to_attrs(), constraints={"macs": constraints[i]} if constraints else None))
    return study


def test_front_uses_refined_means_and_ignores_infeasible_and_failed():
    study = _study([{"acc": 0.50, "lat": 50}, {"acc": 0.52, "lat": 60}, {"acc": 0.70, "lat": 40},
                    {"acc": 0.90, "lat": 30, "state": TrialState.FAIL}], constraints=[-1, -1, 0.5, -1])
    # Trial 2 is infeasible (constraint > 0) and trial 3 failed: neither is on the front.
    assert [t.number for t in front_trials(study)] == [0, 1]
    # Two more replicates of trial 1 at 0.40: its mean drops below trial 0's, which dominates it.
    store = ReplicateStore(study)
    store.add("h1", Replicate(1, 0.40, 2000))
    store.add("h1", Replicate(2, 0.40, 2000))
    assert [t.number for t in front_trials(study)] == [0]
    frame = trials_frame(study)
    assert frame.loc[1, "replicates"] == 3 and frame.loc[1, "accuracy_mean"] == pytest.approx(0.44)
    assert frame.loc[1, "accuracy_se"] > frame.loc[0, "accuracy_se"] > 0


def test_front_members_the_data_cannot_separate_are_tied():
    study = _study([{"acc": 0.500, "lat": 50.0}, {"acc": 0.505, "lat": 50.5}, {"acc": 0.60, "lat": 80.0}])
    front = front_frame(study).set_index("number")
    assert front.loc[0, "tied_with"] == "1" and front.loc[1, "tied_with"] == "0"
    assert front.loc[2, "tied_with"] == ""


def test_terminal_front_shows_each_latency_with_its_interval():
    study = _study([{"acc": 0.50, "lat": 50.0, "ci": (49.5, 50.6)}, {"acc": 0.60, "lat": 80.0, "ci": (79.0, 81.25)}])
    text = format_front(front_frame(study))
    assert "latency ms [95% CI]" in text and "50.00 [49.50, 50.60]" in text and "80.00 [79.00, 81.25]" in text
    assert "0.500 ± 0.011 (n=1)" in text


def test_doubt_is_the_front_and_whatever_it_cannot_beat_decisively():
    study = _study([{"acc": 0.50, "lat": 50}, {"acc": 0.49, "lat": 55}, {"acc": 0.30, "lat": 60}])
    pool = candidates(study, ReplicateStore(study))
    assert {c.trial.number for c in in_doubt(pool, 2.0)} == {0, 1}  # 0.49 is within noise of 0.50


@pytest.mark.slow  # a whole in-process search: minutes on a loaded 2-core machine
def test_refinement_adds_replicates_with_new_seeds_and_resumes(tiny_space: Path, tmp_path: Path):
    """A real study, refined on the inline executor: replicates are stored per architecture,
    each with its own seed; an interrupted refinement keeps what finished and a rerun goes on
    with the budget that is left."""
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=2", f"results_dir={tmp_path}", *FAST,
            "proxy.epochs=1", "proxy.train_size=128", "proxy.val_size=100", "refine.trainings=0"]
    campaign = Campaign.from_settings(parse_args(args))
    campaign.run()
    study = campaign.study
    store = ReplicateStore(study)
    assert store.all_extra() == 0

    class StopAfterOne(InlineExecutor):
        def submit(self, *a, **k):
            if store.all_extra() >= 1:
                raise KeyboardInterrupt  # Ctrl-C while the second replicate starts
            return super().submit(*a, **k)

    settings = campaign.driver_settings(InlineExecutor())
    refine = RefineSettings(trainings=3, max_replicates=3, margin_se=10.0)  # everything is in doubt
    with pytest.raises(KeyboardInterrupt):
        Refiner(study, StopAfterOne(), refine, 1, campaign.train_args(settings), 1, 0).run()
    assert store.all_extra() == 1  # the finished replicate survived the interrupt
    done = Refiner(study, InlineExecutor(), refine, 1, campaign.train_args(settings), 1, 0).run()
    assert done == 2 and store.all_extra() == 3  # resumed with the budget left
    for trial in complete(study):
        replicates = store.replicates(trial)
        seeds = [r.seed for r in replicates]
        assert len(seeds) == len(set(seeds)), "a replicate never reuses a seed"
        estimate = store.estimate(trial)
        assert estimate.n == len(replicates) and math.isfinite(estimate.se) and estimate.se > 0
    frame = trials_frame(study)
    assert set(frame["replicates"]) <= {1, 2, 3} and frame["replicates"].sum() == 2 + 3

    # Re-profiled with the front (the run did it once already): each time adds to the history,
    # the latest latency counts, and the first measurement stays in the record.
    history = LatencyHistory(study)
    before = {TrialRecord.load(t).arch_hash: len(history.history(TrialRecord.load(t).arch_hash)) for t in complete(study)}
    assert campaign.reprofile(study, InlineExecutor(), settings) == 2
    frame = trials_frame(study)
    for trial in complete(study):
        record = TrialRecord.load(trial)
        assert len(history.history(record.arch_hash)) == before[record.arch_hash] + 1
        assert frame.loc[trial.number, "latency_first_ms"] == record.latency_ms
        assert frame.loc[trial.number, "latency_ms"] == history.latest(record.arch_hash)["latency_ms"]
