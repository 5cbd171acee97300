"""Warnings (预警): what needs someone now, each row pointing at its cases."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.workdays import SHANGHAI, WorkingCalendar
from domain.dashboard.scope import View, cases_where, items_visible, readable
from models.budget import BudgetQuota, LedgerEntry, LedgerKind
from models.cases import OPEN_STAGES, CaseRecord, CaseStage
from models.commitment import RecoveryCredit, RecoveryOrder, RecoveryStatus
from models.dashboard import (
    FindingsWaiting,
    MatchingWarning,
    OverdueReview,
    QuotaWarning,
    RecoveryWarning,
    ReturnedPayment,
    Warnings,
)
from models.matching import MatchError, MatchRun, MatchScope
from models.review import FindingStatus, ReviewFinding
from models.types import utcnow

QUOTA_THRESHOLD_PCT = 90  # a quota this used up (reserved and paid) is nearly gone
RECOVERY_HORIZON_DAYS = 30  # a recovery due within this many days is shown
LIMIT = 200  # rows per list; the case lists behind each link have them all
_OPEN = sorted(s.value for s in OPEN_STAGES)
_RETURNED = [CaseStage.ACCOUNT_CORRECTION.value, CaseStage.PAYMENT_FAILED.value]


async def warnings(session: AsyncSession, view: View, calendar: WorkingCalendar) -> Warnings:
    where = await cases_where(session, view)
    return Warnings(
        overdue_reviews=await _overdue(session, view, where, calendar),
        quotas=await _quotas(session, view),
        returned_payments=await _returned(session, where),
        recoveries=await _recoveries(session, where),
        matching=await _matching(session, view),
        findings=await _findings(session, view),
        quota_threshold_pct=QUOTA_THRESHOLD_PCT,
        generated_at=utcnow(),
    )


async def _overdue(
    session: AsyncSession,
    view: View,
    where: list[sa.ColumnElement[bool]],
    calendar: WorkingCalendar,
) -> list[OverdueReview]:
    records = list(
        await session.scalars(
            select(CaseRecord)
            .where(col(CaseRecord.overdue), col(CaseRecord.stage).in_(_OPEN), *where)
            .order_by(col(CaseRecord.due_at), col(CaseRecord.case_id))
            .limit(LIMIT)
        )
    )
    now = utcnow()
    late = [calendar.working_days_between(r.due_at, now) if r.due_at else 0 for r in records]
    return [
        OverdueReview(
            case_id=r.case_id,
            item_code=r.item_code,
            uscc=r.uscc,
            stage=r.stage,
            department_code=r.waiting_for_department,
            department_name=view.catalogue.department_name(r.waiting_for_department) or None,
            waiting_for_role=r.waiting_for_role,
            due_at=r.due_at,
            working_days_late=days,
        )
        for r, days in zip(records, late, strict=True)
    ]


async def _quotas(session: AsyncSession, view: View) -> list[QuotaWarning]:
    codes = sorted(await items_visible(session, view))
    waiting = dict(
        list(
            await session.execute(
                select(CaseRecord.item_code, sa.func.count())
                .where(
                    col(CaseRecord.stage) == CaseStage.AWAITING_BUDGET.value,
                    col(CaseRecord.item_code).in_(codes),
                )
                .group_by(col(CaseRecord.item_code))
            )
        )
    )
    query = select(BudgetQuota).where(col(BudgetQuota.item_code).in_(codes))
    if view.filters.year is not None:
        query = query.where(col(BudgetQuota.year) == view.filters.year)
    out = []
    for quota in await session.scalars(query):
        used = quota.reserved_fen + quota.paid_fen
        pct = round(100 * used / quota.quota_fen, 1) if quota.quota_fen else 100.0
        if pct >= QUOTA_THRESHOLD_PCT or waiting.get(quota.item_code):
            out.append(
                QuotaWarning(
                    item_code=quota.item_code,
                    title=view.catalogue.title(quota.item_code),
                    year=quota.year,
                    quota_fen=quota.quota_fen,
                    used_fen=used,
                    used_pct=pct,
                    waiting_cases=int(waiting.get(quota.item_code, 0)),
                )
            )
    return sorted(out, key=lambda q: (-q.used_pct, q.item_code))


async def _returned(
    session: AsyncSession, where: list[sa.ColumnElement[bool]]
) -> list[ReturnedPayment]:
    """Payments the bank returned (退票) or the budget system refused, whose case still
    waits for a corrected account or a new instruction: the few cases at those stages
    first, then their ledger entries."""
    waiting = {
        case_id: (item, uscc, stage)
        for case_id, item, uscc, stage in await session.execute(
            sa.select(
                col(CaseRecord.case_id),
                col(CaseRecord.item_code),
                col(CaseRecord.uscc),
                col(CaseRecord.stage),
            ).where(col(CaseRecord.stage).in_(_RETURNED), *where)
        )
    }
    out = []
    cases = sorted(waiting)
    for start in range(0, len(cases), 500):
        for case_id, fen, at in await session.execute(
            sa.select(
                col(LedgerEntry.case_id),
                sa.func.sum(col(LedgerEntry.amount_fen)),
                sa.func.max(col(LedgerEntry.at)),
            )
            .where(
                col(LedgerEntry.case_id).in_(cases[start : start + 500]),
                col(LedgerEntry.kind).in_([LedgerKind.RETURN, LedgerKind.REFUSED]),
            )
            .group_by(col(LedgerEntry.case_id))
        ):
            item, uscc, stage = waiting[case_id]
            out.append(
                ReturnedPayment(
                    case_id=case_id,
                    item_code=item,
                    uscc=uscc,
                    stage=stage,
                    returned_fen=int(fen),
                    returned_at=at,
                )
            )
    return sorted(out, key=lambda r: (r.returned_at, r.case_id))[:LIMIT]


async def _recoveries(
    session: AsyncSession, where: list[sa.ColumnElement[bool]]
) -> list[RecoveryWarning]:
    """Recovery orders (追回) defaulted, or open and due within the horizon."""
    horizon = utcnow().astimezone(SHANGHAI).date() + timedelta(days=RECOVERY_HORIZON_DAYS)
    credited = (
        select(sa.func.coalesce(sa.func.sum(col(RecoveryCredit.amount_fen)), 0))
        .where(col(RecoveryCredit.case_id) == col(RecoveryOrder.case_id))
        .scalar_subquery()
    )
    rows = await session.execute(
        select(RecoveryOrder, credited)
        .join(CaseRecord, col(CaseRecord.case_id) == col(RecoveryOrder.case_id))
        .where(
            sa.or_(
                col(RecoveryOrder.status) == RecoveryStatus.DEFAULTED,
                sa.and_(
                    col(RecoveryOrder.status) == RecoveryStatus.OPEN,
                    col(RecoveryOrder.due_on) <= horizon,
                ),
            ),
            *where,
        )
        .order_by(col(RecoveryOrder.due_on))
        .limit(LIMIT)
    )
    return [
        RecoveryWarning(
            case_id=order.case_id,
            item_code=order.item_code,
            uscc=order.uscc,
            status=str(order.status),
            outstanding_fen=max(order.principal_fen - int(paid), 0),
            due_on=order.due_on.isoformat(),
            defaulted=order.status == RecoveryStatus.DEFAULTED,
        )
        for order, paid in rows
    ]


async def _matching(session: AsyncSession, view: View) -> list[MatchingWarning]:
    """Items the latest full run (or a later run of the item) could not evaluate."""
    latest_full = await session.scalar(
        select(sa.func.max(col(MatchRun.id))).where(col(MatchRun.scope) == MatchScope.FULL)
    )
    codes = await items_visible(session, view)
    rows = await session.execute(
        sa.select(
            col(MatchError.item_code),
            sa.func.max(col(MatchError.run_id)),
            sa.func.count(),
            sa.func.max(col(MatchError.message)),
            sa.func.max(col(MatchError.at)),
        )
        .where(
            col(MatchError.run_id) >= (latest_full or 0),
            col(MatchError.item_code).is_not(None),
            col(MatchError.uscc).is_(None),
            col(MatchError.item_code).in_(sorted(codes)),
        )
        .group_by(col(MatchError.item_code))
    )
    return [
        MatchingWarning(item_code=item, run_id=run, errors=int(n), example=message, at=at)
        for item, run, n, message, at in rows
    ]


async def _findings(session: AsyncSession, view: View) -> list[FindingsWaiting]:
    """Duplicate-funding findings still holding their cases, by item."""
    rows = await session.execute(
        sa.select(
            col(ReviewFinding.item_code),
            sa.func.count(sa.distinct(col(ReviewFinding.case_id))),
            sa.func.count(),
            sa.func.sum(col(ReviewFinding.excess_fen)),
            sa.func.min(col(ReviewFinding.raised_at)),
        )
        .where(
            col(ReviewFinding.status).in_([FindingStatus.OPEN, FindingStatus.CLEARING]),
            *await readable(
                session,
                view,
                item_code=col(ReviewFinding.item_code),
                uscc=col(ReviewFinding.uscc),
                region_code=col(ReviewFinding.region_code),
            ),
        )
        .group_by(col(ReviewFinding.item_code))
    )
    return [
        FindingsWaiting(
            item_code=item, cases=int(c), findings=int(n), excess_fen=int(x or 0), oldest=at
        )
        for item, c, n, x, at in rows
    ]
