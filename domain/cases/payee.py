"""Whom a case pays: the firm and its receiving account."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.errors import Conflict
from domain.registry.enterprises import get_enterprise
from models.registry import BankAccount, Enterprise


async def default_payee(session: AsyncSession, uscc: str) -> tuple[Enterprise, BankAccount]:
    """The firm a case pays and the account it pays into: its default account, else
    the one recorded last. Conflict if it has none on file."""
    enterprise = await get_enterprise(session, uscc)
    account = await session.scalar(
        select(BankAccount)
        .where(BankAccount.uscc == uscc)
        .order_by(col(BankAccount.is_default).desc(), col(BankAccount.id).desc())
        .limit(1)
    )
    if account is None:
        raise Conflict(f"enterprise {uscc} has no bank account on file")
    return enterprise, account
