"""The first run: quick=true's settings, the heartbeat line, and what the end of a run says to do next."""
from __future__ import annotations

import io
import sys
import time

import pandas as pd
import pytest

import run_search
from search.app.campaign import export_pick
from search.app.heartbeat import Heartbeat
from search.app.settings import QUICK, help_markdown, parse_args


def test_quick_sets_its_defaults_and_the_command_line_still_wins():
    quick = parse_args(["space=paper", "quick=true", "search.n_trials=3"])
    assert quick.search.n_trials == 3  # given: kept
    assert (quick.executor, quick.proxy.preset, quick.profile.img_size) == ("inline", "smoke", QUICK["profile.img_size"])
    plain = parse_args(["space=paper"])
    assert (plain.executor, plain.proxy.preset, plain.profile.img_size) == ("ray", "default", None)


def test_quick_studies_get_their_own_name():
    from search.app.campaign import Campaign

    assert Campaign.from_settings(parse_args(["space=paper", "quick=true", "dry_run=true"])).study_name == \
        "paper-cifar10-quick-s0"


def test_heartbeat_speaks_after_silence_only(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with Heartbeat(lambda: "training and timing trials", every_s=1.5):
        for _ in range(3):  # a line every 0.5 s: never silent long enough
            print("event")
            time.sleep(0.5)
        time.sleep(3.2)  # silent: about two heartbeat lines
    lines = out.getvalue().splitlines()
    beats = [line for line in lines if line.startswith("...")]
    assert lines[:3] == ["event"] * 3 and 1 <= len(beats) <= 3, lines
    assert beats[0].startswith("... training and timing trials (0m0") and sys.stdout is out


def front(rows: list[tuple[int, float, float, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"number": n, "accuracy_mean": a, "latency_ms": l, "tied_with": t} for n, a, l, t in rows])


def test_the_pick_is_the_most_accurate_within_budget_and_the_fastest_of_its_ties():
    members = front([(4, 0.40, 50.0, ""), (7, 0.50, 60.0, "9"), (9, 0.49, 58.0, "7"), (2, 0.60, 90.0, "")])
    assert int(export_pick(members, None)["number"]) == 2
    assert int(export_pick(members, 80.0)["number"]) == 9  # 7 is the most accurate within 80 ms; 9 ties it, faster
    assert int(export_pick(members, 55.0)["number"]) == 4
    assert export_pick(members, 10.0) is None


def test_help_markdown_is_what_the_command_prints(capsys):
    assert run_search.main(["help", "--markdown"]) == 0
    assert capsys.readouterr().out == help_markdown()


@pytest.mark.slow
def test_a_quick_run_ends_with_the_findings_and_what_to_do_next(tiny_space, tmp_path):
    from search.app.campaign import Campaign

    settings = parse_args([f"space={tiny_space}", "quick=true", f"results_dir={tmp_path}", "search.n_trials=2",
                           "proxy.epochs=1", "proxy.train_size=128", "proxy.val_size=100", "refine.trainings=0",
                           "profile.min_time_s=0.05"])
    campaign = Campaign.from_settings(settings)
    assert "DEMONSTRATION" in campaign.header()
    campaign.run()
    text = campaign.finish(interrupted=False)
    folder = campaign.folder
    assert (folder / "findings.md").is_file() and f"findings:  {folder / 'findings.md'}" in text
    assert "DEMONSTRATION numbers" in text
    next_lines = text[text.index("next:"):].splitlines()
    assert next_lines[1] == f"  open the dashboard:  {folder / 'dashboard.html'}"
    export = next_lines[2].split("export the pick:", 1)[1].split()
    assert export[:5] == ["python", "-m", "search.export", str(folder), "--trial"]
    assert int(export[5]) in {int(n) for n in campaign_front_numbers(campaign)}
    assert f"python -m search.findings {folder}" in text


def campaign_front_numbers(campaign) -> list[int]:
    from search.report.tables import front_frame

    return list(front_frame(campaign.study)["number"])


@pytest.mark.slow  # a real (tiny) search
def test_a_time_budget_ends_the_run_early_and_says_so_without_an_error(tiny_space, tmp_path, capsys):
    """search.time_budget: the run stops asking for trials once the next would not fit, keeps
    what finished, says how far it got, and exits 0 (it is what was asked for)."""
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=40", "search.sampler=random",
            "proxy.preset=smoke", "proxy.epochs=1", "proxy.train_size=128", "proxy.val_size=100",
            "refine.trainings=0", "profile.min_time_s=0.05", "profile.min_iters=3", "profile.max_time_s=5",
            "profile.target_rel_ci=0.05", "search.time_budget=3s", f"results_dir={tmp_path}"]
    assert run_search.main(args) == 0
    out = capsys.readouterr().out
    assert "search.time_budget=3s ended the search at" in out, out[-2000:]
    finished = int(out.split("search.time_budget=3s ended the search at ", 1)[1].split()[0])
    assert finished < 40
