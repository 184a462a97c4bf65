"""One trial record, one objective table, a driver with explicit stages."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest

from search.app.campaign import Campaign
from search.engine.driver import Plan, Scheduler, Stage
from search.engine.objectives import OBJECTIVES, Objective
from search.engine.record import REUSED, TrialRecord
from search.app.settings import SettingsError, parse_args

from studies import FAST, complete


def test_record_round_trips_through_user_attributes():
    record = TrialRecord(layout="CC-CCCT-CCTT-CTTT", arch_hash="abc", target_config={"widths": [64, 128]},
                         latency_ms=54.8, accuracy=0.5, val_curve=[0.3, 0.5], trained=True, reference=True)
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    record.save(trial)
    study.tell(trial, record.values(["accuracy", "latency"]))
    again = TrialRecord.load(study.trials[0])
    assert again == record
    assert study.trials[0].values == [0.5, 54.8]


def test_unmeasured_values_are_the_worst_and_json_safe():
    record = TrialRecord(latency_ms=math.inf, macs=4.4e9)
    assert record.value("accuracy") == 0.0  # never trained
    assert record.value("params") == math.inf  # never counted
    assert record.to_attrs()["latency_ms"] is None and "accuracy" not in record.to_attrs()


def test_a_loss_score_is_told_negated_and_the_record_keeps_every_score():
    record = TrialRecord(accuracy=0.5, head_accuracy=0.52, tse=1.8, tse_ema=1.6, latency_ms=3.0)
    assert record.values(["accuracy", "latency"]) == [0.5, 3.0]
    assert record.values(["accuracy", "latency"], "head_accuracy") == [0.52, 3.0]
    assert record.values(["accuracy", "latency"], "tse") == [-1.8, 3.0]  # maximized: lower loss, higher value
    assert record.value("accuracy", "tse_ema") == -1.6
    assert TrialRecord().value("accuracy", "tse") == -math.inf  # never trained: below every -TSE
    assert TrialRecord.from_attrs(record.to_attrs()) == record


@pytest.mark.slow
def test_proxy_score_tse_is_what_optuna_is_told_and_every_score_survives_a_resume(tiny_space: Path, tmp_path: Path):
    args = [f"space={tiny_space}", "executor=inline", f"results_dir={tmp_path}", "proxy.score=tse", *FAST,
            "proxy.epochs=1", "proxy.train_size=128", "proxy.val_size=100"]
    first = Campaign.from_settings(parse_args([*args, "search.n_trials=2"]))
    first.run()
    first.finish(interrupted=False)
    before = {t.number: TrialRecord.load(t).tse for t in complete(first.study)}
    again = Campaign.from_settings(parse_args([*args, "search.n_trials=3"]))  # the same study, resumed
    again.run()
    again.finish(interrupted=False)
    done = complete(again.study)
    assert len(done) == 3
    csv = pd.read_csv(again.folder / "trials.csv").set_index("number")
    for trial in done:
        record = TrialRecord.load(trial)
        assert record.trained or record.reused_from is not None
        assert record.tse > 0 and record.tse_ema > 0 and 0 <= record.accuracy <= 1 and record.val_count == 100
        assert trial.values[0] == -record.tse != record.accuracy  # told the loss, kept the accuracy too
        assert csv.loc[trial.number, "tse"] == pytest.approx(record.tse)
        assert csv.loc[trial.number, "accuracy"] == pytest.approx(record.accuracy)
    assert {n: TrialRecord.load(again.study.trials[n]).tse for n in before} == before  # kept, not recomputed


def test_older_studies_spelling_is_read():
    assert TrialRecord.from_attrs({"val_accuracy": 0.4, "unknown_key": 1}).accuracy == 0.4


def test_a_reused_result_keeps_its_own_identity():
    original = TrialRecord(layout="L", reference=True, retry_of=3, accuracy=0.5, trained=True)
    twin = TrialRecord(layout="L")
    twin.update(**original.measurements())
    assert twin.accuracy == 0.5 and twin.trained and not twin.reference and twin.retry_of is None


def _plan(stage: Stage, since: int) -> Plan:
    return Plan(trial=None, record=TrialRecord(), stage=stage,
                since=since)  # type: ignore[arg-type]


def test_scheduler_holds_training_while_a_profiling_window_is_open():
    scheduler = Scheduler(capacity=2)
    waiting, ready = _plan(Stage.CHECKED, 0), _plan(Stage.PROFILED, 1)
    # What is ready starts training; then the window opens (the exclusive profiling job
    # itself waits until running trainings have finished).
    train, profile = scheduler.next([waiting, ready])
    assert train == [ready] and profile == [waiting] and scheduler.window_open
    ready.stage = Stage.TRAINING
    waiting.stage, late = Stage.PROFILING, _plan(Stage.PROFILED, 2)
    assert scheduler.next([waiting, ready, late]) == ([], [])  # the window stays shut to training
    waiting.stage = Stage.PROFILED
    train, profile = scheduler.next([waiting, ready, late])
    assert train == [waiting] and profile == [] and not scheduler.window_open  # first come, first served


def test_a_window_profiles_every_waiting_candidate_together():
    scheduler = Scheduler(capacity=1)
    waiting = [_plan(Stage.CHECKED, i) for i in range(3)]
    train, profile = scheduler.next([*waiting, _plan(Stage.TRAINING, 9)])
    assert train == [] and profile == waiting


def test_other_nodes_keep_training_while_one_profiles():
    scheduler = Scheduler(capacity=2, trains_beside_profiling=True)
    profiling, ready = _plan(Stage.PROFILING, 0), _plan(Stage.PROFILED, 1)
    scheduler.window_open = True
    assert scheduler.next([profiling, ready]) == ([ready], [])


@pytest.mark.slow  # a whole in-process search: minutes on a loaded 2-core machine
def test_an_objective_is_one_table_entry(tiny_space: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Peak memory as a fourth objective: without its entry the settings refuse it; with the
    entry alone a real study optimises it, and trials.csv and the dashboard show it."""
    peak = OBJECTIVES["peak_memory"]
    monkeypatch.delitem(OBJECTIVES, "peak_memory")
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=2", f"results_dir={tmp_path}",
            "search.objectives=[accuracy,latency,macs,peak_memory]", *FAST, "proxy.epochs=1",
            "proxy.train_size=128", "proxy.val_size=100"]
    with pytest.raises(SettingsError, match="peak_memory"):
        parse_args(args)
    monkeypatch.setitem(OBJECTIVES, "peak_memory", Objective("peak_memory", "minimize", "peak_memory_bytes",
                                                             "peak memory (test)", "MB", 1e6, "{:.1f}"))
    campaign = Campaign.from_settings(parse_args(args))
    campaign.run()
    campaign.finish(interrupted=False)
    study = campaign.study
    assert study.metric_names == ["accuracy", "latency", "macs", "peak_memory"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE", "MINIMIZE"]
    done = complete(study)
    assert len(done) == 2
    csv = pd.read_csv(campaign.folder / "trials.csv").set_index("number")
    for trial in done:
        memory = TrialRecord.load(trial).peak_memory_bytes
        assert memory and memory > 0
        assert trial.values[3] == memory == csv.loc[trial.number, "peak_memory_bytes"]
    assert "peak memory (test)" in (campaign.folder / "dashboard.html").read_text()
    monkeypatch.setitem(OBJECTIVES, "peak_memory", peak)


def test_reused_trials_say_so_in_their_record(study_dir: Path):
    from search.report.tables import open_study_dir

    study = open_study_dir(study_dir)
    records = [TrialRecord.load(t) for t in complete(study)]
    for record in records:
        if record.reused_from is not None:
            assert record.status == REUSED and not record.reference
