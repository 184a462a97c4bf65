"""A real two-node Ray cluster on this machine, for tests: a head and a second node started
with `ray start` (1 CPU each, own temp dirs and ports, token authentication on), stopped by
killing only its own processes (`ray stop` would stop every Ray on the machine).

    with two_node_cluster(tmp_path) as cluster:
        subprocess.run([..., f"ray.address={cluster.address}"], env=cluster.env)
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

RAY = Path(sys.executable).parent / "ray"


@dataclass
class Cluster:
    address: str
    root: Path  # holds head/ and w2/, each node's --temp-dir
    env: dict[str, str]  # what a driver needs to join: this process's environment plus the token
    node_ids: dict[str, str] = field(default_factory=dict)  # "head" / "w2" -> Ray node id

    def processes(self, node: str | None = None) -> dict[int, str]:
        """PID -> command line of this cluster's processes (of one node when named).

        Ray's daemons carry their node's temp dir on the command line; workers and agents
        retitle themselves (`ray::IDLE`), so they are found as children of those daemons."""
        table = process_table()
        marks = [f"{self.root / name}/" for name in ([node] if node else ["head", "w2"])]
        ours = {pid for pid, (_, args) in table.items() if any(mark in args for mark in marks)}
        grew = True
        while grew:
            children = {pid for pid, (ppid, _) in table.items() if ppid in ours} - ours
            ours |= children
            grew = bool(children)
        return {pid: table[pid][1] for pid in ours}

    def raylet_pid(self, node: str) -> int:
        return next(pid for pid, args in self.processes(node).items() if args.split()[0].endswith("/raylet"))

    def stop(self, timeout: float = 5.0) -> dict[int, str]:
        """Terminate this cluster's processes (SIGTERM, then SIGKILL) and nobody else's;
        returns the ones it signalled."""
        victims = self.processes()
        for pid in victims:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(pid) for pid in victims):
            time.sleep(0.2)
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        for pid in list(self.processes()):  # workers forked while we were stopping
            _signal(pid, signal.SIGKILL)
        return victims


@contextlib.contextmanager
def two_node_cluster(base: Path | None = None) -> Iterator[Cluster]:
    """Start a head and a second node on 127.0.0.1; yield the `Cluster`; stop both."""
    # Ray's socket paths must stay under 107 bytes: keep the temp dirs short.
    root = Path(tempfile.mkdtemp(prefix="ascan-rc-", dir=base if base and len(str(base)) < 40 else None))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port = _free_port()
    cluster = Cluster(f"127.0.0.1:{port}", root, env)
    try:
        _ray_start(env, ["--head", f"--port={port}", f"--temp-dir={root / 'head'}", "--include-dashboard=false",
                         f"--dashboard-port={_free_port()}"])
        _ray_start(env, [f"--address={cluster.address}", f"--temp-dir={root / 'w2'}"])
        for name in ("head", "w2"):
            raylet = cluster.processes(name)[cluster.raylet_pid(name)]
            cluster.node_ids[name] = next(a.split("=", 1)[1] for a in raylet.split() if a.startswith("--node_id="))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _ray_start(env: dict[str, str], args: list[str]) -> None:
    command = [str(RAY), "start", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
               f"--metrics-export-port={_free_port()}", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_table() -> dict[int, tuple[int, str]]:
    """PID -> (parent PID, command line) of every process (from /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked
        table[int(entry.name)] = (ppid, args)
    return table


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
