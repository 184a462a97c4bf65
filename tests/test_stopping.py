"""A stop signal that lands inside a finalizer is dropped by Python ("Exception ignored"); the
run must stop anyway. CI once saw SIGTERM land in a SQLAlchemy weakref callback: the search ran
to the end and exited 0."""
from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from search.app.campaign import Campaign, Progress
from search.app.settings import parse_args
from search.engine.stopping import StopSignals

from studies import FAST, complete, load


class SignalsWhenCollected:
    """Sends a signal to this process from `__del__`, where the KeyboardInterrupt it raises is
    dropped, as from SQLAlchemy's weakref callbacks."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        time.sleep(0.05)  # the handler runs here, inside the finalizer


def _drop_a_signal(signum: int) -> None:
    SignalsWhenCollected(signum)
    gc.collect()


def _handlers() -> tuple:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_dropped_in_a_finalizer_is_raised_again_by_check(signum, capsys):
    before = _handlers()
    with StopSignals() as stop:
        _drop_a_signal(signum)  # nothing raised here: the finalizer swallowed it
        assert stop.requested
        with pytest.raises(KeyboardInterrupt, match="SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"):
            stop.check()
    assert "Exception ignored" not in capsys.readouterr().err  # no traceback for a stop that is handled
    assert _handlers() == before  # earlier tests may have set their own (ray.init does)


def test_a_search_stops_when_the_signal_lands_in_a_finalizer(tiny_space: Path, tmp_path: Path, monkeypatch):
    settings = parse_args([f"space={tiny_space}", f"results_dir={tmp_path}", "executor=inline", "search.n_trials=4",
                           "search.sampler=random", "search.seed=0", *FAST, "proxy.epochs=1", "proxy.train_size=128",
                           "proxy.val_size=100", "refine.trainings=0"])
    show = Progress.__call__

    def show_then_drop_a_sigterm(self, status):
        show(self, status)
        if status.finished == 1:
            _drop_a_signal(signal.SIGTERM)

    monkeypatch.setattr(Progress, "__call__", show_then_drop_a_sigterm)
    before = _handlers()
    campaign = Campaign.from_settings(settings)
    with pytest.raises(KeyboardInterrupt):
        campaign.run()
    study = load(tmp_path, "tiny")
    assert len(complete(study)) < 4
    assert TrialState.RUNNING not in {t.state for t in study.trials}
    reasons = {t.user_attrs.get("failure_reason") for t in study.trials if t.state == TrialState.FAIL}
    assert reasons and all("stopped (SIGTERM)" in r for r in reasons), reasons  # not "(Ctrl-C)"
    assert _handlers() == before


def test_a_signal_inside_sqlalchemy_is_kept_and_raised_after_the_write(tmp_path: Path):
    """An interrupt must not tear a storage write halfway (the write that records the
    interrupt would then fail): inside SQLAlchemy the handler only keeps the request."""
    import optuna
    import sqlalchemy
    from sqlalchemy.orm import Session

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()

    def signal_mid_flush(session, context):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here, with SQLAlchemy's flush on the stack

    with StopSignals() as stop:
        sqlalchemy.event.listen(Session, "after_flush", signal_mid_flush)
        try:
            study.tell(trial, 1.0)  # not interrupted: the write completes
        finally:
            sqlalchemy.event.remove(Session, "after_flush", signal_mid_flush)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            stop.check()
    assert study.trials[0].state is TrialState.COMPLETE
