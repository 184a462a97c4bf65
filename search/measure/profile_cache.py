"""Profiling results as plain data, and the SQLite cache that keeps them.

This module imports only the standard library, so a study, a report or a worker process can
read profiles without loading torch.

A result is keyed by (architecture hash, measurement-settings hash, environment-fingerprint
hash, reference hash): the same network measured the same way on the same machine is
measured once. The reference hash is empty for a raw measurement; an anchored one (a ratio to
a reference network times that reference's fixed latency) is keyed by its reference's arch
hash and latency too, so values anchored to different references never meet. A result
flagged as contaminated (measured under load) is never stored. The
cache is one SQLite file in WAL mode with a busy timeout, so several processes may write to
it at once (each write is one short transaction). WAL needs a local file system: do not put
the cache on NFS.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["ProfileError", "ProfileResult", "ProfileCache", "reference_hash", "stable_hash", "one_line"]

SCHEMA_VERSION = 2  # 2: reference_hash in the key; version-1 files are upgraded in place


class ProfileError(ValueError):
    """A profiling request that cannot be honoured; the message is one line naming the setting."""


class CacheLockedError(ProfileError):
    """The cache stayed locked by other writers for longer than its timeout."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, shortened: for one-line `ProfileError`s."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


def stable_hash(data: dict[str, Any]) -> str:
    """12 hex digits of SHA-256 over canonical JSON: equal in every process and on every machine."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def from_known_fields(cls: type, data: dict[str, Any]) -> Any:
    """`cls(**data)` for a dataclass, refusing unknown keys with a one-line `ProfileError`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{cls.__name__}.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    return cls(**data)


@dataclass(frozen=True)
class ProfileResult:
    """What the profiler knows about one architecture under one set of measurement settings.

    MACs are multiply-accumulates per image (batch 1) at the settings' resolution; latency
    statistics are per forward pass of `settings["batch_size"]` images; throughput is images/s
    at the median latency. `peak_memory_bytes` is what the measurement allocated at its peak
    (weights, input and activations): the CUDA allocator's peak on GPU, the growth of resident
    memory on CPU (None where the OS cannot report it).

    A result of an interleaved window (`profile_window`) is anchored: `median_ms` is the
    median over rounds of (this network's time / the reference's time in the same round) x
    `reference["median_ms"]`, the reference's fixed latency on this machine; `ci_low_ms`,
    `ci_high_ms` are a 95% bootstrap interval of that value over rounds, `ci_rel_half_width`
    its half-width over `median_ms`. `raw_median_ms`, `p90_ms`, `iqr_ms` and `mean_ms` are of
    this window's own per-round times, not anchored. `foreign_cpu` is the CPU (in cores) other
    processes used while it ran, `steal` the hypervisor's share of CPU time; `contaminated`
    results say why in `contamination` and are never cached. Fields after `arch` default to
    what a raw single-network measurement (and a version-1 cache row) means.
    """

    arch_hash: str
    params: int
    macs: int
    median_ms: float
    p90_ms: float
    iqr_ms: float
    mean_ms: float
    n_samples: int
    throughput: float
    peak_memory_bytes: int | None
    settings: dict[str, Any]
    fingerprint: dict[str, Any]
    arch: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None  # {"arch_hash", "median_ms"} of the anchor; None: raw
    raw_median_ms: float | None = None
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    ci_rel_half_width: float | None = None
    rounds: int | None = None
    ratio_spread: float | None = None  # IQR / median of the per-round ratios (the reference: of its times)
    foreign_cpu: float | None = None
    steal: float | None = None
    contaminated: bool = False
    contamination: str = ""
    attempts: int = 1
    window: str = ""  # id of the interleaved window that measured it: compare raw times only within one

    @property
    def reference_hash(self) -> str:
        return reference_hash(self.reference)

    @property
    def settings_hash(self) -> str:
        return stable_hash(self.settings)

    @property
    def fingerprint_hash(self) -> str:
        return stable_hash(self.fingerprint)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.arch_hash, self.settings_hash, self.fingerprint_hash, self.reference_hash

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProfileResult":
        return from_known_fields(cls, data)


def reference_hash(reference: dict[str, Any] | None) -> str:
    """The cache-key part naming an anchor ({"arch_hash", "median_ms"}); "" for raw results."""
    return "" if reference is None else stable_hash(reference)


class ProfileCache:
    """SQLite store of `ProfileResult`s; safe for concurrent writer processes.

    Every call opens its own short-lived connection, so an instance may be shared with
    forked workers, and no connection outlives a call. A file that is not a readable cache
    raises `ProfileError` naming it; the file is never deleted or rewritten by us.
    """

    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create_schema()

    # ------------------------------------------------------------------ public
    def get(self, arch_hash: str, settings_hash: str, fingerprint_hash: str,
            reference_hash: str = "") -> ProfileResult | None:
        """The result under this key; `reference_hash` "" asks for a raw (unanchored) one."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT result FROM profiles WHERE arch_hash=? AND settings_hash=? AND fingerprint_hash=?"
                " AND reference_hash=?", (arch_hash, settings_hash, fingerprint_hash, reference_hash)).fetchone()
        return None if row is None else self._decode(row[0], arch_hash)

    def put(self, result: ProfileResult) -> None:
        """Store a result, replacing any earlier one under the same key. A contaminated result
        is refused: it would be reused as clean by every later lookup."""
        if result.contaminated:
            raise ProfileError(f"profile of arch {result.arch_hash} is contaminated ({result.contamination}); "
                               "not caching it")
        payload = json.dumps(result.to_dict(), sort_keys=True)
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO profiles (arch_hash, settings_hash, fingerprint_hash, reference_hash, result,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (*result.key, payload, time.time()))

    def all(self) -> list[ProfileResult]:
        """Every stored result, oldest first (what a study reads back)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT arch_hash, result FROM profiles ORDER BY created_at").fetchall()
        return [self._decode(text, arch_hash) for arch_hash, text in rows]

    def __len__(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file: 'ok' when it is sound."""
        with self._connect() as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]

    def __repr__(self) -> str:
        return f"ProfileCache({str(self.path)!r})"

    # ------------------------------------------------------------------ internals
    def _create_schema(self) -> None:
        # Switching to WAL answers "locked" at once, without waiting on the busy timeout, while
        # another process opens the same new file; so that step retries until the timeout.
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return self._try_create_schema()
            except CacheLockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _try_create_schema(self) -> None:
        with self._connect() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise ProfileError(f"profile cache {self.path}: schema version {version}, this code reads "
                                   f"1 and {SCHEMA_VERSION}; use another cache file")
            # WAL lets readers and one writer proceed together; writers queue on the busy timeout.
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            if version == 1:  # same rows, all raw: key them with an empty reference (one transaction)
                conn.execute("ALTER TABLE profiles RENAME TO profiles_v1")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS profiles (arch_hash TEXT NOT NULL, settings_hash TEXT NOT NULL,"
                " fingerprint_hash TEXT NOT NULL, reference_hash TEXT NOT NULL, result TEXT NOT NULL,"
                " created_at REAL NOT NULL, PRIMARY KEY (arch_hash, settings_hash, fingerprint_hash, reference_hash))")
            if version == 1:
                conn.execute("INSERT INTO profiles SELECT arch_hash, settings_hash, fingerprint_hash, '', result,"
                             " created_at FROM profiles_v1")
                conn.execute("DROP TABLE profiles_v1")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose SQLite errors become one-line `ProfileError`s naming the file."""
        try:
            with closing(sqlite3.connect(self.path, timeout=self.timeout_s)) as conn:
                with conn:  # one transaction: commit on success, roll back on error
                    yield conn
        except sqlite3.OperationalError as error:
            if "disk is full" in str(error):  # SQLITE_FULL: the file is fine, the disk is not
                raise OSError(errno.ENOSPC, f"profile cache {self.path}: disk full ({error})", str(self.path)) from error
            if "locked" in str(error) or "busy" in str(error):
                raise CacheLockedError(f"profile cache {self.path}: still locked by another writer after "
                                       f"{self.timeout_s:g}s ({error})") from error
            raise self._unreadable(error) from error
        except sqlite3.DatabaseError as error:
            raise self._unreadable(error) from error

    def _unreadable(self, error: Exception) -> ProfileError:
        return ProfileError(f"profile cache {self.path} is not a readable profile database ({error}); "
                            "move or delete it to start a new cache")

    def _decode(self, text: str, arch_hash: str) -> ProfileResult:
        try:
            return ProfileResult.from_dict(json.loads(text))
        except (json.JSONDecodeError, TypeError) as error:
            raise ProfileError(f"profile cache {self.path}: unreadable row for arch {arch_hash} ({error})") from error
