"""Faults a search must survive: SIGTERM, a killed driver, a second driver, a corrupt profile
cache, a lost cluster. Real processes, real storage, real Ray."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.engine.lock import StudyLock

from cluster import two_node_cluster
from studies import FAST, REPO, cli, complete, load

TINY = [*FAST, "proxy.epochs=1", "proxy.train_size=128", "proxy.val_size=100", "refine.trainings=0"]


def _start(args: list[str], results: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run_search.py"), *args, f"results_dir={results}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"})


def _wait_for(proc: subprocess.Popen, prefix: str, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix) or proc.poll() is not None:
            return
    pytest.fail(f"no line starting {prefix!r} within {timeout} s")


def _no_running(study: optuna.Study) -> None:
    assert TrialState.RUNNING not in {t.state for t in study.trials}


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_rerun_resumes(tiny_space: Path, tmp_path: Path):
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=3", *TINY]
    proc = _start(args, tmp_path)
    _wait_for(proc, "[  1/3]")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "re-run the same command to resume" in err
    study = load(tmp_path, "tiny")
    _no_running(study)
    reasons = {t.user_attrs.get("failure_reason") for t in study.trials if t.state == TrialState.FAIL}
    assert reasons and all("stopped (SIGTERM)" in r for r in reasons), reasons
    assert (next(tmp_path.glob("tiny*")) / "trials.csv").is_file()
    cli(*args, results=tmp_path)
    study = load(tmp_path, "tiny")
    assert len(complete(study)) == 3
    _no_running(study)


@pytest.mark.slow
def test_driver_killed_then_rerun_at_once_leaves_nothing_running(tiny_space: Path, tmp_path: Path):
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=3", *TINY]
    proc = _start(args, tmp_path)
    _wait_for(proc, "[  1/3]")
    proc.kill()  # kill -9: no cleanup at all, trials stay RUNNING in the storage
    proc.wait(timeout=60)
    assert TrialState.RUNNING in {t.state for t in load(tmp_path, "tiny").trials}
    done = cli(*args, results=tmp_path)  # at once: well within the heartbeat grace period
    assert "left running by a dead driver" in done.stdout
    study = load(tmp_path, "tiny")
    assert len(complete(study)) == 3
    _no_running(study)
    # The paper's references survive the kill, whichever of them was in flight.
    assert {t.user_attrs["layout"] for t in complete(study) if t.user_attrs.get("reference")} == \
        {"CC-CCCT-CCTT-CTTT", "CC-CCCC-CCTT-TTTT"}


@pytest.mark.slow
def test_a_second_driver_is_refused_naming_the_first(tiny_space: Path, tmp_path: Path):
    folder = tmp_path / "tiny-cifar10-smoke-s0"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from search.engine.lock import StudyLock; "
                               f"StudyLock({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = cli(f"space={tiny_space}", "executor=inline", "search.n_trials=1", *TINY, results=tmp_path,
                   check=False, timeout=120)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"another driver runs this study (pid {holder.pid}" in lines[0], proc.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["driver.lock"]  # nothing rewritten
    finally:
        holder.kill()
        holder.wait()
    # kill -9 released the lock: the next driver takes it and knows who ran before.
    lock = StudyLock(folder).acquire()
    assert lock.previous["pid"] == holder.pid
    lock.release()


@pytest.mark.slow
def test_a_corrupt_profile_cache_is_one_line_and_creates_nothing(tiny_space: Path, tmp_path: Path):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"this is not an SQLite database" * 100)
    proc = cli(f"space={tiny_space}", "executor=inline", f"profile.cache={cache}", *TINY,
               results=tmp_path / "results", check=False, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "profile.cache" in lines[0] and str(cache) in lines[0]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").glob("tiny*"))


@pytest.mark.slow  # a whole in-process search: minutes on a loaded 2-core machine
def test_a_run_whose_every_training_fails_exits_1(tiny_space: Path, tmp_path: Path, monkeypatch, capsys):
    """Every training diverges (a recipe no key allows: lr 1e30 without gradient clipping): the
    run stops at its failure limit and exits 1 with one line naming the shortfall, not 0."""
    import run_search
    from search.app.campaign import Campaign

    recipe = Campaign.proxy_settings
    monkeypatch.setattr(Campaign, "proxy_settings", lambda self: {**recipe(self), "lr": 1e30, "max_grad_norm": None})
    results = tmp_path / "results"
    code = run_search.main([f"space={tiny_space}", "executor=inline", "search.n_trials=2", *TINY,
                            f"results_dir={results}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "only 0 of 2 trials finished" in errors[0], errors
    study = load(results, "tiny")
    failed = study.get_trials(states=(TrialState.FAIL,))
    # The failure limit, max(10, 2 * n_trials), stops asking; trials already asked still end.
    assert 10 <= len(failed) <= 12 and not complete(study)
    assert all("non-finite training loss" in t.user_attrs["failure_reason"] for t in failed)
    _no_running(study)


@pytest.mark.slow
def test_two_node_search_survives_a_lost_node_and_a_lost_cluster(tiny_space: Path, tmp_path: Path):
    """On a real two-node cluster: trials train on both nodes; a killed second node's trial is
    retried and the study completes; a cluster that vanishes stops the search with a non-zero
    exit, and a later run on a new cluster resumes it to exactly n_trials, none left running."""
    results = tmp_path / "results"
    args = [f"space={tiny_space}", "search.n_trials=4", "search.sampler=random", *TINY]
    with two_node_cluster() as cluster:
        proc = _start([*args, f"ray.address={cluster.address}", "ray.pending_timeout_s=20"], results, cluster.env)
        _wait_for(proc, "[  1/4]")
        os.kill(cluster.raylet_pid("w2"), signal.SIGKILL)  # the second node dies mid-search
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    study = load(results, "tiny")
    done = complete(study)
    assert len(done) == 4
    _no_running(study)
    hosts = {t.user_attrs.get("train_node_id") for t in done if t.user_attrs.get("train_node_id")}
    assert len(hosts) >= 1

    args = [*args[:1], "search.n_trials=6", *args[2:]]
    with two_node_cluster() as cluster:
        proc = _start([*args, f"ray.address={cluster.address}"], results, cluster.env)
        _wait_for(proc, "[  5/6]")
        cluster.stop()  # the whole cluster vanishes
        out, err = proc.communicate(timeout=300)
    assert proc.returncode not in (0, 2), out[-2000:]
    assert "Traceback" not in err
    # Exactly one line of ours, whether the driver sees the loss first or the head watch does
    # (when Ray's own client then ends the process, its lines may follow ours).
    ours = [line for line in err.splitlines() if line.startswith("error: lost the Ray cluster at")]
    assert len(ours) == 1 and "re-run the same command" in ours[0], err[-3000:]
    with two_node_cluster() as cluster:
        proc = _start([*args, f"ray.address={cluster.address}"], results, cluster.env)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    study = load(results, "tiny")
    assert len(complete(study)) == 6
    _no_running(study)


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    (["search.objectives=[accuracy,latency,params]"], "search.objectives"),
    (["profile.min_time_s=0.5"], "measured latency with other settings (min_time_s"),
    (["space=hybrid", "search.study_name=tiny-cifar10-smoke-s0"], "was made with space 'tiny'"),
    (["proxy.val_size=50"], "measured accuracy with other settings (val_size 100 -> 50)"),
])
def test_a_rerun_that_would_mix_incomparable_trials_is_refused(study_dir: Path, change, message):
    """A finished study, resumed with other objectives, latency settings, proxy recipe or space: one
    line, exit 2, and the study's config.yaml and trials untouched."""
    config = (study_dir / "config.yaml").read_text()
    trials = len(optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir / 'study.db'}").trials)
    space = [] if any(c.startswith("space=") for c in change) else [f"space={study_dir.parent.parent / 'tiny.yaml'}"]
    base = [*space, "executor=inline", "search.n_trials=5", "search.sampler=random", "search.seed=0",
            *FAST, "proxy.epochs=1", "proxy.train_size=128", "proxy.val_size=100"]
    changed = {c.split("=")[0] for c in change}  # a key may be given once: the change replaces it
    proc = cli(*[a for a in base if a.split("=")[0] not in changed], *change,
               results=study_dir.parent, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert (study_dir / "config.yaml").read_text() == config
    assert len(optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir / 'study.db'}").trials) == trials


# ---------------------------------------------------------------------- every exit path is ours
def _leftovers(results: Path) -> list[Path]:
    """Temporary files a run must never leave behind (a half-written page keeps a disk full)."""
    return [p for p in results.rglob("*") if p.name.endswith(".tmp")]


def _check_resumes(args: list[str], results: Path, n: int) -> None:
    """The same command again finishes the study: exactly `n` trials, none lost or run twice."""
    done = cli(*args, results=results, timeout=900)
    assert "Traceback" not in done.stderr
    study = load(results, "tiny")
    assert len(complete(study)) == n
    assert len({t.user_attrs["arch_hash"] for t in complete(study) if t.user_attrs.get("status") == "trained"}) == \
        sum(t.user_attrs.get("status") == "trained" for t in complete(study))  # no architecture trained twice
    _no_running(study)
    assert not _leftovers(results)


FULL_AT = 3 << 20  # bytes: room for a study, not for its dashboard (the page embeds plotly.js, ~4.6 MB)


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A results folder that fills up at `FULL_AT` bytes: a real tmpfs of that size where
    this user may mount one (root), else a file-size limit (`ulimit -f`, EFBIG) on the run.
    Yields (folder, the run's preexec_fn, a function that makes room again)."""
    import resource

    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_AT}", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    limit = {"on": not mounted}

    def preexec() -> None:
        if limit["on"]:
            resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_AT, FULL_AT))

    def make_room() -> None:
        limit["on"] = False
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
    try:
        yield mount, preexec, make_room
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_one_line_exit_1_and_the_rerun_resumes(tiny_space: Path, small_disk):
    results, preexec, make_room = small_disk
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=2", *TINY]
    proc = subprocess.run([sys.executable, str(REPO / "run_search.py"), *args, f"results_dir={results}"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, preexec_fn=preexec,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full writing ") and "dashboard.html" in lines[0], \
        proc.stderr[-3000:]
    assert "re-run the same command" in lines[0]
    _no_running(load(results, "tiny"))
    assert not _leftovers(results)
    make_room()
    _check_resumes(args, results, 2)


@pytest.mark.slow
def test_a_corrupt_study_db_is_one_line_and_left_as_it_was(tiny_space: Path, tmp_path: Path):
    """A study.db cut to half its size (a full disk, a bad copy): one line naming the file,
    exit 2, and the file untouched (it is the user's to restore)."""
    folder = tmp_path / "results" / "tiny-cifar10-smoke-s0"
    folder.mkdir(parents=True)
    db = folder / "study.db"
    study = optuna.create_study(study_name=folder.name, storage=f"sqlite:///{db}", directions=["maximize", "minimize"])
    for i in range(20):  # enough pages that half the file is a broken database, not an empty one
        study.add_trial(optuna.trial.create_trial(values=[0.5, 10.0 + i], user_attrs={"layout": "C" * 200}))
    optuna.storages.RDBStorage(f"sqlite:///{db}").engine.dispose()
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    before = db.read_bytes()
    proc = cli(f"space={tiny_space}", "executor=inline", "search.n_trials=2", *TINY, results=tmp_path / "results",
               check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{db}: not a readable Optuna storage (" in lines[0], proc.stderr[-3000:]
    assert db.read_bytes() == before and not _leftovers(tmp_path)


@pytest.mark.slow
def test_sighup_stops_like_ctrl_c_and_the_rerun_resumes(tiny_space: Path, tmp_path: Path):
    """A dropped ssh session sends SIGHUP: the run stops as Ctrl-C does (exit 130), not silently."""
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=2", *TINY]
    proc = _start(args, tmp_path)
    _wait_for(proc, "[  1/2]")
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted:")
    _no_running(load(tmp_path, "tiny"))
    assert not _leftovers(tmp_path)
    _check_resumes(args, tmp_path, 2)


@pytest.mark.slow
def test_a_closed_stdout_does_not_stop_the_search(tiny_space: Path, tmp_path: Path):
    """`run_search.py ... | head -1`: the reader goes away after one line; the search goes on
    to the end, writes its reports and exits 0, with no BrokenPipeError."""
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=2", *TINY]
    proc = _start(args, tmp_path)
    assert proc.stdout.readline().startswith("study ")
    proc.stdout.close()  # the pipe's only reader is gone: the next write gets EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=900) == 0, err[-3000:]
    assert "Traceback" not in err and "BrokenPipe" not in err and not err.strip(), err[-3000:]
    study = load(tmp_path, "tiny")
    assert len(complete(study)) == 2
    _no_running(study)
    folder = next(tmp_path.glob("tiny*"))
    assert (folder / "trials.csv").is_file() and (folder / "dashboard.html").is_file()
    assert not _leftovers(tmp_path)


@pytest.mark.slow
def test_a_closed_stderr_still_stops_with_130_and_the_rerun_resumes(tiny_space: Path, tmp_path: Path):
    """stderr's reader gone, then SIGTERM: the interrupt's lines go nowhere, but the run still
    stops as Ctrl-C does (exit 130, nothing RUNNING) instead of dying of a BrokenPipeError."""
    args = [f"space={tiny_space}", "executor=inline", "search.n_trials=2", *TINY]
    proc = _start(args, tmp_path)
    proc.stderr.close()
    proc.stderr = None  # nobody reads it any more
    _wait_for(proc, "[  1/2]")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 130, out[-2000:]
    _no_running(load(tmp_path, "tiny"))
    assert not _leftovers(tmp_path)
    _check_resumes(args, tmp_path, 2)
