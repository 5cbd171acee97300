"""Payloads of the disbursement tail: budget reservations and one payment workflow per
instalment, with how it ended."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class Reservation(BaseModel):
    case_id: str
    instalment: int
    item_code: str
    year: int
    amount_fen: int


class PaymentFailure(BaseModel):
    """Why an instalment could not be paid (or a case waits for budget): finance is warned."""

    case_id: str
    item_code: str
    uscc: str
    instalment: int
    department_code: str  # the finance unit that must act
    reason: str


class PaymentRetry(BaseModel):
    case_id: str
    instalment: int  # the instalment that failed
    amount_fen: int


class PaymentInput(BaseModel):
    case_id: str
    item_code: str
    year: int
    uscc: str
    amount_fen: int
    instalment: int
    purpose: str


class PaymentRequest(BaseModel):
    case_id: str
    instalment: int
    item_code: str
    year: int
    uscc: str
    amount_fen: int
    purpose: str


class PaymentOutcome(BaseModel):
    state: Literal["paid", "returned"]
    voucher_no: str
    bank_serial: str | None = None
    paid_at: datetime | None = None
    return_reason: str | None = None


class PaymentResult(PaymentOutcome):
    """How one instalment ended: paid, or returned by the bank (退票)."""

    instalment: int
