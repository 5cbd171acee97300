"""Read-only sessions (core/db.py): a reader proceeds while a writer holds its
transaction open, sees only what was committed, and cannot write."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from core.db import make_read_sessionmaker, make_sessionmaker
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
