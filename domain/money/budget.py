"""Budget quota and ledger (invariant 2: a quota is never overspent).

A reservation is one conditional UPDATE (`... WHERE quota - reserved - paid >=
amount`), which both PostgreSQL and SQLite apply atomically, so two approvals
racing for the last yuan cannot both succeed. Every movement is written to the
ledger once per case, instalment and kind; a retried activity finds its entry and
changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.budget import BudgetQuota, LedgerEntry, LedgerKind, QuotaChange, QuotaPublic
from models.budget_system import InstructionState, InstructionStatus, RecoveryStatus
from models.policy import PolicyItem, PolicyItemVersion, VersionStatus
from models.reference import Actor, Department, DepartmentKind, Role
from models.types import utcnow


class QuotaExhausted(Conflict):
    code = "quota_exhausted"
    title = "Budget quota exhausted"


class QuotaNotSet(QuotaExhausted):
    """No quota row for the year: finance has not set it (nothing is created by itself)."""

    code = "quota_not_set"
    title = "Budget quota not set"


async def get_quota(session: AsyncSession, item_code: str, year: int) -> BudgetQuota:
    """The year's quota row, as finance set it."""
    quota = await session.get(BudgetQuota, (item_code, year), populate_existing=True)
    if quota is None:
        raise QuotaNotSet(f"finance has not set the {year} quota of {item_code}")
    return quota


async def set_quota(
    session: AsyncSession, item_code: str, year: int, quota_fen: int, actor: str
) -> BudgetQuota:
    """Create, raise or lower a year's quota; never below what is already reserved or
    paid. Every change is recorded with who made it."""
    quota = await session.get(BudgetQuota, (item_code, year), populate_existing=True)
    before = None if quota is None else quota.quota_fen
    if quota is None:
        try:
            async with session.begin_nested():
                session.add(BudgetQuota(item_code=item_code, year=year, quota_fen=quota_fen))
        except IntegrityError:
            pass  # set concurrently by another request: adjust theirs below
        else:
            session.add(
                QuotaChange(
                    item_code=item_code,
                    year=year,
                    before_fen=None,
                    after_fen=quota_fen,
                    actor=actor,
                )
            )
            return await get_quota(session, item_code, year)
        before = (await get_quota(session, item_code, year)).quota_fen
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
    session.add(
        QuotaChange(
            item_code=item_code, year=year, before_fen=before, after_fen=quota_fen, actor=actor
        )
    )
    return await get_quota(session, item_code, year)


async def _entries(
    session: AsyncSession, case_id: str, instalment: int
) -> dict[LedgerKind, LedgerEntry]:
    """The instalment's ledger entries by kind (one each at most), in one read."""
    entries = await session.scalars(
        select(LedgerEntry).where(
            LedgerEntry.case_id == case_id, LedgerEntry.instalment == instalment
        )
    )
    return {LedgerKind(entry.kind): entry for entry in entries}


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
        await get_quota(session, item_code, year)  # QuotaNotSet where finance set none
        raise QuotaExhausted(f"quota of {item_code} for {year} cannot cover {amount_fen} fen")
    entry = LedgerEntry(
        case_id=case_id,
        instalment=instalment,
        kind=LedgerKind.RESERVE,
        item_code=item_code,
        year=year,
        amount_fen=amount_fen,
    )
    return await _added(session, entry)


async def release(session: AsyncSession, case_id: str, instalment: int) -> LedgerEntry | None:
    """Give back an unpaid reservation (rejection, cancellation). Idempotent."""
    entries = await _entries(session, case_id, instalment)
    reserved = entries.get(LedgerKind.RESERVE)
    if reserved is None:
        return None
    existing = entries.get(LedgerKind.RELEASE)
    if existing is not None:
        return existing
    if LedgerKind.RECEIPT in entries:
        raise Conflict(f"instalment {instalment} of {case_id} is paid; it cannot be released")
    await _move(session, reserved, reserved_delta=-reserved.amount_fen, paid_delta=0)
    entry = _next_entry(reserved, LedgerKind.RELEASE)
    return await _added(session, entry)


async def consume(
    session: AsyncSession, case_id: str, instalment: int, *, voucher_no: str, bank_serial: str
) -> LedgerEntry:
    """A receipt arrived: the reservation becomes paid. Idempotent."""
    entries = await _entries(session, case_id, instalment)
    reserved = entries.get(LedgerKind.RESERVE)
    if reserved is None:
        raise Conflict(f"instalment {instalment} of {case_id} was never reserved")
    existing = entries.get(LedgerKind.RECEIPT)
    if existing is not None:
        return existing
    await _move(
        session, reserved, reserved_delta=-reserved.amount_fen, paid_delta=reserved.amount_fen
    )
    entry = _next_entry(
        reserved,
        LedgerKind.RECEIPT,
        voucher_no=voucher_no,
        bank_serial=bank_serial,
    )
    return await _added(session, entry)


async def _added(session: AsyncSession, entry: LedgerEntry) -> LedgerEntry:
    session.add(entry)
    await session.flush()
    return entry


def _next_entry(source: LedgerEntry, kind: LedgerKind, **extra: Any) -> LedgerEntry:
    """The next movement of the same case instalment, for the same amount."""
    return LedgerEntry(
        case_id=source.case_id,
        instalment=source.instalment,
        kind=kind,
        item_code=source.item_code,
        year=source.year,
        amount_fen=source.amount_fen,
        **extra,
    )


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
    try:
        quota = await get_quota(session, item_code, year)
    except QuotaNotSet as exc:
        raise NotFound(exc.detail) from None
    return QuotaPublic(
        item_code=quota.item_code,
        year=quota.year,
        quota_fen=quota.quota_fen,
        reserved_fen=quota.reserved_fen,
        paid_fen=quota.paid_fen,
        available_fen=quota.quota_fen - quota.reserved_fen - quota.paid_fen,
        updated_at=quota.updated_at,
    )


async def record_instruction(
    session: AsyncSession,
    case_id: str,
    instalment: int,
    idempotency_key: str,
    voucher_no: str,
    *,
    payee_account: str | None = None,
    amount_fen: int | None = None,
) -> LedgerEntry:
    """The budget system accepted the instalment's payment instruction. Idempotent.

    The account number it pays into is kept, so that its receipt verifies that account
    and no other (`instructed_account`). `amount_fen` is what the instruction pays when
    less than the reservation (a debt of the firm was offset against it)."""
    entries = await _entries(session, case_id, instalment)
    existing = entries.get(LedgerKind.INSTRUCT)
    if existing is not None:
        return existing
    reserved = entries.get(LedgerKind.RESERVE)
    if reserved is None:
        raise Conflict(f"instalment {instalment} of {case_id} was never reserved")
    entry = _next_entry(
        reserved,
        LedgerKind.INSTRUCT,
        idempotency_key=idempotency_key,
        voucher_no=voucher_no,
        details=None if payee_account is None else {"payee_account": payee_account},
    )
    if amount_fen is not None:
        entry.amount_fen = amount_fen
    return await _added(session, entry)


async def instructed_account(session: AsyncSession, case_id: str, instalment: int) -> str | None:
    """The account number the instalment's instruction paid into; None when it was not
    instructed, or was instructed before the ledger kept the account."""
    instructed = await _entry(session, case_id, instalment, LedgerKind.INSTRUCT)
    details = instructed.details if instructed is not None else None
    account = details.get("payee_account") if isinstance(details, dict) else None
    return account if isinstance(account, str) else None


async def record_return(
    session: AsyncSession, case_id: str, instalment: int, next_instalment: int, reason: str
) -> LedgerEntry:
    """退票: the bank sent the instalment back. Its reservation moves to the next
    instalment (which pays again under a new key), so the quota neither grows nor
    shrinks and the repayment cannot fail for lack of budget. Idempotent."""
    existing = await _entry(session, case_id, instalment, LedgerKind.RETURN)
    if existing is not None:
        return existing
    instructed = await _entry(session, case_id, instalment, LedgerKind.INSTRUCT)
    if instructed is None:
        raise Conflict(f"instalment {instalment} of {case_id} was never instructed")
    entry = _next_entry(
        instructed,
        LedgerKind.RETURN,
        idempotency_key=instructed.idempotency_key,
        voucher_no=instructed.voucher_no,
        details={"reason": reason, "repaid_as": next_instalment},
    )
    session.add(entry)
    await release(session, case_id, instalment)
    await reserve(
        session,
        case_id,
        next_instalment,
        instructed.item_code,
        instructed.year,
        instructed.amount_fen,
    )
    await session.flush()
    return entry


class ReconciliationLine(BaseModel):
    idempotency_key: str
    case_id: str | None
    instalment: int | None
    ours: str  # instructed | paid | returned | missing
    theirs: str  # accepted | paid | returned | missing
    amount_ours_fen: int | None
    amount_theirs_fen: int | None


class Reconciliation(BaseModel):
    instructions: int
    paid_fen_ours: int
    paid_fen_theirs: int
    differences: list[ReconciliationLine]
    # Money coming back (追回): recovery orders, and what the treasury received under them.
    recoveries: int = 0
    recovered_fen_ours: int = 0
    recovered_fen_theirs: int = 0


_OURS_TO_THEIRS = {"instructed": "accepted", "paid": "paid", "returned": "returned"}


async def reconcile(
    session: AsyncSession,
    statement: list[InstructionStatus],
    recoveries: Sequence[RecoveryStatus] = (),
) -> Reconciliation:
    """Compare our ledger with the budget system's statement, instruction by instruction,
    and recovery by recovery (each order registered, and every fen received under it
    credited to it: `recovered`)."""
    entries = list(
        await session.scalars(
            select(LedgerEntry).where(
                col(LedgerEntry.kind).in_(
                    [LedgerKind.INSTRUCT, LedgerKind.RECEIPT, LedgerKind.RETURN]
                )
            )
        )
    )
    ours: dict[str, tuple[LedgerEntry, str]] = {}
    settled: dict[tuple[str, int], str] = {}
    for e in entries:
        if e.kind == LedgerKind.RECEIPT:
            settled[(e.case_id, e.instalment)] = "paid"
        elif e.kind == LedgerKind.RETURN:
            settled[(e.case_id, e.instalment)] = "returned"
    for e in entries:
        if e.kind == LedgerKind.INSTRUCT and e.idempotency_key:
            state = settled.get((e.case_id, e.instalment), "instructed")
            ours[e.idempotency_key] = (e, state)
    theirs = {s.idempotency_key: s for s in statement}
    differences = []
    for key in sorted(set(ours) | set(theirs)):
        entry, our_state = ours.get(key, (None, "missing"))
        status = theirs.get(key)
        their_state = status.state.value if status else "missing"
        amounts_differ = (
            entry is not None and status is not None and entry.amount_fen != status.amount_fen
        )
        if _OURS_TO_THEIRS.get(our_state) != their_state or amounts_differ:
            differences.append(
                ReconciliationLine(
                    idempotency_key=key,
                    case_id=entry.case_id if entry else None,
                    instalment=entry.instalment if entry else None,
                    ours=our_state,
                    theirs=their_state,
                    amount_ours_fen=entry.amount_fen if entry else None,
                    amount_theirs_fen=status.amount_fen if status else None,
                )
            )
    back = await _reconcile_recoveries(session, recoveries)
    return Reconciliation(
        recoveries=back.recoveries,
        recovered_fen_ours=back.recovered_fen_ours,
        recovered_fen_theirs=back.recovered_fen_theirs,
        instructions=len(set(ours) | set(theirs)),
        paid_fen_ours=sum(e.amount_fen for e in entries if e.kind == LedgerKind.RECEIPT),
        paid_fen_theirs=sum(s.amount_fen for s in statement if s.state is InstructionState.PAID),
        differences=differences + back.differences,
    )


async def _reconcile_recoveries(
    session: AsyncSession, recoveries: Sequence[RecoveryStatus]
) -> Reconciliation:
    orders = {
        e.idempotency_key: e
        for e in await session.scalars(
            select(LedgerEntry).where(LedgerEntry.kind == LedgerKind.RECOVERY_ORDER)
        )
        if e.idempotency_key
    }
    received: dict[str, int] = {}
    for case_id, amount in await session.execute(
        select(LedgerEntry.case_id, sa.func.sum(LedgerEntry.amount_fen))
        .where(LedgerEntry.kind == LedgerKind.REPAYMENT)
        .group_by(col(LedgerEntry.case_id))
    ):
        received[case_id] = int(amount)
    theirs = {r.idempotency_key: r for r in recoveries}
    differences = []
    for key in sorted(set(orders) | set(theirs)):
        order, status = orders.get(key), theirs.get(key)
        ours_fen = received.get(order.case_id, 0) if order else None
        theirs_fen = status.received_fen if status else None
        if order is None or status is None or ours_fen != theirs_fen:
            differences.append(
                ReconciliationLine(
                    idempotency_key=key,
                    case_id=order.case_id if order else None,
                    instalment=None,
                    ours="recovered" if order else "missing",
                    theirs="recovered" if status else "missing",
                    amount_ours_fen=ours_fen,
                    amount_theirs_fen=theirs_fen,
                )
            )
    return Reconciliation(
        instructions=0,
        paid_fen_ours=0,
        paid_fen_theirs=0,
        differences=differences,
        recoveries=len(set(orders) | set(theirs)),
        recovered_fen_ours=sum(received.get(o.case_id, 0) for o in orders.values()),
        recovered_fen_theirs=sum(r.received_fen for r in recoveries),
    )


async def adjust_quota(
    session: AsyncSession, actor: Actor, item_code: str, year: int, quota_fen: int
) -> QuotaPublic:
    """Finance sets a year's quota of an item in its region (追加或调减指标)."""
    item = await session.get(PolicyItem, item_code)
    if item is None:
        raise NotFound(f"policy item {item_code} not found")
    finance = await session.scalar(
        select(Department.code).where(
            Department.region_code == item.region_code, Department.kind == DepartmentKind.FINANCE
        )
    )
    if actor.role is not Role.FINANCE_CASEWORKER or actor.department_code != finance:
        raise Forbidden(f"only finance department {finance} sets the quota of {item_code}")
    years = await valid_years(session, item_code)
    if year not in years:
        window = f"{min(years)}–{max(years)}" if years else "no year (nothing published)"
        raise InvalidInput.field(
            "year", f"{item_code} is valid in {window}; a quota for {year} could never be spent"
        )
    await set_quota(session, item_code, year, quota_fen, actor.name)
    return await quota_status(session, item_code, year)


async def valid_years(session: AsyncSession, item_code: str) -> set[int]:
    """The years any published version of the item is valid in: the only years that
    can have a quota."""
    rows = await session.execute(
        select(col(PolicyItemVersion.valid_from), col(PolicyItemVersion.valid_to)).where(
            PolicyItemVersion.item_code == item_code,
            col(PolicyItemVersion.status).in_(
                [VersionStatus.PUBLISHED, VersionStatus.SUSPENDED, VersionStatus.SUPERSEDED]
            ),
        )
    )
    return {y for start, end in rows for y in range(start.year, end.year + 1)}


async def move_reservation(
    session: AsyncSession, case_id: str, instalment: int, next_instalment: int, amount_fen: int
) -> LedgerEntry:
    """Pay an instalment that failed again under the next one: its reservation moves
    (possibly lowered) in one transaction, so the retry cannot fail for lack of
    budget and the quota never counts it twice. Idempotent."""
    reserved = await _entry(session, case_id, instalment, LedgerKind.RESERVE)
    if reserved is None:
        raise Conflict(f"instalment {instalment} of {case_id} was never reserved")
    if amount_fen > reserved.amount_fen:
        raise InvalidInput.field("amount_fen", f"may not exceed {reserved.amount_fen}")
    await release(session, case_id, instalment)
    return await reserve(
        session, case_id, next_instalment, reserved.item_code, reserved.year, amount_fen
    )


async def record_refusal(
    session: AsyncSession, case_id: str, instalment: int, reason: str
) -> LedgerEntry | None:
    """The instalment's payment could not be instructed (refused by the budget system,
    or no valid payee): recorded for the auditors; its reservation stays. Idempotent."""
    existing = await _entry(session, case_id, instalment, LedgerKind.REFUSED)
    if existing is not None:
        return existing
    reserved = await _entry(session, case_id, instalment, LedgerKind.RESERVE)
    if reserved is None:
        return None
    entry = _next_entry(reserved, LedgerKind.REFUSED, details={"reason": reason[:500]})
    return await _added(session, entry)


async def record_memo(
    session: AsyncSession,
    case_id: str,
    instalment: int,
    kind: LedgerKind,
    *,
    item_code: str,
    year: int,
    amount_fen: int,
    details: dict[str, Any] | None = None,
) -> LedgerEntry:
    """An entry that moves no quota by itself (a prepayment or settlement decided, a
    recovery order, a credit to one). Idempotent on the case, instalment and kind."""
    existing = await _entry(session, case_id, instalment, kind)
    if existing is not None:
        return existing
    entry = LedgerEntry(
        case_id=case_id,
        instalment=instalment,
        kind=kind,
        item_code=item_code,
        year=year,
        amount_fen=amount_fen,
        details=details,
    )
    return await _added(session, entry)


async def regain(session: AsyncSession, item_code: str, year: int, amount_fen: int) -> None:
    """Recovered principal returns to the quota it was paid from (paid goes down)."""
    if amount_fen <= 0:
        return
    result = await session.execute(
        sa.update(BudgetQuota)
        .where(
            col(BudgetQuota.item_code) == item_code,
            col(BudgetQuota.year) == year,
            col(BudgetQuota.paid_fen) >= amount_fen,
        )
        .values(paid_fen=col(BudgetQuota.paid_fen) - amount_fen, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"{item_code} {year} never paid the {amount_fen} fen recovered")


async def offset_receipt(session: AsyncSession, case_id: str, instalment: int) -> str | None:
    """The voucher of an instalment paid wholly by offset (received, never instructed)."""
    if await _entry(session, case_id, instalment, LedgerKind.INSTRUCT) is not None:
        return None
    receipt = await _entry(session, case_id, instalment, LedgerKind.RECEIPT)
    return receipt.voucher_no if receipt is not None else None
