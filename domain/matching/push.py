"""Pushing matched policies to firms (政策快享), and what the firms did next.

A firm gets each item pushed at most once, ever (a unique key on firm and item), and
no more than `per_week` pushes in any seven days; a match over the limit waits for a
later run, most valuable first. A push is an in-app notice plus a message through the
government channel. Success is counted by firms that acted (applied, or confirmed a
recognition), not by messages sent.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain import access, notices
from domain.errors import NotFound
from domain.notices import texts
from models.eligibility import Verdict
from models.matching import MatchResult, PolicyPush, PushStats, PushStatus, PushSummary
from models.message_channel import MessageState, MessageStatus
from models.notices import Notice
from models.policy import PolicyItem, PolicyItemVersion, VersionStatus
from models.reference import Actor, User
from models.types import utcnow

WEEK = timedelta(days=7)
PUSH_LOCK = 0x7A68_6964_6170  # "zhidap": the advisory lock of push planning


def policy_subject(item_code: str) -> str:
    """The notice subject that ties an in-app notice to its pushed policy."""
    return f"policy/{item_code}"


def pushed_item(subject: str | None) -> str | None:
    """The item a notice pushed, from its subject; None for other notices."""
    if subject and subject.startswith("policy/"):
        return subject.removeprefix("policy/")
    return None


async def plan_pushes(
    session: AsyncSession, per_week: int, now: datetime | None = None
) -> PushSummary:
    """Decide this run's pushes: every match in force that was never pushed, within
    each firm's weekly limit; each one becomes a push record and an in-app notice."""
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        # One planner at a time, or two runs could each grant a firm its weekly quota.
        # (SQLite transactions here begin IMMEDIATE, which serialises them already.)
        await session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PUSH_LOCK})
    candidates = await session.execute(
        select(MatchResult, PolicyItemVersion.title)
        .join(
            PolicyItem,
            sa.and_(
                col(PolicyItem.code) == col(MatchResult.item_code),
                col(PolicyItem.published_version) == col(MatchResult.version),
            ),
        )
        .join(
            PolicyItemVersion,
            sa.and_(
                col(PolicyItemVersion.item_code) == col(MatchResult.item_code),
                col(PolicyItemVersion.version) == col(MatchResult.version),
                col(PolicyItemVersion.status) == VersionStatus.PUBLISHED,
            ),
        )
        .outerjoin(
            PolicyPush,
            sa.and_(
                col(PolicyPush.uscc) == col(MatchResult.uscc),
                col(PolicyPush.item_code) == col(MatchResult.item_code),
            ),
        )
        .where(col(PolicyPush.id).is_(None))
        .order_by(
            col(MatchResult.uscc),
            col(MatchResult.verdict),  # eligible before possibly eligible
            sa.desc(sa.func.coalesce(col(MatchResult.amount_fen), 0)),
            col(MatchResult.item_code),
        )
    )
    recent = dict(
        (
            await session.execute(
                select(PolicyPush.uscc, sa.func.count())
                .where(col(PolicyPush.pushed_at) > now - WEEK)
                .group_by(col(PolicyPush.uscc))
            )
        ).all()
    )
    planned = deferred = 0
    used: dict[str, int] = defaultdict(int)
    for match, title in candidates:
        if recent.get(match.uscc, 0) + used[match.uscc] >= per_week:
            deferred += 1
            continue
        used[match.uscc] += 1
        session.add(
            PolicyPush(
                uscc=match.uscc,
                item_code=match.item_code,
                region_code=match.region_code,
                version=match.version,
                verdict=match.verdict,
                amount_fen=match.amount_fen,
                pushed_at=now,
            )
        )
        await notices.notify_enterprise(
            session,
            uscc=match.uscc,
            subject=policy_subject(match.item_code),
            text=texts.policy_pushed(title, Verdict(match.verdict), match.amount_fen),
            dedupe_key=f"push/{match.uscc}/{match.item_code}",  # pushed once, ever
        )
        planned += 1
    await session.flush()
    return PushSummary(planned=planned, deferred=deferred)


async def pending(session: AsyncSession, limit: int) -> list[PolicyPush]:
    return list(
        await session.scalars(
            select(PolicyPush)
            .where(col(PolicyPush.status) == PushStatus.PENDING)
            .order_by(col(PolicyPush.id))
            .limit(limit)
        )
    )


async def awaiting_receipt(session: AsyncSession, limit: int, after: int = 0) -> list[PolicyPush]:
    """Sent pushes without a receipt yet, in id order from `after`."""
    return list(
        await session.scalars(
            select(PolicyPush)
            .where(col(PolicyPush.status) == PushStatus.SENT, col(PolicyPush.id) > after)
            .order_by(col(PolicyPush.id))
            .limit(limit)
        )
    )


async def record_sent(session: AsyncSession, push_id: int, status: MessageStatus) -> None:
    push = await session.get(PolicyPush, push_id)
    if push is None or push.status != PushStatus.PENDING:
        return  # recorded by an earlier attempt
    push.status, push.message_id, push.sent_at = PushStatus.SENT, status.message_id, utcnow()
    await record_receipt(session, push, status)


async def record_receipt(session: AsyncSession, push: PolicyPush, status: MessageStatus) -> None:
    if status.state is MessageState.DELIVERED:
        push.status, push.delivered_at = PushStatus.DELIVERED, status.delivered_at
    elif status.state is MessageState.UNDELIVERABLE:
        push.status = PushStatus.UNDELIVERABLE


async def record_action(
    session: AsyncSession, uscc: str, item_code: str, action: str, at: datetime | None = None
) -> bool:
    """The firm opened, applied for or confirmed a pushed policy. Only the first time
    of each counts; a policy never pushed records nothing. Returns whether it counted."""
    column = {
        "opened": PolicyPush.opened_at,
        "applied": PolicyPush.applied_at,
        "confirmed": PolicyPush.confirmed_at,
    }[action]
    result = await session.execute(
        sa.update(PolicyPush)
        .where(
            col(PolicyPush.uscc) == uscc,
            col(PolicyPush.item_code) == item_code,
            col(column).is_(None),
        )
        .values({column.key: at or utcnow()})  # type: ignore[union-attr]
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def push_stats_for(session: AsyncSession, actor: Actor, item_code: str) -> PushStats:
    """An item's push results over the firms the actor reads (domain.access decides)."""
    _item, reach = await access.require_item_reader(session, actor, item_code)
    firms = await access.item_firm_filter(session, actor, reach, uscc=col(PolicyPush.uscc))
    return await push_stats(session, item_code, firms)


async def push_stats(
    session: AsyncSession, item_code: str, firms: sa.ColumnElement[bool] | None = None
) -> PushStats:
    acted = sa.or_(
        col(PolicyPush.applied_at).is_not(None), col(PolicyPush.confirmed_at).is_not(None)
    )
    row = (
        await session.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(col(PolicyPush.delivered_at)),
                sa.func.count(col(PolicyPush.opened_at)),
                sa.func.count(col(PolicyPush.applied_at)),
                sa.func.count(col(PolicyPush.confirmed_at)),
                sa.func.count(sa.case((acted, 1))),
            ).where(col(PolicyPush.item_code) == item_code, sa.true() if firms is None else firms)
        )
    ).one()
    pushed, delivered, opened, applied, confirmed, firms_acted = (int(v) for v in row)
    return PushStats(
        item_code=item_code,
        pushed=pushed,
        delivered=delivered,
        opened=opened,
        applied=applied,
        confirmed=confirmed,
        acted=firms_acted,
        success_rate=round(firms_acted / pushed, 4) if pushed else 0.0,
    )


async def read_notice(session: AsyncSession, recipient: str, notice_id: int) -> Notice:
    """The recipient has read a notice; a pushed policy's notice counts as opening it."""
    notice = await session.get(Notice, notice_id)
    if notice is None or notice.recipient != recipient:
        raise NotFound(f"notice {notice_id} not found")
    if notice.read_at is None:
        notice.read_at = utcnow()
        user = await session.get(User, recipient)
        item_code = pushed_item(notice.subject)
        if user is not None and user.enterprise_uscc and item_code:
            await record_action(session, user.enterprise_uscc, item_code, "opened")
        await session.flush()
    return notice
