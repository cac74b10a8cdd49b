"""The shared store: one PostgreSQL database for several daemons on several hosts.

psycopg 3 with a small connection pool (the extra ``sttwatch[postgres]``). Claims take rows
with ``FOR UPDATE SKIP LOCKED``, so daemons never wait on each other's claims; admissions
take one transaction-scoped advisory lock, so two daemons seeing the same new file (a shared
folder) cannot both give out the same output name. A lost server raises ``StoreUnavailable``;
the pool reconnects when it is back.
"""

from __future__ import annotations

import contextlib
import re
import time
import weakref
from collections.abc import Iterator
from typing import Any

from .errors import StoreError, StoreMissing, StoreUnavailable
from .sql import COLUMNS, SCHEMA_VERSION, Dialect, Executor, SqlStore

POSTGRES = Dialect(name="postgres", param="%s", id_column="BIGSERIAL PRIMARY KEY",
                   real="DOUBLE PRECISION", bigint="BIGINT", null_eq="IS NOT DISTINCT FROM",
                   greatest="GREATEST", skip_locked=" FOR UPDATE SKIP LOCKED",
                   admit_lock="SELECT pg_advisory_xact_lock(7270812)",
                   ledger_lock="SELECT pg_advisory_xact_lock(7270814)", row_lock=" FOR UPDATE")


def safe_url(url: str) -> str:
    """The URL as messages may show it: without a password."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


class PostgresStore(SqlStore):
    dialect = POSTGRES
    CHECK_AFTER = 5.0  # seconds

    def __init__(self, url: str, *, create: bool = True, schema: str | None = None,
                 max_size: int = 6, timeout: float = 10.0) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StoreError("state.url needs the PostgreSQL driver: pip install "
                             "'sttwatch[postgres]'") from None
        self._psycopg = psycopg
        self.location = safe_url(url)
        self._schema = schema
        options = f"-c search_path={schema}" if schema else None
        kwargs: dict[str, Any] = {"autocommit": True}
        if options:
            kwargs["options"] = options
        # When each pooled connection last answered: one used a moment ago is handed out
        # without the pool's check (an empty query, a round trip and a transaction of its
        # own: half of all the store's transactions when it ran before every one).
        self._answered: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._pool = ConnectionPool(url, min_size=1, max_size=max_size, kwargs=kwargs,
                                    timeout=timeout, check=self._check, open=False,
                                    configure=self._configure, name="sttwatch")
        try:
            self._pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            self._pool.close()
            raise StoreUnavailable(f"cannot reach the store at {self.location}: "
                                   f"{type(exc).__name__}") from None
        try:
            with self._tx() as x:
                if schema:
                    x.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                exists, version, columns = self._schema_state(x)
                if not exists and not create:
                    raise StoreMissing(f"no sttwatch store at {self.location} (no daemon has "
                                       "run with this config yet)")
                if version != SCHEMA_VERSION or not set(COLUMNS) <= (columns or set()):
                    # One migrator at once, and what it sees is read after the lock: a
                    # second host upgrading at the same time finds the work done.
                    x.execute("SELECT pg_advisory_xact_lock(7270813)")
                    exists, version, columns = self._schema_state(x)
                    if version != SCHEMA_VERSION or not set(COLUMNS) <= (columns or set()):
                        self._migrate(x, columns, version)
        except (StoreError, StoreUnavailable):
            self._pool.close()
            raise

    @staticmethod
    def _schema_state(x: Any) -> tuple[bool, int | None, set[str] | None]:
        """Whether the jobs table exists, the schema version and the jobs table's columns."""
        exists = bool(x.execute("SELECT to_regclass('jobs') IS NOT NULL").fetchone()[0])
        if not exists:
            return False, None, None
        row = x.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() \
            if x.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0] else None
        columns = {r[0] for r in x.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name='jobs' AND "
            "table_schema=current_schema()").fetchall()}
        return True, int(row[0]) if row else 1, columns

    @staticmethod
    def _configure(conn: Any) -> None:
        """Commits return without waiting for the server's log flush, except a durable one
        (``SqlStore._tx``), which asks for it: the per-file bookkeeping a server crash may
        take back costs nothing to redo, and the flush it waits for is most of a commit."""
        conn.execute("SET synchronous_commit TO off")

    def _check(self, conn: Any) -> None:
        """The pool's check, for a connection idle longer than ``CHECK_AFTER``. One cut
        within that moment fails its next statement instead: that is a ``StoreUnavailable``
        like any other (a claim is not made, a transition is tried again), and the pool
        drops the broken connection when it comes back."""
        if time.monotonic() - self._answered.get(conn, -self.CHECK_AFTER) < self.CHECK_AFTER:
            return
        from psycopg_pool import ConnectionPool
        ConnectionPool.check_connection(conn)

    @contextlib.contextmanager
    def _tx(self, durable: bool = True) -> Iterator[Executor]:
        with self._connection(transaction=True) as conn:
            if durable:
                conn.execute("SET LOCAL synchronous_commit TO on")
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Executor]:
        """Reads run in autocommit, each statement on its own: no BEGIN and COMMIT round
        trips around a single SELECT."""
        with self._connection(transaction=False) as conn:
            yield conn

    @contextlib.contextmanager
    def _connection(self, *, transaction: bool) -> Iterator[Any]:
        psycopg = self._psycopg
        try:
            with self._pool.connection() as conn:
                if transaction:
                    with conn.transaction():
                        yield conn
                else:
                    yield conn
                self._answered[conn] = time.monotonic()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"the store at {self.location} did not answer: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                                   ) from None
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg_pool"):  # PoolTimeout: server gone
                raise StoreUnavailable(f"the store at {self.location} did not answer") from None
            raise

    def close(self) -> None:
        self._pool.close()

    def drop_schema(self) -> None:
        """Tests only: remove the private schema this store was opened in."""
        if self._schema:
            with self._tx() as x:
                x.execute(f'DROP SCHEMA IF EXISTS "{self._schema}" CASCADE')
