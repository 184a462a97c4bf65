"""Change locality, proven: a new objective is one entry in the objective table, and a new
strategy is one new phase in a run's list. Both run a real (tiny, inline) search."""
from __future__ import annotations

from pathlib import Path

import pytest

from search.app.campaign import Campaign
from search.app.settings import parse_args
from search.engine import objectives
from search.engine.front import front_trials
from search.engine.phases import Context, SearchPhase
from search.engine.record import TrialRecord
from search.report.tables import front_frame, trials_frame

from studies import FAST


class CountTrained:
    """A dummy strategy step: after the search, note how many trained trials it left."""

    name = "count"

    def run(self, context: Context) -> float:
        trained = [t for t in context.study.trials if TrialRecord.load(t).trained]
        context.results["trained"] = len(trained)
        context.say(f"counted {len(trained)} trained trials")
        return 0.0


@pytest.mark.slow  # a real search, if a tiny one
def test_an_objective_is_one_entry_and_a_phase_is_one_list_item(tiny_space: Path, tmp_path: Path, monkeypatch,
                                                                 capsys):
    # The one entry: the p90 latency, a field every profile already records.
    p90 = objectives.Objective("p90", "minimize", "latency_p90_ms", "p90 latency (ms)")
    monkeypatch.setitem(objectives.OBJECTIVES, "p90", p90)
    settings = parse_args([f"space={tiny_space}", f"results_dir={tmp_path}", "executor=inline", "search.n_trials=2",
                           "search.sampler=random", "search.objectives=[accuracy,latency,p90]", *FAST,
                           "proxy.epochs=1", "proxy.train_size=128", "proxy.val_size=100", "refine.trainings=0",
                           "profile.clock=cpu"])  # CPU time: a busy machine does not stretch the test
    campaign = Campaign.from_settings(settings)
    campaign.phases = (SearchPhase(), CountTrained())  # the one list item: no refinement, no re-profile
    campaign.run()

    study = campaign.study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    for trial in study.trials:
        record = TrialRecord.load(trial)
        assert trial.values[2] == pytest.approx(record.latency_p90_ms) and record.latency_p90_ms >= record.latency_ms * 0.5
    assert "latency_p90_ms" in front_frame(study).columns and front_trials(study)
    assert len(trials_frame(study)) == 2

    out = capsys.readouterr().out
    assert "counted 2 trained trials" in out
    assert list(campaign.timing) == ["search", "count"] and "count 0 s" in campaign.time_line()
