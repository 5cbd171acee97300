"""The wire protocol of the provincial budget system (预算管理一体化系统) as zhida uses it.

Payment instructions are idempotent on their key; receipts are read by polling the
instruction (see adapters/budget_system.py for why polling, not callbacks).
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


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


# ----- money coming back: recovery orders (追回 / 非税收入缴款) --------------------------


class RecoveryNotice(BaseModel):
    """A recovery registered with the budget system: the firm pays it back under the
    payment code the system issues, and the money returns to `quota_code`."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: str = Field(min_length=8, max_length=160)
    quota_code: str = Field(min_length=1, max_length=64)
    payer_name: str = Field(min_length=1, max_length=128)
    payer_uscc: str = Field(pattern=r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$")
    amount_fen: int = Field(gt=0, strict=True, description="the principal to recover")
    due_on: date
    purpose: str = Field(min_length=1, max_length=256)


class RecoveryReceipt(BaseModel):
    """Money the treasury received under a recovery's payment code."""

    serial: str
    amount_fen: int
    received_at: datetime


class RecoveryState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"  # settled or waived: the payment code takes nothing more


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
    received_fen: int
    closed_at: datetime | None = None
    close_reason: str | None = None


class RecoveryClosure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=256)


class RecoveryPayment(BaseModel):
    """The simulator's stand-in for the firm's bank transfer arriving at the treasury."""

    model_config = ConfigDict(extra="forbid")

    amount_fen: int = Field(gt=0, strict=True)
    received_at: datetime | None = None  # default: now (tests give the workflow's time)
    serial: str | None = None
