"""The wire protocol of the provincial budget system (预算管理一体化系统) as zhida uses it.

Payment instructions are idempotent on their key; receipts are read by polling the
instruction (see adapters/budget_system.py for why polling, not callbacks).
"""

from __future__ import annotations

import enum
from datetime import datetime

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
