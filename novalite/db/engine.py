"""The engine wrapper: URLs, pools, SQLite pragmas, and short transactions.

PostgreSQL runs on SQLAlchemy's asyncio engine over asyncpg, with a pool.

SQLite — the embedded, single-process database — runs on the standard library's
driver, *inline on the event loop*, behind one connection and an asyncio lock. Why:
an SQLite statement takes microseconds, while a thread hop per statement (what an
async SQLite driver does) costs more than the statement and lets other coroutines run
between the statements of an open transaction. Under a boot storm that turned every
transaction into a queue behind the one connection. Inline, a transaction runs from
BEGIN to COMMIT without yielding (unless its own code awaits something else), so
transactions are short and naturally serialized, and "database is locked" cannot happen
inside the process.

Either way, callers write ``async with db.begin() as conn: await conn.execute(...)``
and must not hold a connection while waiting for the bus or for another connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import orjson
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool


def async_url(url: str) -> str:
    """Map a plain PostgreSQL URL to its asyncpg form (``postgresql+asyncpg://``)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite"))
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


class InlineConnection:
    """The awaitable face of a synchronous SQLite connection (same calls as AsyncConnection)."""

    def __init__(self, sync: SyncConnection) -> None:
        self.sync_connection = sync

    @property
    def info(self) -> dict[Any, Any]:
        return self.sync_connection.info

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync_connection.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync_connection.scalar(statement, parameters)

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.sync_connection, *args, **kwargs)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self.sync_connection.begin_nested():
            yield


#: Key in a connection's ``info`` for the commit signals raised in its open transaction.
_SIGNALS = "novalite.commit_signals"


def signal_after_commit(conn: Any, name: str) -> None:
    """Have ``name``'s listeners called once the open transaction on ``conn`` commits.

    Why: a message written to the outbox must not be looked for before its row is
    visible, and must not wait for the relay's next poll either (that would add a
    second to every build). A rolled-back transaction signals nothing.
    """
    conn.info.setdefault(_SIGNALS, set()).add(name)


#: What ``Database.begin()`` / ``connect()`` yield and every store function takes: SQLAlchemy's
#: AsyncConnection (PostgreSQL) or the inline SQLite connection with the same calls.
Connection: TypeAlias = AsyncConnection | InlineConnection


@dataclass(frozen=True)
class PoolUsage:
    """A database pool's use at one moment: ``overflow`` connections are open beyond ``size``."""

    backend: str
    size: int
    max_overflow: int
    checked_out: int
    overflow: int


class Database:
    """Owns the engine. ``begin()`` is a transaction; ``connect()`` is for reads."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._lock = asyncio.Lock()
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        #: SQL statements run since :meth:`count_statements` (None: not counted).
        self.statements: int | None = None
        if self.is_sqlite:
            memory = not parsed.database or parsed.database == ":memory:"
            if parsed.database and not memory:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.sync_engine: Engine = create_engine(
                async_url(url),
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
            )
            event.listen(self.sync_engine, "connect", _sqlite_connect)
            event.listen(self.sync_engine, "begin", _sqlite_begin)
        else:
            self.engine: AsyncEngine = create_async_engine(
                async_url(url),
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
            )
            self.engine.dialect.do_ping = _closed_is_dead  # type: ignore[method-assign]

    def count_statements(self) -> None:
        """Count every statement run from now on in :attr:`statements` (``count_sql_statements``:
        how many statements a boot costs is one of the benchmarks' figures)."""
        engine = self.sync_engine if self.is_sqlite else self.engine.sync_engine
        self.statements = 0

        def counted(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            # SQLite's explicit BEGIN (see _sqlite_begin) is not counted: PostgreSQL's is not a
            # statement SQLAlchemy runs either, and both databases should count the same work.
            if statement != "BEGIN":
                self.statements = (self.statements or 0) + 1

        event.listen(engine, "before_cursor_execute", counted)

    def pool_usage(self) -> PoolUsage:
        """The connection pool now (for ``/metrics``): SQLite's one connection is checked out
        while a transaction or read holds the lock; PostgreSQL's pool counts its own."""
        if self.is_sqlite:
            return PoolUsage("sqlite", size=1, max_overflow=0, checked_out=int(self._lock.locked()), overflow=0)
        pool: Any = self.engine.pool
        return PoolUsage(
            "postgresql",
            size=int(pool.size()),
            max_overflow=int(getattr(pool, "_max_overflow", 0)),
            checked_out=int(pool.checkedout()),
            overflow=max(0, int(pool.overflow())),
        )

    def on_commit(self, name: str, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each commit of a transaction that raised signal ``name``."""
        self._listeners.setdefault(name, []).append(listener)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        signals: set[str] = set()
        if self.is_sqlite:
            async with self._lock:
                with self.sync_engine.begin() as sync:
                    try:
                        yield InlineConnection(sync)
                    finally:
                        signals = sync.info.pop(_SIGNALS, set())
        else:
            async with self.engine.begin() as conn:
                try:
                    yield conn
                finally:
                    signals = conn.info.pop(_SIGNALS, set())
        # Only reached when the transaction committed (an exception skips this).
        for name in signals:
            for listener in self._listeners.get(name, ()):
                listener()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        if self.is_sqlite:
            async with self._lock:
                with self.sync_engine.connect() as sync:
                    try:
                        yield InlineConnection(sync)
                    finally:
                        sync.rollback()
            return
        async with self.engine.connect() as conn:
            yield conn

    async def close(self) -> None:
        if self.is_sqlite:
            self.sync_engine.dispose()
        else:
            await self.engine.dispose()


def _closed_is_dead(dbapi_connection: Any) -> bool:
    """The pool's check of a connection before it lends it out: is its socket still open?

    SQLAlchemy's asyncpg ping is three round trips (BEGIN, an empty query, ROLLBACK) on
    every checkout, i.e. before every transaction: in the split deployment's profile that
    was an eighth of the controller's time and three waits per transaction. A connection
    the server ended (a restart, ``pg_terminate_backend``, an idle timeout) has had its
    socket closed under it, which asyncpg notices as it reads: it says so locally, and
    the pool replaces it before anyone uses it. A connection that dies silently in the
    network fails its next statement, which rolls that transaction back as any other
    database error does.
    """
    return not dbapi_connection._connection.is_closed()


def _json_dumps(value: Any) -> str:
    """JSON columns (flavor and image snapshots, tags...) are decoded for every listed server:
    orjson does that several times faster than the standard library."""
    return orjson.dumps(value).decode()


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (so that
    # SELECT ... then UPDATE is one transaction, and SAVEPOINTs work).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: SyncConnection) -> None:
    conn.exec_driver_sql("BEGIN")
