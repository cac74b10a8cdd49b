"""The embedded store: one SQLite file, for one daemon.

WAL, so a ``status`` reader never blocks the daemon. Every commit survives the daemon being
killed; a durable one (``SqlStore._tx``: what was paid for) is synced to disk with
``synchronous=FULL`` and survives a power cut, and its sync carries every commit before it
(the log is one file, written in order). The per-file bookkeeping commits with
``synchronous=NORMAL``, without a sync of its own: on a virtual disk a synced commit cost
0.3 ms of CPU and 1 ms of waiting, and a file makes seven commits.

One daemon per file, enforced with an exclusive ``flock`` on a companion ``.lock`` file
(released by the kernel when the process dies, SIGKILL included); several hosts share a
PostgreSQL store instead. The file and its WAL are created 0600: they hold paths and
transcripts of private recordings.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import StoreError, StoreLocked, StoreMissing, StoreUnavailable
from .sql import Dialect, Executor, SqlStore

SQLITE = Dialect(name="sqlite", param="?", id_column="INTEGER PRIMARY KEY", real="REAL",
                 bigint="INTEGER", null_eq="IS", greatest="MAX", skip_locked="",
                 admit_lock="", byte_order=True)

# Errors that waiting can cure: the disk under the state file is full, or it is busy.
_WAITABLE = ("database or disk is full", "disk i/o error", "database is locked")


def _way_out(path: Path) -> str:
    return (f"set it aside with 'sttwatch state reset --config FILE' (or mv '{path}' "
            f"'{path}.broken') and start again: sttwatch rescans the folders, and recordings "
            "whose transcripts exist are not sent again")


def try_lock(fh: IO[str]) -> str | None:
    """Take the daemon's exclusive lock on an open lock file; None when taken, else who holds
    it (the holder writes its pid and host into the file)."""
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        fh.seek(0)
        return fh.read().strip() or "another process"
    return None


class SqliteStore(SqlStore):
    dialect = SQLITE

    def __init__(self, path: Path, *, create: bool = True, timeout: float = 30.0) -> None:
        self.path = path
        self.location = str(path)
        self._lock = threading.RLock()
        self._lockfile: IO[str] | None = None
        if not path.exists():
            if not create:
                raise StoreMissing(f"no state file at {path} (the daemon has not run with "
                                   "this config yet)")
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._synced = True  # the setting now: changed only between transactions
            with self._tx() as x:
                tables = {r[0] for r in x.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
                columns = ({r[1] for r in x.execute("PRAGMA table_info(jobs)").fetchall()}
                           if "jobs" in tables else None)
                version = None
                if "meta" in tables:
                    row = x.execute("SELECT value FROM meta WHERE key='schema_version'"
                                    ).fetchone()
                    version = int(row[0]) if row else None
                if tables - {"jobs", "meta", "daemons"} and "jobs" not in tables:
                    raise StoreError(f"{path} is not an sttwatch state file (it holds other "
                                     f"tables); point state.path at another file")
                self._migrate(x, columns, version)
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            if any(w in str(exc).lower() for w in _WAITABLE):
                raise StoreUnavailable(f"{path}: {exc}") from None
            raise StoreError(f"{path} is damaged or not an sttwatch state file ({exc}); "
                             f"{_way_out(path)}") from None

    def lock_for_daemon(self, host_id: str) -> None:
        """Make this process the only daemon on the file, or say who is."""
        lock_path = Path(f"{self.path}.lock")
        fh = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        with contextlib.suppress(OSError):
            os.chmod(lock_path, 0o600)
        holder = try_lock(fh)
        if holder is not None:
            fh.close()
            raise StoreLocked(
                f"the state file {self.path} is in use by another sttwatch daemon ({holder}); "
                "one state file serves one daemon: stop that one, or give this one its own "
                "state.path (for several daemons on one library, share a PostgreSQL store: "
                "state.url)")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on host {socket.gethostname()} (host_id {host_id})\n")
        fh.flush()
        self._lockfile = fh

    @contextlib.contextmanager
    def _tx(self, durable: bool = True) -> Iterator[Executor]:
        """``BEGIN IMMEDIATE`` takes the write lock up front so a concurrent CLI writer waits
        on busy_timeout instead of failing mid-transaction."""
        with self._lock:
            if durable != self._synced:
                self._db.execute("PRAGMA synchronous=FULL" if durable else
                                 "PRAGMA synchronous=NORMAL")
                self._synced = durable
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"{self.path}: {exc}") from None
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreUnavailable(f"{self.path}: {exc}") from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreUnavailable(f"{self.path}: {exc}") from None

    @contextlib.contextmanager
    def _read(self) -> Iterator[Executor]:
        with self._lock:
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._lockfile is not None:
                self._lockfile.close()
                self._lockfile = None
