"""The search engine end to end: real CIFAR-10 slices, real Optuna storage, real Ray.

Studies here are tiny (a test space of small networks, the `smoke` proxy preset, short
profiling) but every part is the real one.
"""
from __future__ import annotations

import json
import os
import re
import signal
from datetime import datetime
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from search.app.campaign import Campaign
from search.report.tables import trials_frame
from search.app.settings import parse_args

from studies import FAST, REPO, cli, complete, load


@pytest.mark.slow
def test_inline_study_completes_and_csv_matches_storage(tiny_space: Path, tmp_path: Path):
    results = tmp_path / "results"
    proc = cli(f"space={tiny_space}", "executor=inline", "search.n_trials=3", *FAST, results=results)
    assert "Pareto front" in proc.stdout and "trials.csv" in proc.stdout
    # Where the time went: the profiling windows' share, measured inside the windows.
    time_line = re.search(r"search \d+ s \(profiling (\d+) s\).*; profiling (\d+) s of (\d+) s \((\d+)%\)", proc.stdout)
    assert time_line, proc.stdout
    windows, profiling, total, share = map(int, time_line.groups())
    assert 0 < windows <= profiling <= total and abs(share - 100 * profiling / total) < 10  # printed rounded
    study = load(results, "tiny")
    done = complete(study)
    assert len(done) == 3
    # The paper's references come first.
    assert {t.user_attrs["layout"] for t in done[:2]} == {"CC-CCCT-CCTT-CTTT", "CC-CCCC-CCTT-TTTT"}
    for trial in done:
        attrs = trial.user_attrs
        assert attrs["trained"] and 0.0 <= attrs["accuracy"] <= 1.0
        assert attrs["macs"] > 0 and attrs["params"] > 0 and attrs["latency_ms"] > 0
        assert attrs["latency_p90_ms"] >= attrs["latency_ms"]
        assert trial.values == [attrs["accuracy"], attrs["latency_ms"]]
    folder = next(p for p in results.iterdir() if p.is_dir() and p.name.startswith("tiny"))
    csv = pd.read_csv(folder / "trials.csv")
    frame = trials_frame(study)
    assert list(csv["number"]) == list(frame["number"])
    assert list(csv["state"]) == [t.state.name for t in study.trials]
    assert csv["accuracy"].tolist() == pytest.approx(frame["accuracy"].tolist())
    assert (folder / "config.yaml").read_text().count("n_trials: 3") == 1
    # Nested values are JSON and times ISO 8601: every cell reads back without Python's eval.
    nested = ["target_config", "proxy_config", "val_curve", "train_loss_curve", "profile_fingerprint",
              "profile_settings", "latency_reference"]
    for column in nested:
        cells = [c for c in csv[column] if isinstance(c, str)]
        assert cells, column
        assert all(isinstance(json.loads(c), (dict, list)) for c in cells)
    assert all(datetime.fromisoformat(c) for c in csv["datetime_complete"].dropna())


@pytest.mark.slow
def test_duplicates_reused_and_over_budget_not_trained(tiny_space: Path, tmp_path: Path):
    results = tmp_path / "results"
    # Eight trials over four layouts must repeat some. The MACs ceiling admits the two
    # references (79 M and 85 M MACs) and rejects the two others (97 M, 102 M) untrained.
    settings = parse_args([f"space={tiny_space}", "executor=inline", "search.n_trials=8", "search.sampler=random",
                           "budget.max_macs=90e6", f"results_dir={results}", *FAST])
    campaign = Campaign.from_settings(settings)
    campaign.run()
    study = campaign.study
    done = complete(study)
    assert len(done) == 8
    reused = [t for t in done if "reused_from" in t.user_attrs]
    assert reused, "eight trials over four layouts must repeat a trained one"
    trained = [t for t in done if t.user_attrs.get("trained") and "reused_from" not in t.user_attrs]
    assert len({t.user_attrs["arch_hash"] for t in trained}) == len(trained)  # nothing trained twice
    for trial in reused:
        source = study.trials[trial.user_attrs["reused_from"]]
        assert trial.values == source.values and trial.user_attrs["arch_hash"] == source.user_attrs["arch_hash"]
    infeasible = [t for t in done if any(v > 0 for v in t.constraints.values())]
    assert infeasible, "a 90 M MACs ceiling must exclude two layouts"
    for trial in infeasible:
        assert trial.user_attrs["trained"] is False and "accuracy" not in trial.user_attrs
        assert "macs" in trial.user_attrs["infeasible_reason"]
    assert all(t not in infeasible for t in study.best_trials)


@pytest.mark.slow
def test_interrupt_then_rerun_resumes_to_exactly_n_trials(tiny_space: Path, tmp_path: Path):
    results = tmp_path / "results"
    args = [sys.executable, str(REPO / "run_search.py"), f"space={tiny_space}", "executor=inline",
            "search.n_trials=4", *FAST, f"results_dir={results}"]
    # A suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and so
    # would the run: give it the default disposition, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []  # wait for the first finished trial, then press Ctrl-C (a loaded machine is slow: no deadline)
    while not (seen and seen[-1].startswith("[  1/4]")):
        line = proc.stdout.readline()
        assert line, f"the run ended before its first trial finished: {seen[-5:]}, {proc.stderr.read()[-1500:]}"
        seen.append(line)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (seen[-3:], out[-1500:], err[-1500:])
    assert "re-run the same command to resume" in err
    study = load(results, "tiny")
    states = {t.state for t in study.trials}
    assert TrialState.RUNNING not in states
    first = len(complete(study))
    assert 1 <= first < 4
    cli(*args[2:-1], results=results)
    study = load(results, "tiny")
    assert len(complete(study)) == 4
    # Trials finished before the interrupt were kept as they were, not recomputed.
    assert [t.number for t in complete(study)][:first] == [t.number for t in complete(study)[:first]]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["space=hybrid", "serch.n_trials=3"], "'serch.n_trials': unknown key (did you mean 'search.n_trials'?)"),
    (["space=hybrid", "search.n_trials=many"], "search.n_trials"),
    (["space=hybrid", "search.sampler=tpee"], "search.sampler='tpee': choose one of"),
    (["space=nosuchspace"], "nosuchspace"),
    (["space=hybrid", "data.root=/nonexistent/data", "data.name=imagefolder"], "/nonexistent/data"),
])
def test_bad_overrides_are_one_line_errors(args, message, tmp_path: Path):
    proc = cli(*args, results=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_help_lists_every_key(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(REPO / "run_search.py"), "help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0
    for key in ("search.n_trials", "search.sampler", "executor", "data.root", "proxy.epochs", "ray.address"):
        assert key in proc.stdout


@pytest.mark.slow  # a whole in-process search: minutes on a loaded 2-core machine
def test_grid_sampler_visits_every_layout_once(tiny_space: Path, tmp_path: Path):
    # Optuna's BruteForceSampler would call study.stop() when the grid is used up, which only
    # works inside Study.optimize; the driver caps n_trials at the grid size instead.
    settings = parse_args([f"space={tiny_space}", "executor=inline", "search.sampler=grid", "search.n_trials=50",
                           f"results_dir={tmp_path / 'results'}", *FAST, "proxy.epochs=1", "proxy.train_size=128",
                           "proxy.val_size=100"])
    campaign = Campaign.from_settings(settings)
    campaign.run()
    layouts = [t.user_attrs["layout"] for t in complete(campaign.study)]
    assert sorted(layouts) == sorted(c.layout for c in campaign.space.enumerate())
