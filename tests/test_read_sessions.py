"""Read-only sessions (core/db.py): a reader proceeds while a writer holds its
transaction open, sees only what was committed, and cannot write."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from api.main import create_app
from core.db import make_read_sessionmaker, make_sessionmaker
from core.settings import Environment, Settings
from models.reference import Region, RegionLevel

pytestmark = pytest.mark.asyncio


async def test_a_reader_does_not_wait_for_a_writer_and_cannot_write(
    own_engine: AsyncEngine,
) -> None:
    writer, reader = make_sessionmaker(own_engine), make_read_sessionmaker(own_engine)
    async with writer.begin() as session:
        session.add(Region(code="339901", name="读写测试区", level=RegionLevel.DISTRICT))
    async with writer.begin() as session:  # holds the write lock on SQLite until the end
        session.add(Region(code="339902", name="未提交区", level=RegionLevel.DISTRICT))
        await session.flush()

        async def count() -> int:
            async with reader() as other:
                found = await other.scalar(
                    sa.select(sa.func.count())
                    .select_from(Region)
                    .where(col(Region.code).in_(["339901", "339902"]))
                )
                return int(found or 0)

        # A reader that took the write lock would wait here for 30 s (busy_timeout).
        assert await asyncio.wait_for(count(), timeout=5) == 1

    async with reader() as session:
        session.add(Region(code="339903", name="只读区", level=RegionLevel.DISTRICT))
        with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read.?only"):
            await session.flush()


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
