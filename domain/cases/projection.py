"""The list projection of cases (`CaseRecord`): written from each case's workflow state,
read by the inbox, the lists and the dashboards. Temporal holds where a case stands;
this is its copy for queries.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import ClassVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from core.db import upsert
from core.workdays import SHANGHAI, WorkingCalendar
from domain import access, notices
from domain.access import require_role
from domain.errors import NotFound
from domain.notices import texts
from domain.registry.enterprises import get_enterprise
from domain.review.findings import lapse_findings
from models.budget import LedgerEntry, LedgerKind
from models.cases import (
    UNPAID_CLOSURES,
    CaseClaim,
    CaseFirm,
    CaseRecord,
    CaseStage,
    CaseState,
    ClaimState,
)
from models.commitment import RecoveryOrder
from models.policy import PolicyItem, PolicyItemVersion, StageWarning
from models.reference import Actor, Role
from models.types import utcnow

_UNPAID = sorted(stage.value for stage in UNPAID_CLOSURES)


async def project(
    session: AsyncSession, state: CaseState, calendar: WorkingCalendar | None = None
) -> None:
    """Upsert the list projection of a case from its workflow state, and tell the firm
    when its case has reached a stage it must hear of."""
    record = await session.get(CaseRecord, state.case_id)
    previous = record.stage if record is not None else None
    counted = _counted(record) if record is not None else None
    # Read before the record changes, so that the changes go out in one UPDATE (a query
    # after them would flush them first).
    first_paid = (
        await _first_receipt(session, state.case_id)
        if (record is None or record.paid_at is None) and state.paid_amount_fen > 0
        else None
    )
    if record is None:
        category = state.case_id.split("/", 1)[0]
        region_code = (await get_enterprise(session, state.uscc)).region_code
        record = CaseRecord(
            case_id=state.case_id,
            category=category,
            item_code=state.item_code,
            version=state.version,
            period=state.period,
            uscc=state.uscc,
            region_code=region_code,
            stage=state.stage.value,
            year=budget_year_of(state.period, utcnow()),
            entitled_at=utcnow(),  # an application's entitlement: the day it applied
        )
        session.add(record)
    record.stage = state.stage.value
    record.waiting_for_role = state.waiting_for_role
    record.waiting_for_department = state.waiting_for_department
    record.also_waiting_for_department = state.also_waiting_for_department
    record.due_at = state.due_at
    record.overdue = state.overdue
    record.approved_amount_fen = state.approved_amount_fen
    record.paid_amount_fen = state.paid_amount_fen
    record.updated_at = utcnow()
    entitled = state.moments.get("entitled") or state.moments.get("applied")
    if entitled is not None:
        record.entitled_at = entitled
    if first_paid is not None:
        record.paid_at = first_paid
        if record.entitled_at is not None:
            record.days_to_money = (calendar or WorkingCalendar()).working_days_between(
                record.entitled_at, record.paid_at
            )
    if state.moments or state.batch_id:
        record.details = {
            "batch_id": state.batch_id,
            "moments": {name: at.isoformat() for name, at in state.moments.items()},
        }
    await _settle_claim(session, state)
    await session.flush()
    # The firm's sums (`CaseFirm`) change only with what this case adds to them; most
    # projections (a new deadline, a stage within the tail) leave them as they are.
    if _counted(record) != counted:
        await count_firm(session, record.item_code, record.uscc, record.year)
    if previous != state.stage.value:
        # A warning about a stage the case has left is resolved. Warnings are raised
        # by the case while it is at their stage, so one projected at an unchanged
        # stage has left none.
        await session.execute(
            sa.update(StageWarning)
            .where(
                col(StageWarning.subject) == state.case_id,
                col(StageWarning.stage) != state.stage.value,
                col(StageWarning.resolved_at).is_(None),
            )
            .values(resolved_at=utcnow())
        )
        await session.flush()
        await _tell_firm(session, state)


def _approved() -> sa.ColumnElement[bool]:
    """A case approved and not closed unpaid, or paid."""
    return sa.and_(
        col(CaseRecord.approved_amount_fen).is_not(None),
        sa.or_(col(CaseRecord.stage).not_in(_UNPAID), col(CaseRecord.paid_amount_fen) > 0),
    )


def _counted(record: CaseRecord) -> tuple[object, ...]:
    """What one case adds to its firm's sums in `count_firm`, in the same terms."""
    approved = record.approved_amount_fen is not None and (
        record.stage not in _UNPAID or record.paid_amount_fen > 0
    )
    return (
        record.year,
        record.region_code,
        approved,
        record.paid_amount_fen > 0,
        record.paid_at,
    )


async def count_firm(session: AsyncSession, item_code: str, uscc: str, year: int | None) -> None:
    """Sum up one firm's cases of one item and year for the dashboards (`CaseFirm`), in
    one statement: the sums, inserted or written over the firm's row."""
    if year is None:
        return
    sums = _firm_sums().where(
        col(CaseRecord.item_code) == item_code,
        col(CaseRecord.uscc) == uscc,
        col(CaseRecord.year) == year,
    )
    insert = upsert(session, CaseFirm).from_select(list(_FIRM_SUMS), sums)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["item_code", "uscc", "year"],
            set_={name: insert.excluded[name] for name in _FIRM_SUMS[3:]},
        )
    )


async def count_all_firms(session: AsyncSession) -> None:
    """Sum up every firm's cases again (`CaseFirm`), e.g. after loading cases in bulk."""
    await session.execute(sa.delete(CaseFirm))
    sums = _firm_sums().where(col(CaseRecord.year).is_not(None))
    await session.execute(sa.insert(CaseFirm).from_select(list(_FIRM_SUMS), sums))


# `CaseFirm`'s columns, in the order `_firm_sums` selects them.
_FIRM_SUMS = ("item_code", "uscc", "year", "region_code", "approved", "paid", "first_paid_at")


def _firm_sums() -> sa.Select[str, str, int | None, str, bool, bool, datetime | None]:
    """Each firm's sums of its cases of an item and year, grouped so: `CaseFirm`'s rows."""
    approved = _approved()
    return sa.select(
        col(CaseRecord.item_code),
        col(CaseRecord.uscc),
        col(CaseRecord.year),
        sa.func.min(col(CaseRecord.region_code)),
        sa.func.max(sa.case((approved, 1), else_=0)) == 1,
        sa.func.max(sa.case((col(CaseRecord.paid_amount_fen) > 0, 1), else_=0)) == 1,
        sa.func.min(col(CaseRecord.paid_at)),
    ).group_by(col(CaseRecord.item_code), col(CaseRecord.uscc), col(CaseRecord.year))


def budget_year_of(period: str, opened_at: datetime) -> int:
    """A case's budget year: its period's, or for a one-off period the year it opened."""
    return int(period[:4]) if period[:4].isdigit() else opened_at.astimezone(SHANGHAI).year


async def _first_receipt(session: AsyncSession, case_id: str) -> datetime:
    """When the case's first money reached the firm's account: its first receipt."""
    at = await session.scalar(
        select(sa.func.min(LedgerEntry.at)).where(
            col(LedgerEntry.case_id) == case_id, col(LedgerEntry.kind) == LedgerKind.RECEIPT
        )
    )
    return at or utcnow()


async def _tell_firm(session: AsyncSession, state: CaseState) -> None:
    """A notice to the firm on entering a stage it must act on or hear of: returned for
    correction, rejected, paid. (A cancellation and payment problems are told where they
    happen; the firm's own withdrawal needs no notice.) Keyed by the case's stage and
    timeline length: a retried projection tells it once, a second correction round anew."""
    if state.stage not in (CaseStage.CORRECTION, CaseStage.REJECTED, CaseStage.PAID):
        return
    title = await session.scalar(
        select(PolicyItemVersion.title).where(
            col(PolicyItemVersion.item_code) == state.item_code,
            col(PolicyItemVersion.version) == state.version,
        )
    )
    title = title or state.item_code
    applied = state.batch_id is None  # a recognition case was never applied for
    if state.stage is CaseStage.CORRECTION:
        text = texts.case_returned(title, state.period, state.corrections)
    elif state.stage is CaseStage.REJECTED:
        reason = state.timeline[-1].detail if state.timeline else ""
        text = texts.case_rejected(title, state.period, reason, applied)
    else:
        text = texts.case_paid(title, state.period, state.paid_amount_fen, applied)
    await notices.notify_enterprise(
        session,
        uscc=state.uscc,
        subject=state.case_id,
        text=text,
        dedupe_key=f"case/{state.case_id}/{state.stage.value}/{len(state.timeline)}",
    )


async def _settle_claim(session: AsyncSession, state: CaseState) -> None:
    """A paid case keeps its period for good, and so does one its firm declined; one
    closed unpaid otherwise gives it back."""
    if state.stage in (CaseStage.PAID, CaseStage.SETTLED):
        wanted = ClaimState.PAID
    elif state.stage is CaseStage.DECLINED:
        wanted = ClaimState.DECLINED
    elif state.stage in UNPAID_CLOSURES:
        wanted = ClaimState.CLOSED
        await lapse_findings(session, state.case_id)
    else:
        return
    await session.execute(
        sa.update(CaseClaim)
        .where(col(CaseClaim.case_id) == state.case_id, col(CaseClaim.state) == ClaimState.OPEN)
        .values(state=wanted, closed_at=utcnow())
    )


async def inbox(
    session: AsyncSession, actor: Actor, offset: int, limit: int
) -> tuple[int, list[CaseRecord]]:
    """Cases waiting on the caller's unit, soonest deadline first (no deadline last).

    A case waits on a unit as the one it waits for or as the one it also waits for:
    each is an index in deadline order (`CaseRecord`'s inbox indexes), so the page is
    the first `offset + limit` of each, merged, rather than every waiting case sorted
    (1,600 of them for one department of the load city, for a page of 50)."""
    require_role(actor, Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD, Role.FINANCE_CASEWORKER)
    unit = actor.department_code
    waits = (
        col(CaseRecord.waiting_for_department) == unit,
        col(CaseRecord.also_waiting_for_department) == unit,
    )
    total = await session.scalar(
        select(sa.func.count()).select_from(CaseRecord).where(sa.or_(*waits))
    )
    undated = col(CaseRecord.due_at).is_(None)
    firsts = [
        select(col(CaseRecord.case_id), undated.label("undated"), col(CaseRecord.due_at))
        .where(wait)
        .order_by(undated, col(CaseRecord.due_at), col(CaseRecord.case_id))
        .limit(offset + limit)
        .subquery()
        for wait in waits
    ]
    merged = sa.union(*(sa.select(*first.c) for first in firsts)).subquery()
    soonest = (merged.c.undated, merged.c.due_at, merged.c.case_id)
    page = sa.select(*merged.c).order_by(*soonest).offset(offset).limit(limit).subquery()
    rows = await session.scalars(
        select(CaseRecord)
        .join(page, col(CaseRecord.case_id) == page.c.case_id)
        .order_by(page.c.undated, page.c.due_at, page.c.case_id)
    )
    return int(total or 0), list(rows)


class CaseFilters(BaseModel):
    """Filters on the projection's own columns (equality), and on what the ledger and
    the library say of a case (the rest; what auditors look for)."""

    item_code: str | None = None
    category: str | None = None
    stage: str | None = None
    region_code: str | None = None
    period: str | None = None
    overdue: bool | None = None
    waiting_for_department: str | None = None
    # Beyond the projection:
    item_department: str | None = None  # the department that owns the item
    min_amount_fen: int | None = None  # approved amount, inclusive
    max_amount_fen: int | None = None
    paid_from: date | None = None  # a receipt on or after this day (Shanghai)
    paid_to: date | None = None  # ... on or before this day
    returned: bool | None = None  # the bank returned a payment of the case (退票)
    recovered: bool | None = None  # a recovery order was raised (追回)

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "item_code",
        "category",
        "stage",
        "region_code",
        "period",
        "overdue",
        "waiting_for_department",
    )

    def where(self) -> list[sa.ColumnElement[bool]]:
        case_id = col(CaseRecord.case_id)
        clauses: list[sa.ColumnElement[bool]] = [
            getattr(CaseRecord, name) == value
            for name, value in self.model_dump(include=set(self.COLUMNS), exclude_none=True).items()
        ]
        if self.item_department is not None:
            owned = select(PolicyItem.code).where(
                col(PolicyItem.department_code) == self.item_department
            )
            clauses.append(col(CaseRecord.item_code).in_(owned))
        if self.min_amount_fen is not None:
            clauses.append(col(CaseRecord.approved_amount_fen) >= self.min_amount_fen)
        if self.max_amount_fen is not None:
            clauses.append(col(CaseRecord.approved_amount_fen) <= self.max_amount_fen)
        if self.paid_from is not None or self.paid_to is not None:
            receipts = select(LedgerEntry.case_id).where(
                col(LedgerEntry.kind) == LedgerKind.RECEIPT
            )
            if self.paid_from is not None:
                receipts = receipts.where(col(LedgerEntry.at) >= _day_start(self.paid_from))
            if self.paid_to is not None:
                next_day = self.paid_to + timedelta(days=1)
                receipts = receipts.where(col(LedgerEntry.at) < _day_start(next_day))
            clauses.append(case_id.in_(receipts))
        if self.returned is not None:
            returns = select(LedgerEntry.case_id).where(col(LedgerEntry.kind) == LedgerKind.RETURN)
            clauses.append(case_id.in_(returns) if self.returned else case_id.not_in(returns))
        if self.recovered is not None:
            orders = select(RecoveryOrder.case_id)
            clauses.append(case_id.in_(orders) if self.recovered else case_id.not_in(orders))
        return clauses


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=SHANGHAI).astimezone(UTC)


async def list_cases(
    session: AsyncSession, actor: Actor, filters: CaseFilters, offset: int, limit: int
) -> tuple[int, list[CaseRecord]]:
    """Cases an auditor, admin or staff member may read, filtered; newest first.
    Auditors and admins read all; a department the cases of its own items (and of items
    it acts on); finance also those of its region's items and firms (the city's
    finance: every case)."""
    require_role(
        actor,
        Role.AUDITOR,
        Role.ADMIN,
        Role.DEPARTMENT_CASEWORKER,
        Role.DEPARTMENT_HEAD,
        Role.FINANCE_CASEWORKER,
        Role.FINANCE_HEAD,
    )
    # The same scope as a single case read (domain.access decides, and says what it is).
    readable = await access.item_firm_pairs_filter(
        session,
        actor,
        item_code=col(CaseRecord.item_code),
        uscc=col(CaseRecord.uscc),
        region_code=col(CaseRecord.region_code),
    )
    query = select(CaseRecord).where(readable, *filters.where())
    return await _newest_first(session, query, offset, limit)


async def cases_of_enterprise(
    session: AsyncSession, actor: Actor, offset: int, limit: int
) -> tuple[int, list[CaseRecord]]:
    require_role(actor, Role.ENTERPRISE)
    query = select(CaseRecord).where(col(CaseRecord.uscc) == actor.enterprise_uscc)
    return await _newest_first(session, query, offset, limit)


async def _newest_first(
    session: AsyncSession, query: SelectOfScalar[CaseRecord], offset: int, limit: int
) -> tuple[int, list[CaseRecord]]:
    """A page of `query`'s cases, the newest first, and how many there are."""
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(col(CaseRecord.created_at).desc()).offset(offset).limit(limit)
    )
    return int(total or 0), list(rows)


async def get_record(session: AsyncSession, case_id: str) -> CaseRecord:
    record = await session.get(CaseRecord, case_id)
    if record is None:
        raise NotFound(f"case {case_id} not found")
    return record


async def awaiting_budget(session: AsyncSession, item_code: str) -> list[str]:
    rows = await session.scalars(
        select(CaseRecord.case_id).where(
            col(CaseRecord.item_code) == item_code, col(CaseRecord.stage) == "awaiting_budget"
        )
    )
    return list(rows)
