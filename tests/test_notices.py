import dataclasses
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select
from temporalio.testing import ActivityEnvironment

from activities.cases import CaseActivities
from domain.notices import raise_stage_warning
from domain.notices.texts import OVERDUE_TITLE, Text
from models.notices import Notice
from models.payments import PaymentFailure
from models.policy import StageWarning
from tests.fixtures.factories import create_enterprise, create_users


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
            text=Text(OVERDUE_TITLE, "已超过办理时限"),
        )
    warnings = list(await session.scalars(sa.select(StageWarning)))
    assert [(w.stage, w.department_code, w.escalated_to_role, w.due_at) for w in warnings] == [
        ("department_head_review", "330500-JXJ", "department_head", due)
    ]
    recipients = await session.scalars(
        select(Notice.recipient).where(col(Notice.subject) == "policy-change/X/v1")
    )
    assert sorted(recipients) == ["jxj_head", "jxj_staff"]


async def test_a_retried_activity_notifies_each_recipient_once(session: AsyncSession) -> None:
    firm = await create_enterprise(session)
    await create_users(session, enterprise_uscc=firm.uscc)
    case_id = f"application/NOTICE-1/2026/{firm.uscc}"
    failure = PaymentFailure(
        case_id=case_id,
        item_code="NOTICE-1",
        uscc=firm.uscc,
        instalment=1,
        department_code="330500-CZJ",
        reason="收款账户已销户",
    )
    activities = CaseActivities(
        async_sessionmaker(
            session.bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
    )
    env = ActivityEnvironment()
    execution = dataclasses.replace(
        env.info, workflow_id=case_id, workflow_run_id="run-1", activity_id="12"
    )

    async def recipients() -> list[str]:
        rows = await session.scalars(select(Notice.recipient).where(col(Notice.subject) == case_id))
        return sorted(rows)

    # The first attempt committed, but its completion never reached Temporal: retried.
    for attempt in (1, 2):
        env.info = dataclasses.replace(execution, attempt=attempt)
        await env.run(activities.record_payment_failure, failure)
    # Finance (its caseworker and its head) warned, the firm told.
    assert await recipients() == ["czj_head", "czj_staff", "qiye"]

    # The same case failing again later is another execution: the firm is told again;
    # finance's warning is still open, so finance is not warned twice.
    env.info = dataclasses.replace(execution, activity_id="20")
    await env.run(activities.record_payment_failure, failure)
    assert await recipients() == ["czj_head", "czj_staff", "qiye", "qiye"]
