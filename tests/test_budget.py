"""Budget quota and ledger: exactly-once movements and no overspending under concurrency."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col, select

from core.db import make_sessionmaker
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.money import budget
from domain.policy import library
from models.budget import LedgerEntry, LedgerKind, QuotaChange
from models.budget_system import InstructionState, InstructionStatus
from models.policy import ItemCreate
from models.reference import Actor, User
from seed.reference import demo_users, ensure_reference_data, ensure_users
from tests.fixtures.factories import create_users, item_payload

YEAR = 2026


async def _published(session: AsyncSession, staff: Actor, code: str, quota_fen: int) -> None:
    await library.create_item(
        session, staff, ItemCreate.model_validate(item_payload(code, quota_fen=quota_fen))
    )
    await library.submit_version(session, staff, code, 1, head_review_days=3, finance_review_days=5)
    await library.publish_version(session, code, 1)
    await budget.set_quota(session, code, YEAR, quota_fen, "czj_staff")


async def test_reserve_consume_release_are_idempotent(session: AsyncSession) -> None:
    users = await create_users(session)
    await _published(session, users["jxj_staff"], "BUDGET-1", 1_000)
    first = await budget.reserve(session, "case-a", 1, "BUDGET-1", YEAR, 600)
    again = await budget.reserve(session, "case-a", 1, "BUDGET-1", YEAR, 600)  # activity retry
    assert again.id == first.id
    status = await budget.quota_status(session, "BUDGET-1", YEAR)
    assert (status.reserved_fen, status.paid_fen, status.available_fen) == (600, 0, 400)

    with pytest.raises(budget.QuotaExhausted):
        await budget.reserve(session, "case-b", 1, "BUDGET-1", YEAR, 401)
    await budget.reserve(session, "case-b", 1, "BUDGET-1", YEAR, 400)

    await budget.consume(session, "case-a", 1, voucher_no="V1", bank_serial="B1")
    await budget.consume(session, "case-a", 1, voucher_no="V1", bank_serial="B1")
    await budget.release(session, "case-b", 1)
    await budget.release(session, "case-b", 1)
    with pytest.raises(Conflict):
        await budget.release(session, "case-a", 1)  # paid money is not released
    status = await budget.quota_status(session, "BUDGET-1", YEAR)
    assert (status.reserved_fen, status.paid_fen, status.available_fen) == (0, 600, 400)
    kinds = await session.scalars(
        select(LedgerEntry.kind)
        .where(col(LedgerEntry.item_code) == "BUDGET-1")
        .order_by(col(LedgerEntry.id))
    )
    assert list(kinds) == [
        LedgerKind.RESERVE,
        LedgerKind.RESERVE,
        LedgerKind.RECEIPT,
        LedgerKind.RELEASE,
    ]


async def test_quota_rows_exist_only_where_finance_set_them_in_valid_years(
    session: AsyncSession,
) -> None:
    users = await create_users(session)
    staff, finance = users["jxj_staff"], users["czj_staff"]
    await library.create_item(
        session, staff, ItemCreate.model_validate(item_payload("BUDGET-Y", quota_fen=5_000))
    )
    await library.submit_version(
        session, staff, "BUDGET-Y", 1, head_review_days=3, finance_review_days=5
    )
    await library.publish_version(session, "BUDGET-Y", 1)
    # Nothing appears by itself from the item's planned figure.
    with pytest.raises(budget.QuotaNotSet):
        await budget.reserve(session, "case-y", 1, "BUDGET-Y", 2026, 100)
    with pytest.raises(NotFound):
        await budget.quota_status(session, "BUDGET-Y", 2026)
    # The item is valid 2026-2027: no quota for a year outside, and only finance sets one.
    with pytest.raises(InvalidInput) as outside:
        await budget.adjust_quota(session, finance, "BUDGET-Y", 2025, 1_000)
    assert outside.value.errors[0].field == "year"
    with pytest.raises(Forbidden):
        await budget.adjust_quota(session, staff, "BUDGET-Y", 2026, 1_000)
    status = await budget.adjust_quota(session, finance, "BUDGET-Y", 2026, 1_000)
    assert (status.quota_fen, status.available_fen) == (1_000, 1_000)
    assert status.model_dump()["quota_yuan"] == "10.00元"
    await budget.adjust_quota(session, finance, "BUDGET-Y", 2026, 3_000)
    changes = list(
        await session.execute(
            select(QuotaChange.before_fen, QuotaChange.after_fen, QuotaChange.actor).where(
                col(QuotaChange.item_code) == "BUDGET-Y"
            )
        )
    )
    assert [tuple(c) for c in changes] == [(None, 1_000, "czj_staff"), (1_000, 3_000, "czj_staff")]


async def test_a_failed_instalment_moves_its_reservation_lowered_if_need_be(
    session: AsyncSession,
) -> None:
    users = await create_users(session)
    await _published(session, users["jxj_staff"], "BUDGET-M", 1_000)
    await budget.reserve(session, "case-m", 1, "BUDGET-M", YEAR, 800)
    await budget.record_refusal(session, "case-m", 1, "账户冻结")
    await budget.move_reservation(session, "case-m", 1, 2, 500)
    await budget.move_reservation(session, "case-m", 1, 2, 500)  # retried
    status = await budget.quota_status(session, "BUDGET-M", YEAR)
    assert (status.reserved_fen, status.available_fen) == (500, 500)
    with pytest.raises(InvalidInput):
        await budget.move_reservation(session, "case-m", 2, 3, 900)


async def test_quota_cannot_be_lowered_below_commitments(session: AsyncSession) -> None:
    users = await create_users(session)
    await _published(session, users["jxj_staff"], "BUDGET-2", 1_000)
    await budget.reserve(session, "case-a", 1, "BUDGET-2", YEAR, 700)
    with pytest.raises(Conflict):
        await budget.set_quota(session, "BUDGET-2", YEAR, 600, "czj_staff")
    raised = await budget.set_quota(session, "BUDGET-2", YEAR, 2_000, "czj_staff")
    assert raised.quota_fen == 2_000


async def test_racing_reservations_never_overspend(own_engine: AsyncEngine) -> None:
    """Many approvals race for one quota on separate connections: the sum of what
    succeeds never exceeds it, and the last yuan goes to exactly one case."""
    sessionmaker = make_sessionmaker(own_engine)
    code = f"RACE-{uuid.uuid4().hex[:6].upper()}"
    async with sessionmaker.begin() as session:
        await ensure_reference_data(session)
        await ensure_users(session, demo_users(None))
        staff = Actor.of(await session.get_one(User, "jxj_staff"))
        await _published(session, staff, code, 1_000)

    async def attempt(case: str, amount: int) -> bool:
        for _ in range(50):
            try:
                async with sessionmaker.begin() as session:
                    await budget.reserve(session, case, 1, code, YEAR, amount)
                return True
            except budget.QuotaExhausted:
                return False
            except sa.exc.OperationalError:
                await asyncio.sleep(0.01)  # SQLite busy: the activity would retry
        raise AssertionError("reservation never got through")

    results = await asyncio.gather(*(attempt(f"case-{n}", 150) for n in range(20)))
    assert sum(results) == 6  # 6 × 150 = 900 of 1,000
    last = await asyncio.gather(attempt("last-a", 100), attempt("last-b", 100))
    assert sorted(last) == [False, True]

    async with sessionmaker() as session:
        status = await budget.quota_status(session, code, YEAR)
        reserved = await session.scalar(
            sa.select(sa.func.sum(LedgerEntry.amount_fen)).where(col(LedgerEntry.item_code) == code)
        )
    assert (status.reserved_fen, status.available_fen, reserved) == (1_000, 0, 1_000)


def _status(key: str, state: InstructionState, amount: int) -> InstructionStatus:
    return InstructionStatus(
        idempotency_key=key,
        state=state,
        voucher_no=f"V-{key}",
        amount_fen=amount,
        accepted_at=datetime(2026, 11, 27, tzinfo=UTC),
    )


async def test_returned_payment_moves_its_reservation_to_the_next_instalment(
    session: AsyncSession,
) -> None:
    users = await create_users(session)
    await _published(session, users["jxj_staff"], "BUDGET-3", 1_000)
    await budget.reserve(session, "case-r", 1, "BUDGET-3", YEAR, 1_000)  # the whole quota
    await budget.record_instruction(session, "case-r", 1, "zhida:case-r:1", "V1")
    await budget.record_return(session, "case-r", 1, 2, "账户已销户")
    await budget.record_return(session, "case-r", 1, 2, "账户已销户")  # retried
    status = await budget.quota_status(session, "BUDGET-3", YEAR)
    assert (status.reserved_fen, status.paid_fen) == (1_000, 0)  # still held, for instalment 2
    await budget.record_instruction(session, "case-r", 2, "zhida:case-r:2", "V2")
    await budget.consume(session, "case-r", 2, voucher_no="V2", bank_serial="B2")
    status = await budget.quota_status(session, "BUDGET-3", YEAR)
    assert (status.reserved_fen, status.paid_fen) == (0, 1_000)

    clean = await budget.reconcile(
        session,
        [
            _status("zhida:case-r:1", InstructionState.RETURNED, 1_000),
            _status("zhida:case-r:2", InstructionState.PAID, 1_000),
        ],
    )
    assert clean.differences == []
    assert (clean.paid_fen_ours, clean.paid_fen_theirs) == (1_000, 1_000)

    off = await budget.reconcile(
        session,
        [
            _status(
                "zhida:case-r:1", InstructionState.PAID, 1_000
            ),  # they paid what we saw returned
            _status("zhida:case-r:2", InstructionState.PAID, 1_000),
            _status("zhida:stranger:1", InstructionState.PAID, 5),  # a payment we never made
        ],
    )
    assert [(d.idempotency_key, d.ours, d.theirs) for d in off.differences] == [
        ("zhida:case-r:1", "returned", "paid"),
        ("zhida:stranger:1", "missing", "paid"),
    ]
