"""Warnings (预警) to units and in-app notices (站内消息) to users, each sent once.

A notice is stored with a dedupe key, unique per recipient: sending it again under the
same key sends nothing. A warning's notices are keyed by the warning, which is raised
once per open stage; a notice to a firm is keyed by its sender (an activity passes its
execution, so that a retried activity tells the firm once). What they say is in
`domain.notices.texts`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from core.db import upsert
from domain.notices.texts import Text
from models.notices import Notice
from models.policy import StageWarning
from models.reference import Role, User
from models.types import utcnow

ESCALATION_ROLE = Role.DEPARTMENT_HEAD


async def raise_stage_warning(
    session: AsyncSession,
    *,
    subject: str,
    stage: str,
    department_code: str,
    due_at: datetime,
    text: Text,
) -> StageWarning:
    """Record an overdue stage once, notify the responsible unit and escalate to its head.

    Idempotent for activity retries: a second call for the same open stage and unit
    returns the warning already raised (a stage two units act on in parallel, like a
    commitment's joint review, warns each).
    """
    existing = await session.scalar(
        select(StageWarning).where(
            StageWarning.subject == subject,
            StageWarning.stage == stage,
            StageWarning.department_code == department_code,
            col(StageWarning.resolved_at).is_(None),
        )
    )
    if existing is not None:
        return existing
    warning = StageWarning(
        subject=subject,
        stage=stage,
        department_code=department_code,
        due_at=due_at,
        escalated_to_role=ESCALATION_ROLE.value,
        message=text.body,
    )
    session.add(warning)
    await session.flush()
    recipients = select(User.name).where(User.department_code == department_code, col(User.active))
    await _send(session, recipients, text, subject=subject, dedupe_key=f"warning/{warning.id}")
    return warning


async def notify_enterprise(
    session: AsyncSession, *, uscc: str, subject: str, text: Text, dedupe_key: str
) -> None:
    """An in-app notice to every user of a firm (no-op for a firm with no users yet),
    once per `dedupe_key`: the same key again, as on a retry, sends nothing."""
    recipients = select(User.name).where(User.enterprise_uscc == uscc, col(User.active))
    await _send(session, recipients, text, subject=subject, dedupe_key=dedupe_key)


async def _send(
    session: AsyncSession,
    recipients: SelectOfScalar[str],
    text: Text,
    *,
    subject: str,
    dedupe_key: str,
) -> None:
    """Store a notice for each of `recipients` (a query of user names) who has none under
    `dedupe_key` yet, in one statement.

    INSERT … SELECT … ON CONFLICT DO NOTHING (SQLite and PostgreSQL alike): a concurrent
    copy waits for the first and then inserts nothing, and no error aborts the
    transaction. The text is bound, not written into the statement, so that its
    compiled form is cached like any other.
    """
    notice = Notice.__table__.c  # type: ignore[attr-defined]
    constants = {
        "title": text.title,
        "body": text.body,
        "subject": subject,
        "dedupe_key": dedupe_key,
        "created_at": utcnow(),
    }
    rows = recipients.add_columns(
        *(sa.literal(value, notice[name].type).label(name) for name, value in constants.items())
    )
    insert = upsert(session, Notice).from_select(["recipient", *constants], rows)
    await session.execute(insert.on_conflict_do_nothing(index_elements=["recipient", "dedupe_key"]))
