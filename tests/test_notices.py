from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.notices import raise_stage_warning
from models.notices import Notice
from models.policy import StageWarning
from tests.conftest import create_users


async def test_overdue_stage_warns_its_unit_and_head_once(session: AsyncSession) -> None:
    await create_users(session)
    due = datetime(2026, 12, 2, 16, tzinfo=UTC)
    for _ in range(2):  # an activity retry must not warn twice
        await raise_stage_warning(
            session,
            subject="policy-change/X/v1",
            stage="department_head_review",
            department_code="330500-JXJ",
            due_at=due,
            message="已超过办理时限",
        )
    warnings = list(await session.scalars(sa.select(StageWarning)))
    assert [(w.stage, w.department_code, w.escalated_to_role, w.due_at) for w in warnings] == [
        ("department_head_review", "330500-JXJ", "department_head", due)
    ]
    recipients = await session.scalars(
        select(Notice.recipient).where(col(Notice.subject) == "policy-change/X/v1")
    )
    assert sorted(recipients) == ["jxj_head", "jxj_staff"]
