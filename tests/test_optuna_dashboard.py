"""A study of ours as optuna-dashboard 0.21 shows it, read through the dashboard's own HTTP API.

The study is the real tiny study of `test_dashboard.py` (`study_dir`): four trials, one of them
over the MACs ceiling, so recorded COMPLETE but infeasible and never trained. The dashboard's
WSGI app serves its `study.db` from a wsgiref server on 127.0.0.1, on a port the OS picks; the
test reads the JSON that the dashboard's web page is drawn from.
"""
from __future__ import annotations

import json
import re
import threading
import urllib.request
from pathlib import Path
from typing import Any, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import optuna_dashboard
import pytest

from search.engine.study import named_constraints

LAYOUT = re.compile(r"^[CT]+(-[CT]+){3}$")  # e.g. CC-CCCT-CCTT-CTTT


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def dashboard(study_dir: Path) -> Iterator[str]:
    """The dashboard's base URL, served in a background thread until the module's tests end."""
    app = optuna_dashboard.wsgi(f"sqlite:///{study_dir / 'study.db'}")
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return json.load(response)


@pytest.fixture(scope="module")
def detail(dashboard: str, study_dir: Path) -> dict[str, Any]:
    """`/api/studies/<id>` of the one study in `study.db`."""
    (summary,) = get(f"{dashboard}/api/studies")["study_summaries"]
    assert summary["study_name"] == study_dir.name
    assert summary["directions"] == ["maximize", "minimize"]
    return get(f"{dashboard}/api/studies/{summary['study_id']}")


def attrs(trial: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}


def test_metric_names_replace_objective_0_and_1(detail):
    assert detail["objective_names"] == ["accuracy", "latency"]


def test_constraints_are_shown_and_the_over_budget_trial_is_infeasible(detail, study_dir):
    # The dashboard marks a trial "Infeasible" when any of its `constraints` is > 0; a trial with
    # no constraints there counts as feasible, so every finished trial must carry them.
    study = optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir / 'study.db'}")
    ours = {t.number: t for t in study.get_trials(deepcopy=False)}
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(complete) == 4
    for trial in complete:
        named = named_constraints(ours[trial["number"]])
        assert list(named) == ["macs"], "positional copies leak into the named constraints"
        assert trial["constraints"] == list(named.values())
    infeasible = [t for t in complete if any(c > 0 for c in t["constraints"])]
    assert [attrs(t)["status"] for t in infeasible] == ["infeasible"]
    assert attrs(infeasible[0])["trained"] == "False"
    assert all(attrs(t)["status"] != "infeasible" for t in complete if t not in infeasible)
    # Its values are the objectives' worst (accuracy 0, latency inf), so no front holds it.
    assert infeasible[0]["values"] == [0.0, "inf"]
    assert infeasible[0]["number"] not in [t["number"] for t in detail["best_trials"]]


def test_layout_is_a_readable_column_and_param(detail):
    assert "layout" in [a["key"] for a in detail["union_user_attrs"]]  # a column of the trials table
    for trial in detail["trials"]:
        layout = attrs(trial)["layout"]
        assert LAYOUT.match(layout), layout
        # The tiny space lists its layouts, so the layout is also the sampled param itself.
        params = {p["name"]: p["param_external_value"] for p in trial["params"]}
        assert params["layout"] == layout
