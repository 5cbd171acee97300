"""Read-only sessions (core/db.py): a reader proceeds while a writer holds its
transaction open, sees only what was committed, and cannot write."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import READ_ONLY, make_read_sessionmaker, make_sessionmaker, make_sqlite_reader
from core.security import issue_token
from core.settings import Environment, Settings
from domain import access
from domain.policy import library
from models.audit import AuditEvent
from models.policy import ItemCreate
from models.reference import Actor, Department, Region, RegionLevel, Role
from seed.reference import ensure_reference_data
from tests.fixtures.api import app_on_engine
from tests.fixtures.factories import create_users, item_payload

pytestmark = pytest.mark.asyncio


async def _regions_seen(reader: async_sessionmaker[AsyncSession], *codes: str) -> int:
    """How many of the regions `codes` a session of `reader` sees."""
    async with reader() as session:
        found = await session.scalar(
            sa.select(sa.func.count()).select_from(Region).where(col(Region.code).in_(codes))
        )
        return int(found or 0)


async def test_a_reader_does_not_wait_for_a_writer_and_cannot_write(
    own_engine: AsyncEngine,
) -> None:
    writer, reader = make_sessionmaker(own_engine), make_read_sessionmaker(own_engine)
    async with writer.begin() as session:
        session.add(Region(code="339901", name="读写测试区", level=RegionLevel.DISTRICT))
    async with writer.begin() as session:  # holds the write lock on SQLite until the end
        session.add(Region(code="339902", name="未提交区", level=RegionLevel.DISTRICT))
        await session.flush()

        # A reader that took the write lock would wait here for 30 s (busy_timeout).
        seen = _regions_seen(reader, "339901", "339902")
        assert await asyncio.wait_for(seen, timeout=5) == 1

    async with reader() as session:
        session.add(Region(code="339903", name="只读区", level=RegionLevel.DISTRICT))
        with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read.?only"):
            await session.flush()


async def test_sqlite_readers_run_on_the_loops_thread_and_only_read(
    own_engine: AsyncEngine,
) -> None:
    """The API's SQLite readers (core/db.py `make_sqlite_reader`) make their calls on the
    event loop's thread, not a thread of aiosqlite's; they see what is committed, never
    wait for a writer, and cannot write, in read sessions or not."""
    if own_engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's reads share the API's one pool")
    readers = make_sqlite_reader(own_engine.url.render_as_string(hide_password=False))
    try:
        writer, reader = make_sessionmaker(own_engine), make_read_sessionmaker(readers)
        async with readers.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.create_function("thread_of_call", 0, threading.get_ident)
            ran_on = await connection.scalar(sa.text("SELECT thread_of_call()"))
            assert ran_on == threading.get_ident()
        async with writer.begin() as session:
            session.add(Region(code="339911", name="读线程区", level=RegionLevel.DISTRICT))

        codes = ("339911", "339912")
        async with writer.begin() as holding:  # the write lock, until the end
            holding.add(Region(code="339912", name="未提交区", level=RegionLevel.DISTRICT))
            await holding.flush()
            assert await asyncio.wait_for(_regions_seen(reader, *codes), timeout=2) == 1
        assert await _regions_seen(reader, *codes) == 2
        for sessions in (reader, make_sessionmaker(readers)):
            async with sessions() as session:
                session.add(Region(code="339913", name="只读区", level=RegionLevel.DISTRICT))
                with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read.?only"):
                    await session.flush()
    finally:
        await readers.dispose()


async def test_the_apis_reads_never_wait_behind_queued_writers(own_engine: AsyncEngine) -> None:
    """On SQLite a writer waiting for the write lock holds its pooled connection: with
    more writers queued than the pool holds, the API's reads still go ahead (they have
    connections of their own, api/main.py)."""
    if own_engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL has no single write lock")
    url = own_engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(environment=Environment.TEST, database_url=url))
    async with app.router.lifespan_context(app):
        writers, reader = app.state.sessionmaker, app.state.read_sessionmaker
        async with writers.begin() as holding:  # the write lock, until the end
            holding.add(Region(code="339904", name="占锁区", level=RegionLevel.DISTRICT))
            await holding.flush()

            async def write(n: int) -> None:
                async with writers.begin() as session:
                    session.add(
                        Region(code=f"3398{n:02d}", name="排队区", level=RegionLevel.DISTRICT)
                    )

            queued = [asyncio.create_task(write(n)) for n in range(30)]
            await asyncio.sleep(0.5)  # every pooled writer connection now waits on the lock

            async def count() -> int:
                async with reader() as session:
                    return int(
                        await session.scalar(sa.select(sa.func.count()).select_from(Region)) or 0
                    )

            # Nothing is committed yet: the holder's region is not seen either.
            assert await asyncio.wait_for(count(), timeout=1.5) == 0
        await asyncio.gather(*queued, return_exceptions=True)


async def test_a_decision_reads_who_and_which_case_without_the_write_lock(
    own_engine: AsyncEngine, dev_server: WorkflowEnvironment
) -> None:
    """A case decision only reads before it goes to Temporal (the user, the access rule's
    item, the case its key names): on SQLite it must begin no write transaction, which
    would queue for the write lock behind every other writer (about 0.35 s each under
    load, bench/application_throughput.py). Its audit row is the bookkeeping's."""
    url = own_engine.url.render_as_string(hide_password=False)
    settings = Settings(
        environment=Environment.TEST,
        database_url=url,
        temporal_namespace=dev_server.client.namespace,
    )
    app = create_app(settings, temporal=dev_server.client)
    async with app.router.lifespan_context(app):
        async with app.state.sessionmaker.begin() as session:
            await ensure_reference_data(session)
            users = await create_users(session)
            payload = ItemCreate.model_validate(item_payload("ITEM-1"))
            await library.create_item(session, users["jxj_staff"], payload)
        engine = app.state.sessionmaker.kw["bind"].sync_engine
        writes: list[str] = []

        def begun(connection: sa.Connection) -> None:
            if not connection.get_execution_options().get(READ_ONLY):
                writes.append("BEGIN")

        sa.event.listen(engine, "begin", begun)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            answer = await api.post(
                "/api/v1/cases/application/ITEM-1/2026/91330502MA2B3C4D58/decisions",
                json={"action": "approve"},
                headers={"Authorization": f"Bearer {issue_token(settings, 'jxj_staff')}"},
            )
        sa.event.remove(engine, "begin", begun)
    # Past the user, the access rule and the case, at Temporal: no such case there.
    assert answer.status_code == 409, answer.text
    assert answer.json()["detail"] == "nothing is waiting for this decision any more"
    assert writes == []


async def test_a_keyed_write_keeps_its_answer_and_audit_row_in_one_transaction(
    own_engine: AsyncEngine,
) -> None:
    """After the work, a write with an Idempotency-Key writes its kept answer and its audit
    row together (api/idempotency.py): on SQLite each transaction queues for the one write
    lock. The row is there once, and a write without a key still leaves its own."""
    async with app_on_engine(own_engine) as (app, settings):
        engine = app.state.bookkeeping.kw["bind"].sync_engine
        writes: list[str] = []

        def begun(connection: sa.Connection) -> None:
            writes.append("BEGIN")

        headers = {"Authorization": f"Bearer {issue_token(settings, 'jxj_staff')}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            # The first keyed write of a process also purges expired keys: not counted.
            first = await api.post(
                "/api/v1/items",
                json=item_payload("KEYED-0"),
                headers=headers | {"Idempotency-Key": "keyed-write-0"},
            )
            sa.event.listen(engine, "begin", begun)
            keyed = await api.post(
                "/api/v1/items",
                json=item_payload("KEYED-1"),
                headers=headers | {"Idempotency-Key": "keyed-write-1"},
            )
            sa.event.remove(engine, "begin", begun)
            unkeyed = await api.post(
                "/api/v1/items", json=item_payload("UNKEYED-1"), headers=headers
            )
        async with app.state.sessionmaker() as session:
            rows = list(
                await session.execute(
                    sa.select(col(AuditEvent.path), col(AuditEvent.status)).where(
                        col(AuditEvent.path) == "/api/v1/items"
                    )
                )
            )
    assert (first.status_code, keyed.status_code, unkeyed.status_code) == (201, 201, 201)
    assert writes == ["BEGIN"]  # the answer and the row; the key was claimed before
    assert sorted(tuple(row) for row in rows) == [("/api/v1/items", 201)] * 3


async def test_a_read_only_session_reads_what_access_needs_once(own_engine: AsyncEngine) -> None:
    """A GET's access check and its route ask for the same unit, regions and item: a
    read-only session reads them once (domain/access.py). A session that may write reads
    them each time, so that it follows its own writes."""
    writer, reader = make_sessionmaker(own_engine), make_read_sessionmaker(own_engine)
    async with writer.begin() as session:
        await ensure_reference_data(session)
    actor = Actor(name="wx", role=Role.FINANCE_CASEWORKER, department_code="330502-CZJ")
    statements: list[str] = []

    def executed(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(own_engine.sync_engine, "before_cursor_execute", executed)
    try:
        async with reader() as session:
            first = await access.scope_of(session, actor)
            read = len(statements)
            assert read > 0 and first.regions is not None and "330502" in first.regions
            assert await access.scope_of(session, actor) == first
            assert len(statements) == read
        async with writer.begin() as session:
            assert (await access.scope_of(session, actor)).regions == first.regions
            department = await session.get(Department, "330502-CZJ")
            assert department is not None
            department.region_code = "330500"  # the city: every region
            await session.flush()
            assert (await access.scope_of(session, actor)).regions is None
            await session.rollback()  # as it was, for nothing else reads it
    finally:
        sa.event.remove(own_engine.sync_engine, "before_cursor_execute", executed)
