"""Search AsCAN layouts for the accuracy-latency trade-off.

    python run_search.py space=hybrid                      # the default search
    python run_search.py space=hybrid dry_run=true         # show the space, train nothing
    python run_search.py space=paper search.n_trials=12 executor=inline
    python run_search.py space=hybrid,paper                # a sweep: one study per value
    python run_search.py config=results/<study>/config.yaml   # rerun a saved study
    python run_search.py help                              # every key, its default and meaning
    python run_search.py space=paper quick=true            # a few-minute demonstration of the whole flow

Writes `results/<study>/`: `study.db` (Optuna storage), `config.yaml` (the resolved
settings), `trials.csv`, `dashboard.html`. Re-running the same command resumes the study.
Every setting of every run is checked before anything is created; bad input is one line on
stderr and exit status 2.
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

EXIT_INCOMPLETE = 1  # the search stopped short: trials failed, or the cluster was lost
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from search.app.streams import outlive_closed_output

    outlive_closed_output()  # `| head -1`, a dropped terminal: the run goes on (first: a logger keeps its stream)
    from search.app.settings import SettingsError, help_markdown, help_text, parse_sweep, validate

    if argv == ["help", "--markdown"]:  # the settings reference page, docs/settings.md
        print(help_markdown(), end="")
        return 0
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(help_text())
        return 0 if argv else EXIT_BAD_INPUT
    try:
        runs = parse_sweep(argv)
        for settings in runs:
            validate(settings)
    except SettingsError as err:
        return _bad_input(err)
    try:
        codes = []
        for i, settings in enumerate(runs, start=1):
            if len(runs) > 1:
                print(f"=== run {i}/{len(runs)}: space={settings.space}", flush=True)
            codes.append(_run(settings))
        return next((code for code in codes if code), 0)
    except KeyboardInterrupt:
        print("\ninterrupted: finished trials are saved; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _bad_input(err: BaseException) -> int:
    print(f"error: {err}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _run(settings) -> int:
    from search.app.campaign import BadInput, Campaign, DiskFull
    from search.app.heartbeat import Heartbeat
    from search.engine.executor import ClusterError

    try:
        campaign = Campaign.from_settings(settings)
    except BadInput as err:
        return _bad_input(err)
    if settings.dry_run:
        print(campaign.describe())
        return 0
    print(campaign.header())
    started = time.monotonic()
    try:
        with Heartbeat(campaign.doing):
            campaign.run()
            summary = campaign.finish(interrupted=False)
    except BadInput as err:
        return _bad_input(err)
    except KeyboardInterrupt:
        campaign.finish(interrupted=True)
        raise
    except ClusterError as err:
        campaign.finish(interrupted=True)
        campaign.report_stop(str(err))
        return EXIT_INCOMPLETE
    except DiskFull as err:  # the trials in flight were queued again; reports may be stale
        campaign.report_stop(str(err))
        return EXIT_INCOMPLETE
    print(summary)
    print(f"done in {time.monotonic() - started:.0f} s")
    if campaign.shortfall():
        print(f"error: {campaign.shortfall()}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


if __name__ == "__main__":
    sys.exit(main())
