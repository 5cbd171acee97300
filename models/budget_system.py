"""The wire protocol of the provincial budget system (预算管理一体化系统) as zhida uses it.

Money goes out as payment instructions and comes back under recovery orders (追回):
both are idempotent on their key, and both are read by polling (see
adapters/budget_system.py for why polling, not callbacks).
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class InstructionState(enum.StrEnum):
    ACCEPTED = "accepted"  # voucher issued, bank transfer under way
    PAID = "paid"  # the bank reports the money in the payee's account
    RETURNED = "returned"  # 退票: the bank sent the money back (wrong or closed account)


class PaymentInstruction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idempotency_key: str = Field(min_length=8, max_length=160)
    quota_code: str = Field(min_length=1, max_length=64, description="budget quota (指标) charged")
    payee_name: str = Field(min_length=1, max_length=128)
    payee_account: str = Field(pattern=r"^\d{8,34}$")
    payee_bank: str = Field(min_length=1, max_length=64)
    amount_fen: int = Field(gt=0, strict=True)
    purpose: str = Field(min_length=1, max_length=256)


class InstructionStatus(BaseModel):
    idempotency_key: str
    state: InstructionState
    voucher_no: str
    amount_fen: int
    accepted_at: datetime
    bank_serial: str | None = None
    paid_at: datetime | None = None
    returned_at: datetime | None = None
    return_reason: str | None = None


# ----- money coming back: recovery orders (追回, paid in as 非税收入) ---------------------


class RecoveryNotice(BaseModel):
    """Money a firm must pay back: the system issues a payment code (缴款码) the firm
    pays under, and what it pays returns to `quota_code`."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: str = Field(min_length=8, max_length=160)
    quota_code: str = Field(min_length=1, max_length=64, description="budget quota (指标) credited")
    payer_name: str = Field(min_length=1, max_length=128)
    payer_uscc: str = Field(pattern=r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$")
    amount_fen: int = Field(gt=0, strict=True, description="the principal to recover")
    due_on: date
    purpose: str = Field(min_length=1, max_length=256)


class RecoveryReceipt(BaseModel):
    """One transfer the treasury received under a recovery's payment code. The serial
    is the treasury's, so zhida credits each receipt once however often it reads it."""

    serial: str
    amount_fen: int
    # Aware, because the day it arrived (in Shanghai) decides the interest owed.
    received_at: AwareDatetime


class RecoveryState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"  # repaid or waived: the payment code takes nothing more


class RecoveryStatus(BaseModel):
    idempotency_key: str
    payment_code: str
    quota_code: str
    payer_uscc: str
    amount_fen: int
    due_on: date
    registered_at: datetime
    state: RecoveryState
    receipts: list[RecoveryReceipt]
    received_fen: int  # the sum of the receipts; it may exceed `amount_fen` (interest)
    closed_at: datetime | None = None
    close_reason: str | None = None


class RecoveryClosure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=256)


class RecoveryPayment(BaseModel):
    """The simulator's stand-in for the firm's transfer arriving at the treasury (the
    real system hears of it from the bank, not from zhida)."""

    model_config = ConfigDict(extra="forbid")

    amount_fen: int = Field(gt=0, strict=True)
    # Default now; tests give the time on Temporal's time-skipping clock.
    received_at: AwareDatetime | None = None
    serial: str | None = Field(default=None, min_length=1, max_length=64)  # default: generated


def recovery_key(case_id: str) -> str:
    """The idempotency key of a case's recovery order (one per case); here, not in the
    adapter, because the domain records it for reconciliation too."""
    return f"zhida:{case_id}:recovery"
