"""Refinement: replicates grouped by architecture, new seeds, a front from refined estimates."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial
from optuna.distributions import CategoricalDistribution

from search.app.campaign import Campaign
from search.engine.executor import InlineExecutor
from search.engine.phases import Context, ReprofilePhase, overlapping
from search.engine.record import TrialRecord
from search.engine.refine import Refiner, RefineSettings, candidates, in_doubt, replicate_rule, replicates_needed
from search.engine.replicates import LatencyHistory, Replicate, ReplicateStore, best_of
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
                             latency_ci_high_ms=row.get("ci", (None, None))[1],
                             latency_contamination=row.get("flag"), t_per_stage=row.get("t_per_stage", ""))
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
    assert "0.500 ± 0.019 (n=1)" in text  # the measured seed SD and the scoring error, in quadrature


def test_replicates_needed_bring_the_se_under_half_the_gap():
    # SE = sqrt(1.5^2 / n + 0.5^2) points: n = 3 gives 0.98 < 1, n = 2 gives 1.17.
    assert replicates_needed(0.015, 0.005, 0.02) == 3
    assert replicates_needed(0.015, 0.005, 0.04) == 1  # one training already resolves a 4-point gap
    assert replicates_needed(0.015, 0.011, 0.02) is None  # a 2k slice's 1.1 points alone exceed half of 2 points


def test_the_rule_is_printed_from_the_fronts_gaps():
    study = _study([{"acc": 0.50, "lat": 1.0}, {"acc": 0.52, "lat": 2.0}, {"acc": 0.54, "lat": 3.0},
                    {"acc": 0.40, "lat": 4.0}])  # the last is beaten: not on the front
    line = replicate_rule(candidates(study, ReplicateStore(study)), val_count=10_000, max_replicates=3)
    assert "(2.00 points, median of 2)" in line and "that is 3 replicates" in line, line
    assert "refine.max_replicates=3" in line


def test_the_closing_reprofile_times_only_intervals_that_overlap():
    def record(low: float | None, high: float | None) -> TrialRecord:
        return TrialRecord(latency_ms=None if low is None else (low + high) / 2, latency_ci_low_ms=low,
                           latency_ci_high_ms=high)

    apart, a, b, unknown = record(10.0, 11.0), record(20.0, 22.0), record(21.5, 23.0), record(None, None)
    assert overlapping([apart, a, b]) == [a, b]
    assert overlapping([apart, a]) == []  # their order is clear: nothing to re-time
    assert overlapping([apart, unknown]) == [apart, unknown]  # no interval: it may overlap anything


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

    evaluator = campaign.make_evaluator(InlineExecutor())
    refine = RefineSettings(trainings=3, max_replicates=3, margin_se=10.0)  # everything is in doubt
    with pytest.raises(KeyboardInterrupt):
        Refiner(study, StopAfterOne(), refine, 1, evaluator, 1, 0).run()
    assert store.all_extra() == 1  # the finished replicate survived the interrupt
    done = Refiner(study, InlineExecutor(), refine, 1, evaluator, 1, 0).run()
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
    # the preferred latency counts, and the first measurement stays in the record.
    history = LatencyHistory(study)
    before = {TrialRecord.load(t).arch_hash: len(history.history(TrialRecord.load(t).arch_hash)) for t in complete(study)}
    context = Context(study, campaign.storage, evaluator, InlineExecutor(), campaign.driver_settings(InlineExecutor()),
                      refine)
    ReprofilePhase(only_overlapping=False).run(context)
    assert context.results["reprofiled"] == 2
    frame = trials_frame(study)
    for trial in complete(study):
        record = TrialRecord.load(trial)
        assert len(history.history(record.arch_hash)) == before[record.arch_hash] + 1
        assert frame.loc[trial.number, "latency_first_ms"] == record.latency_ms
        assert frame.loc[trial.number, "latency_ms"] == history.preferred(record).latency_ms


def test_latency_rule_latest_clean_else_least_contaminated():
    """One rule picks the latency a report shows: the latest clean one; a contaminated
    measurement never replaces a clean one; with none clean, the fastest flagged one."""
    clean = lambda ms: {"latency_ms": ms, "contamination": None}  # noqa: E731
    busy = lambda ms: {"latency_ms": ms, "contamination": "other processes used 1.14 CPU cores"}  # noqa: E731
    assert best_of([clean(27.5), busy(709.6)])["latency_ms"] == 27.5
    assert best_of([clean(27.5), busy(20.0)])["latency_ms"] == 27.5  # not even a faster flagged one
    assert best_of([clean(27.5), busy(709.6), clean(26.0)])["latency_ms"] == 26.0  # the latest clean
    assert best_of([busy(110.0), busy(48.0), busy(70.0)]) == busy(48.0)  # least contaminated, still flagged
    assert best_of([{"latency_ms": None, "contamination": None}]) is None
    assert best_of([]) is None

    study = _study([{"acc": 0.6, "lat": 27.5, "ci": (27.0, 28.0)}, {"acc": 0.7, "lat": 25.0, "ci": (24.5, 25.5)}])
    history = LatencyHistory(study)
    history.add("h0", {"latency_ms": 709.6, "latency_ci_low_ms": None, "latency_ci_high_ms": None,
                       "window": "w", "contamination": "steal time 10.8%"})
    history.add("h1", {"latency_ms": 24.0, "latency_ci_low_ms": 23.5, "latency_ci_high_ms": 24.5,
                       "window": "w", "contamination": None})
    frame = trials_frame(study)
    assert frame.loc[0, "latency_ms"] == 27.5 and frame.loc[0, "latency_ci_high_ms"] == 28.0
    assert not isinstance(frame.loc[0, "latency_contamination"], str)
    assert frame.loc[1, "latency_ms"] == 24.0 and frame.loc[1, "latency_first_ms"] == 25.0
    assert len(history.history("h0")) == 1  # the flagged one is kept, not shown


@pytest.mark.slow
def test_contaminated_reprofile_never_replaces_a_clean_latency(tmp_path: Path):
    """End to end through the real profiler: a study's clean latencies, then the closing
    re-profile (the Reprofile phase) in a window forced to stop on its time cap after too few
    rounds (flagged, as on a busy machine): the front, trials.csv, export and findings keep
    the clean values; the cache keeps its clean rows; a later clean window does replace them."""
    from search.measure import jobs
    from search.measure.profile import LatencySettings, ProfileCache
    from search.report.export import zoo_record
    from search.report.findings import load_architectures
    from search.report.tables import write_trials_csv
    from ascan import ArchConfig
    from search.engine.driver import DriverSettings
    from search.measure.evaluator import ProxyEvaluator
    from search.space.settings import Budget

    small = ArchConfig(img_size=32, widths=(16, 32, 64, 128), stem_width=16, head_width=128)
    targets = [small.replace(layouts=("C", "CC", "CT", "T")), small.replace(widths=(16, 32, 64, 64))]
    lenient = LatencySettings(device="cpu", batch_size=1, img_size=32, num_threads=1, warmup_iters=1,
                              iters_per_round=2, min_rounds=5, min_time_s=0.0, max_time_s=1.0, target_rel_ci=0.05,
                              max_spread=100.0, max_foreign_cpu=100.0, max_steal=1.0).to_dict()
    cache = tmp_path / "profiles.db"
    first = jobs.profile_window_job([t.to_dict() for t in targets], small.to_dict(), lenient, str(cache))
    assert not any(r["contaminated"] for r in first.values())
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency"])
    for i, target in enumerate(targets):
        result = first[target.arch_hash]
        record = TrialRecord(layout=target.layout, arch_hash=target.arch_hash, target_config=target.to_dict(),
                             trained=True, accuracy=0.5 + 0.1 * i, val_count=100, proxy_seed=0,
                             latency_ms=result["median_ms"], latency_ci_low_ms=result["ci_low_ms"],
                             latency_ci_high_ms=result["ci_high_ms"], latency_window=result["window"])
        study.add_trial(create_trial(values=[record.accuracy, record.latency_ms], params={"i": i},
                                     distributions={"i": CategoricalDistribution([0, 1])}, user_attrs=record.to_attrs()))
    clean = {t.number: TrialRecord.load(t).latency_ms for t in complete(study)}
    cached = ProfileCache(cache).all()

    def reprofile(settings: dict) -> int:
        """The closing Reprofile phase, timing with `settings` against `small`."""
        evaluator = ProxyEvaluator(None, None, {}, settings, str(cache), small.to_dict(), 10, 3)
        context = Context(study, None, evaluator, InlineExecutor(), DriverSettings(0, ["accuracy", "latency"], Budget()),
                          RefineSettings())
        ReprofilePhase(only_overlapping=False).run(context)
        return context.results.get("reprofiled", 0)

    # Forced onto its time cap after one round: every result of the window is flagged.
    busy = {**lenient, "min_rounds": 1000, "max_time_s": 0.01, "max_retries": 0}
    assert reprofile(busy) == 2
    history = LatencyHistory(study)
    for trial in complete(study):
        (flagged,) = history.history(TrialRecord.load(trial).arch_hash)
        assert "rounds before max_time_s" in flagged["contamination"]
        assert flagged["latency_ci_low_ms"] is None  # too few rounds for an interval, never a zero-width one
    front = front_frame(study).set_index("number")
    csv = pd.read_csv(write_trials_csv(study, tmp_path / "trials.csv")).set_index("number")
    architectures = {a.number: a for a in load_architectures(tmp_path, study)}
    for number, latency in clean.items():
        assert front.loc[number, "latency_ms"] == latency
        assert csv.loc[number, "latency_ms"] == pytest.approx(latency)
        assert architectures[number].latency_ms == latency
        assert zoo_record(study, study.trials[number], "ascan_x", tmp_path)["provenance"]["metrics"]["latency_ms"] == latency
    assert ProfileCache(cache).all() == cached  # nothing flagged was cached, nothing clean replaced

    # A clean re-profile is better than the first measurement: the latest clean one counts.
    reprofile(lenient)
    front = front_frame(study).set_index("number")
    for trial in complete(study):
        arch = TrialRecord.load(trial).arch_hash
        assert front.loc[trial.number, "latency_ms"] == history.history(arch)[-1]["latency_ms"]


def test_a_study_whose_latencies_are_all_flagged_says_so_in_one_line_and_on_the_dashboard():
    from search.report.dashboard import render_dashboard
    from search.report.tables import ReferencePoint, latency_warning

    busy = "other processes used 1.14 CPU cores"
    study = _study([{"acc": 0.6, "lat": 110.0}, {"acc": 0.7, "lat": 48.0, "flag": busy}])
    assert latency_warning(study) == ""  # one clean latency: the front is not all noise
    LatencyHistory(study).add("h0", {"latency_ms": 120.0, "contamination": busy})
    assert latency_warning(study) == ""  # h0's clean first measurement still counts
    study = _study([{"acc": 0.6, "lat": 110.0, "flag": busy, "t_per_stage": "0-1-2-3"},
                    {"acc": 0.7, "lat": 48.0, "flag": "steal time 10.8%", "t_per_stage": "0-0-2-4"}])
    warning = latency_warning(study)
    assert "\n" not in warning and "all 2 latencies" in warning and "profile.clock=cpu" in warning
    assert "quieter hardware" in render_dashboard(study, ReferencePoint(latency_ms=500.0))
