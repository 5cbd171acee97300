"""Warnings (预警) and in-app notices to staff."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.notices import Notice
from models.policy import StageWarning
from models.reference import Role, User

ESCALATION_ROLE = Role.DEPARTMENT_HEAD


async def raise_stage_warning(
    session: AsyncSession,
    *,
    subject: str,
    stage: str,
    department_code: str,
    due_at: datetime,
    message: str,
    title: str = "办理超时预警",
) -> StageWarning:
    """Record an overdue stage once, notify the responsible unit and escalate to its head.

    Idempotent for activity retries: a second call for the same open stage returns
    the warning already raised.
    """
    existing = await session.scalar(
        select(StageWarning).where(
            StageWarning.subject == subject,
            StageWarning.stage == stage,
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
        message=message,
    )
    session.add(warning)
    recipients = await session.scalars(
        select(User.name).where(User.department_code == department_code, col(User.active))
    )
    for name in recipients:
        session.add(Notice(recipient=name, title=title, body=message, subject=subject))
    await session.flush()
    return warning


async def notify_enterprise(
    session: AsyncSession, *, uscc: str, subject: str, title: str, body: str
) -> None:
    """An in-app notice to every user of a firm (no-op for a firm with no users yet)."""
    recipients = await session.scalars(
        select(User.name).where(User.enterprise_uscc == uscc, col(User.active))
    )
    for name in recipients:
        session.add(Notice(recipient=name, title=title, body=body, subject=subject))
    await session.flush()
