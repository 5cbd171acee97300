"""Recovery orders (追回) in the database: the order, what was credited to it, the ledger
and the quota, offsets from other payments to the firm, and the default it may end in.

The case workflow decides (when to open, grant a plan, waive, default); these functions
record each decision once (every one is idempotent, for activity retries) and compute
where the order stands with `domain.money.interest.balance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.workdays import SHANGHAI
from domain.errors import NotFound
from domain.money import budget
from domain.money.interest import balance
from models.budget import LedgerEntry, LedgerKind
from models.budget_system import RecoveryReceipt, recovery_key
from models.commitment import (
    Credit,
    CreditKind,
    PlannedInstalment,
    RecoveryBalance,
    RecoveryCredit,
    RecoveryOpening,
    RecoveryOrder,
    RecoveryStatus,
    RecoveryView,
)
from models.registry import Fact
from models.types import utcnow

DEFAULT_FACT = "commitment_default"
# The ledger's record of an order itself (its credits use their own ids as instalment).
ORDER_INSTALMENT = 0
_CREDIT_LEDGER = {
    CreditKind.REPAYMENT: LedgerKind.REPAYMENT,
    CreditKind.OFFSET: LedgerKind.OFFSET,
    CreditKind.WAIVER: LedgerKind.WAIVER,
}


async def get_order(session: AsyncSession, case_id: str) -> RecoveryOrder:
    order = await session.get(RecoveryOrder, case_id, populate_existing=True)
    if order is None:
        raise NotFound(f"{case_id} has no recovery order")
    return order


async def open_order(session: AsyncSession, opening: RecoveryOpening) -> RecoveryOrder:
    """Record the order and its ledger entry, once."""
    order = await session.get(RecoveryOrder, opening.case_id)
    if order is not None:
        return order
    order = RecoveryOrder(
        case_id=opening.case_id,
        uscc=opening.uscc,
        item_code=opening.item_code,
        year=opening.year,
        principal_fen=opening.principal_fen,
        due_on=opening.due_on,
        daily_interest_rate=str(opening.daily_interest_rate),
        reason=opening.reason,
    )
    session.add(order)
    await budget.record_memo(
        session,
        opening.case_id,
        ORDER_INSTALMENT,
        LedgerKind.RECOVERY_ORDER,
        item_code=opening.item_code,
        year=opening.year,
        amount_fen=opening.principal_fen,
        details={"due_on": opening.due_on.isoformat(), "reason": opening.reason},
    )
    memo = await session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.case_id == opening.case_id,
            LedgerEntry.kind == LedgerKind.RECOVERY_ORDER,
        )
    )
    assert memo is not None
    memo.idempotency_key = recovery_key(opening.case_id)  # what reconciliation matches
    await session.flush()
    return order


async def credits_of(session: AsyncSession, case_id: str) -> list[Credit]:
    rows = await session.scalars(
        select(RecoveryCredit)
        .where(RecoveryCredit.case_id == case_id)
        .order_by(col(RecoveryCredit.on), col(RecoveryCredit.id))
    )
    return [
        Credit(kind=r.kind, on=r.on, amount_fen=r.amount_fen, reference=r.reference) for r in rows
    ]


def plan_of(order: RecoveryOrder) -> list[PlannedInstalment]:
    return [PlannedInstalment.model_validate(p) for p in order.plan or []]


def standing(order: RecoveryOrder, credits: Sequence[Credit], as_of: date) -> RecoveryBalance:
    return balance(
        order.principal_fen,
        order.due_on,
        Decimal(order.daily_interest_rate),
        credits,
        as_of,
        plan_of(order),
    )


async def view(session: AsyncSession, case_id: str, as_of: date) -> RecoveryView:
    order = await get_order(session, case_id)
    credits = await credits_of(session, case_id)
    return RecoveryView(
        principal_fen=order.principal_fen,
        due_on=order.due_on,
        status=order.status,
        payment_code=order.payment_code,
        plan=plan_of(order),
        credits=credits,
        balance=standing(order, credits, as_of),
    )


async def add_credit(
    session: AsyncSession,
    order: RecoveryOrder,
    kind: CreditKind,
    on: date,
    amount_fen: int,
    reference: str,
) -> bool:
    """Credit the order once per reference; the ledger records it, split into principal
    and interest as `balance` applies it, and repaid or offset principal returns to the
    quota. False when the reference was credited already."""
    known = await session.scalar(
        select(RecoveryCredit.id).where(
            RecoveryCredit.case_id == order.case_id, RecoveryCredit.reference == reference
        )
    )
    if known is not None:
        return False
    before = await credits_of(session, order.case_id)
    new = Credit(kind=kind, on=on, amount_fen=amount_fen, reference=reference)
    was, now = standing(order, before, on), standing(order, [*before, new], on)
    principal = was.principal_outstanding_fen - now.principal_outstanding_fen
    interest = min(amount_fen, was.interest_outstanding_fen)  # interest first (art. 561)
    row = RecoveryCredit(
        case_id=order.case_id, kind=kind, on=on, amount_fen=amount_fen, reference=reference
    )
    session.add(row)
    await session.flush()
    assert row.id is not None
    details = {"reference": reference, "on": on.isoformat(), "principal_fen": principal}
    await budget.record_memo(
        session,
        order.case_id,
        row.id,
        _CREDIT_LEDGER[kind],
        item_code=order.item_code,
        year=order.year,
        amount_fen=amount_fen,
        details={**details, "interest_fen": interest},
    )
    if kind is not CreditKind.WAIVER:
        if interest > 0:
            await budget.record_memo(
                session,
                order.case_id,
                row.id,
                LedgerKind.INTEREST,
                item_code=order.item_code,
                year=order.year,
                amount_fen=interest,
                details=details,
            )
        await budget.regain(session, order.item_code, order.year, principal)
    order.updated_at = utcnow()
    return True


async def record_receipts(
    session: AsyncSession, case_id: str, receipts: Sequence[RecoveryReceipt]
) -> int:
    """The budget system's receipts of money back, credited once each (by serial) on
    the day they arrived; returns how many were new."""
    order = await get_order(session, case_id)
    new = 0
    for receipt in receipts:
        on = receipt.received_at.astimezone(SHANGHAI).date()
        reference = f"receipt:{receipt.serial}"
        amount = receipt.amount_fen
        if await add_credit(session, order, CreditKind.REPAYMENT, on, amount, reference):
            new += 1
    return new


async def set_payment_code(session: AsyncSession, case_id: str, payment_code: str) -> None:
    order = await get_order(session, case_id)
    order.payment_code = payment_code


async def grant_plan(
    session: AsyncSession, case_id: str, plan: Sequence[PlannedInstalment]
) -> None:
    order = await get_order(session, case_id)
    if order.plan is None:
        order.plan = [p.model_dump(mode="json") for p in plan]
        order.updated_at = utcnow()


async def waive(
    session: AsyncSession, case_id: str, amount_fen: int, on: date, reference: str
) -> None:
    order = await get_order(session, case_id)
    await add_credit(session, order, CreditKind.WAIVER, on, amount_fen, reference)


async def set_status(session: AsyncSession, case_id: str, status: RecoveryStatus) -> None:
    await session.execute(
        sa.update(RecoveryOrder)
        .where(col(RecoveryOrder.case_id) == case_id)
        .values(status=status, updated_at=utcnow())
    )


async def record_default(session: AsyncSession, uscc: str, on: date) -> None:
    """The credit-penalty fact: `commitment_default` true from the day of default, which
    eligibility rules may test (`commitment_default eq false` excludes defaulters)."""
    period = str(on.year)
    exists = await session.scalar(
        select(Fact.id).where(Fact.uscc == uscc, Fact.kind == DEFAULT_FACT, Fact.period == period)
    )
    if exists is None:
        session.add(
            Fact(
                uscc=uscc,
                kind=DEFAULT_FACT,
                period=period,
                period_end=on,
                value=True,
                source="zhida:recovery",
                fetched_at=utcnow(),
            )
        )
        await session.flush()


async def may_offset(session: AsyncSession, uscc: str, paying_case_id: str, today: date) -> bool:
    """Whether a payment could withhold anything: the firm has an order past its
    deadline, or the paying case withheld before. One indexed read, so that a payment to
    a firm that owes nothing takes no write transaction for it."""
    overdue = await session.scalar(
        select(RecoveryOrder.case_id)
        .where(
            RecoveryOrder.uscc == uscc,
            col(RecoveryOrder.status).in_([RecoveryStatus.OPEN, RecoveryStatus.DEFAULTED]),
            col(RecoveryOrder.due_on) < today,
        )
        .limit(1)
    )
    if overdue is not None:
        return True
    withheld = await session.scalar(
        select(LedgerEntry.id)
        .where(LedgerEntry.case_id == paying_case_id, LedgerEntry.kind == LedgerKind.OFFSET)
        .limit(1)
    )
    return withheld is not None


async def offset_against(
    session: AsyncSession,
    *,
    uscc: str,
    paying_case_id: str,
    instalment: int,
    item_code: str,
    year: int,
    amount_fen: int,
    today: date,
) -> list[tuple[RecoveryOrder, int]]:
    """Before a payment to a firm: withhold what the firm owes on overdue recovery orders
    (past their deadline, or under a broken plan), oldest first, up to the payment.
    Recorded in both cases' ledgers, once per paying case: a retry, or the next
    instalment of a payment refused or returned, withholds the same again (nothing
    more). A paying case that is cancelled after withholding leaves the debt credited
    (a known gap: finance reverses it by hand)."""
    done = await session.scalar(
        select(LedgerEntry)
        .where(
            LedgerEntry.case_id == paying_case_id,
            LedgerEntry.kind == LedgerKind.OFFSET,
        )
        .order_by(col(LedgerEntry.instalment).desc())
        .limit(1)
    )
    reference = f"offset:{paying_case_id}"
    if done is not None:
        # Withheld already: by this instalment (a retry), or by one that was refused or
        # returned and is paid again now: the debt was credited then, the same amount is
        # withheld again, never twice.
        taken = []
        for part in (done.details or {}).get("orders", []):
            taken.append((await get_order(session, part["case_id"]), int(part["amount_fen"])))
        if done.instalment != instalment:
            await budget.record_memo(
                session,
                paying_case_id,
                instalment,
                LedgerKind.OFFSET,
                item_code=item_code,
                year=year,
                amount_fen=done.amount_fen,
                details={**(done.details or {}), "carried_from": done.instalment},
            )
        return taken
    orders = await session.scalars(
        select(RecoveryOrder)
        .where(
            RecoveryOrder.uscc == uscc,
            col(RecoveryOrder.status).in_([RecoveryStatus.OPEN, RecoveryStatus.DEFAULTED]),
            col(RecoveryOrder.due_on) < today,
            RecoveryOrder.case_id != paying_case_id,
        )
        .order_by(col(RecoveryOrder.due_on))
    )
    remaining, taken = amount_fen, []
    for order in orders:
        credits = await credits_of(session, order.case_id)
        owed = standing(order, credits, today)
        if order.plan and owed.plan_broken_on is None:
            continue  # a plan that holds is not overdue
        take = min(owed.outstanding_fen, remaining)
        if take <= 0:
            continue
        await add_credit(session, order, CreditKind.OFFSET, today, take, reference)
        taken.append((order, take))
        remaining -= take
        if remaining == 0:
            break
    if taken:
        await budget.record_memo(
            session,
            paying_case_id,
            instalment,
            LedgerKind.OFFSET,
            item_code=item_code,
            year=year,
            amount_fen=amount_fen - remaining,
            details={
                "orders": [{"case_id": o.case_id, "amount_fen": a} for o, a in taken],
                "on": today.isoformat(),
            },
        )
    return taken
