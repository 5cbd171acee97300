"""The money dashboard: committed, reserved and paid by region, department, category
and month; each item's funnel from matched to paid; budget use per item and year."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlmodel import col, select

from core.workdays import SHANGHAI
from domain.dashboard.scope import (
    View,
    cases_where,
    firms_where,
    items_visible,
    readable,
    tally_readable,
)
from models.budget import BudgetQuota, LedgerEntry, LedgerKind
from models.cases import UNPAID_CLOSURES, CaseFirm, CaseRecord, CaseStage
from models.dashboard import BudgetUse, Funnel, Money, Overview
from models.matching import MatchTally, PolicyPush
from models.types import utcnow

# Approved and held on the quota, not yet (all) in the account.
RESERVED_STAGES = frozenset(
    {CaseStage.PAYMENT, CaseStage.ACCOUNT_CORRECTION, CaseStage.PAYMENT_FAILED}
)
# The firm's region a push recorded (nullable: `col` wants a non-optional attribute).
PUSH_REGION = cast(sa.ColumnElement[str], PolicyPush.__table__.c.region_code)  # type: ignore[attr-defined]
_UNPAID = sorted(s.value for s in UNPAID_CLOSURES)
_RESERVED = sorted(s.value for s in RESERVED_STAGES)
CATEGORY_NAMES = {"application": "申报类", "recognition": "认定类", "commitment": "承诺类"}


def _committed() -> sa.ColumnElement[int]:
    """Approved (or, if more, paid) of a case not closed unpaid; paid of one closed."""
    approved = sa.func.coalesce(col(CaseRecord.approved_amount_fen), 0)
    paid = col(CaseRecord.paid_amount_fen)
    larger = sa.case((approved > paid, approved), else_=paid)
    return sa.case((col(CaseRecord.stage).in_(_UNPAID), paid), else_=larger)


def _reserved() -> sa.ColumnElement[int]:
    approved = sa.func.coalesce(col(CaseRecord.approved_amount_fen), 0)
    left = approved - col(CaseRecord.paid_amount_fen)
    return sa.case((sa.and_(col(CaseRecord.stage).in_(_RESERVED), left > 0), left), else_=0)


def _add(into: Money, cases: int, committed: int, reserved: int, paid: int) -> None:
    into.cases += cases
    into.committed_fen += committed
    into.reserved_fen += reserved
    into.paid_fen += paid


async def overview(session: AsyncSession, view: View) -> Overview:
    where = await cases_where(session, view)
    known = view.catalogue
    # One pass over the cases (the covering index): money per region, item and category.
    rows = await session.execute(
        sa.select(
            col(CaseRecord.region_code),
            col(CaseRecord.item_code),
            col(CaseRecord.category),
            sa.func.count(),
            sa.func.sum(_committed()),
            sa.func.sum(_reserved()),
            sa.func.sum(col(CaseRecord.paid_amount_fen)),
        )
        .where(*where)
        .group_by(col(CaseRecord.item_code), col(CaseRecord.region_code), col(CaseRecord.category))
    )
    totals = Money(key="all", name="合计")
    regions: dict[str, Money] = {}
    departments: dict[str, Money] = {}
    categories: dict[str, Money] = {}
    paid_by_item: dict[str, int] = defaultdict(int)
    for region, item, category, cases, committed, reserved, paid in rows:
        figures = (int(cases), int(committed or 0), int(reserved or 0), int(paid or 0))
        department = known.items[item].department_code if item in known.items else ""
        _add(totals, *figures)
        for slices, key, name in (
            (regions, region, known.region_name(region)),
            (departments, department, known.department_name(department)),
            (categories, category, CATEGORY_NAMES.get(category, category)),
        ):
            _add(slices.setdefault(key, Money(key=key, name=name)), *figures)
        paid_by_item[item] += figures[3]
    return Overview(
        filters=view.filters,
        totals=totals,
        by_region=sorted(regions.values(), key=lambda m: m.key),
        by_department=sorted(departments.values(), key=lambda m: -m.committed_fen),
        by_category=sorted(categories.values(), key=lambda m: m.key),
        by_month=await _by_month(session, where),
        funnel=await _funnel(session, view, await _firms(session, view, paid_by_item)),
        budget=await _budget(session, view),
        generated_at=utcnow(),
    )


@dataclass
class Acted:
    """An item's firms with a case, approved and paid, and what was paid."""

    firms: int = 0
    approved: int = 0
    paid: int = 0
    paid_fen: int = 0


async def _firms(
    session: AsyncSession, view: View, paid_by_item: dict[str, int]
) -> dict[str, Acted]:
    """Each item's firms with a case, one approved and one paid (`CaseFirm`: a firm may
    have several cases of an item, for several periods or attempts)."""
    rows = await session.execute(
        sa.select(
            col(CaseFirm.item_code),
            sa.func.count(),
            sa.func.sum(sa.case((col(CaseFirm.approved), 1), else_=0)),
            sa.func.sum(sa.case((col(CaseFirm.paid), 1), else_=0)),
        )
        .where(*await firms_where(session, view))
        .group_by(col(CaseFirm.item_code))
    )
    return {
        item: Acted(int(firms), int(approved or 0), int(paid or 0), paid_by_item.get(item, 0))
        for item, firms, approved, paid in rows
    }


class _UtcHour(sa.sql.functions.FunctionElement[datetime]):
    """A UTC timestamp cut to its hour, as a naive UTC datetime: on SQLite a prefix of
    the stored text (its date functions cost twice as much per row), on PostgreSQL
    in UTC whatever the session's time zone (to_char costs twice what date_trunc does)."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(_UtcHour, "sqlite")
def _utc_hour_sqlite(element: _UtcHour, compiler: sa.sql.compiler.SQLCompiler, **kw: object) -> str:
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 13) || ':00:00'"


@compiles(_UtcHour, "postgresql")
def _utc_hour_postgresql(
    element: _UtcHour, compiler: sa.sql.compiler.SQLCompiler, **kw: object
) -> str:
    return f"date_trunc('hour', {compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC')"


async def _by_month(session: AsyncSession, where: list[sa.ColumnElement[bool]]) -> list[Money]:
    """Money into accounts by month of receipt (Asia/Shanghai), less what the banks
    returned: summed in SQL by UTC hour, then by Shanghai month here, which spares the
    database a time-zone conversion per entry."""
    hour = _UtcHour(col(LedgerEntry.at))
    signed = sa.case(
        (col(LedgerEntry.kind) == LedgerKind.RETURN, -col(LedgerEntry.amount_fen)),
        else_=col(LedgerEntry.amount_fen),
    )
    query = sa.select(hour, sa.func.count(), sa.func.sum(signed)).where(
        col(LedgerEntry.kind).in_([LedgerKind.RECEIPT, LedgerKind.RETURN])
    )
    narrowed = [clause for clause in where if not isinstance(clause, sa.sql.elements.True_)]
    if narrowed:  # only then is each entry's case needed
        query = query.join(CaseRecord, col(CaseRecord.case_id) == col(LedgerEntry.case_id)).where(
            *narrowed
        )
    cases: dict[str, int] = defaultdict(int)
    paid: dict[str, int] = defaultdict(int)
    for utc_hour, entries, amount in await session.execute(query.group_by(hour)):
        local = utc_hour.replace(tzinfo=UTC).astimezone(SHANGHAI)
        key = f"{local.year}-{local.month:02d}"
        cases[key] += int(entries)
        paid[key] += int(amount or 0)
    return [Money(key=key, name=key, cases=cases[key], paid_fen=paid[key]) for key in sorted(cases)]


async def _funnel(session: AsyncSession, view: View, acted: dict[str, Acted]) -> list[Funnel]:
    known = view.catalogue
    matched = dict(
        list(
            await session.execute(
                sa.select(col(MatchTally.item_code), sa.func.sum(col(MatchTally.firms)))
                .where(*await tally_readable(session, view))
                .group_by(col(MatchTally.item_code))
            )
        )
    )
    pushed: dict[str, tuple[int, int]] = {}
    for item, count, opened in await session.execute(
        select(
            PolicyPush.item_code,
            sa.func.count(),
            sa.func.count(col(PolicyPush.opened_at)),
        )
        .where(
            *await readable(
                session,
                view,
                item_code=col(PolicyPush.item_code),
                uscc=col(PolicyPush.uscc),
                region_code=PUSH_REGION,
            )
        )
        .group_by(col(PolicyPush.item_code))
    ):
        pushed[item] = (int(count), int(opened))
    funnel = []
    for code in sorted(set(matched) | set(pushed) | set(acted)):
        entry = known.items.get(code)
        cases = acted.get(code, Acted(paid_fen=0))
        sent, opened = pushed.get(code, (0, 0))
        funnel.append(
            Funnel(
                item_code=code,
                title=known.title(code),
                category=entry.category if entry else "",
                department_code=entry.department_code if entry else "",
                matched=int(matched.get(code, 0)),
                pushed=sent,
                pushes_opened=opened,
                acted=cases.firms,
                approved=cases.approved,
                paid=cases.paid,
                paid_fen=cases.paid_fen,
            )
        )
    return funnel


async def _budget(session: AsyncSession, view: View) -> list[BudgetUse]:
    codes = await items_visible(session, view)
    query = select(BudgetQuota).where(col(BudgetQuota.item_code).in_(sorted(codes)))
    if view.filters.year is not None:
        query = query.where(col(BudgetQuota.year) == view.filters.year)
    quotas = await session.scalars(
        query.order_by(col(BudgetQuota.year).desc(), col(BudgetQuota.item_code))
    )
    return [
        BudgetUse(
            item_code=q.item_code,
            title=view.catalogue.title(q.item_code),
            year=q.year,
            quota_fen=q.quota_fen,
            reserved_fen=q.reserved_fen,
            paid_fen=q.paid_fen,
            used_pct=round(100 * (q.reserved_fen + q.paid_fen) / q.quota_fen, 1)
            if q.quota_fen
            else 0.0,
        )
        for q in quotas
    ]
