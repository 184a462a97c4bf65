"""A real two-node Ray cluster (two `ray start` nodes on this machine, 1 CPU each, token
authentication on) driven through `RayExecutor` and the real jobs: profiling runs alone on
one node while the other trains, jobs record where they ran, the code and the dataset reach
the workers, and every way the cluster can fail is one line, in bounded time.

The tests share one cluster; the last one kills its second node and then stops it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cluster import Cluster, process_table, two_node_cluster
from search.measure import jobs
from search.engine.executor import (ClusterUnreachable, Executor, InlineExecutor, RayExecutor,
                             ResourceUnavailable)
from search.measure.profile import LatencySettings
from search.space.space import load_space
from studies import REPO, write_tiny_space

pytestmark = pytest.mark.slow  # starts a two-node Ray cluster

TOKEN_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    with two_node_cluster() as started:
        saved = {name: os.environ.get(name) for name in TOKEN_VARS}
        os.environ.update({name: started.env[name] for name in TOKEN_VARS})  # this process drives it
        try:
            yield started
        finally:
            for name, value in saved.items():
                os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture()
def executor(cluster: Cluster):
    joined = RayExecutor(cluster.address, pending_timeout_s=3.0)
    yield joined
    joined.shutdown()


def _wait_all(executor: RayExecutor, pending: list, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(executor.wait(pending, 1.0)) < len(pending):
        assert time.monotonic() < deadline, [job.name for job in pending if job.outcome is None]


def test_profiling_holds_one_node_while_the_other_trains(cluster: Cluster, executor: RayExecutor, cifar,
                                                         tmp_path: Path):
    assert isinstance(executor, Executor) and isinstance(InlineExecutor(), Executor)
    assert executor.total_cpus == 2 and executor.profile_threads() == 1 and executor.trains_beside_profiling()
    space = load_space(write_tiny_space(tmp_path))
    candidates = space.enumerate()[:2]
    dataset = cifar
    data = executor.put(dataset)  # once; every training gets the reference
    proxy_settings = dict(epochs=1, batch_size=64, train_size=128, val_size=100, num_threads=1, device="cpu")
    latency = LatencySettings(device="cpu", img_size=32, num_threads=executor.profile_threads(), warmup_iters=2,
                              min_iters=3, min_time_s=0.05, max_time_s=5.0).to_dict()

    def train(i: int):
        proxy = space.proxy_config(candidates[i % 2], num_classes=dataset.num_classes).to_dict()
        return executor.submit(jobs.train_candidate, proxy, data, None, proxy_settings, name=f"train_{i}")

    def profile(i: int):
        target = space.target_config(candidates[i]).replace(img_size=32).to_dict()
        return executor.submit_exclusive(jobs.profile_target, target, latency, None, name=f"profile_{i}")

    before = [train(0), train(1)]
    first = profile(0)
    during = [train(2), train(3)]  # submitted while the profiling node is held: kept off it
    _wait_all(executor, before + [first] + during)
    def shipped_code() -> list[str]:  # defined here so that Ray ships it by value, not by module name
        """Where this worker can import the project from: the copies Ray unpacked from `py_modules`."""
        import sys
        return [entry for entry in sys.path if "runtime_resources" in entry and (Path(entry) / "search").is_dir()]

    second = profile(1)
    shipped = executor.submit(shipped_code, name="where_is_the_code")
    _wait_all(executor, [second, shipped])

    trainings = [job.result() for job in before + during]
    profiles = [job.result() for job in (first, second)]
    assert all(t["status"] == "ok" for t in trainings), [t["failure_reason"] for t in trainings]
    assert {t["node_id"] for t in trainings} == set(cluster.node_ids.values())  # both nodes trained
    assert all(t["host"] for t in trainings + profiles)
    profiler = executor.profile_node_id
    assert {p["node_id"] for p in profiles} == {profiler}  # one node profiles: the driver's by default
    assert all(p["settings"]["num_threads"] == 1 and p["median_ms"] > 0 for p in profiles)
    assert {t["node_id"] for t in (job.result() for job in during)} == set(cluster.node_ids.values()) - {profiler}
    # Exactly one profile at a time, and never a training beside it on its node.
    spans = sorted((p["started_at"], p["finished_at"]) for p in profiles)
    assert spans[0][1] <= spans[1][0]
    for t in trainings:
        if t["node_id"] == profiler:
            assert all(t["finished_at"] <= start or t["started_at"] >= end for start, end in spans), (t, spans)
    assert shipped.result(), "the workers did not get the code through runtime_env py_modules"


def test_a_profile_resource_no_node_offers_stops_with_one_line(cluster: Cluster, tmp_path: Path):
    started = time.monotonic()
    with pytest.raises(ResourceUnavailable, match=r"deploy_gpu: 1.*no node of the cluster") as caught:
        RayExecutor(cluster.address, profile_resources={"deploy_gpu": 1}, pending_timeout_s=5.0)
    assert time.monotonic() - started < 60 and "\n" not in str(caught.value)
    # The same from the command line: one line, exit 2, within a minute, no study folder.
    results = tmp_path / "results"
    started = time.monotonic()
    search = subprocess.run(
        [sys.executable, "run_search.py", f"space={write_tiny_space(tmp_path)}", "proxy.preset=smoke",
         f"ray.address={cluster.address}", "profile.resources={deploy_gpu: 1}", "ray.pending_timeout_s=5",
         f"results_dir={results}"], cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert search.returncode == 2 and search.stderr.count("\n") == 1, search.stderr[-2000:]
    assert "deploy_gpu: 1" in search.stderr and "no node of the cluster" in search.stderr
    assert not any(results.glob("tiny*")), list(results.iterdir())
    # The named node is honoured: the second node profiles when asked for.
    chosen = RayExecutor(cluster.address, profile_node=cluster.node_ids["w2"][:12])
    try:
        assert chosen.profile_node_id == cluster.node_ids["w2"]
    finally:
        chosen.shutdown()


def _nothing() -> None:
    pass


def test_a_job_no_node_can_run_is_an_error_not_a_hang(executor: RayExecutor):
    job = executor.submit(_nothing, name="needs_a_gpu", num_cpus=1, num_gpus=1)
    started = time.monotonic()
    with pytest.raises(ResourceUnavailable, match=r"needs_a_gpu .*GPU: 1.*no node of the cluster") as caught:
        while not executor.wait([job], 1.0):
            assert time.monotonic() - started < 60
    assert "\n" not in str(caught.value)


def test_connection_failures_are_one_line_and_quick(cluster: Cluster):
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable, match="no Ray cluster answers at ray.address=127.0.0.1:1"):
        RayExecutor("127.0.0.1:1")
    assert time.monotonic() - started < 10
    # Joining the token-protected head without the token: one line naming the fix.
    script = ("from search.engine.executor import RayExecutor, ClusterUnreachable\n"
              f"try:\n    RayExecutor({cluster.address!r}, connect_timeout_s=3)\n"
              "except ClusterUnreachable as err:\n    print('ERROR', err)\n")
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert time.monotonic() - started < 60
    assert done.stdout.startswith("ERROR could not join") and "set RAY_AUTH_MODE=token" in done.stdout, done
    assert done.stdout.count("\n") == 1 and "InvalidAuthToken" not in done.stderr, done.stderr[-2000:]


LOSE_NODES = """
import os, signal, sys, time
from cluster import Cluster
from search.engine.executor import ClusterLost, RayExecutor, WorkerLost

def nap(seconds):
    from search.measure.jobs import where_am_i
    time.sleep(seconds)
    return where_am_i()

cluster = Cluster(sys.argv[1], __import__("pathlib").Path(sys.argv[2]), {})
executor = RayExecutor(cluster.address, pending_timeout_s=5)
naps = [executor.submit(nap, 20, name=f"nap_{i}") for i in range(2)]  # one per node
deadline = time.monotonic() + 90
while "ray::nap" not in " ".join(cluster.processes("w2").values()):
    assert time.monotonic() < deadline, "no job started on the second node"
    time.sleep(0.2)
os.kill(cluster.raylet_pid("w2"), signal.SIGKILL)
killed = time.monotonic()
while not executor.wait(naps, 1.0):
    pass
lost = next(job for job in naps if job.outcome is not None)
try:
    lost.result()
except WorkerLost as err:
    print("LOST", round(time.monotonic() - killed, 1), err)
for job in naps:
    executor.cancel(job)  # free the head for the retry
retry = executor.submit(nap, 0, name="retry")
while not executor.wait([retry], 1.0):
    pass
print("RETRIED_ON", retry.result()["node_id"])
late = executor.submit(nap, 30, name="late")
time.sleep(2)
cluster.stop()
stopped = time.monotonic()
try:
    while not executor.wait([late], 1.0):
        assert time.monotonic() - stopped < 60
except ClusterLost as err:
    print("CLUSTER_LOST", round(time.monotonic() - stopped, 1), err)
"""


def test_a_killed_node_loses_its_job_and_a_stopped_cluster_is_lost(cluster: Cluster):
    """Runs last: kills the second node's raylet mid-job, then stops the whole cluster."""
    # Someone else's raylet (by its name; `ray stop` would kill it): it must survive our stop.
    bystander = subprocess.Popen(["bash", "-c", "exec -a /elsewhere/ray/core/src/ray/raylet/raylet sleep 300"])
    driver = subprocess.run([sys.executable, "-c", textwrap.dedent(LOSE_NODES), cluster.address, str(cluster.root)],
                            cwd=Path(__file__).parent, env={**cluster.env, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=240)
    lines = {line.split()[0]: line for line in driver.stdout.splitlines() if line.split()}
    assert "LOST" in lines and "NodeDiedError" in lines["LOST"], driver.stdout + driver.stderr[-3000:]
    assert lines["RETRIED_ON"].split()[1] == cluster.node_ids["head"]
    assert "CLUSTER_LOST" in lines and "no longer answers" in lines["CLUSTER_LOST"], driver.stdout
    assert float(lines["CLUSTER_LOST"].split()[1]) < 30
    # The stop took only this cluster's processes.
    assert cluster.processes() == {}
    assert bystander.poll() is None and "raylet" in process_table()[bystander.pid][1]
    bystander.kill()
