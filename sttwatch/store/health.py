"""Looking at a store from outside the daemon: is it sound, and setting a damaged SQLite file
aside so the next start makes a new one. Used by ``sttwatch state check|reset``.

A reset never deletes: the file and its WAL/SHM companions are renamed to
``NAME.broken-<UTC time>`` beside it, so what they hold can still be salvaged by hand. A file
held by a running daemon is not touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError, StoreLocked, StoreMissing
from .sql import SCHEMA_VERSION
from .sqlite import try_lock

COMPANIONS = ("", "-wal", "-shm")  # SQLite's own files; the .lock file stays where it is


@dataclass(frozen=True)
class Health:
    """What ``state check`` found: ``sound`` or not, and a line per finding."""

    location: str
    sound: bool
    findings: tuple[str, ...]
    schema_version: int | None = None
    jobs: int | None = None


def check_sqlite(path: Path) -> Health:
    """Open the file read-only and run SQLite's full ``integrity_check``."""
    if not path.exists():
        raise StoreMissing(f"no state file at {path} (the daemon has not run with this "
                           "config yet)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return Health(str(path), False, (f"cannot open: {exc}",))
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check(20)").fetchall()]
        tables = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
        if rows != ["ok"]:
            return Health(str(path), False, tuple(f"integrity: {r}" for r in rows))
        if "jobs" not in tables:
            return Health(str(path), False, ("not an sttwatch state file (no jobs table)",))
        version = None
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else None
        jobs = int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    except sqlite3.Error as exc:
        return Health(str(path), False, (f"unreadable: {exc}",))
    finally:
        db.close()
    findings = ["integrity: ok"]
    sound = version is None or version <= SCHEMA_VERSION
    if not sound:
        findings.append(f"written by a newer sttwatch (schema {version}; this one knows "
                        f"{SCHEMA_VERSION}): upgrade sttwatch")
    return Health(str(path), sound, tuple(findings), version, jobs)


def check_postgres(url: str) -> Health:
    """Open the shared store as the daemon would (migrating it if it is older) and read it."""
    from .postgres import PostgresStore
    store = PostgresStore(url, create=False)
    try:
        with store._read() as x:
            row = x.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            jobs = int(x.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
        version = int(row[0]) if row else None
        return Health(store.location, version == SCHEMA_VERSION, ("opened: ok",), version,
                      jobs)
    finally:
        store.close()


def _held_by_a_daemon(path: Path) -> str | None:
    """Who holds the daemon's lock on ``path``, or None when nobody does."""
    lock = Path(f"{path}.lock")
    if not lock.exists():
        return None
    with open(lock, "a+", encoding="utf-8") as fh:
        holder = try_lock(fh)
        if holder is not None:
            return holder
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def set_aside(path: Path, now: float | None = None) -> list[tuple[Path, Path]]:
    """Rename the state file and its companions to ``NAME.broken-<UTC time>``; returns
    (old, new) per file moved. Refuses while a daemon holds the file."""
    holder = _held_by_a_daemon(path)
    if holder is not None:
        raise StoreLocked(f"the state file {path} is in use by a running daemon ({holder}): "
                          "stop it first")
    if not path.exists():
        raise StoreMissing(f"no state file at {path}: nothing to reset")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    base = Path(f"{path}.broken-{stamp}")
    if base.exists():
        raise StoreError(f"{base} exists already; move it away first")
    moved = []
    for suffix in COMPANIONS:
        old = Path(f"{path}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            new = Path(f"{base}{suffix}")
            old.rename(new)
            moved.append((old, new))
    return moved
