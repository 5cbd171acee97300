"""The audit trail: one row per write request (recorded by the API's middleware, whatever
the outcome) and per read of sensitive data or export (recorded by the route, in the
request's own transaction, so a read that cannot be logged is not served)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.audit import AuditEvent, AuditEventPublic, AuditKind
from models.reference import Actor

_PATH_MAX = 400
_AGENT_MAX = 200


@dataclass(frozen=True)
class Origin:
    """Where a request came from."""

    method: str
    path: str
    correlation_id: str
    client: str | None = None
    user_agent: str | None = None


def event(
    kind: AuditKind,
    actor: Actor | str | None,
    origin: Origin,
    status: int,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    name = actor if isinstance(actor, str) else actor.name if actor else "-"
    return AuditEvent(
        kind=kind.value,
        actor=name[:64],
        role=actor.role.value if isinstance(actor, Actor) else None,
        method=origin.method[:8],
        path=origin.path[:_PATH_MAX],
        subject=subject[:200] if subject else None,
        status=status,
        correlation_id=origin.correlation_id[:128],
        client=origin.client[:64] if origin.client else None,
        user_agent=origin.user_agent[:_AGENT_MAX] if origin.user_agent else None,
        details=details,
    )


async def record(
    session: AsyncSession,
    kind: AuditKind,
    actor: Actor | None,
    origin: Origin,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Log a sensitive read or an export in the caller's transaction."""
    session.add(event(kind, actor, origin, 200, subject, details))
    await session.flush()


class TrailFilters(BaseModel):
    kind: AuditKind | None = None
    actor: str | None = None
    subject: str | None = None  # a case id: its requests, reads and exports
    since: datetime | None = None
    until: datetime | None = None


async def events(
    session: AsyncSession, filters: TrailFilters, offset: int, limit: int
) -> tuple[int, list[AuditEventPublic]]:
    """The trail, newest first."""
    query = select(AuditEvent)
    if filters.kind is not None:
        query = query.where(col(AuditEvent.kind) == filters.kind.value)
    if filters.actor is not None:
        query = query.where(col(AuditEvent.actor) == filters.actor)
    if filters.subject is not None:
        query = query.where(col(AuditEvent.subject) == filters.subject)
    if filters.since is not None:
        query = query.where(col(AuditEvent.at) >= filters.since)
    if filters.until is not None:
        query = query.where(col(AuditEvent.at) < filters.until)
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(col(AuditEvent.id).desc()).offset(offset).limit(limit)
    )
    return int(total or 0), [AuditEventPublic.model_validate(r, from_attributes=True) for r in rows]


async def of_subject(session: AsyncSession, subject: str) -> list[AuditEventPublic]:
    """Every request and read about one case, oldest first."""
    rows = await session.scalars(
        select(AuditEvent).where(col(AuditEvent.subject) == subject).order_by(col(AuditEvent.id))
    )
    return [AuditEventPublic.model_validate(r, from_attributes=True) for r in rows]
