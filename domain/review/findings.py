"""Findings: stored per case, listed for departments, finance and auditors, decided
only through the case (four eyes to clear, a decision citing them to uphold)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain import access
from domain.access import require_role
from models.reference import Actor, Role
from models.review import (
    HOLDING,
    Dimension,
    FindingCount,
    FindingDecision,
    FindingDraft,
    FindingStatus,
    FindingView,
    ReviewFinding,
)
from models.types import utcnow

LIST_ROLES = (
    Role.AUDITOR,
    Role.ADMIN,
    Role.DEPARTMENT_CASEWORKER,
    Role.DEPARTMENT_HEAD,
    Role.FINANCE_CASEWORKER,
    Role.FINANCE_HEAD,
)


def view(row: ReviewFinding) -> FindingView:
    return FindingView.model_validate(row, from_attributes=True)


async def store_findings(
    session: AsyncSession,
    *,
    case_id: str,
    category: str,
    item_code: str,
    department_code: str,
    region_code: str,
    uscc: str,
    period: str,
    drafts: Sequence[FindingDraft],
) -> list[FindingView]:
    """Keep what this check found (a finding found again is refreshed while it holds the
    case; one already decided stays decided) and return every finding of the case."""
    rows = {
        (r.dimension, r.key): r
        for r in await session.scalars(
            select(ReviewFinding).where(ReviewFinding.case_id == case_id)
        )
    }
    for draft in drafts:
        row = rows.get((draft.dimension, draft.key))
        if row is not None and row.status not in HOLDING:
            continue
        if row is None:
            row = ReviewFinding(
                case_id=case_id,
                category=category,
                item_code=item_code,
                department_code=department_code,
                region_code=region_code,
                uscc=uscc,
                period=period,
                dimension=draft.dimension,
                key=draft.key,
                score=draft.score,
                summary=draft.summary,
                evidence=draft.evidence,
                counterparts=[],
                excess_fen=draft.excess_fen,
            )
            session.add(row)
            rows[(draft.dimension, draft.key)] = row
        row.score, row.summary, row.evidence = draft.score, draft.summary, draft.evidence
        row.counterparts = [c.model_dump(mode="json") for c in draft.counterparts]
        row.amount_fen, row.excess_fen = draft.amount_fen, draft.excess_fen
        row.suggested_fen = draft.suggested_fen
    await session.flush()
    return [view(r) for r in sorted(rows.values(), key=lambda r: r.id or 0)]


async def store_batch_findings(
    session: AsyncSession,
    rows: Sequence[dict[str, object]],
) -> None:
    """Many new findings at once (a recognition batch's identification)."""
    for start in range(0, len(rows), 1000):
        await session.execute(sa.insert(ReviewFinding), list(rows[start : start + 1000]))


async def record_decision(session: AsyncSession, decision: FindingDecision) -> None:
    """What the case decided about its findings (idempotent: an activity may retry)."""
    now = utcnow()
    rows = await session.scalars(
        select(ReviewFinding).where(
            ReviewFinding.case_id == decision.case_id,
            col(ReviewFinding.id).in_(decision.finding_ids),
        )
    )
    for row in rows:
        if decision.status is FindingStatus.CLEARING:
            row.proposed_by, row.proposed_reason = decision.actor, decision.reason
        else:
            row.decided_by, row.decided_reason, row.decided_at = (
                decision.actor,
                decision.reason,
                now,
            )
        row.status = decision.status
    await session.flush()


async def decide_case_findings(
    session: AsyncSession, case_id: str, status: FindingStatus, actor: str, reason: str
) -> None:
    """Move every finding of a case that still holds it (a recognition batch's verification)."""
    ids = list(
        await session.scalars(
            select(ReviewFinding.id).where(
                ReviewFinding.case_id == case_id, col(ReviewFinding.status).in_(list(HOLDING))
            )
        )
    )
    if ids:
        decision = FindingDecision(
            case_id=case_id,
            finding_ids=[i for i in ids if i is not None],
            status=status,
            actor=actor,
            reason=reason,
        )
        await record_decision(session, decision)


async def lapse_findings(session: AsyncSession, case_id: str) -> None:
    """A case closed unpaid holds no money: its undecided findings lapse."""
    await session.execute(
        sa.update(ReviewFinding)
        .where(
            col(ReviewFinding.case_id) == case_id,
            col(ReviewFinding.status).in_([s.value for s in HOLDING]),
        )
        .values(status=FindingStatus.LAPSED, decided_reason="案件未兑付即关闭", decided_at=utcnow())
    )


async def _readable(session: AsyncSession, actor: Actor) -> sa.ColumnElement[bool]:
    require_role(actor, *LIST_ROLES)
    return await access.item_firm_pairs_filter(
        session,
        actor,
        item_code=col(ReviewFinding.item_code),
        uscc=col(ReviewFinding.uscc),
        region_code=col(ReviewFinding.region_code),
    )


def _filters(
    dimension: Dimension | None,
    status: FindingStatus | None,
    item_code: str | None,
    case_id: str | None,
    uscc: str | None,
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if dimension:
        where.append(col(ReviewFinding.dimension) == dimension)
    if status:
        where.append(col(ReviewFinding.status) == status)
    if item_code:
        where.append(col(ReviewFinding.item_code) == item_code)
    if case_id:
        where.append(col(ReviewFinding.case_id) == case_id)
    if uscc:
        where.append(col(ReviewFinding.uscc) == uscc)
    return where


async def list_findings(
    session: AsyncSession,
    actor: Actor,
    *,
    dimension: Dimension | None = None,
    status: FindingStatus | None = None,
    item_code: str | None = None,
    case_id: str | None = None,
    uscc: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[int, list[FindingView]]:
    """Findings the actor may read (the scope of the cases they may read), newest first."""
    query = select(ReviewFinding).where(
        await _readable(session, actor), *_filters(dimension, status, item_code, case_id, uscc)
    )
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(col(ReviewFinding.id).desc()).offset(offset).limit(limit)
    )
    return int(total or 0), [view(r) for r in rows]


async def count_findings(
    session: AsyncSession, actor: Actor, *, item_code: str | None = None
) -> list[FindingCount]:
    """Counts and money by dimension and status: what findings hold, and what they found.
    A case held by two findings of one dimension counts once in its money."""
    rows = await session.execute(
        sa.select(
            col(ReviewFinding.dimension),
            col(ReviewFinding.status),
            col(ReviewFinding.case_id),
            col(ReviewFinding.amount_fen),
            col(ReviewFinding.excess_fen),
        ).where(await _readable(session, actor), *_filters(None, None, item_code, None, None))
    )
    findings: dict[tuple[str, str], int] = defaultdict(int)
    excess: dict[tuple[str, str], int] = defaultdict(int)
    held: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for dimension, status, case_id, amount, over in rows:
        key = (str(dimension), str(status))
        findings[key] += 1
        excess[key] += int(over or 0)
        held[key][case_id] = max(held[key].get(case_id, 0), int(amount or 0))
    return [
        FindingCount(
            dimension=Dimension(d),
            status=FindingStatus(s),
            findings=findings[(d, s)],
            cases=len(held[(d, s)]),
            amount_held_fen=sum(held[(d, s)].values()),
            excess_fen=excess[(d, s)],
        )
        for d, s in sorted(findings)
    ]
