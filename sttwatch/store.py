"""The state file: one row per source file, moved through its states one transaction at a time.

SQLite in WAL with ``synchronous=FULL`` so a committed transition survives a power cut, and a
``status`` reader in another process never blocks the daemon. Every transition is an
``UPDATE ... WHERE id=? AND state=?`` checked by rowcount, so a stale caller (a poll answer for
a job that was reset meanwhile) changes nothing. No SQL lives outside this module.

States: ``seen -> submitting -> pending -> fetched -> done | failed``. ``fetched`` (the result is
stored, the transcript not yet written) is ours on top of the starting design: it lets a crash
between fetch and write finish from the stored result instead of asking the service again,
which matters because the service forgets results after about an hour.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any


class State(str, Enum):
    SEEN = "seen"
    SUBMITTING = "submitting"
    PENDING = "pending"
    FETCHED = "fetched"
    DONE = "done"
    FAILED = "failed"


UNFINISHED = (State.SEEN, State.SUBMITTING, State.PENDING, State.FETCHED)


@dataclass(frozen=True)
class Job:
    id: int
    path: str
    size: int
    mtime_ns: int
    state: State
    generation_id: str | None
    attempts: int
    polls: int
    submitted_at: float | None
    next_at: float
    error: str | None
    result: dict[str, Any] | None
    cost: dict[str, str] | None
    created_at: float
    updated_at: float
    finished_at: float | None
    backend: str | None
    output_key: str | None


DDL = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        state TEXT NOT NULL,
        generation_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        polls INTEGER NOT NULL DEFAULT 0,
        submitted_at REAL,
        next_at REAL NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT,
        cost TEXT,
        service_seconds REAL,
        backend TEXT,
        output_key TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL)""",
    "CREATE INDEX IF NOT EXISTS jobs_state_next ON jobs(state, next_at)",
    "CREATE INDEX IF NOT EXISTS jobs_output_key ON jobs(output_key)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_COLS = ("id, path, size, mtime_ns, state, generation_id, attempts, polls, submitted_at, "
         "next_at, error, result, cost, created_at, updated_at, finished_at, backend, "
         "output_key")


def _guard(expect: Job | None) -> tuple[str, tuple[Any, ...]]:
    if expect is None:
        return "", ()
    return (" AND state=? AND generation_id IS ? AND size=? AND mtime_ns=?",
            (expect.state.value, expect.generation_id, expect.size, expect.mtime_ns))


def _job(row: tuple[Any, ...]) -> Job:
    return Job(row[0], row[1], row[2], row[3], State(row[4]), row[5], row[6], row[7], row[8],
               row[9], row[10], json.loads(row[11]) if row[11] else None,
               json.loads(row[12]) if row[12] else None, row[13], row[14], row[15], row[16],
               row[17])


class Store:
    """The jobs table behind verbs named after state transitions; thread-safe via one lock."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._tx() as db:
            db.execute(DDL[0])
            have = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
            for column in ("backend TEXT", "output_key TEXT"):  # added after 0.1.0's first cut
                if column.split()[0] not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
            for stmt in DDL[1:]:
                db.execute(stmt)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; ``BEGIN IMMEDIATE`` takes the write lock up front so a
        concurrent CLI writer waits on busy_timeout instead of failing mid-transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _select(self, where: str, args: Iterable[Any] = ()) -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLS} FROM jobs WHERE {where}",
                                    tuple(args)).fetchall()
        return [_job(r) for r in rows]

    # --- discovery -------------------------------------------------------------------------

    def get(self, path: str) -> Job | None:
        found = self._select("path = ?", (path,))
        return found[0] if found else None

    def add_seen(self, path: str, size: int, mtime_ns: int, now: float) -> Job | None:
        """Record a settled file. Atomic. Returns the job when it is new work: a new path, or
        a new version of a known one (size or mtime changed), which starts over from ``seen``
        and abandons any task of the old version. An unchanged known file returns None."""
        with self._tx() as db:
            row = db.execute("SELECT id, size, mtime_ns FROM jobs WHERE path = ?",
                             (path,)).fetchone()
            if row is None:
                db.execute("INSERT INTO jobs (path, size, mtime_ns, state, next_at, created_at,"
                           " updated_at) VALUES (?, ?, ?, 'seen', 0, ?, ?)",
                           (path, size, mtime_ns, now, now))
            elif (row[1], row[2]) != (size, mtime_ns):
                db.execute("UPDATE jobs SET size=?, mtime_ns=?, state='seen', generation_id="
                           "NULL, attempts=0, polls=0, next_at=0, error=NULL, result=NULL, "
                           "cost=NULL, service_seconds=NULL, submitted_at=NULL, "
                           "output_key=NULL, finished_at=NULL, updated_at=? WHERE id=?",
                           (size, mtime_ns, now, row[0]))
            else:
                return None
        return self.get(path)

    def add_done(self, path: str, size: int, mtime_ns: int, now: float, note: str) -> None:
        """Record a file whose transcript is already up to date, so it is never submitted."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO jobs (path, size, mtime_ns, state, error, "
                       "created_at, updated_at, finished_at) VALUES (?, ?, ?, 'done', ?, ?, ?, ?)",
                       (path, size, mtime_ns, note, now, now, now))

    # --- start-up --------------------------------------------------------------------------

    def recover(self, now: float, volatile_backends: Iterable[str] = ()) -> dict[str, int]:
        """Undo what a crash left half-done: a job caught inside its create call has no id,
        so it goes back to ``seen`` (the one duplicate we accept); every pending id is polled
        at once, except ids of backends whose ids die with the process, which are queued
        again without counting an attempt. Atomic."""
        volatile = list(volatile_backends)
        marks = ",".join("?" * len(volatile)) or "NULL"
        with self._tx() as db:
            resubmit = db.execute("UPDATE jobs SET state='seen', next_at=0, updated_at=? "
                                  "WHERE state='submitting'", (now,)).rowcount
            requeue = db.execute("UPDATE jobs SET state='seen', generation_id=NULL, "
                                 "attempts=MAX(attempts-1, 0), next_at=0, updated_at=? "
                                 f"WHERE state='pending' AND backend IN ({marks})",
                                 (now, *volatile)).rowcount
            repoll = db.execute("UPDATE jobs SET next_at=? WHERE state='pending'",
                                (now,)).rowcount
        return {"resubmit": resubmit + requeue, "repoll": repoll}

    def claim_output(self, job_id: int, keys: Sequence[str]) -> str:
        """Give the job the first output name no other job holds (a job keeps the name it
        got), so two sources never write the same transcript. Atomic."""
        with self._tx() as db:
            row = db.execute("SELECT output_key FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row and row[0] in keys:
                return str(row[0])
            chosen = keys[-1]
            for key in keys:
                if db.execute("SELECT 1 FROM jobs WHERE output_key=? AND id!=?",
                              (key, job_id)).fetchone() is None:
                    chosen = key
                    break
            db.execute("UPDATE jobs SET output_key=? WHERE id=?", (chosen, job_id))
        return chosen

    def output_holder(self, key: str) -> str | None:
        """The source whose transcripts go by this name, if any job claimed it."""
        with self._lock:
            row = self._db.execute("SELECT path FROM jobs WHERE output_key=? LIMIT 1",
                                   (key,)).fetchone()
        return None if row is None else str(row[0])

    def by_generation_id(self, generation_id: str) -> Job | None:
        found = self._select("generation_id = ? AND state='pending'", (generation_id,))
        return found[0] if found else None

    # --- submitting ------------------------------------------------------------------------

    def claim_for_submit(self, now: float, limit: int) -> list[Job]:
        """Move up to ``limit`` due ``seen`` jobs to ``submitting`` and count the attempt.
        Committed before any create call, so a crash inside the call is visible at restart."""
        if limit <= 0:
            return []
        with self._tx() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE state='seen' AND next_at <= ? ORDER BY next_at, id "
                "LIMIT ?", (now, limit))]
            db.executemany("UPDATE jobs SET state='submitting', attempts=attempts+1, "
                           "updated_at=? WHERE id=? AND state='seen'", [(now, i) for i in ids])
        return self._select(f"id IN ({','.join('?' * len(ids))})", ids) if ids else []

    def set_pending(self, job_id: int, backend: str, generation_id: str, now: float,
                    first_poll_at: float, cost: dict[str, str] | None) -> bool:
        """Commit the id the moment the create call returns. Atomic; False if the job moved."""
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET state='pending', backend=?, generation_id=?, submitted_at=?, "
                "next_at=?, polls=0, cost=?, updated_at=? WHERE id=? AND state='submitting'",
                (backend, generation_id, now, first_poll_at,
                 json.dumps(cost) if cost else None, now, job_id)).rowcount == 1

    def requeue(self, job_id: int, now: float, not_before: float, reason: str,
                *, refund_attempt: bool = False, expect: Job | None = None) -> bool:
        """Put a submitting or pending job back in the queue (outage, expired id, deadline).
        With ``expect``, only if the job is still in the state and task the caller saw, so a
        late answer about an old task never touches a newer version of the file."""
        refund = "attempts=MAX(attempts-1, 0), " if refund_attempt else ""
        guard, args = _guard(expect)
        with self._tx() as db:
            return db.execute(
                f"UPDATE jobs SET state='seen', generation_id=NULL, {refund}next_at=?, error=?, "
                f"updated_at=? WHERE id=? AND state IN ('submitting', 'pending'){guard}",
                (not_before, reason, now, job_id, *args)).rowcount == 1

    # --- polling ---------------------------------------------------------------------------

    def due_for_poll(self, now: float, limit: int) -> list[Job]:
        return self._select("state='pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
                            (now, limit))

    def schedule_poll(self, job_id: int, generation_id: str, next_at: float, now: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET next_at=?, polls=polls+1, updated_at=? WHERE id=? AND "
                       "state='pending' AND generation_id=?", (next_at, now, job_id,
                                                               generation_id))

    def set_fetched(self, job_id: int, generation_id: str, result: dict[str, Any], now: float,
                    service_seconds: float) -> bool:
        """Store the finished result before any transcript is written. Atomic."""
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET state='fetched', result=?, polls=polls+1, service_seconds=?, "
                "updated_at=? WHERE id=? AND state='pending' AND generation_id=?",
                (json.dumps(result), service_seconds, now, job_id, generation_id)).rowcount == 1

    def recent_service_seconds(self, n: int = 32) -> list[float]:
        """How long recent tasks took on the service: what the first fetch is timed by."""
        with self._lock:
            rows = self._db.execute("SELECT service_seconds FROM jobs WHERE service_seconds IS "
                                    "NOT NULL ORDER BY updated_at DESC LIMIT ?", (n,)).fetchall()
        return [r[0] for r in rows]

    def fetched(self, limit: int = 100) -> list[Job]:
        return self._select("state='fetched' ORDER BY id LIMIT ?", (limit,))

    # --- endings ---------------------------------------------------------------------------

    def mark_done(self, job_id: int, now: float, note: str | None = None, *,
                  expect: Job | None = None) -> bool:
        """The transcripts are written; ``expect`` guards against a newer version."""
        guard, args = _guard(expect)
        with self._tx() as db:
            return db.execute("UPDATE jobs SET state='done', error=?, finished_at=?, "
                              f"updated_at=? WHERE id=? AND state='fetched'{guard}",
                              (note, now, now, job_id, *args)).rowcount == 1

    def mark_failed(self, job_id: int, reason: str, now: float, *,
                    expect: Job | None = None) -> bool:
        """End a job as failed; ``expect`` guards against stale answers as in ``requeue``."""
        guard, args = _guard(expect)
        with self._tx() as db:
            return db.execute("UPDATE jobs SET state='failed', error=?, finished_at=?, "
                              "updated_at=? WHERE id=? AND state IN ('seen', 'submitting', "
                              f"'pending', 'fetched'){guard}",
                              (reason, now, now, job_id, *args)).rowcount == 1

    # --- operators -------------------------------------------------------------------------

    def retry(self, now: float, paths: Iterable[str] | None = None) -> int:
        """Queue failed jobs again (all, or the given paths whatever their state)."""
        with self._tx() as db:
            if paths is None:
                return db.execute("UPDATE jobs SET state='seen', attempts=0, next_at=0, "
                                  "generation_id=NULL, updated_at=? WHERE state='failed'",
                                  (now,)).rowcount
            return sum(db.execute("UPDATE jobs SET state='seen', attempts=0, next_at=0, "
                                  "generation_id=NULL, result=NULL, updated_at=? WHERE path=?",
                                  (now, p)).rowcount for p in paths)

    def forget(self, paths: Iterable[str]) -> int:
        with self._tx() as db:
            return sum(db.execute("DELETE FROM jobs WHERE path=?", (p,)).rowcount for p in paths)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s.value: 0 for s in State} | {r[0]: r[1] for r in rows}

    def in_flight(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('submitting', "
                                   "'pending')").fetchone()
        return int(row[0])

    def next_due(self, state: State) -> float | None:
        """The earliest ``next_at`` of jobs in ``state``: how long the pipeline may sleep."""
        with self._lock:
            row = self._db.execute("SELECT MIN(next_at) FROM jobs WHERE state=?",
                                   (state.value,)).fetchone()
        return None if row[0] is None else float(row[0])

    def failed(self, limit: int = 20) -> list[Job]:
        return self._select("state='failed' ORDER BY finished_at DESC LIMIT ?", (limit,))

    def set_meta(self, key: str, value: Any) -> None:
        """What the running daemon wants ``status`` to see (its pauses, its heartbeat)."""
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO "
                       "UPDATE SET value=excluded.value", (key, json.dumps(value)))

    def get_meta(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def spend(self) -> dict[str, float]:
        """Cost headers the service sent, added up over every job that has them."""
        totals: dict[str, float] = {}
        with self._lock:
            rows = self._db.execute("SELECT cost FROM jobs WHERE cost IS NOT NULL").fetchall()
        for (raw,) in rows:
            for name, value in json.loads(raw).items():
                try:
                    totals[name] = totals.get(name, 0.0) + float(value)
                except ValueError:
                    continue
        return totals

    def oldest_unfinished(self) -> Job | None:
        found = self._select("state IN ('seen', 'submitting', 'pending', 'fetched') "
                             "ORDER BY created_at LIMIT 1")
        return found[0] if found else None
