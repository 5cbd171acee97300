"""Budget quotas (预算指标) per item and year, and the ledger of every money movement."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, computed_field
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.money import format_yuan
from models.types import UTCDateTime, utcnow


class BudgetQuota(SQLModel, table=True):
    """One item's annual quota. available = quota - reserved - paid, never below zero."""

    __tablename__ = "budget_quota"
    __table_args__ = (
        sa.CheckConstraint("reserved_fen >= 0", name="reserved_not_negative"),
        sa.CheckConstraint("paid_fen >= 0", name="paid_not_negative"),
        sa.CheckConstraint("reserved_fen + paid_fen <= quota_fen", name="quota_not_overspent"),
    )

    item_code: str = Field(foreign_key="policy_item.code", primary_key=True, max_length=40)
    year: int = Field(primary_key=True)
    quota_fen: int = Field(sa_type=sa.BigInteger)
    reserved_fen: int = Field(default=0, sa_type=sa.BigInteger)
    paid_fen: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LedgerKind(enum.StrEnum):
    RESERVE = "reserve"
    RELEASE = "release"
    INSTRUCT = "instruct"
    RECEIPT = "receipt"
    RETURN = "return"
    REFUSED = "refused"  # the budget system refused the instruction, or it could not be made
    # Commitment cases (承诺类). Records of what was decided, which move no quota:
    PREPAYMENT = "prepayment"  # the instalment that is a prepayment, and of what commitment
    SETTLEMENT = "settlement"  # the final amount, against what was prepaid
    RECOVERY_ORDER = "recovery_order"  # prepaid beyond the final amount, to come back
    # Money coming back, one entry per credit to a recovery order (`instalment` is the
    # credit's id): the principal part returns to the quota it was paid from.
    REPAYMENT = "repayment"  # received by the budget system
    OFFSET = "offset"  # withheld from another payment to the firm (both cases record it)
    WAIVER = "waiver"  # forgiven by the finance head: nothing comes back
    INTEREST = "interest"  # the late-interest part of a credit (treasury income)


class LedgerEntry(SQLModel, table=True):
    """Every reservation, release, instruction, receipt and return, once each per
    case and instalment (the unique key makes activity retries harmless)."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        sa.UniqueConstraint("case_id", "instalment", "kind"),
        # Money by month: receipts and returns in time order, with what the sum needs.
        sa.Index("ix_ledger_entry_kind_at", "kind", "at", "case_id", "amount_fen"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=128, index=True)
    instalment: int
    kind: LedgerKind = Field(sa_type=sa.String(16))
    item_code: str = Field(max_length=40, index=True)
    year: int
    amount_fen: int = Field(sa_type=sa.BigInteger)
    idempotency_key: str | None = Field(default=None, max_length=160, index=True)
    voucher_no: str | None = Field(default=None, max_length=64)
    bank_serial: str | None = Field(default=None, max_length=64)
    details: Any = Field(default=None, sa_type=sa.JSON)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class QuotaChange(SQLModel, table=True):
    """Who set a year's quota of an item to what, when (only finance sets quotas)."""

    __tablename__ = "quota_change"

    id: int | None = Field(default=None, primary_key=True)
    item_code: str = Field(max_length=40, index=True)
    year: int
    before_fen: int | None = Field(default=None, sa_type=sa.BigInteger)  # None: first set
    after_fen: int = Field(sa_type=sa.BigInteger)
    actor: str = Field(max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class QuotaPublic(BaseModel):
    item_code: str
    year: int
    quota_fen: int
    reserved_fen: int
    paid_fen: int
    available_fen: int = PydanticField(ge=0)
    updated_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def quota_yuan(self) -> str:
        return format_yuan(self.quota_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reserved_yuan(self) -> str:
        return format_yuan(self.reserved_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def paid_yuan(self) -> str:
        return format_yuan(self.paid_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def available_yuan(self) -> str:
        return format_yuan(self.available_fen)
