"""The schema and every transition, written once in SQL both engines speak.

Subclasses give a transaction and a read (``_tx``/``_read``) and their ``Dialect``; all SQL of
the program lives in this package. Every claim is one ``UPDATE ... WHERE id IN (SELECT ...
[FOR UPDATE SKIP LOCKED]) RETURNING``; every later transition is fenced by the job's state, its
generation id, its version (size, mtime) and its owner, and checked by rowcount.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..timeline import Timeline, from_text, to_text
from .base import Store
from .errors import StoreError
from .keys import WatchKeys
from .model import Admission, Claim, DaemonInfo, Job, OutboxEvent, Plan, Spend, State
from .packing import pack, unpack_result
from .search import Indexing
from .searchsql import (
    BLOOM_VERSION,
    POSITIONLESS_VERSION,
    SEARCH_VERSION,
    SearchSql,
    has_fts5,
    search_ddl,
)

# 3: output names unique, reuse keyed by the request (request_key).
# 4: the search index (searchsql.py), made empty; ``sttwatch search --reindex`` fills it.
# 5: the index without word positions, its cue words packed against the stored results.
# 6: PostgreSQL's index: Bloom filters of each page's words and a vocabulary, not a GIN index.
SCHEMA_VERSION = 6

COLUMNS = ("id", "path", "size", "mtime_ns", "state", "generation_id", "attempts", "polls",
           "submitted_at", "next_at", "error", "result", "cost", "created_at", "updated_at",
           "finished_at", "backend", "output_key", "plan", "owner", "lease_until", "defers",
           "sha256", "reused_from", "timeline", "request_key")
_COLS = ", ".join(COLUMNS)
# What a transition that has just written a result returns: the rest of the row (the result
# it wrote is in hand already, decoding it again was a third of storing it).
_COLS_BUT_RESULT = ", ".join("NULL" if c == "result" else c for c in COLUMNS)
_CLAIMED = "('submitting', 'pending', 'fetched')"
CLAIMED_STATES = ("submitting", "pending", "fetched")
RANGE_AT = 32  # listed files in one folder from which ``unknown`` reads the folder's range


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Executor(Protocol):
    def execute(self, sql: str, args: Any = ..., /) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines, and nothing else."""

    name: str
    param: str             # the driver's placeholder
    id_column: str         # an auto-numbered primary key
    real: str
    bigint: str
    null_eq: str           # a comparison true for NULL = NULL
    greatest: str          # the two-argument maximum
    skip_locked: str       # appended to a claim's inner SELECT
    admit_lock: str        # serialises admissions across daemons ('' if the engine does)
    ledger_lock: str = ""  # serialises charges against the caps across daemons (likewise)
    # Appended to a row's read before it is changed in the same transaction: a claim or a
    # create stored by another daemon between the two is seen, not overwritten ('' if the
    # engine serialises writers).
    row_lock: str = ""
    # Text compares as its bytes (SQLite's BINARY), so one folder's rows are one range of the
    # path index; PostgreSQL's default collation orders "/" unlike that.
    byte_order: bool = False

    def q(self, sql: str) -> str:
        return sql if self.param == "?" else sql.replace("?", self.param)


def ddl(d: Dialect) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS jobs (
            id {d.id_column},
            path TEXT NOT NULL UNIQUE,
            size {d.bigint} NOT NULL,
            mtime_ns {d.bigint} NOT NULL,
            state TEXT NOT NULL,
            generation_id TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            polls INTEGER NOT NULL DEFAULT 0,
            submitted_at {d.real},
            next_at {d.real} NOT NULL DEFAULT 0,
            error TEXT,
            result TEXT,
            cost TEXT,
            service_seconds {d.real},
            backend TEXT,
            output_key TEXT,
            created_at {d.real} NOT NULL,
            updated_at {d.real} NOT NULL,
            finished_at {d.real},
            plan TEXT,
            owner TEXT,
            lease_until {d.real} NOT NULL DEFAULT 0,
            defers INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT,
            reused_from TEXT,
            timeline TEXT,
            request_key TEXT)""",
        "CREATE INDEX IF NOT EXISTS jobs_state_next ON jobs(state, next_at)",
        # A scan's read of a folder's rows (``unknown``) from the index alone: the path
        # index without them looked up each row in the table, 0.19 -> 0.10 s of CPU for
        # 100,000 rows. Only where a folder is one range (SQLite); a few bytes a row.
        *(["CREATE INDEX IF NOT EXISTS jobs_path_version ON jobs(path, size, mtime_ns)"]
          if d.byte_order else []),
        # One source per output name: two rows can never write the same transcript files.
        "CREATE UNIQUE INDEX IF NOT EXISTS jobs_output_key_unique ON jobs(output_key) "
        "WHERE output_key IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS jobs_generation ON jobs(generation_id)",
        "CREATE INDEX IF NOT EXISTS jobs_owner_state ON jobs(owner, state)",
        "CREATE INDEX IF NOT EXISTS jobs_sha256 ON jobs(sha256)",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS daemons (
            host_id TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            hostname TEXT NOT NULL,
            heartbeat {d.real} NOT NULL,
            info TEXT NOT NULL)""",
        # What was spent per UTC day ('YYYY-MM-DD'): the budget's ledger. Kept apart from the
        # jobs, so ``forget`` and re-admissions never make money already spent disappear.
        f"""CREATE TABLE IF NOT EXISTS spend_ledger (
            day TEXT PRIMARY KEY,
            usd {d.real} NOT NULL DEFAULT 0,
            audio_seconds {d.real} NOT NULL DEFAULT 0,
            creates INTEGER NOT NULL DEFAULT 0,
            updated_at {d.real} NOT NULL)""",
        # The completion hooks' outbox: one row per job that ended, written in the
        # transaction that ended it, deleted once delivered.
        f"""CREATE TABLE IF NOT EXISTS outbox (
            id TEXT PRIMARY KEY,
            job_id {d.bigint} NOT NULL,
            body TEXT NOT NULL,
            created_at {d.real} NOT NULL,
            next_at {d.real} NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            owner TEXT,
            last_error TEXT)""",
        "CREATE INDEX IF NOT EXISTS outbox_next ON outbox(next_at)",
    ]


def _job(row: Sequence[Any]) -> Job:
    r = dict(zip(COLUMNS, row, strict=True))
    return Job(
        id=int(r["id"]), path=r["path"], size=int(r["size"]), mtime_ns=int(r["mtime_ns"]),
        state=State(r["state"]), generation_id=r["generation_id"], attempts=r["attempts"],
        polls=r["polls"], submitted_at=r["submitted_at"], next_at=float(r["next_at"]),
        error=r["error"], result=unpack_result(r["result"]) if r["result"] else None,
        cost=json.loads(r["cost"]) if r["cost"] else None, created_at=r["created_at"],
        updated_at=r["updated_at"], finished_at=r["finished_at"], backend=r["backend"],
        output_key=r["output_key"],
        plan=Plan.from_json(json.loads(r["plan"])) if r["plan"] else None,
        owner=r["owner"], lease_until=float(r["lease_until"] or 0.0),
        defers=int(r["defers"] or 0), sha256=r["sha256"], reused_from=r["reused_from"],
        timeline=from_text(r["timeline"]), request_key=r["request_key"])


def _storable(text: str) -> bool:
    """Can ``text`` be a parameter (UTF-8)? A file name that is not is never asked about:
    admission says what is wrong with it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _marks(n: int) -> str:
    """Placeholders for ``IN (...)``; an empty list becomes a value no column holds, so
    ``IN`` is false and ``NOT IN`` true (``NOT IN (NULL)`` would be neither)."""
    return ",".join("?" * n) or "''"


class SqlStore(SearchSql, Store):
    """Schema, migrations and transitions over any engine with a ``Dialect``."""

    dialect: Dialect

    @abstractmethod
    def _tx(self, durable: bool = True) -> AbstractContextManager[Executor]:
        """One short write transaction. ``durable=False`` for the bookkeeping of the
        per-file hot path that costs nothing to redo (claims, leases, a next fetch time, the
        end of a job whose transcript is already on disk): committed like any other, so
        it survives the daemon being killed, but not synced to disk on its own; a power cut
        may roll it back, with the transactions after it, as far as the last durable one.
        What was paid for (a task's id and its result, bookings) is durable, and its
        sync carries every commit before it."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Executor]:
        """A read outside any write transaction."""

    # --- helpers -----------------------------------------------------------------------------

    def _x(self, x: Executor, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return x.execute(self.dialect.q(sql), tuple(args))

    def _select(self, where: str, args: Sequence[Any] = ()) -> list[Job]:
        with self._read() as x:
            rows = self._x(x, f"SELECT {_COLS} FROM jobs WHERE {where}", args).fetchall()
        return [self._job(r) for r in rows]

    def _fence(self, job: Job) -> tuple[str, tuple[Any, ...]]:
        """The job is still in the state, task, version and hands the caller saw."""
        eq = self.dialect.null_eq
        return (f" AND state=? AND generation_id {eq} ? AND size=? AND mtime_ns=? "
                f"AND owner {eq} ?",
                (job.state.value, job.generation_id, job.size, job.mtime_ns, job.owner))

    def _returning(self, x: Executor, sql: str, args: Sequence[Any]) -> list[Job]:
        return [self._job(r) for r in self._x(x, f"{sql} RETURNING {_COLS}", args).fetchall()]

    def _returning_with(self, x: Executor, sql: str, args: Sequence[Any],
                        result: Any) -> Job | None:
        """One job whose row was just given ``result`` (a decoded copy of what was written)."""
        rows = self._x(x, f"{sql} RETURNING {_COLS_BUT_RESULT}", args).fetchall()
        return replace(self._job(rows[0]), result=result) if rows else None

    # --- paths as this host sees them, keys as the store keeps them ----------------------------

    _keys: WatchKeys | None = None

    def _k(self, path: str) -> str:
        return path if self._keys is None else self._keys.to_key(path)

    def _l(self, key: str) -> str:
        return key if self._keys is None else self._keys.to_local(key)

    def _plan_text(self, plan: Plan) -> str:
        return json.dumps({**plan.to_json(), "root": self._k(plan.root)})

    def _job(self, row: Sequence[Any]) -> Job:
        job = _job(row)
        if self._keys is None:
            return job
        return replace(job, path=self._l(job.path),
                       output_key=None if job.output_key is None else self._l(job.output_key),
                       reused_from=None if job.reused_from is None else
                       self._l(job.reused_from),
                       plan=None if job.plan is None else replace(
                           job.plan, root=self._l(job.plan.root)))

    def key_by_watch(self, keys: WatchKeys, *, migrate: bool = False) -> int:
        self._keys = keys
        if not migrate:
            return 0
        moved = 0
        with self._tx() as x:
            if self.dialect.admit_lock:
                self._x(x, self.dialect.admit_lock)
            for name, root in keys.roots:  # the deepest folders first
                head, prefix = root.rstrip("/") + "/", keys.prefix(name)
                new = "? || substr({c}, ?)"
                args = (prefix, len(head) + 1)
                # A row another host already keyed (a shared store) wins over a stale copy.
                moved += self._x(
                    x, f"UPDATE jobs SET path={new.format(c='path')} WHERE substr(path, 1, ?)=?"
                       f" AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.path="
                       f"{new.format(c='jobs.path')})",
                    (*args, len(head), head, *args)).rowcount
                for column in ("output_key", "reused_from"):
                    self._x(x, f"UPDATE jobs SET {column}={new.format(c=column)} WHERE "
                               f"substr({column}, 1, ?)=? AND NOT EXISTS (SELECT 1 FROM jobs "
                               f"AS o WHERE o.{column}={new.format(c='jobs.' + column)})",
                            (*args, len(head), head, *args))
        return moved

    # --- schema ------------------------------------------------------------------------------

    def _migrate(self, x: Executor, existing_columns: set[str] | None,
                 version: int | None) -> None:
        """Bring the schema to ``SCHEMA_VERSION``. A store from before versions (0.1.0's state
        file) is version 1; a newer one than this program knows is refused, not guessed at."""
        d = self.dialect
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.location} was written by a newer sttwatch (schema {version}; this one "
                f"knows {SCHEMA_VERSION}): upgrade sttwatch, or point state.path elsewhere")
        if existing_columns:  # a version-1 jobs table: add what version 2 keeps per job
            for column, kind in (("backend", "TEXT"), ("output_key", "TEXT"),
                                 ("plan", "TEXT"), ("owner", "TEXT"),
                                 ("lease_until", f"{d.real} NOT NULL DEFAULT 0"),
                                 ("service_seconds", d.real),
                                 ("defers", "INTEGER NOT NULL DEFAULT 0"),
                                 ("sha256", "TEXT"), ("reused_from", "TEXT"),
                                 ("timeline", "TEXT"), ("request_key", "TEXT")):
                if column not in existing_columns:
                    self._x(x, f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            # Version 1 set the backend at submission; tasks then in flight keep theirs.
            self._x(x, "UPDATE jobs SET backend=CASE WHEN substr(generation_id, 1, 6)="
                       "'local-' THEN 'local' ELSE 'aimlapi' END WHERE backend IS NULL AND "
                       "state IN ('submitting', 'pending')")
        if existing_columns and (version or 1) < 3:
            self._migrate_to_3(x)
        if existing_columns and version is not None and \
                SEARCH_VERSION <= version < POSITIONLESS_VERSION:
            self._migrate_search_to_5(x)
        if existing_columns and version is not None and \
                SEARCH_VERSION <= version < BLOOM_VERSION:
            self._migrate_search_to_6(x)
        fts5 = d.name != "sqlite" or has_fts5(x)
        for stmt in [*ddl(d), *search_ddl(d.name, fts5)]:
            self._x(x, stmt)
        self._x(x, "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT"
                   "(key) DO UPDATE SET value=excluded.value", (str(SCHEMA_VERSION),))

    def _migrate_to_3(self, x: Executor) -> None:
        """Version 3: output names become unique (a name two rows shared stays with the older
        row; the newer one finds a free name when it is next admitted), and each row gets the
        key its result is reused under (``Plan.reuse_key``)."""
        self._x(x, "DROP INDEX IF EXISTS jobs_output_key")
        self._x(x, "UPDATE jobs SET output_key=NULL WHERE output_key IS NOT NULL AND id NOT IN "
                   "(SELECT MIN(id) FROM jobs WHERE output_key IS NOT NULL GROUP BY output_key)")
        for job_id, raw in self._x(x, "SELECT id, plan FROM jobs WHERE plan IS NOT NULL AND "
                                      "request_key IS NULL").fetchall():
            self._x(x, "UPDATE jobs SET request_key=? WHERE id=?",
                    (Plan.from_json(json.loads(raw)).reuse_key(), job_id))

    # --- discovery ---------------------------------------------------------------------------

    def get(self, path: str) -> Job | None:
        found = self._select("path = ?", (self._k(path),))
        return found[0] if found else None

    def _rows_where_in(self, select: str, column: str, keys: Sequence[str]) -> list[Any]:
        """``SELECT select FROM jobs WHERE column IN keys`` for many keys in one read, 500 at
        a time (SQLite's bound-parameter limit): admission asks this per batch, never per
        file."""
        with self._read() as x:
            return self._rows_in(x, select, column, [self._k(k) for k in keys])

    def _rows_in(self, x: Executor, select: str, column: str, keys: Sequence[str]
                 ) -> list[Any]:
        """The same within ``x`` (a transaction under a lock, say), for keys as stored."""
        rows: list[Any] = []
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows += self._x(x, f"SELECT {select} FROM jobs WHERE {column} IN "
                               f"({_marks(len(part))})", part).fetchall()
        return rows

    def versions(self, paths: Sequence[str]) -> dict[str, tuple[int, int]]:
        return {self._l(path): (int(size), int(mtime)) for path, size, mtime
                in self._rows_where_in("path, size, mtime_ns", "path", paths)}

    def unknown(self, listings: Sequence[Sequence[tuple[str, int, int]]]
                ) -> list[tuple[str, int, int]]:
        """A folder with many files (where paths compare as bytes) is read as one range of
        the path index, rows in order, about half the cost of looking each path up; the
        rest are looked up together. Rows come back as the listing's own (path, size,
        mtime_ns) tuples, so the compare is one set lookup a file, in C."""
        looked: list[str] = []
        ranged: list[str] = []
        for files in listings:
            if self.dialect.byte_order and len(files) >= RANGE_AT:
                folder = files[0][0].rpartition("/")[0]
                if _storable(folder):  # a folder whose name is not UTF-8: none of it held
                    ranged.append(folder)
            else:
                looked += [f[0] for f in files if _storable(f[0])]
        rows = self._rows_where_in("path, size, mtime_ns", "path", looked)
        if ranged:
            with self._read() as x:
                for folder in ranged:
                    low = self._k(folder) + "/" if folder else "/"
                    # Rows directly in the folder: from "folder/" up to "folder0" ("0"
                    # follows "/"), not those of the folders below it.
                    rows += self._x(x, "SELECT path, size, mtime_ns FROM jobs WHERE path >= ? "
                                       "AND path < ? AND instr(substr(path, ?), '/') = 0",
                                    (low, low[:-1] + "0", len(low) + 1)).fetchall()
        # Rows are tuples, and 1000 == 1000.0 hashes alike: no conversion unless keyed.
        held: set[tuple[str, int, int]] = set(rows) if self._keys is None else {
            (self._l(p), s, m) for p, s, m in rows}
        return [f for files in listings for f in files if f not in held]

    def _free_key(self, x: Executor, keys: Sequence[str], path: str,
                  own: str | None) -> str | None:
        """The first of ``keys`` no other source holds (``own``, the row's current name, when
        it is among them); None when every one is held: never a name another source has."""
        if own is not None and own in keys:
            return own
        for key in keys:
            if self._x(x, "SELECT 1 FROM jobs WHERE output_key=? AND path!=?",
                       (key, path)).fetchone() is None:
                return key
        return None

    def output_holders(self, keys: Sequence[str]) -> dict[str, str]:
        return {self._l(str(key)): self._l(str(path)) for key, path
                in self._rows_where_in("output_key, path", "output_key", keys)}

    def known_sha256(self, paths: Sequence[str]) -> dict[str, str]:
        return {self._l(str(path)): str(digest) for path, digest
                in self._rows_where_in("path, sha256", "path", paths) if digest is not None}

    def admit(self, batch: Sequence[Admission], now: float, owner: str | None = None
              ) -> list[Job]:
        admitted: list[int] = []
        with self._tx() as x:
            if self.dialect.admit_lock:
                self._x(x, self.dialect.admit_lock)
                batch = self._not_admitted(x, batch)
            for given in batch:
                a = replace(given, path=self._k(given.path),
                            keys=tuple(self._k(k) for k in given.keys))
                # Locked: the admission lock does not hold off another daemon's claim or
                # create, which would otherwise be reset by the update below (and sent twice).
                row = self._x(x, "SELECT id, size, mtime_ns, output_key, state, owner, "
                                 "lease_until, sha256 FROM jobs WHERE path=?"
                                 + self.dialect.row_lock, (a.path,)).fetchone()
                plan = self._plan_text(a.plan)
                reuse = a.plan.reuse_key()
                if row is None:
                    key = self._free_key(x, a.keys, a.path, None)
                    if a.keys and key is None:
                        continue  # every name is another's: offered again at the next scan
                    if a.done_note is not None and (not a.keys or key == a.keys[0]):
                        self._x(x, "INSERT INTO jobs (path, size, mtime_ns, state, error, "
                                   "backend, output_key, plan, request_key, created_at, "
                                   "updated_at, finished_at) VALUES (?, ?, ?, 'done', ?, ?, ?, "
                                   "?, ?, ?, ?, ?) ON CONFLICT(path) DO NOTHING",
                                (a.path, a.size, a.mtime_ns, a.done_note, a.plan.backend, key,
                                 plan, reuse, now, now, now))
                        continue
                    # (A done offer whose transcripts are another source's is queued.)
                    got = self._x(x, "INSERT INTO jobs (path, size, mtime_ns, state, next_at, "
                                     "backend, output_key, plan, request_key, created_at, "
                                     "updated_at) VALUES (?, ?, ?, 'seen', 0, ?, ?, ?, ?, ?, ?) "
                                     "ON CONFLICT(path) DO NOTHING RETURNING id",
                                  (a.path, a.size, a.mtime_ns, a.plan.backend, key, plan,
                                   reuse, now, now)).fetchone()
                    if got is not None:
                        admitted.append(int(got[0]))
                    continue
                job_id, size, mtime, own, state, holder, lease_until, digest = row
                size, mtime = int(size), int(mtime)
                if a.done_note is not None or (size, mtime) == (a.size, a.mtime_ns):
                    continue
                # Versions move forward only: an older mtime is another host's (or a stale
                # cache's) view of the version this row already has.
                if a.mtime_ns < mtime or (a.mtime_ns == mtime and a.size == size):
                    continue
                held = state in CLAIMED_STATES and float(lease_until or 0) >= now
                if held and holder != owner:
                    continue  # another daemon's job is never reset under it
                if state == "submitting" and held and digest is None:
                    # A create in flight (this host's own, too): a newer view is no evidence
                    # of new bytes yet; once the create is stored with its digest, the next
                    # scan hashes and decides. Resetting now would send the file twice.
                    continue
                if a.digest_read and a.sha256 is None and digest is not None:
                    # Its digest came after the offer's read: hashing decides, at the next
                    # scan, whether these are new bytes; resetting now could send it twice.
                    continue
                if a.sha256 is not None and a.sha256 == digest:
                    if not held:  # the same bytes: the row keeps its result and its state
                        self._x(x, "UPDATE jobs SET size=?, mtime_ns=?, updated_at=? WHERE "
                                   "id=?", (a.size, a.mtime_ns, now, job_id))
                    continue
                key = self._free_key(x, a.keys, a.path, own)
                self._x(x, "UPDATE jobs SET size=?, mtime_ns=?, state='seen', "
                           "generation_id=NULL, attempts=0, polls=0, next_at=0, error=NULL, "
                           "result=NULL, cost=NULL, service_seconds=NULL, timeline=NULL, "
                           "submitted_at=NULL, sha256=NULL, reused_from=NULL,"
                           " finished_at=NULL, owner=NULL, lease_until=0, defers=0, backend=?, "
                           "output_key=?, plan=?, request_key=?, updated_at=? WHERE id=?",
                        (a.size, a.mtime_ns, a.plan.backend, key, plan, reuse, now, job_id))
                admitted.append(int(job_id))
        if not admitted:
            return []
        return self._select(f"id IN ({_marks(len(admitted))}) ORDER BY id", admitted)

    def _not_admitted(self, x: Executor, batch: Sequence[Admission]) -> list[Admission]:
        """The offers another daemon has not already taken, read under the admission lock
        in one look per 500 paths. Daemons watching one folder see each new file together
        and admit it together: all but the first find its row there at this version, which
        the per-row read below would tell each of them file by file (a locked read a file,
        on every daemon). Kept: offers with no row, and those the row reads below decide
        (a newer version, a changed size); dropped as below: a done offer whose path has a
        row, and a version the row already has or has passed."""
        paths = [self._k(a.path) for a in batch]
        have = {str(p): (int(size), int(mtime)) for p, size, mtime
                in self._rows_in(x, "path, size, mtime_ns", "path", paths)}
        kept = []
        for a, path in zip(batch, paths, strict=True):
            row = have.get(path)
            if row is not None and (a.done_note is not None or a.mtime_ns < row[1] or (
                    a.mtime_ns == row[1] and a.size == row[0])):
                continue
            kept.append(a)
        return kept

    def add_done(self, path: str, size: int, mtime_ns: int, now: float, note: str) -> None:
        with self._tx() as x:
            self._x(x, "INSERT INTO jobs (path, size, mtime_ns, state, error, created_at, "
                       "updated_at, finished_at) VALUES (?, ?, ?, 'done', ?, ?, ?, ?) "
                       "ON CONFLICT(path) DO NOTHING", (path, size, mtime_ns, note, now, now, now))

    def output_holder(self, key: str) -> str | None:
        with self._read() as x:
            row = self._x(x, "SELECT path FROM jobs WHERE output_key=? LIMIT 1",
                          (self._k(key),)).fetchone()
        return None if row is None else self._l(str(row[0]))

    # --- the lease -----------------------------------------------------------------------------

    def recover(self, owner: str, now: float, lease: float, volatile: Iterable[str],
                default_backend: str | None = None) -> dict[str, int]:
        vol = list(volatile)
        g = self.dialect.greatest
        with self._tx() as x:
            if default_backend is not None:
                self._x(x, "UPDATE jobs SET backend=? WHERE backend IS NULL AND state='seen'",
                        (default_backend,))
            resubmit = self._x(x, "UPDATE jobs SET state='seen', owner=NULL, lease_until=0, "
                                  "next_at=0, updated_at=? WHERE state='submitting' AND owner=?",
                               (now, owner)).rowcount
            requeue = self._x(x, f"UPDATE jobs SET state='seen', generation_id=NULL, owner=NULL,"
                                 f" lease_until=0, attempts={g}(attempts-1, 0), next_at=0, "
                                 f"updated_at=? WHERE state='pending' AND owner=? AND backend "
                                 f"IN ({_marks(len(vol))})", (now, owner, *vol)).rowcount
            resume = self._x(x, "UPDATE jobs SET next_at=?, lease_until=? WHERE owner=? AND "
                                "state IN ('pending', 'fetched')",
                             (now, now + lease, owner)).rowcount
        return {"resubmit": resubmit + requeue, "resume": resume}

    def reap(self, owner: str, now: float, volatile: Iterable[str]) -> dict[str, int]:
        vol = list(volatile)
        g = self.dialect.greatest
        with self._tx() as x:
            creates = self._x(x, "UPDATE jobs SET state='seen', owner=NULL, lease_until=0, "
                                 "next_at=0, updated_at=? WHERE state='submitting' AND "
                                 "lease_until < ? AND owner != ?", (now, now, owner)).rowcount
            ids = self._x(x, f"UPDATE jobs SET state='seen', generation_id=NULL, owner=NULL, "
                             f"lease_until=0, attempts={g}(attempts-1, 0), next_at=0, "
                             f"updated_at=? WHERE state='pending' AND lease_until < ? AND "
                             f"owner != ? AND backend IN ({_marks(len(vol))})",
                          (now, now, owner, *vol)).rowcount
        return {"creates": creates, "local_ids": ids}

    def renew(self, owner: str, now: float, lease: float) -> int:
        with self._tx(durable=False) as x:
            return self._x(x, f"UPDATE jobs SET lease_until=? WHERE owner=? AND state IN "
                              f"{_CLAIMED}", (now + lease, owner)).rowcount

    # --- submitting ----------------------------------------------------------------------------

    def claim_submit(self, owner: str, now: float, lease: float,
                     backends: Sequence[str]) -> Job | None:
        if not backends:
            return None
        with self._tx(durable=False) as x:
            got = self._returning(
                x, "UPDATE jobs SET state='submitting', attempts=attempts+1, owner=?, "
                   "lease_until=?, updated_at=? WHERE id IN (SELECT id FROM jobs WHERE "
                   f"state='seen' AND next_at <= ? AND backend IN ({_marks(len(backends))}) "
                   f"ORDER BY next_at, id LIMIT 1{self.dialect.skip_locked})",
                (owner, now + lease, now, now, *backends))
        return got[0] if got else None

    def set_pending(self, job: Job, generation_id: str, now: float, first_poll_at: float,
                    cost: Mapping[str, str] | None, sha256: str | None = None,
                    timeline: Timeline | None = None, spend: Spend | None = None
                    ) -> Job | None:
        fence, args = self._fence(job)
        with self._tx() as x:
            got = self._returning(
                x, "UPDATE jobs SET state='pending', generation_id=?, submitted_at=?, "
                   "next_at=?, polls=0, cost=?, sha256=?, timeline=?, updated_at=? WHERE id=?"
                   + fence,
                (generation_id, now, first_poll_at, json.dumps(dict(cost)) if cost else None,
                 sha256, to_text(timeline), now, job.id, *args))
            if spend is not None:
                self._add_spend(x, spend.day, spend.usd, spend.audio_seconds, spend.creates,
                                now)
        return got[0] if got else None

    def find_result(self, sha256: str, backend: str, exclude: int) -> Job | None:
        found = self._select("sha256=? AND backend=? AND state='done' AND result IS NOT NULL "
                             "AND id!=? ORDER BY finished_at DESC LIMIT 1",
                             (sha256, backend, exclude))
        return found[0] if found else None

    def find_result_for(self, sha256: str, request_key: str, exclude: int) -> Job | None:
        found = self._select("sha256=? AND request_key=? AND state='done' AND result IS NOT "
                             "NULL AND id!=? ORDER BY finished_at DESC LIMIT 1",
                             (sha256, request_key, exclude))
        return found[0] if found else None

    def adopt(self, job: Job, donor: Job, sha256: str, now: float) -> Job | None:
        fence, args = self._fence(job)
        g = self.dialect.greatest
        text, copy = pack(donor.result or {})
        with self._tx() as x:
            return self._returning_with(
                x, f"UPDATE jobs SET state='fetched', result=?, generation_id=?, sha256=?, "
                   f"reused_from=?, cost=NULL, attempts={g}(attempts-1, 0), submitted_at=?, "
                   f"timeline=?, next_at=?, updated_at=? WHERE id=?" + fence,
                (text, donor.generation_id, sha256, self._k(donor.path), now,
                 to_text(donor.timeline), now, now, job.id, *args), copy)

    def reused(self) -> int:
        with self._read() as x:
            row = self._x(x, "SELECT COUNT(*) FROM jobs WHERE reused_from IS NOT NULL"
                          ).fetchone()
        return int(row[0])

    def requeue(self, job: Job, now: float, not_before: float, reason: str, *,
                refund_attempt: bool = False) -> bool:
        refund = f"attempts={self.dialect.greatest}(attempts-1, 0), " if refund_attempt else ""
        fence, args = self._fence(job)
        with self._tx() as x:
            return self._x(
                x, f"UPDATE jobs SET state='seen', generation_id=NULL, owner=NULL, "
                   f"lease_until=0, {refund}next_at=?, error=?, updated_at=? WHERE id=? AND "
                   f"state IN ('submitting', 'pending'){fence}",
                (not_before, reason, now, job.id, *args)).rowcount == 1

    def in_flight(self, owner: str) -> dict[str, int]:
        with self._read() as x:
            rows = self._x(x, "SELECT backend, COUNT(*) FROM jobs WHERE owner=? AND state IN "
                              "('submitting', 'pending') GROUP BY backend", (owner,)).fetchall()
        return {str(b): int(n) for b, n in rows}

    # --- polling -------------------------------------------------------------------------------

    def claim_poll(self, owner: str, now: float, lease: float, limit: int,
                   volatile: Iterable[str], backends: Sequence[str]) -> list[Job]:
        if not backends or limit <= 0:
            return []
        with self._tx(durable=False) as x:
            return self._claim_poll(x, owner, now, lease, limit, list(volatile), backends)

    def claim_poll_due(self, owner: str, now: float, lease: float, limit: int,
                       volatile: Iterable[str], backends: Sequence[str]) -> Claim:
        if not backends:
            return Claim([], None)
        with self._tx(durable=False) as x:
            jobs = (self._claim_poll(x, owner, now, lease, limit, list(volatile), backends)
                    if limit > 0 else [])
            return Claim(jobs, self._next_due(x, State.PENDING, backends, owner))

    def _claim_poll(self, x: Executor, owner: str, now: float, lease: float, limit: int,
                    vol: list[str], backends: Sequence[str]) -> list[Job]:
        return self._returning(
            x, "UPDATE jobs SET owner=?, lease_until=?, next_at=? WHERE id IN (SELECT id "
               "FROM jobs WHERE state='pending' AND next_at <= ? AND (owner=? OR "
               f"(lease_until < ? AND backend NOT IN ({_marks(len(vol))}))) AND backend IN "
               f"({_marks(len(backends))}) ORDER BY next_at LIMIT ?"
               f"{self.dialect.skip_locked})",
            (owner, now + lease, now + lease, now, owner, now, *vol, *backends, limit))

    def by_generation_id(self, owner: str, generation_id: str) -> Job | None:
        found = self._select("generation_id=? AND state='pending' AND owner=?",
                             (generation_id, owner))
        return found[0] if found else None

    def schedule_poll(self, job: Job, next_at: float, now: float) -> bool:
        fence, args = self._fence(job)
        with self._tx(durable=False) as x:
            return self._x(x, "UPDATE jobs SET next_at=?, polls=polls+1, updated_at=? WHERE "
                              "id=?" + fence, (next_at, now, job.id, *args)).rowcount == 1

    def set_fetched(self, job: Job, result: Mapping[str, Any], now: float,
                    service_seconds: float) -> Job | None:
        fence, args = self._fence(job)
        text, copy = pack(result)
        with self._tx() as x:
            return self._returning_with(
                x, "UPDATE jobs SET state='fetched', result=?, polls=polls+1, service_seconds=?,"
                   " next_at=?, updated_at=? WHERE id=?" + fence,
                (text, service_seconds, now, now, job.id, *args), copy)

    def recent_service_seconds(self, n: int = 32) -> list[float]:
        with self._read() as x:
            rows = self._x(x, "SELECT service_seconds FROM jobs WHERE service_seconds IS NOT "
                              "NULL ORDER BY updated_at DESC LIMIT ?", (n,)).fetchall()
        return [float(r[0]) for r in rows]

    # --- finishing -----------------------------------------------------------------------------

    def claim_finish(self, owner: str, now: float, lease: float, limit: int) -> list[Job]:
        with self._tx(durable=False) as x:
            return self._claim_finish(x, owner, now, lease, limit)

    def claim_finish_due(self, owner: str, now: float, lease: float, limit: int) -> Claim:
        with self._tx(durable=False) as x:
            jobs = self._claim_finish(x, owner, now, lease, limit)
            return Claim(jobs, self._next_due(x, State.FETCHED, None, owner))

    def _claim_finish(self, x: Executor, owner: str, now: float, lease: float,
                      limit: int) -> list[Job]:
        return self._returning(
            x, "UPDATE jobs SET owner=?, lease_until=?, next_at=? WHERE id IN (SELECT id "
               "FROM jobs WHERE state='fetched' AND next_at <= ? AND (owner=? OR "
               f"lease_until < ?) ORDER BY next_at LIMIT ?{self.dialect.skip_locked})",
            (owner, now + lease, now + lease, now, owner, now, limit))

    def defer(self, job: Job, until: float, reason: str, now: float) -> bool:
        fence, args = self._fence(job)
        with self._tx() as x:
            return self._x(x, "UPDATE jobs SET next_at=?, error=?, defers=defers+1, updated_at=? "
                              "WHERE id=?" + fence,
                           (until, reason, now, job.id, *args)).rowcount == 1

    def mark_done(self, job: Job, now: float, note: str | None = None,
                  event: Mapping[str, Any] | None = None,
                  index: Indexing | None = None) -> bool:
        return self._end(job, "done", "('fetched')", note, now, event, index)

    def mark_failed(self, job: Job, reason: str, now: float,
                    event: Mapping[str, Any] | None = None) -> bool:
        return self._end(job, "failed", "('seen', 'submitting', 'pending', 'fetched')", reason,
                         now, event)

    def _end(self, job: Job, state: str, allowed: str, error: str | None, now: float,
             event: Mapping[str, Any] | None, index: Indexing | None = None) -> bool:
        """A job ends, and its hooks' event is written in the same transaction (the outbox),
        with its search entries (one commit: each is an fsync on SQLite)."""
        fence, args = self._fence(job)
        parts = self._index_parts(index) if index is not None else None
        # A done job's transcript is on disk already: redone at no cost if a power cut
        # takes this commit back. A failure is durable (redone, it could be paid twice).
        with self._tx(durable=state != "done") as x:
            ended = self._x(x, f"UPDATE jobs SET state='{state}', error=?, finished_at=?, "
                               f"updated_at=?, owner=NULL, lease_until=0 WHERE id=? AND state "
                               f"IN {allowed}" + fence,
                            (error, now, now, job.id, *args)).rowcount == 1
            if ended and event is not None:
                self._put_event(x, job, event, now)
            if ended and index is not None and parts is not None:
                self._index_within(x, index, parts)
            return ended

    def _put_event(self, x: Executor, job: Job, event: Mapping[str, Any], now: float) -> None:
        self._x(x, "INSERT INTO outbox (id, job_id, body, created_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT(id) DO NOTHING",
                (str(event["event_id"]), job.id, json.dumps(dict(event)), now))

    # --- the outbox ----------------------------------------------------------------------------

    def claim_event(self, owner: str, now: float, lease: float) -> OutboxEvent | None:
        with self._tx() as x:
            rows = self._x(
                x, "UPDATE outbox SET owner=?, next_at=? WHERE id IN (SELECT id FROM outbox "
                   "WHERE next_at <= ? OR owner=? ORDER BY created_at, id LIMIT 1"
                   f"{self.dialect.skip_locked}) RETURNING id, job_id, body, created_at, "
                   "attempts, last_error", (owner, now + lease, now, owner)).fetchall()
        if not rows:
            return None
        i, job_id, body, created, attempts, err = rows[0]
        return OutboxEvent(str(i), int(job_id), json.loads(body), float(created),
                           int(attempts), err)

    def event_delivered(self, event_id: str, owner: str | None = None) -> bool:
        fence = "" if owner is None else " AND owner=?"
        with self._tx() as x:
            return self._x(x, "DELETE FROM outbox WHERE id=?" + fence,
                           (event_id, *(() if owner is None else (owner,)))).rowcount == 1

    def event_retry(self, event_id: str, next_at: float, error: str,
                    owner: str | None = None) -> bool:
        fence = "" if owner is None else " AND owner=?"
        with self._tx() as x:
            return self._x(x, "UPDATE outbox SET next_at=?, attempts=attempts+1, owner=NULL, "
                              "last_error=? WHERE id=?" + fence,
                           (next_at, error, event_id,
                            *(() if owner is None else (owner,)))).rowcount == 1

    def outbox(self) -> dict[str, Any]:
        with self._read() as x:
            n, oldest = self._x(x, "SELECT COUNT(*), MIN(created_at) FROM outbox").fetchone()
            last = self._x(x, "SELECT last_error, attempts FROM outbox WHERE last_error IS NOT "
                              "NULL ORDER BY created_at LIMIT 1").fetchone()
        return {"undelivered": int(n), "oldest_created_at": None if oldest is None
                else float(oldest), "last_error": None if last is None else str(last[0]),
                "attempts": 0 if last is None else int(last[1])}

    # --- the budget ----------------------------------------------------------------------------

    def add_spend(self, day: str, usd: float, audio_seconds: float, now: float) -> None:
        with self._tx() as x:
            self._add_spend(x, day, usd, audio_seconds, 1, now)

    def charge_within(self, day: str, month_start: str, usd: float, audio_seconds: float,
                      now: float, *, usd_per_day: float | None = None,
                      usd_per_month: float | None = None,
                      audio_seconds_per_day: float | None = None) -> str | None:
        with self._tx() as x:
            if self.dialect.ledger_lock:
                self._x(x, self.dialect.ledger_lock)
            today = self._x(x, "SELECT usd, audio_seconds FROM spend_ledger WHERE day=?",
                            (day,)).fetchone()
            month = self._x(x, "SELECT COALESCE(SUM(usd), 0) FROM spend_ledger WHERE day >= ? "
                               "AND day <= ?", (month_start, day)).fetchone()
            usd_today, secs_today = (0.0, 0.0) if today is None else (float(today[0]),
                                                                       float(today[1]))
            for name, limit, spent, more in (
                    ("usd_per_day", usd_per_day, usd_today, usd),
                    ("usd_per_month", usd_per_month, float(month[0]), usd),
                    ("audio_hours_per_day", audio_seconds_per_day, secs_today, audio_seconds)):
                # Nothing known to add (a URL's length): held once the cap is reached.
                if limit is not None and (spent + more > limit or (more <= 0 and
                                                                   spent >= limit)):
                    return name
            self._add_spend(x, day, usd, audio_seconds, 1, now)
        return None

    def adjust_spend(self, day: str, usd: float, audio_seconds: float, creates: int,
                     now: float) -> None:
        with self._tx() as x:
            self._add_spend(x, day, usd, audio_seconds, creates, now)

    def _add_spend(self, x: Executor, day: str, usd: float, audio_seconds: float,
                   creates: int, now: float) -> None:
        self._x(x, "INSERT INTO spend_ledger (day, usd, audio_seconds, creates, updated_at) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT(day) DO UPDATE SET "
                   "usd=spend_ledger.usd+excluded.usd, audio_seconds=spend_ledger."
                   "audio_seconds+excluded.audio_seconds, creates=spend_ledger.creates+"
                   "excluded.creates, updated_at=excluded.updated_at",
                (day, usd, audio_seconds, creates, now))

    def spend_by_day(self, since: str) -> dict[str, tuple[float, float, int]]:
        with self._read() as x:
            rows = self._x(x, "SELECT day, usd, audio_seconds, creates FROM spend_ledger WHERE "
                              "day >= ? ORDER BY day", (since,)).fetchall()
        return {str(d): (float(u), float(s), int(n)) for d, u, s, n in rows}

    def switch_backend(self, job: Job, plan: Plan, now: float) -> bool:
        fence, args = self._fence(job)
        g = self.dialect.greatest
        with self._tx() as x:
            return self._x(
                x, f"UPDATE jobs SET backend=?, plan=?, request_key=?, state='seen', owner=NULL, "
                   f"lease_until=0, attempts={g}(attempts-1, 0), next_at=0, updated_at=? WHERE "
                   f"id=? AND state='submitting'" + fence,
                (plan.backend, self._plan_text(plan), plan.reuse_key(), now, job.id,
                 *args)).rowcount == 1

    # --- operators -----------------------------------------------------------------------------

    def retry(self, now: float, paths: Iterable[str] | None = None, *,
              keep_plan: bool = False) -> int:
        reset = ("state='seen', attempts=0, next_at=0, generation_id=NULL, owner=NULL, "
                 "lease_until=0, defers=0, error=NULL, finished_at=NULL, updated_at=?")
        if not keep_plan:  # the running daemon plans it again with today's config
            reset += ", backend=NULL, plan=NULL"
        with self._tx() as x:
            if paths is None:
                return self._x(x, f"UPDATE jobs SET {reset} WHERE state='failed'",
                               (now,)).rowcount
            # A job inside its create or with a task out belongs to a daemon and to a paid
            # task: left alone (retrying it would orphan the task and pay twice).
            return sum(self._x(x, f"UPDATE jobs SET {reset}, result=NULL, sha256=NULL WHERE "
                                  "path=? AND state NOT IN ('submitting', 'pending')",
                               (now, self._k(p))).rowcount for p in paths)

    def stranded(self, backends: Sequence[str], limit: int = 100) -> list[Job]:
        return self._select(
            "state='seen' AND (backend IS NULL OR plan IS NULL OR backend NOT IN "
            f"({_marks(len(backends))})) ORDER BY id LIMIT ?", (*backends, limit)) \
            if backends else []

    def replan(self, job: Job, plan: Plan, now: float) -> bool:
        with self._tx() as x:
            return self._x(
                x, "UPDATE jobs SET backend=?, plan=?, updated_at=? WHERE id=? AND "
                   f"state='seen' AND backend {self.dialect.null_eq} ?",
                (plan.backend, json.dumps(plan.to_json()), now, job.id, job.backend)
            ).rowcount == 1

    def waiting_for_backend(self, backends: Sequence[str],
                            states: Sequence[State] = (State.SEEN, State.PENDING)
                            ) -> dict[str, int]:
        with self._read() as x:
            rows = self._x(x, f"SELECT backend, COUNT(*) FROM jobs WHERE state IN "
                              f"({_marks(len(states))}) AND backend NOT IN "
                              f"({_marks(len(backends))}) GROUP BY backend",
                           (*(st.value for st in states), *backends)).fetchall()
        return {str(b): int(n) for b, n in rows}

    def rerender(self, now: float, paths: Iterable[str] | None = None) -> int:
        back = ("UPDATE jobs SET state='fetched', next_at=0, owner=NULL, lease_until=0, "
                "defers=0, finished_at=NULL, updated_at=? WHERE state='failed' AND result IS "
                "NOT NULL")
        with self._tx() as x:
            if paths is None:
                return self._x(x, back, (now,)).rowcount
            return sum(self._x(x, back + " AND path=?", (now, self._k(p))).rowcount
                       for p in paths)

    def forget(self, paths: Iterable[str]) -> int:
        n = 0
        with self._tx() as x:
            for p in paths:
                self._drop_search(x, p)  # its search entries go with it (indexed by this path)
                n += self._x(x, "DELETE FROM jobs WHERE path=?", (self._k(p),)).rowcount
        return n

    def counts(self, states: Sequence[State] | None = None) -> dict[str, int]:
        where = "" if states is None else f" WHERE state IN ({_marks(len(states))})"
        with self._read() as x:
            rows = self._x(x, f"SELECT state, COUNT(*) FROM jobs{where} GROUP BY state",
                           [s.value for s in states or ()]).fetchall()
        return {s.value: 0 for s in State} | {str(r[0]): int(r[1]) for r in rows}

    def next_due(self, state: State, backends: Sequence[str] | None = None,
                 owner: str | None = None) -> float | None:
        with self._read() as x:
            return self._next_due(x, state, backends, owner)

    def _next_due(self, x: Executor, state: State, backends: Sequence[str] | None,
                  owner: str | None) -> float | None:
        where, args = "state=?", [state.value]
        if backends is not None:
            if not backends:
                return None
            where += f" AND backend IN ({_marks(len(backends))})"
            args += list(backends)
        due = "next_at"
        if owner is not None:  # another daemon's row is ours to take when its lease ends
            due = (f"CASE WHEN owner IS NULL OR owner=? THEN next_at ELSE "
                   f"{self.dialect.greatest}(next_at, lease_until) END")
            args.insert(0, owner)
        row = self._x(x, f"SELECT MIN({due}) FROM jobs WHERE {where}", args).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def failed(self, limit: int = 20) -> list[Job]:
        return self._select("state='failed' ORDER BY finished_at DESC LIMIT ?", (limit,))

    def noted(self, limit: int = 20) -> list[Job]:
        return self._select("state='done' AND error IS NOT NULL ORDER BY finished_at DESC "
                            "LIMIT ?", (limit,))

    def oldest_unfinished(self) -> Job | None:
        found = self._select("state IN ('seen', 'submitting', 'pending', 'fetched') "
                             "ORDER BY created_at LIMIT 1")
        return found[0] if found else None

    def spend(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        with self._read() as x:
            rows = self._x(x, "SELECT cost FROM jobs WHERE cost IS NOT NULL").fetchall()
        for (raw,) in rows:
            for name, value in json.loads(raw).items():
                try:
                    totals[name] = totals.get(name, 0.0) + float(value)
                except ValueError:
                    continue
        return totals

    # --- daemons -------------------------------------------------------------------------------

    def heartbeat(self, host_id: str, pid: int, hostname: str, now: float,
                  info: Mapping[str, Any]) -> None:
        with self._tx(durable=False) as x:
            self._x(x, "INSERT INTO daemons (host_id, pid, hostname, heartbeat, info) VALUES "
                       "(?, ?, ?, ?, ?) ON CONFLICT(host_id) DO UPDATE SET pid=excluded.pid, "
                       "hostname=excluded.hostname, heartbeat=excluded.heartbeat, "
                       "info=excluded.info", (host_id, pid, hostname, now, json.dumps(info)))

    def register(self, host_id: str, pid: int, hostname: str, now: float,
                 stale_after: float) -> DaemonInfo | None:
        with self._tx() as x:
            took = self._x(
                x, "INSERT INTO daemons (host_id, pid, hostname, heartbeat, info) VALUES "
                   "(?, ?, ?, ?, '{}') ON CONFLICT(host_id) DO UPDATE SET pid=excluded.pid, "
                   "hostname=excluded.hostname, heartbeat=excluded.heartbeat, "
                   "info=excluded.info WHERE daemons.heartbeat < ? OR (daemons.pid="
                   "excluded.pid AND daemons.hostname=excluded.hostname)",
                (host_id, pid, hostname, now, now - stale_after)).rowcount
        if took:
            return None
        return next((d for d in self.daemons() if d.host_id == host_id), None)

    def leave(self, host_id: str) -> None:
        with self._tx() as x:
            self._x(x, "DELETE FROM daemons WHERE host_id=?", (host_id,))

    def daemons(self) -> list[DaemonInfo]:
        with self._read() as x:
            rows = self._x(x, "SELECT host_id, pid, hostname, heartbeat, info FROM daemons "
                              "ORDER BY host_id").fetchall()
        return [DaemonInfo(str(h), int(p), str(n), float(b), json.loads(i))
                for h, p, n, b, i in rows]
