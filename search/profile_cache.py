"""Profiling results as plain data, and the SQLite cache that keeps them.

This module imports only the standard library, so a study, a report or a worker process can
read profiles without loading torch.

A result is keyed by (architecture hash, measurement-settings hash, environment-fingerprint
hash): the same network measured the same way on the same machine is measured once. The
cache is one SQLite file in WAL mode with a busy timeout, so several processes may write to
it at once (each write is one short transaction). WAL needs a local file system: do not put
the cache on NFS.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["ProfileError", "ProfileResult", "ProfileCache", "stable_hash", "one_line"]

SCHEMA_VERSION = 1


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

    @property
    def settings_hash(self) -> str:
        return stable_hash(self.settings)

    @property
    def fingerprint_hash(self) -> str:
        return stable_hash(self.fingerprint)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.arch_hash, self.settings_hash, self.fingerprint_hash

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProfileResult":
        return from_known_fields(cls, data)


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
    def get(self, arch_hash: str, settings_hash: str, fingerprint_hash: str) -> ProfileResult | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT result FROM profiles WHERE arch_hash=? AND settings_hash=? AND fingerprint_hash=?",
                (arch_hash, settings_hash, fingerprint_hash)).fetchone()
        return None if row is None else self._decode(row[0], arch_hash)

    def put(self, result: ProfileResult) -> None:
        """Store a result, replacing any earlier one under the same key."""
        payload = json.dumps(result.to_dict(), sort_keys=True)
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO profiles (arch_hash, settings_hash, fingerprint_hash, result, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
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
            if version not in (0, SCHEMA_VERSION):
                raise ProfileError(f"profile cache {self.path}: schema version {version}, this code reads "
                                   f"{SCHEMA_VERSION}; use another cache file")
            # WAL lets readers and one writer proceed together; writers queue on the busy timeout.
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS profiles (arch_hash TEXT NOT NULL, settings_hash TEXT NOT NULL,"
                " fingerprint_hash TEXT NOT NULL, result TEXT NOT NULL, created_at REAL NOT NULL,"
                " PRIMARY KEY (arch_hash, settings_hash, fingerprint_hash))")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose SQLite errors become one-line `ProfileError`s naming the file."""
        try:
            with closing(sqlite3.connect(self.path, timeout=self.timeout_s)) as conn:
                with conn:  # one transaction: commit on success, roll back on error
                    yield conn
        except sqlite3.OperationalError as error:
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
