"""Stores for tests: a real SQLite file and a real PostgreSQL server (never a mock).

PostgreSQL comes from ``STTWATCH_TEST_PG`` (default: the local server the test script makes
sure of). Each store gets a schema of its own, dropped afterwards, so tests never see each
other's rows. Where no server answers, PostgreSQL tests are skipped, except under ``CI``,
where they fail: a CI run that silently tested one store would prove nothing about the other.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from needs import require

PG_URL = os.environ.get("STTWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> str | None:
    """None when the server answers, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'sttwatch[postgres]')"
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"no PostgreSQL at {PG_URL}: {type(exc).__name__}"
    return None


def require_pg() -> None:
    require(pg_available(), "PostgreSQL tests")


def new_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def pg_url_with_schema(schema: str) -> str:
    """A URL whose connections use ``schema`` (libpq ``options``) and name it as their
    application, so a test can cut exactly its own daemons' connections."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}&application_name=sttwatch-{schema}"


def terminate_connections(schema: str) -> int:
    """What a PostgreSQL restart does to the daemons: every connection of theirs is cut."""
    import psycopg
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                            "application_name = %s", (f"sttwatch-{schema}",)).fetchall()
    return len(rows)


def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.db"  # the folder does not exist yet


STORE_KINDS = ("sqlite", "postgres")


@contextlib.contextmanager
def contract_store(kind: str, tmp_path: Path) -> Iterator[Any]:
    """The store a contract test runs against: a new SQLite file, or a PostgreSQL schema of
    its own that is dropped afterwards. (``Any``: each suite names the role it tests.)"""
    if kind == "sqlite":
        from sttwatch.store.sqlite import SqliteStore
        s = SqliteStore(tmp_path / "state" / "jobs.db")
        try:
            yield s
        finally:
            s.close()
        return
    require_pg()
    from sttwatch.store.postgres import PostgresStore
    pg = PostgresStore(PG_URL, schema=new_schema())
    try:
        yield pg
    finally:
        pg.drop_schema()
        pg.close()
