"""Where work runs: in this process, or as Ray tasks on a local or remote cluster.

An executor runs a function with its arguments somewhere and hands back the result; it
knows nothing of models or trials. The driver decides *what* runs when; an executor honours
each job's resource request and offers one special kind of job, `submit_exclusive`: a job
that runs alone on one whole node (latency profiling), while other nodes keep working.

Failures the driver must tell apart:
- `JobFailed`: the function raised (the trial failed; no retry helps);
- `WorkerLost`: the process or node running it died (a retry elsewhere may succeed);
- `ClusterError` and its kinds: the cluster itself cannot go on (`ClusterUnreachable`,
  `ResourceUnavailable`, `ClusterLost`). Stop the search with the message: one line with the fix.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from search.engine.last_word import LastWord
from search.engine.probe import answers

NODE_ID_LABEL = "ray.io/node-id"  # a label Ray gives every node; selectors can exclude one


class WorkerLost(RuntimeError):
    """The process running a job died (killed, out of memory, node lost)."""


class JobFailed(RuntimeError):
    """The job's function raised; the message carries the original error."""


class ClusterError(RuntimeError):
    """The cluster cannot run the search; the message is one line that says what to fix."""


class ClusterUnreachable(ClusterError):
    """Joining the cluster failed (nothing answers at the address, or authentication)."""


class ResourceUnavailable(ClusterError):
    """A job waits for resources that no node of the cluster offers."""


class ClusterLost(ClusterError):
    """The cluster went away during the run (its head stopped, or every node died)."""


@dataclass(eq=False)
class Job:
    """A submitted call. `outcome` is set once it is done: ('ok', value) or ('error', exception).

    `resources` is what it asked for, `node` the node it is pinned to (None: any), `avoid` a
    node it must not use, and `submitted_at` (monotonic seconds) when: together they tell a
    job that waits for its turn from one that waits for a node that does not exist.
    """

    name: str
    handle: Any = None
    outcome: tuple[str, Any] | None = None
    resources: dict[str, float] = field(default_factory=dict)
    node: str | None = None
    avoid: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)

    def result(self) -> Any:
        """The function's return value; raises `JobFailed` or `WorkerLost` for a failed job."""
        kind, value = self.outcome  # type: ignore[misc]
        if kind == "error":
            raise value
        return value


@runtime_checkable
class Executor(Protocol):
    """What the driver needs from a place to run jobs (`InlineExecutor`, `RayExecutor`)."""

    total_cpus: float
    total_gpus: float

    def capacity(self, num_cpus: float, num_gpus: float) -> int:
        """How many jobs of this size can run at once."""

    def submit(self, fn: Callable[..., Any], *args: Any, name: str, num_cpus: float = 1,
               num_gpus: float = 0) -> Job:
        """Start `fn(*args)` somewhere with these resources; never blocks."""

    def submit_exclusive(self, fn: Callable[..., Any], *args: Any, name: str) -> Job:
        """Start `fn(*args)` alone on the profiling node: it waits until that node is idle,
        and no other job starts there until it is done. One at a time. Raises
        `ResourceUnavailable` when the profiling node is gone and no other node fits."""

    def profile_threads(self) -> int:
        """CPU count of the profiling node (the thread count its measurements use)."""

    def trains_beside_profiling(self) -> bool:
        """True when other nodes can run jobs while an exclusive job holds the profiling node."""

    def put(self, value: Any) -> Any:
        """A handle for big read-only data shared by many jobs; pass it as a job argument."""

    def channel(self) -> "Channel":
        """A channel for small messages from running jobs (epoch progress) to the driver."""

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]:
        """The jobs of `jobs` that are done, after at most `timeout` seconds.

        Raises `ResourceUnavailable` or `ClusterLost` when the cluster cannot go on."""

    def cancel(self, job: Job) -> None: ...

    def shutdown(self) -> None: ...


class Channel(Protocol):
    """Running jobs `put` small messages; the driver `drain`s them. Passed to jobs as an
    argument, so it must survive pickling (Ray) or be shared (inline)."""

    def put(self, item: Any) -> None: ...

    def drain(self) -> list[Any]: ...


class LocalChannel:
    """A channel in this process; `listener` (if set) hears each message at once, since an
    inline job runs to its end inside `submit`."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.listener: Callable[[Any], None] | None = None

    def put(self, item: Any) -> None:
        if self.listener is not None:
            self.listener(item)
        else:
            self.items.append(item)

    def drain(self) -> list[Any]:
        items, self.items = self.items, []
        return items


class RayChannel:
    """A channel through a Ray queue actor (no CPU reserved) on the driver's node, reachable
    from any node. Progress is best effort: a lost actor (its node died) drops messages,
    never a training or the driver."""

    def __init__(self) -> None:
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self.listener = None  # messages come through `drain` only

    def __getstate__(self) -> dict[str, Any]:
        # A job gets the queue alone: a listener set by the driver would drag the driver along.
        return {"queue": self.queue, "listener": None}

    def put(self, item: Any) -> None:
        from ray.exceptions import RayError

        try:
            self.queue.put_nowait(item)
        except RayError:
            pass

    def drain(self) -> list[Any]:
        import ray
        from ray.exceptions import RayError

        try:  # bounded: a queue on a vanished node must not hold the driver
            size = ray.get(self.queue.actor.qsize.remote(), timeout=2.0)
            return ray.get(self.queue.actor.get_nowait_batch.remote(size), timeout=2.0) if size else []
        except RayError:
            return []


class InlineExecutor:
    """Runs each job in this process at submit time: for debugging and tiny studies."""

    def __init__(self) -> None:
        self.total_cpus = float(os.cpu_count() or 1)
        self.total_gpus = 0.0

    def capacity(self, num_cpus: float, num_gpus: float) -> int:
        return 1

    def submit(self, fn: Callable[..., Any], *args: Any, name: str, num_cpus: float = 1, num_gpus: float = 0) -> Job:
        job = Job(name)
        try:
            job.outcome = ("ok", fn(*args))
        except Exception as err:  # the caller decides what a failed job means
            job.outcome = ("error", JobFailed(_describe(err)))
        return job

    def submit_exclusive(self, fn: Callable[..., Any], *args: Any, name: str) -> Job:
        return self.submit(fn, *args, name=name)  # jobs run one at a time here anyway

    def profile_threads(self) -> int:
        return int(self.total_cpus)

    def trains_beside_profiling(self) -> bool:
        return False

    def put(self, value: Any) -> Any:
        return value

    def channel(self) -> LocalChannel:
        return LocalChannel()

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]:
        return [job for job in jobs if job.outcome is not None]

    def cancel(self, job: Job) -> None:
        pass

    def shutdown(self) -> None:
        pass


class RayExecutor:
    """Runs jobs as Ray tasks with `num_cpus`/`num_gpus` requests.

    Starts a local cluster (its files under `temp_dir`) or joins the one at `address`; joining,
    it ships this project's code to the workers (`runtime_env` `py_modules`), so a node needs
    only Python and the pinned packages. Ray's own task retries are off: a dead worker
    surfaces as `WorkerLost` so the driver can record the failure and decide about a retry.

    The profiling node is the node whose hardware latencies are measured on: the one named
    by `profile_node` (node id, or a prefix of it, IP or host name), else one offering every
    custom resource in `profile_resources` (e.g. `{"deploy_gpu": 1}`), else the driver's own.
    A job that waits longer than `pending_timeout_s` for resources no node offers raises
    `ResourceUnavailable`.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, temp_dir: Path | None = None, *,
                 profile_node: str | None = None, profile_resources: dict[str, float] | None = None,
                 pending_timeout_s: float = 30.0, connect_timeout_s: float = 10.0,
                 on_lost: Callable[[str], None] | None = None, lost_after_s: float = 10.0):
        """`on_lost`, for a joined cluster: called once, from a watching thread, with the
        `ClusterLost` message when the head has not answered for `lost_after_s`."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self._ray = ray
        self.pending_timeout_s = pending_timeout_s
        self._wanted_node = profile_node
        self._wanted_resources = dict(profile_resources or {})
        self._remote_cache: dict[Callable[..., Any], Any] = {}
        self._exclusive: Job | None = None  # the job holding the profiling node, while it runs or waits
        self._checked_at = 0.0
        self._closed = threading.Event()  # ends the head watch
        self._last_word = None  # a joined cluster's `search.engine.last_word.LastWord`
        if not ray.is_initialized():
            _connect(ray, address, num_cpus, temp_dir, connect_timeout_s)
        self._address = address or "the local cluster"
        resources = ray.cluster_resources()
        self.total_cpus = float(resources.get("CPU", 1))
        self.total_gpus = float(resources.get("GPU", 0))
        try:
            self._profile_node = self._find_profile_node(wait_s=pending_timeout_s)
        except ResourceUnavailable:
            ray.shutdown()  # leave no half-made connection behind
            raise
        if address and on_lost is not None:
            self._watch_head(on_lost, lost_after_s)

    # ------------------------------------------------------------------ nodes
    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes, as Ray describes them (`NodeID`, `Resources`, ...)."""
        return [node for node in self._ray.nodes() if node["Alive"]]

    def _is_profile_node(self, node: dict[str, Any]) -> bool:
        wanted = self._wanted_node
        if wanted and not (node["NodeID"].startswith(wanted) or wanted in (
                node.get("NodeManagerAddress"), node.get("NodeManagerHostname"), node.get("NodeName"))):
            return False
        return all(node["Resources"].get(key, 0) >= amount for key, amount in self._wanted_resources.items())

    def _find_profile_node(self, wait_s: float) -> dict[str, Any]:
        """The profiling node; waits up to `wait_s` for one to join (nodes may still be starting)."""
        here = self._ray.get_runtime_context().get_node_id()
        deadline = time.monotonic() + wait_s
        while True:
            nodes = self.nodes()
            fitting = sorted((n for n in nodes if self._is_profile_node(n)), key=lambda n: n["NodeID"] != here)
            if fitting:
                return fitting[0]
            if time.monotonic() >= deadline:
                wanted = ", ".join(filter(None, [self._wanted_node and f"node {self._wanted_node}",
                                                 self._wanted_resources and _format(self._wanted_resources)]))
                raise ResourceUnavailable(f"profiling asks for {wanted}: no node of the cluster at "
                                          f"{self._address} has it ({_describe_nodes(nodes)}); start a node that does "
                                          f"(`ray start --resources=...`) or change profile.node/profile.resources")
            time.sleep(0.5)

    def _profiling_node(self) -> dict[str, Any]:
        """The profiling node if still alive, else another that fits (the same rules)."""
        alive = {n["NodeID"]: n for n in self.nodes()}
        node = alive.get(self._profile_node["NodeID"])
        if node is None:
            node = self._profile_node = self._find_profile_node(wait_s=0)
        return node

    @property
    def profile_node_id(self) -> str:
        """The Ray node id of the profiling node (recorded by each profile as `node_id`)."""
        return self._profile_node["NodeID"]

    # ------------------------------------------------------------------ the protocol
    def capacity(self, num_cpus: float, num_gpus: float) -> int:
        by_cpu = int(self.total_cpus // num_cpus) if num_cpus else 1 << 30
        by_gpu = int(self.total_gpus // num_gpus) if num_gpus else 1 << 30
        return max(1, min(by_cpu, by_gpu))

    def profile_threads(self) -> int:
        return max(1, int(self._profile_node["Resources"].get("CPU", 1)))

    def trains_beside_profiling(self) -> bool:
        others = [n for n in self.nodes() if n["NodeID"] != self._profile_node["NodeID"]]
        return any(n["Resources"].get("CPU", 0) > 0 for n in others)

    def put(self, value: Any) -> Any:
        return self._ray.put(value)

    def channel(self) -> RayChannel:
        return RayChannel()

    def submit(self, fn: Callable[..., Any], *args: Any, name: str, num_cpus: float = 1, num_gpus: float = 0) -> Job:
        options: dict[str, Any] = {}
        resources = {"CPU": float(num_cpus), "GPU": float(num_gpus)}
        avoid = None
        if self._exclusive is not None and self._exclusive.outcome is None:
            # Keep it off the profiling node, which the exclusive job is waiting for or using,
            # if another node can run it at all (else it waits for the profile to finish).
            elsewhere = Job(name, resources=resources, avoid=self._exclusive.node)
            if any(_fits(elsewhere, node) for node in self.nodes()):
                avoid = self._exclusive.node
                options["label_selector"] = {NODE_ID_LABEL: f"!{avoid}"}
        return self._launch(fn, args, name, resources, options, avoid=avoid)

    def submit_exclusive(self, fn: Callable[..., Any], *args: Any, name: str) -> Job:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = self._profiling_node()
        # Asking for every CPU and GPU of the node is what keeps other jobs off it while this runs.
        resources = {"CPU": float(node["Resources"].get("CPU", 0)), "GPU": float(node["Resources"].get("GPU", 0))}
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        job = self._launch(fn, args, name, resources, {"scheduling_strategy": strategy}, node=node["NodeID"])
        self._exclusive = job
        return job

    def _launch(self, fn: Callable[..., Any], args: tuple, name: str, resources: dict[str, float],
                options: dict[str, Any], node: str | None = None, avoid: str | None = None) -> Job:
        remote = self._remote_cache.setdefault(fn, self._ray.remote(fn))
        handle = remote.options(num_cpus=resources["CPU"], num_gpus=resources["GPU"], max_retries=0, name=name,
                                **options).remote(*args)
        return Job(name, handle, resources={k: v for k, v in resources.items() if v}, node=node, avoid=avoid)

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]:
        pending = {job.handle: job for job in jobs if job.outcome is None}
        lost = False
        if self._address:
            # A vanished head reports nothing to a waiting task, and Ray ends the process after a
            # minute without its GCS: probe it first, so the loss is ours to report.
            self._check_head()
        if pending:
            ready, _ = self._ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
            for ref in ready:
                job = pending.pop(ref)
                job.outcome = self._fetch(ref)
                lost = lost or isinstance(job.outcome[1], WorkerLost)
        if lost:
            self._check_cluster()
        if pending:
            self._check_feasible(list(pending.values()))
        return [job for job in jobs if job.outcome is not None]

    def _fetch(self, ref: Any) -> tuple[str, Any]:
        from ray import exceptions

        try:
            return ("ok", self._ray.get(ref))
        except exceptions.RayTaskError as err:  # the function raised
            return ("error", JobFailed(_describe(err.cause if err.cause is not None else err)))
        except exceptions.RayError as err:  # the worker or its node died, or the task was cancelled
            return ("error", WorkerLost(_describe(err)))

    def _check_head(self) -> None:
        gcs = self._ray.get_runtime_context().gcs_address
        if not answers(gcs, timeout=2.0):
            raise ClusterLost(self._head_lost(gcs))

    def _head_lost(self, gcs: str) -> str:
        return (f"lost the Ray cluster at {self._address}: its head ({gcs}) no longer answers; "
                f"restart the cluster and re-run the same command to resume")

    def _watch_head(self, on_lost: Callable[[str], None], after_s: float) -> None:
        """Probe the head from a daemon thread. Ray's client ends the whole process about a
        minute after its head goes, and the driver may be inside a Ray call that never
        returns meanwhile: this way the user hears why from us first. Ray may also end the
        process at once (when its local raylet dies): then a helper process says it
        (`search.engine.last_word`)."""

        gcs = self._ray.get_runtime_context().gcs_address
        self._last_word = LastWord(gcs, self._head_lost(gcs))

        def watch() -> None:
            last_answer = time.monotonic()
            while not self._closed.wait(1.0):
                if answers(gcs, timeout=2.0):
                    last_answer = time.monotonic()
                elif time.monotonic() - last_answer >= after_s and not self._closed.is_set():
                    self._last_word.settle()  # said here: the helper must not say it again
                    on_lost(self._head_lost(gcs))
                    return

        threading.Thread(target=watch, name="ray-head-watch", daemon=True).start()

    def _check_cluster(self) -> None:
        """Raise `ClusterLost` when no node is left: then every job would fail the same way."""
        self._check_head()
        if not self.nodes():
            raise ClusterLost(f"lost the Ray cluster at {self._address}: no node is alive; "
                              f"restart the nodes and re-run the same command to resume")

    def _check_feasible(self, pending: list[Job]) -> None:
        """Raise `ResourceUnavailable` for a job that has waited `pending_timeout_s` for
        resources that no live node has in total (a job merely queued behind others is fine)."""
        now = time.monotonic()
        overdue = [job for job in pending if now - job.submitted_at > self.pending_timeout_s]
        if not overdue or now - self._checked_at < min(5.0, self.pending_timeout_s):
            return
        self._checked_at = now
        nodes = self.nodes()
        for job in overdue:
            if not any(_fits(job, node) for node in nodes):
                where = f" on node {job.node[:8]}" if job.node else ""
                raise ResourceUnavailable(
                    f"job {job.name} has waited {now - job.submitted_at:.0f} s for {_format(job.resources)}{where}, "
                    f"which no node of the cluster at {self._address} offers ({_describe_nodes(nodes)}); "
                    f"ask for less (ray.trial_cpus/ray.trial_gpus) or add a node that has it")

    def cancel(self, job: Job) -> None:
        if job is self._exclusive:
            self._exclusive = None
        if job.outcome is None:
            self._ray.cancel(job.handle, force=True)

    def shutdown(self) -> None:
        self._closed.set()
        if self._ray.is_initialized():
            self._ray.shutdown()
        if self._last_word is not None:
            self._last_word.settle()  # after Ray lets go: until then Ray may still end the process


# ---------------------------------------------------------------------------- connecting
def _connect(ray: Any, address: str | None, num_cpus: int | None, temp_dir: Path | None, timeout_s: float) -> None:
    """`ray.init`, with each way joining can fail turned into one `ClusterUnreachable` line."""
    options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if not address:
        if temp_dir is not None:
            options["_temp_dir"] = _short_path(temp_dir)
        ray.init(num_cpus=num_cpus, **options)
        return
    if address != "auto" and not answers(address, timeout_s):
        raise ClusterUnreachable(f"no Ray cluster answers at ray.address={address}: "
                                 f"check the address (the head prints it after `ray start --head`) and that "
                                 f"the head is running (`ray status --address={address}`)")
    # Ray's client retries a refused login about once a second, 20 times by default, each
    # printing a line: bound the tries (Ray's operator knob for this window, read at connect
    # time) and keep the lines out of the user's terminal, reading them to name the cause.
    with _stderr_captured() as captured, _environment("RAY_gcs_server_port_wait_time_s", f"{timeout_s:.0f}"):
        try:
            ray.init(address=address, runtime_env=_code_runtime_env(), **options)
            return
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as err:
            failure, log = err, captured.read_text(errors="replace")
    if "InvalidAuthToken" in log or "uthentication" in str(failure):
        fix = ("the token differs from the head's: give the head's token (RAY_AUTH_TOKEN, or copy its "
               "~/.ray/auth_token)" if os.environ.get("RAY_AUTH_MODE") == "token" else
               "the cluster requires token authentication: set RAY_AUTH_MODE=token and the head's token "
               "(RAY_AUTH_TOKEN, or copy its ~/.ray/auth_token)")
        raise ClusterUnreachable(f"could not join the Ray cluster at {address}: {fix}") from None
    raise ClusterUnreachable(f"could not join the Ray cluster at {address}: {_describe(failure)} "
                             f"(is it the same Ray version, {ray.__version__}?)") from None


def _code_runtime_env() -> dict[str, Any]:
    """Ship `ascan` and `search` to every worker of a cluster we join: nodes need only Python
    and the pinned packages, not a checkout at the same path."""
    # Found, not imported: the engine imports neither `ascan` nor its own root package.
    folders = [importlib.util.find_spec("ascan").submodule_search_locations[0], str(Path(__file__).resolve().parents[1])]
    return {"py_modules": folders, "excludes": ["__pycache__", "*.pyc"]}



@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of the block (unless the user set it)."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Path]:
    """Send this process's file descriptor 2 to a temporary file (C++ libraries write there
    directly, past Python's `sys.stderr`)."""
    handle, name = tempfile.mkstemp(prefix="ascan-ray-connect-", suffix=".log")
    saved = os.dup(2)
    os.dup2(handle, 2)
    try:
        yield Path(name)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(handle)
        Path(name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- helpers
def _fits(job: Job, node: dict[str, Any]) -> bool:
    if job.node is not None and node["NodeID"] != job.node:
        return False
    if job.avoid is not None and node["NodeID"] == job.avoid:
        return False
    return all(node["Resources"].get(key, 0) >= amount for key, amount in job.resources.items())


def _format(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{key}: {amount:g}" for key, amount in resources.items()) + "}"


def _describe_nodes(nodes: list[dict[str, Any]]) -> str:
    if not nodes:
        return "no node is alive"
    shown = []
    for node in nodes:
        offer = {k: v for k, v in node["Resources"].items()
                 if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
        shown.append(f"{node['NodeID'][:8]} {_format(offer)}")
    return "nodes: " + "; ".join(shown)


def _describe(err: BaseException) -> str:
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _short_path(folder: Path) -> str:
    """`folder`, or a short symbolic link to it: Ray puts Unix sockets under its temp dir, and
    a socket path may not exceed 107 bytes (Ray adds about 63 to the folder's)."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if len(str(folder)) <= 40:
        return str(folder)
    link = Path(tempfile.gettempdir()) / f"ascan-ray-{hashlib.sha256(str(folder).encode()).hexdigest()[:10]}"
    if link.is_symlink() and link.resolve() != folder:
        link.unlink()
    if not link.exists():
        link.symlink_to(folder, target_is_directory=True)
    return str(link)
