"""Where work runs: in this process, or as Ray tasks on a local or remote cluster.

An executor runs a function with its arguments somewhere and hands back the result; it
knows nothing of models or trials. The driver decides *what* runs when (for instance that
latency profiling gets the whole machine): an executor only reports its total resources and
honours each job's request.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol


class WorkerLost(RuntimeError):
    """The process running a job died (killed, out of memory, node lost)."""


class JobFailed(RuntimeError):
    """The job's function raised; the message carries the original error."""


@dataclass(eq=False)
class Job:
    """A submitted call. `outcome` is set once it is done: ('ok', value) or ('error', exception)."""

    name: str
    handle: Any = None
    outcome: tuple[str, Any] | None = None

    def result(self) -> Any:
        """The function's return value; raises `JobFailed` or `WorkerLost` for a failed job."""
        kind, value = self.outcome  # type: ignore[misc]
        if kind == "error":
            raise value
        return value


class Executor(Protocol):
    """Where the driver's jobs run. `submit` asks for a share of the resources; a job from
    `submit_exclusive` has a whole machine to itself (latency is measured there)."""

    total_cpus: float
    total_gpus: float

    def capacity(self, num_cpus: float, num_gpus: float) -> int: ...

    def submit(self, fn: Callable[..., Any], *args: Any, name: str, num_cpus: float = 1,
               num_gpus: float = 0) -> Job: ...

    def submit_exclusive(self, fn: Callable[..., Any], *args: Any, name: str) -> Job: ...

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]: ...

    def cancel(self, job: Job) -> None: ...

    def shutdown(self) -> None: ...


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
        return self.submit(fn, *args, name=name)

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]:
        return [job for job in jobs if job.outcome is not None]

    def cancel(self, job: Job) -> None:
        pass

    def shutdown(self) -> None:
        pass


class RayExecutor:
    """Runs jobs as Ray tasks with `num_cpus`/`num_gpus` requests.

    Starts a local cluster (its files under `temp_dir`) or joins `address`. Ray's own task
    retries are off: a dead worker surfaces as `WorkerLost` so the driver can record the
    failure on the trial and decide about a retry itself.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, temp_dir: Path | None = None):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self._ray = ray
        if not ray.is_initialized():
            options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            if address:
                ray.init(address=address, **options)
            else:
                if temp_dir is not None:
                    options["_temp_dir"] = _short_path(temp_dir)
                ray.init(num_cpus=num_cpus, **options)
        resources = ray.cluster_resources()
        self.total_cpus = float(resources.get("CPU", 1))
        self.total_gpus = float(resources.get("GPU", 0))
        self._remote_cache: dict[Callable[..., Any], Any] = {}

    def capacity(self, num_cpus: float, num_gpus: float) -> int:
        by_cpu = int(self.total_cpus // num_cpus) if num_cpus else 1 << 30
        by_gpu = int(self.total_gpus // num_gpus) if num_gpus else 1 << 30
        return max(1, min(by_cpu, by_gpu))

    def submit(self, fn: Callable[..., Any], *args: Any, name: str, num_cpus: float = 1, num_gpus: float = 0) -> Job:
        remote = self._remote_cache.setdefault(fn, self._ray.remote(fn))
        handle = remote.options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0, name=name).remote(*args)
        return Job(name, handle)

    def submit_exclusive(self, fn: Callable[..., Any], *args: Any, name: str) -> Job:
        return self.submit(fn, *args, name=name, num_cpus=self.total_cpus, num_gpus=self.total_gpus)

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]:
        pending = {job.handle: job for job in jobs if job.outcome is None}
        if pending:
            ready, _ = self._ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
            for ref in ready:
                pending[ref].outcome = self._fetch(ref)
        return [job for job in jobs if job.outcome is not None]

    def _fetch(self, ref: Any) -> tuple[str, Any]:
        from ray import exceptions

        try:
            return ("ok", self._ray.get(ref))
        except exceptions.RayTaskError as err:  # the function raised
            return ("error", JobFailed(_describe(err.cause if err.cause is not None else err)))
        except exceptions.RayError as err:  # the worker or its node died, or the task was cancelled
            return ("error", WorkerLost(_describe(err)))

    def cancel(self, job: Job) -> None:
        if job.outcome is None:
            self._ray.cancel(job.handle, force=True)

    def shutdown(self) -> None:
        if self._ray.is_initialized():
            self._ray.shutdown()


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
