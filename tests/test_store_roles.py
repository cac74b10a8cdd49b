"""The store's other roles (sttwatch/store/roles.py): the spend ledger, the hooks' outbox and
the daemons' registry, plus the schema under concurrent upgrades; every test against a real
SQLite file and a real PostgreSQL server, as in tests/test_store.py (the job transitions)."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stores import PG_URL, STORE_KINDS, contract_store, new_schema, require_pg
from test_store import LEASE, ME, OTHER, A, B, fetched, get, submitted

from sttwatch.store import DaemonRegistry, JobStore, Outbox, SpendLedger, State, Store
from sttwatch.store.sqlite import SqliteStore


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with contract_store(request.param, tmp_path) as s:
        yield s


@pytest.mark.parametrize("role", [JobStore, Outbox, SpendLedger, DaemonRegistry])
def test_the_one_store_plays_every_role_with_the_same_verbs(role: type) -> None:
    from sttwatch.store.postgres import PostgresStore
    verbs = [n for n, v in vars(role).items() if inspect.isfunction(v) and n[0] != "_"]
    assert verbs
    for impl in (SqliteStore, PostgresStore):
        for verb in verbs:
            assert inspect.signature(getattr(impl, verb)) == inspect.signature(
                getattr(role, verb)), f"{impl.__name__}.{verb}"
    # Every verb of the store belongs to exactly one role.
    roles = [JobStore, Outbox, SpendLedger, DaemonRegistry]
    owned = [n for r in roles for n, v in vars(r).items()
             if inspect.isfunction(v) and n[0] != "_"]
    assert len(owned) == len(set(owned))
    assert set(owned) | {"close"} == set(Store.__abstractmethods__)


# --- the spend ledger --------------------------------------------------------------------------

def test_the_spend_ledger_adds_per_day_and_survives_forget(store: Store) -> None:
    submitted(store)
    store.add_spend("2025-03-01", 0.25, 60.0, 100.0)
    store.add_spend("2025-03-01", 0.5, 30.0, 101.0)
    store.add_spend("2025-03-02", 1.0, 10.0, 102.0)
    store.add_spend("2025-02-28", 9.0, 10.0, 99.0)
    assert store.forget([A]) == 1
    assert store.spend_by_day("2025-03-01") == {"2025-03-01": (0.75, 90.0, 2),
                                                "2025-03-02": (1.0, 10.0, 1)}


# --- the hooks' outbox -------------------------------------------------------------------------

def test_an_event_is_written_with_the_end_of_its_job_and_only_then(store: Store) -> None:
    job = fetched(store)
    stale = store.claim_finish(OTHER, 100.0, LEASE, 10)  # not due yet: nobody else has it
    assert stale == []
    assert store.mark_done(job, 200.0, event={"event_id": "ev-1", "state": "done"})
    assert store.outbox()["undelivered"] == 1
    # A transition the fence refuses writes no event.
    assert not store.mark_done(job, 201.0, event={"event_id": "ev-2", "state": "done"})
    sub = submitted(store, B, "gen-B")
    assert store.mark_failed(sub, "no", 202.0, event={"event_id": "ev-3", "state": "failed"})
    assert store.outbox()["undelivered"] == 2


def test_events_are_claimed_one_at_a_time_retried_and_deleted(store: Store) -> None:
    job = fetched(store)
    store.mark_done(job, 200.0, event={"event_id": "ev-1", "source": A})
    first = store.claim_event(ME, 300.0, 60.0)
    assert first is not None and (first.id, first.body["source"]) == ("ev-1", A)
    assert store.claim_event(OTHER, 301.0, 60.0) is None  # held while ME delivers it
    restarted = store.claim_event(ME, 302.0, 60.0)  # ME's only deliverer died: at once
    assert restarted is not None and restarted.id == "ev-1"
    again = store.claim_event(OTHER, 363.0, 60.0)  # ME died: taken over, same id
    assert again is not None and again.id == "ev-1"
    assert store.event_retry("ev-1", 500.0, "hook command exited 1")
    box = store.outbox()
    assert (box["undelivered"], box["last_error"], box["attempts"]) == (
        1, "hook command exited 1", 1)
    assert store.claim_event(ME, 499.0, 60.0) is None
    later = store.claim_event(ME, 500.0, 60.0)
    assert later is not None and later.attempts == 1
    assert store.event_delivered("ev-1")
    assert store.outbox()["undelivered"] == 0 and store.claim_event(ME, 900.0, 60.0) is None


# --- the daemons' registry ---------------------------------------------------------------------

def test_daemon_heartbeats(store: Store) -> None:
    store.heartbeat(ME, 123, "box-1", 10.0, {"status": "ok"})
    store.heartbeat(ME, 123, "box-1", 12.0, {"status": "busy"})
    store.heartbeat(OTHER, 7, "box-2", 11.0, {})
    (a, b) = store.daemons()
    assert (a.host_id, a.pid, a.hostname, a.heartbeat, a.info) == (
        ME, 123, "box-1", 12.0, {"status": "busy"})
    assert b.host_id == OTHER
    store.leave(ME)
    assert [d.host_id for d in store.daemons()] == [OTHER]


def test_one_host_id_is_taken_by_one_live_daemon_even_when_they_start_together(
        store: Store) -> None:
    holders: list[object] = []
    lock = threading.Lock()

    def start(pid: int) -> None:
        got = store.register("shared", pid, f"box-{pid}", 100.0, 30.0)
        with lock:
            holders.append(got)

    starts = [threading.Thread(target=start, args=(pid,)) for pid in range(1, 5)]
    for t in starts:
        t.start()
    for t in starts:
        t.join(30)
    assert sorted(h is None for h in holders) == [False, False, False, True]
    (d,) = store.daemons()
    assert all(h == d for h in holders if h is not None)  # each refused one names the holder
    assert store.register("shared", d.pid, d.hostname, 110.0, 30.0) is None  # itself again
    assert store.register("shared", 99, "box-99", 120.0, 30.0) is not None  # still live
    assert store.register("shared", 99, "box-99", 141.0, 30.0) is None  # stale: taken over


# --- the schema --------------------------------------------------------------------------------

PG_OLD_DDL = """CREATE TABLE jobs (id BIGSERIAL PRIMARY KEY, path TEXT NOT NULL UNIQUE,
    size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, state TEXT NOT NULL, generation_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, polls INTEGER NOT NULL DEFAULT 0,
    submitted_at DOUBLE PRECISION, next_at DOUBLE PRECISION NOT NULL DEFAULT 0, error TEXT,
    result TEXT, cost TEXT, created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO jobs (path, size, mtime_ns, state, generation_id, created_at, updated_at)
    VALUES ('/rec/old.mp3', 5, 6, 'pending', 'gen-old', 1, 1);"""


def test_two_hosts_upgrading_one_postgres_store_at_once_both_start(tmp_path: Path) -> None:
    """Each reads the schema's version after taking the migration lock: the second finds
    the columns added (was: DuplicateColumn, and a daemon that died at start)."""
    require_pg()
    import psycopg

    from sttwatch.store.postgres import PostgresStore
    schema = new_schema()
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        admin.execute(f'SET search_path TO "{schema}"')
        for stmt in PG_OLD_DDL.split(";"):
            if stmt.strip():
                admin.execute(stmt)
        # Hold the migrators' lock so that every host has read the old version before
        # any of them may migrate: the race, every time.
        admin.execute("SELECT pg_advisory_lock(7270813)")
        opened: list[Store] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                opened.append(PostgresStore(PG_URL, schema=schema))
            except BaseException as exc:
                errors.append(exc)

        hosts = [threading.Thread(target=start) for _ in range(3)]
        for t in hosts:
            t.start()

        def waiting() -> int:
            row = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype='advisory' "
                                "AND NOT granted").fetchone()
            return int(row[0]) if row else 0

        deadline = time.monotonic() + 30
        while waiting() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        admin.execute("SELECT pg_advisory_unlock(7270813)")
        for t in hosts:
            t.join(30)
    try:
        assert errors == [] and len(opened) == 3
        job = get(opened[0], "/rec/old.mp3")
        assert (job.state, job.backend) == (State.PENDING, "aimlapi")
    finally:
        if opened:
            opened[0].drop_schema()
        for s in opened:
            s.close()
