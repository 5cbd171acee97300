"""Whom a case pays: the firm and its receiving account, and whether a payment has
verified that account (a receipt into it) so the firm need not confirm it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.errors import Conflict
from domain.money import budget
from domain.registry.enterprises import get_enterprise
from models.registry import BankAccount, Enterprise


async def default_payee(session: AsyncSession, uscc: str) -> tuple[Enterprise, BankAccount]:
    """The firm a case pays and the account it pays into: its default account, else
    the one recorded last. Conflict if it has none on file."""
    enterprise = await get_enterprise(session, uscc)
    account = await _payee_account(session, uscc)
    if account is None:
        raise Conflict(f"enterprise {uscc} has no bank account on file")
    return enterprise, account


async def _payee_account(session: AsyncSession, uscc: str) -> BankAccount | None:
    account: BankAccount | None = await session.scalar(
        select(BankAccount)
        .where(BankAccount.uscc == uscc)
        .order_by(col(BankAccount.is_default).desc(), col(BankAccount.id).desc())
        .limit(1)
    )
    return account


async def verified_account(session: AsyncSession, uscc: str) -> bool:
    """Whether the account a case would pay into now was verified by an earlier
    payment. False for a firm with no account on file."""
    account = await _payee_account(session, uscc)
    return account is not None and account.verified_at is not None


async def record_paid_account(
    session: AsyncSession, uscc: str, case_id: str, instalment: int, paid_at: datetime
) -> None:
    """A receipt: the account the instalment was instructed to (not whichever is the
    default now) is verified, from its first receipt on. Idempotent. An instruction
    recorded before the ledger kept the account verifies nothing."""
    account = await _instructed_account(session, uscc, case_id, instalment)
    if account is not None and account.verified_at is None:
        account.verified_at = paid_at
        await session.flush()


async def record_returned_account(
    session: AsyncSession, uscc: str, case_id: str, instalment: int
) -> None:
    """退票: the bank sent the instalment back, so its account is not (or no longer) one
    to pay without the firm confirming it. Idempotent."""
    account = await _instructed_account(session, uscc, case_id, instalment)
    if account is not None and account.verified_at is not None:
        account.verified_at = None
        await session.flush()


async def _instructed_account(
    session: AsyncSession, uscc: str, case_id: str, instalment: int
) -> BankAccount | None:
    number = await budget.instructed_account(session, case_id, instalment)
    if number is None:
        return None
    account: BankAccount | None = await session.scalar(
        select(BankAccount).where(BankAccount.uscc == uscc, BankAccount.account_number == number)
    )
    return account
