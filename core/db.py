"""Database engine and sessions for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiosqlite
from sqlalchemy import event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# A PostgreSQL server that does not answer fails a connection attempt after this long
# (asyncpg's own default is 60 s), so a request answers 503 instead of hanging.
CONNECT_TIMEOUT_S = 2.0
# Execution option marking an engine whose transactions only read (`make_read_sessionmaker`).
READ_ONLY = "zhida_read_only"
# What hands out sessions for reads beside a request's own (a sessionmaker, or one
# session wrapped): `api/deps.py` `bulk_reader_for`.
Reader = Callable[[], AbstractAsyncContextManager[AsyncSession]]


def make_engine(
    url: str, *, echo: bool = False, pool_timeout_s: float = 30.0, pool_size: int = 10
) -> AsyncEngine:
    """An engine for the URL, keeping up to `pool_size` connections open and as many
    again when busy. `pool_timeout_s` is how long a caller waits for a free one; the
    API sets it short for requests, so that a request fails fast when the pool is
    exhausted, while workers may wait."""
    if url.startswith("sqlite"):
        # Connections are kept open and reused: opening one (a thread of aiosqlite's,
        # the file, four PRAGMAs) cost a read request about a third of its time.
        engine = create_async_engine(
            url, **_pooled(echo, pool_timeout_s, pool_size), connect_args={"timeout": 30}
        )
        _make_sqlite_transactional(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql+asyncpg"):
        connect_args["timeout"] = CONNECT_TIMEOUT_S
    return create_async_engine(
        url,
        **_pooled(echo, pool_timeout_s, pool_size),
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _pooled(echo: bool, pool_timeout_s: float, pool_size: int) -> dict[str, Any]:
    """The options every engine of ours shares (`make_engine`)."""
    return {
        "echo": echo,
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_timeout": pool_timeout_s,
    }


def make_sqlite_reader(
    url: str, *, echo: bool = False, pool_timeout_s: float = 30.0, pool_size: int = 10
) -> AsyncEngine:
    """An engine of read-only connections to the SQLite file at `url`, for
    `make_read_sessionmaker`, whose statements run at once on the event loop's thread.

    aiosqlite hands every call (cursor, execute, fetch, close) to a thread of the
    connection's own and wakes the loop with its answer: four round trips between
    threads per statement, which cost a read request through the API about half its
    CPU (bench/api_load.py). A read in WAL mode never waits for a lock, so it can run
    on the loop instead, as the `sqlite3` module's call it is. Writes stay on
    `make_engine`'s threads: BEGIN IMMEDIATE may wait up to `busy_timeout` for the
    write lock, and must not hold up the loop meanwhile. Each connection is
    `query_only` from its start: a write through one is an error."""
    [database], options = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    uri = bool(options.get("uri", False))

    def connect() -> _InlineConnection:
        return _InlineConnection(
            lambda: sqlite3.connect(database, timeout=30, check_same_thread=False, uri=uri)
        )

    engine = create_async_engine(
        url, **_pooled(echo, pool_timeout_s, pool_size), async_creator=connect
    )
    _make_sqlite_transactional(engine, read_only=True)
    return engine


class _InlineCalls:
    """Stands in for aiosqlite's queue of calls to its connection's thread: each call is
    made as it is put, on the caller's thread, and its future is settled with the
    outcome before the caller awaits it."""

    def put_nowait(self, call: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = call
        try:
            result = function()
        except BaseException as exc:  # aiosqlite's thread hands on whatever was raised
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class _InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection without its thread (`make_sqlite_reader`). It relies on
    aiosqlite 0.22's queue attribute, which SQLAlchemy's dialect uses too;
    tests/test_read_sessions.py checks that its calls run on the loop's thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _InlineCalls()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no thread to start


def _make_sqlite_transactional(engine: AsyncEngine, *, read_only: bool = False) -> None:
    """Let SQLAlchemy, not the sqlite3 module, issue BEGIN.

    The driver's own implicit transactions break SAVEPOINT and make reads outside a
    transaction; with these hooks SQLite behaves like PostgreSQL for our purposes
    (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL").
    BEGIN IMMEDIATE takes the write lock up front so that two writers serialise
    instead of failing on lock upgrade. A transaction that only reads (an engine with
    the `READ_ONLY` option) begins DEFERRED instead: in WAL mode it neither takes nor
    waits for the write lock, and `query_only` makes any write in it an error. The
    connections of a `read_only` engine are `query_only` from the start.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        if read_only:
            cursor.execute("PRAGMA query_only=1")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if read_only:  # the engine's, whatever a session asks
            connection.exec_driver_sql("BEGIN")
            return
        session_reads_only = bool(connection.get_execution_options().get(READ_ONLY))
        info = connection.connection.info  # lives as long as the DBAPI connection
        if info.get(READ_ONLY, False) != session_reads_only:
            connection.exec_driver_sql(f"PRAGMA query_only={int(session_reads_only)}")
            info[READ_ONLY] = session_reads_only
        connection.exec_driver_sql("BEGIN" if session_reads_only else "BEGIN IMMEDIATE")


def upsert(session: AsyncSession, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` (a model or a table) that takes ON CONFLICT clauses, in the
    session's dialect: PostgreSQL's and SQLite's are written alike."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose transactions only read. On SQLite they begin DEFERRED and never
    hold the write lock (readers and the one writer proceed together in WAL mode); on
    PostgreSQL they are READ ONLY transactions. A write in one is an error on both."""
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    return async_sessionmaker(engine.execution_options(**options), expire_on_commit=False)


def on_engine(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine | None:
    """The engine `sessionmaker` is bound to; None where it is bound to one connection
    (a test's transaction, rolled back)."""
    bind = sessionmaker.kw.get("bind")
    return bind if isinstance(bind, AsyncEngine) else None


def reader_of(sessionmaker: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """The read-only sessions of the engine `sessionmaker` is bound to; the sessionmaker
    itself where it is bound to one connection (a test's transaction, rolled back)."""
    engine = on_engine(sessionmaker)
    return sessionmaker if engine is None else make_read_sessionmaker(engine)
