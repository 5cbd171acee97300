"""Budget quota and ledger (invariant 2: a quota is never overspent).

A reservation is one conditional UPDATE (`... WHERE quota - reserved - paid >=
amount`), which both PostgreSQL and SQLite apply atomically, so two approvals
racing for the last yuan cannot both succeed. Every movement is written to the
ledger once per case, instalment and kind; a retried activity finds its entry and
changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.errors import Conflict, NotFound
from models.budget import BudgetQuota, LedgerEntry, LedgerKind, QuotaPublic
from models.policy import PolicyItem, PolicyItemVersion
from models.types import utcnow


class QuotaExhausted(Conflict):
    code = "quota_exhausted"
    title = "Budget quota exhausted"


async def ensure_quota(session: AsyncSession, item_code: str, year: int) -> BudgetQuota:
    """The year's quota row, created from the item's published version on first use."""
    quota = await session.get(BudgetQuota, (item_code, year))
    if quota is not None:
        return quota
    item = await session.get(PolicyItem, item_code)
    if item is None or item.published_version is None:
        raise NotFound(f"policy item {item_code} has no published version")
    version = await session.scalar(
        select(PolicyItemVersion).where(
            PolicyItemVersion.item_code == item_code,
            PolicyItemVersion.version == item.published_version,
        )
    )
    assert version is not None
    try:
        async with session.begin_nested():
            session.add(
                BudgetQuota(item_code=item_code, year=year, quota_fen=version.annual_quota_fen)
            )
    except IntegrityError:
        pass  # created concurrently by another reservation: use theirs
    quota = await session.get(BudgetQuota, (item_code, year), populate_existing=True)
    assert quota is not None
    return quota


async def set_quota(
    session: AsyncSession, item_code: str, year: int, quota_fen: int
) -> BudgetQuota:
    """Raise or lower a year's quota; never below what is already reserved or paid."""
    await ensure_quota(session, item_code, year)
    result = await session.execute(
        sa.update(BudgetQuota)
        .where(
            col(BudgetQuota.item_code) == item_code,
            col(BudgetQuota.year) == year,
            col(BudgetQuota.reserved_fen) + col(BudgetQuota.paid_fen) <= quota_fen,
        )
        .values(quota_fen=quota_fen, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"quota of {item_code} for {year} is committed above {quota_fen} fen")
    quota = await session.get(BudgetQuota, (item_code, year), populate_existing=True)
    assert quota is not None
    return quota


async def _entry(
    session: AsyncSession, case_id: str, instalment: int, kind: LedgerKind
) -> LedgerEntry | None:
    entry: LedgerEntry | None = await session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.case_id == case_id,
            LedgerEntry.instalment == instalment,
            LedgerEntry.kind == kind,
        )
    )
    return entry


async def reserve(
    session: AsyncSession, case_id: str, instalment: int, item_code: str, year: int, amount_fen: int
) -> LedgerEntry:
    """Reserve `amount_fen` of the year's quota for a case instalment, or raise QuotaExhausted."""
    existing = await _entry(session, case_id, instalment, LedgerKind.RESERVE)
    if existing is not None:
        return existing
    await ensure_quota(session, item_code, year)
    result = await session.execute(
        sa.update(BudgetQuota)
        .where(
            col(BudgetQuota.item_code) == item_code,
            col(BudgetQuota.year) == year,
            col(BudgetQuota.quota_fen) - col(BudgetQuota.reserved_fen) - col(BudgetQuota.paid_fen)
            >= amount_fen,
        )
        .values(reserved_fen=col(BudgetQuota.reserved_fen) + amount_fen, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise QuotaExhausted(f"quota of {item_code} for {year} cannot cover {amount_fen} fen")
    entry = LedgerEntry(
        case_id=case_id,
        instalment=instalment,
        kind=LedgerKind.RESERVE,
        item_code=item_code,
        year=year,
        amount_fen=amount_fen,
    )
    session.add(entry)
    await session.flush()
    return entry


async def release(session: AsyncSession, case_id: str, instalment: int) -> LedgerEntry | None:
    """Give back an unpaid reservation (rejection, cancellation). Idempotent."""
    reserved = await _entry(session, case_id, instalment, LedgerKind.RESERVE)
    if reserved is None:
        return None
    existing = await _entry(session, case_id, instalment, LedgerKind.RELEASE)
    if existing is not None:
        return existing
    if await _entry(session, case_id, instalment, LedgerKind.RECEIPT) is not None:
        raise Conflict(f"instalment {instalment} of {case_id} is paid; it cannot be released")
    await _move(session, reserved, reserved_delta=-reserved.amount_fen, paid_delta=0)
    entry = LedgerEntry(
        case_id=case_id,
        instalment=instalment,
        kind=LedgerKind.RELEASE,
        item_code=reserved.item_code,
        year=reserved.year,
        amount_fen=reserved.amount_fen,
    )
    session.add(entry)
    await session.flush()
    return entry


async def consume(
    session: AsyncSession, case_id: str, instalment: int, *, voucher_no: str, bank_serial: str
) -> LedgerEntry:
    """A receipt arrived: the reservation becomes paid. Idempotent."""
    reserved = await _entry(session, case_id, instalment, LedgerKind.RESERVE)
    if reserved is None:
        raise Conflict(f"instalment {instalment} of {case_id} was never reserved")
    existing = await _entry(session, case_id, instalment, LedgerKind.RECEIPT)
    if existing is not None:
        return existing
    await _move(
        session, reserved, reserved_delta=-reserved.amount_fen, paid_delta=reserved.amount_fen
    )
    entry = LedgerEntry(
        case_id=case_id,
        instalment=instalment,
        kind=LedgerKind.RECEIPT,
        item_code=reserved.item_code,
        year=reserved.year,
        amount_fen=reserved.amount_fen,
        voucher_no=voucher_no,
        bank_serial=bank_serial,
    )
    session.add(entry)
    await session.flush()
    return entry


async def _move(
    session: AsyncSession, reserved: LedgerEntry, *, reserved_delta: int, paid_delta: int
) -> None:
    await session.execute(
        sa.update(BudgetQuota)
        .where(
            col(BudgetQuota.item_code) == reserved.item_code, col(BudgetQuota.year) == reserved.year
        )
        .values(
            reserved_fen=col(BudgetQuota.reserved_fen) + reserved_delta,
            paid_fen=col(BudgetQuota.paid_fen) + paid_delta,
            updated_at=utcnow(),
        )
    )


async def quota_status(session: AsyncSession, item_code: str, year: int) -> QuotaPublic:
    quota = await ensure_quota(session, item_code, year)
    return QuotaPublic(
        item_code=quota.item_code,
        year=quota.year,
        quota_fen=quota.quota_fen,
        reserved_fen=quota.reserved_fen,
        paid_fen=quota.paid_fen,
        available_fen=quota.quota_fen - quota.reserved_fen - quota.paid_fen,
    )
