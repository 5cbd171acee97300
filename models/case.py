"""Cases: payloads of the case workflows and the projection that lists read."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from domain.rules import ConditionResult, Verdict
from models.policy import StageLimit
from models.reference import Actor
from models.types import UTCDateTime, utcnow


class CaseStage(enum.StrEnum):
    CHECK = "check"
    DEPARTMENT_REVIEW = "department_review"
    FINANCE_REVIEW = "finance_review"
    CORRECTION = "correction"  # 补正: back with the firm
    AWAITING_BUDGET = "awaiting_budget"
    PAYMENT = "payment"
    ACCOUNT_CORRECTION = "account_correction"  # 退票: the firm must fix its account
    PAID = "paid"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"  # 撤回: by the firm
    CANCELLED = "cancelled"  # 撤销: by finance, e.g. the account is never corrected


OPEN_STAGES = frozenset(
    {
        CaseStage.CHECK,
        CaseStage.DEPARTMENT_REVIEW,
        CaseStage.FINANCE_REVIEW,
        CaseStage.CORRECTION,
        CaseStage.AWAITING_BUDGET,
        CaseStage.PAYMENT,
        CaseStage.ACCOUNT_CORRECTION,
    }
)


def application_case_id(item_code: str, period: str, uscc: str) -> str:
    """One case per business key: applying twice for the same thing finds the first."""
    return f"application/{item_code}/{period}/{uscc}"


class ApplicationRequest(BaseModel):
    """What a firm sends to apply (POST /api/v1/cases)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    item_code: str = PydanticField(min_length=1, max_length=40)
    period: str = PydanticField(pattern=r"^\d{4}(-(Q[1-4]|\d{2}))?$")
    materials: dict[str, str] = PydanticField(default_factory=dict)


class ApplicationInput(BaseModel):
    case_id: str
    item_code: str
    version: int
    period: str
    uscc: str
    applicant: str
    materials: dict[str, str]


class CheckResult(BaseModel):
    verdict: Verdict
    conditions: list[ConditionResult]
    amount_fen: int | None
    amount_explanation: str
    stages: list[StageLimit]
    region_code: str


class ReviewAction(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    RETURN = "return"  # 退回补正


class CaseDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: ReviewAction
    amount_fen: int | None = PydanticField(default=None, ge=0, strict=True)
    reason: str = ""
    corrections: list[str] = PydanticField(default_factory=list)


class DecisionRequest(BaseModel):
    actor: Actor
    decision: CaseDecision


class Resubmission(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    materials: dict[str, str] = PydanticField(default_factory=dict)
    note: str = ""


class ResubmitRequest(BaseModel):
    actor: Actor
    resubmission: Resubmission


class Withdrawal(BaseModel):
    """What a firm sends to withdraw its application, or finance to cancel a case."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = PydanticField(default="", max_length=500)


class WithdrawRequest(BaseModel):
    actor: Actor
    withdrawal: Withdrawal


class TimelineEntry(BaseModel):
    at: datetime
    stage: CaseStage
    actor: str
    action: str
    detail: str = ""


class CaseState(BaseModel):
    case_id: str
    item_code: str
    version: int
    period: str
    uscc: str
    stage: CaseStage
    waiting_for_role: str | None
    waiting_for_department: str | None
    due_at: datetime | None
    overdue: bool
    verdict: Verdict | None
    computed_amount_fen: int | None
    approved_amount_fen: int | None
    paid_amount_fen: int
    instalment: int
    corrections: list[str]
    timeline: list[TimelineEntry]


class StageDeadlineMissed(BaseModel):
    case_id: str
    item_code: str
    stage: CaseStage
    department_code: str
    due_at: datetime


class Reservation(BaseModel):
    case_id: str
    instalment: int
    item_code: str
    year: int
    amount_fen: int


class CaseClosure(BaseModel):
    """A case ended by its firm (withdrawn) or by finance (cancelled) before payment."""

    case_id: str
    item_code: str
    uscc: str
    instalment: int
    stage: CaseStage
    actor: str
    reason: str


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


class CaseRecord(SQLModel, table=True):
    """Projection of a case for lists, inboxes and dashboards; Temporal holds the truth."""

    __tablename__ = "case_record"

    case_id: str = Field(primary_key=True, max_length=160)
    category: str = Field(max_length=16, index=True)
    item_code: str = Field(max_length=40, index=True)
    version: int
    period: str = Field(max_length=8)
    uscc: str = Field(max_length=18, index=True)
    region_code: str = Field(max_length=16, index=True)
    stage: str = Field(max_length=24, index=True)
    waiting_for_role: str | None = Field(default=None, max_length=64)
    waiting_for_department: str | None = Field(default=None, max_length=32, index=True)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    overdue: bool = False
    approved_amount_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    paid_amount_fen: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    details: Any = Field(default=None, sa_type=sa.JSON)


class CaseSummary(BaseModel):
    case_id: str
    category: str
    item_code: str
    version: int
    period: str
    uscc: str
    region_code: str
    stage: str
    waiting_for_role: str | None
    waiting_for_department: str | None
    due_at: datetime | None
    overdue: bool
    approved_amount_fen: int | None
    paid_amount_fen: int
    created_at: datetime
    updated_at: datetime
