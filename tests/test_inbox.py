"""A unit's inbox: the cases waiting on it, as the one waited for or also waited for,
soonest deadline first and those without one last, paged off the inbox indexes."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.cases import inbox
from models.cases import CaseRecord
from models.reference import Actor, Role

START = datetime(2026, 12, 1, tzinfo=UTC)


async def test_the_inbox_pages_every_waiting_case_soonest_first(session: AsyncSession) -> None:
    unit, other = f"IN-{uuid.uuid4().hex[:8]}", f"OT-{uuid.uuid4().hex[:8]}"
    chance = random.Random(7)
    for n in range(120):
        # Waiting on the unit as the one waited for, as the one also waited for, on
        # another unit only; deadlines shared by several cases, or none.
        waiting, also = chance.choice(
            [(unit, None), (unit, other), (other, unit), (other, None), (None, unit)]
        )
        due = None if chance.random() < 0.2 else START + timedelta(hours=chance.randrange(30))
        session.add(
            CaseRecord(
                case_id=f"application/INBOX/2026/{unit}/{n:03d}",
                category="application",
                item_code="INBOX",
                version=1,
                period="2026",
                uscc="91330502MA2B00000X",
                region_code="330502",
                stage="department_review",
                waiting_for_department=waiting,
                also_waiting_for_department=also,
                due_at=due,
            )
        )
    await session.flush()
    mine = sa.or_(
        col(CaseRecord.waiting_for_department) == unit,
        col(CaseRecord.also_waiting_for_department) == unit,
    )
    records = list(await session.scalars(select(CaseRecord).where(mine)))
    far = datetime.max.replace(tzinfo=UTC)
    expected = [
        r.case_id
        for r in sorted(records, key=lambda r: (r.due_at is None, r.due_at or far, r.case_id))
    ]
    actor = Actor(name="staff", role=Role.DEPARTMENT_CASEWORKER, department_code=unit)
    for limit in (1, 7, 50, 200):
        for offset in (0, 1, 13, 50, 100, len(expected) - 1, len(expected), 500):
            total, page = await inbox(session, actor, offset, limit)
            assert total == len(expected)
            assert [r.case_id for r in page] == expected[offset : offset + limit], (offset, limit)


async def test_a_page_is_read_off_the_inbox_indexes_in_their_order(session: AsyncSession) -> None:
    """On SQLite the plan of each side of the page reads its index in deadline order:
    no sort of every waiting case (`USE TEMP B-TREE FOR ORDER BY` on the table)."""
    if session.get_bind().dialect.name != "sqlite":
        return
    due = col(CaseRecord.due_at)
    for name in ("waiting_for_department", "also_waiting_for_department"):
        query = (
            select(col(CaseRecord.case_id))
            .where(getattr(CaseRecord, name) == "JXJ")
            .order_by(due.is_(None), due, col(CaseRecord.case_id))
            .limit(50)
        )
        compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        plan = " | ".join(
            str(row[-1]) for row in await session.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))
        )
        assert f"USING COVERING INDEX ix_case_record_{name}" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
