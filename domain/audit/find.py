"""What auditors look for beyond the case lists (domain/cases/projection.py has those):
policy changes across the library."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.audit import PolicyChangeLine
from models.policy import PolicyChangeEvent, PolicyItem


async def policy_changes(
    session: AsyncSession,
    *,
    item_code: str | None,
    department: str | None,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    offset: int,
    limit: int,
) -> tuple[int, list[PolicyChangeLine]]:
    """Every recorded step of every item's changes, newest first."""
    query = select(PolicyChangeEvent)
    if item_code is not None:
        query = query.where(col(PolicyChangeEvent.item_code) == item_code)
    if department is not None:
        owned = select(PolicyItem.code).where(col(PolicyItem.department_code) == department)
        query = query.where(col(PolicyChangeEvent.item_code).in_(owned))
    if actor is not None:
        query = query.where(col(PolicyChangeEvent.actor) == actor)
    if action is not None:
        query = query.where(col(PolicyChangeEvent.action) == action)
    if since is not None:
        query = query.where(col(PolicyChangeEvent.at) >= since)
    if until is not None:
        query = query.where(col(PolicyChangeEvent.at) < until)
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(col(PolicyChangeEvent.id).desc()).offset(offset).limit(limit)
    )
    return int(total or 0), [PolicyChangeLine.model_validate(r, from_attributes=True) for r in rows]
