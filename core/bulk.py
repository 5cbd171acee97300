"""Writing many rows at once, past the ORM's per-row work: PostgreSQL's COPY through
asyncpg, SQLite's executemany on the driver's own connection. Both run inside the
session's transaction, so a bulk write commits or rolls back with everything else.

For the match library, whose first write is millions of rows: an ORM or Core
executemany builds a dictionary and binds every value through its type per row.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

SQLITE_BATCH = 50_000  # rows per executemany call: bounded memory for a generator


async def driver_connection(session: AsyncSession) -> Any:
    """The session's connection as the driver has it (asyncpg's or aiosqlite's), with
    the session's transaction begun on it (asyncpg's adapter begins lazily, at the
    first statement; a COPY before it would commit on its own)."""
    connection = await session.connection()
    await connection.execute(sa.text("SELECT 1"))
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def insert_rows(
    session: AsyncSession,
    table: sa.Table,
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Insert `rows` (values of `columns`, in order, as Python values the columns' types
    take without conversion: str, int, None) and, in every row, `constants` (any type:
    bound once through the column's type, e.g. a timezone-aware datetime)."""
    dialect = session.get_bind().dialect
    constants = dict(constants or {})
    names = [*columns, *constants]
    bound = tuple(_bind(table.c[name].type, value, dialect) for name, value in constants.items())
    if dialect.name == "postgresql":
        driver = await driver_connection(session)
        await driver.copy_records_to_table(
            table.name,
            columns=names,
            records=(row + bound for row in rows) if bound else rows,
            schema_name=table.schema,
        )
        return
    if dialect.name != "sqlite":
        raise ValueError(f"bulk insert needs PostgreSQL or SQLite, not {dialect.name}")
    driver = await driver_connection(session)
    quoted = ", ".join(f'"{name}"' for name in names)
    marks = ", ".join("?" * len(names))
    statement = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks})'
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row + bound)
        if len(batch) == SQLITE_BATCH:
            await driver.executemany(statement, batch)
            batch = []
    if batch:
        await driver.executemany(statement, batch)


def _bind(column_type: sa.types.TypeEngine[Any], value: Any, dialect: sa.Dialect) -> Any:
    """A value as the column's type hands it to the driver on this dialect (a type
    decorator's own conversion, e.g. to UTC, included)."""
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process is not None else value


async def fetch_rows(
    session: AsyncSession, query: sa.Select[*tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """A query's rows as plain tuples straight from the driver, without SQLAlchemy's
    per-row result processing: for reads of millions of rows whose columns need no
    conversion (text, integers, nulls)."""
    async with aclosing(stream_rows(session, query)) as parts:
        return [tuple(row) async for part in parts for row in part]


async def stream_rows(
    session: AsyncSession, query: sa.Select[*tuple[Any, ...]], size: int = 20_000
) -> AsyncGenerator[Sequence[Sequence[Any]], None]:
    """`fetch_rows` in parts of `size` rows (tuples, or asyncpg's records, which index
    and unpack alike), through a cursor closed once read. Dates come as the driver
    gives them: `date` from asyncpg, ISO text from SQLite.

    Read it inside `contextlib.aclosing`: a reader that stops early then closes the
    cursor at once, on its own connection, rather than whenever the generator is
    collected (by then the connection may be running the next statement)."""
    dialect = session.get_bind().dialect
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = [params[name] for name in compiled.positiontup or ()]
    driver = await driver_connection(session)
    if dialect.name == "postgresql":
        # A server-side cursor, inside the session's transaction (begun above).
        cursor = await driver.cursor(str(compiled), *args)
        try:
            while part := await cursor.fetch(size):
                yield part
        except GeneratorExit:  # the reader stopped early: the transaction goes on
            await _close_cursors(driver)
            raise
        await _close_cursors(driver)
        return
    if dialect.name != "sqlite":
        raise ValueError(f"bulk fetch needs PostgreSQL or SQLite, not {dialect.name}")
    cursor = await driver.execute(str(compiled), args)
    try:
        while part := await cursor.fetchmany(size):
            yield part
    finally:
        await cursor.close()


async def _close_cursors(driver: Any) -> None:
    """Close the session's cursors. asyncpg has no public way to close one; until it is
    closed, even read to its end, PostgreSQL counts the tables it read as in use by the
    session and refuses DDL on them (the match library's first write rebuilds indexes).
    On error nothing is closed: the transaction is over, and its cursors with it."""
    await driver.execute("CLOSE ALL")


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector off while millions of rows are read: each read makes
    tuples and strings by the million, and the collector, triggered by their number,
    walks every live object again and again (a third of a full fact load's time).
    Reference counting still frees them; the collector runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@asynccontextmanager
async def rebuilt_after(session: AsyncSession, table: str) -> AsyncIterator[None]:
    """Load a table with its secondary indexes set aside, then build them again, as
    PostgreSQL's manual advises for populating a table ("Populating a Database"): an
    index built in one sort instead of millions of insertions at random places. Foreign
    keys stay: dropping one would lock the table it refers to (the firms) as well.

    The definitions are read from the database's own catalogue, so they come back
    exactly as the migrations made them. All of it happens inside the session's
    transaction: a failure leaves the table as it was. The table is locked against
    readers until the commit, so this is for a table with nothing to read yet (the
    match library's first write)."""
    indexes = (await session.execute(_SECONDARY_INDEXES[_dialect(session)], {"t": table})).all()
    for name, _definition in indexes:
        await session.execute(sa.text(f'DROP INDEX "{name}"'))
    yield
    for _name, definition in indexes:
        await session.execute(sa.text(definition))


# A table's indexes other than its constraints' own (the primary key stays), with the
# statements that made them.
_SECONDARY_INDEXES = {
    "postgresql": sa.text(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i "
        "WHERE i.tablename = :t AND i.schemaname = current_schema() "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
        "WHERE c.conname = i.indexname AND c.conrelid = to_regclass(:t))"
    ),
    "sqlite": sa.text(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t "
        "AND sql IS NOT NULL"  # constraints' own indexes have none
    ),
}


def _dialect(session: AsyncSession) -> str:
    name = session.get_bind().dialect.name
    if name not in ("postgresql", "sqlite"):
        raise ValueError(f"bulk work needs PostgreSQL or SQLite, not {name}")
    return name
