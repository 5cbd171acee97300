"""Cases: payloads of the case workflows and the projection that lists read."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, StrictInt, StringConstraints, computed_field
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.case_fields import PERIOD_PATTERN, Materials, Reason
from models.commitment import CommitmentView
from models.eligibility import ConditionResult, Verdict
from models.money import PositiveFen, format_yuan, yuan_text
from models.policy import StageLimit
from models.reference import Actor
from models.review import DeclaredFigures, Evidence, FactValue, FindingView, ProjectClaim
from models.types import UTCDateTime, utcnow


class CaseStage(enum.StrEnum):
    CHECK = "check"
    DEPARTMENT_REVIEW = "department_review"
    FINANCE_REVIEW = "finance_review"
    CORRECTION = "correction"  # 补正: back with the firm
    AWAITING_BUDGET = "awaiting_budget"
    PAYMENT = "payment"
    ACCOUNT_CORRECTION = "account_correction"  # 退票: the firm must fix its account
    # The budget system refused the instruction (e.g. a closed account) or it could not
    # be made (no valid account on file): finance pays again once the cause is
    # corrected, or cancels; the firm may confirm a corrected account.
    PAYMENT_FAILED = "payment_failed"
    PAID = "paid"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"  # 撤回: by the firm
    CANCELLED = "cancelled"  # 撤销: by finance, e.g. the account is never corrected
    # Recognition: the firm confirms (or corrects) its receiving account, or declines.
    CONFIRMATION = "confirmation"
    DECLINED = "declined"  # 放弃: the firm declined the money
    EXPIRED = "expired"  # the firm did not confirm in time
    # Commitment (承诺类): department and finance review in parallel; the project runs
    # (prepaid) until completion; the department reviews the completion and finance the
    # settlement; what was prepaid beyond the final amount is recovered; then settled.
    JOINT_REVIEW = "joint_review"
    PROJECT = "project"
    COMPLETION_REVIEW = "completion_review"
    SETTLEMENT_REVIEW = "settlement_review"
    RECOVERY = "recovery"
    SETTLED = "settled"


OPEN_STAGES = frozenset(
    {
        CaseStage.CHECK,
        CaseStage.DEPARTMENT_REVIEW,
        CaseStage.FINANCE_REVIEW,
        CaseStage.CORRECTION,
        CaseStage.AWAITING_BUDGET,
        CaseStage.PAYMENT,
        CaseStage.ACCOUNT_CORRECTION,
        CaseStage.PAYMENT_FAILED,
        CaseStage.CONFIRMATION,
        CaseStage.JOINT_REVIEW,
        CaseStage.PROJECT,
        CaseStage.COMPLETION_REVIEW,
        CaseStage.SETTLEMENT_REVIEW,
        CaseStage.RECOVERY,
    }
)
# Closed without payment: the firm may apply again for the same period.
UNPAID_CLOSURES = frozenset(
    {
        CaseStage.REJECTED,
        CaseStage.WITHDRAWN,
        CaseStage.CANCELLED,
        CaseStage.DECLINED,
        CaseStage.EXPIRED,
    }
)


def application_case_id(item_code: str, period: str, uscc: str, attempt: int = 1) -> str:
    """One open or paid case per business key: applying twice finds the first. A firm
    whose case closed unpaid may apply again; that attempt gets its own case id."""
    base = f"application/{item_code}/{period}/{uscc}"
    return base if attempt == 1 else f"{base}/{attempt}"


class ApplicationRequest(BaseModel):
    """What a firm sends to apply (POST /api/v1/cases)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    item_code: str = PydanticField(pattern=r"^[A-Z0-9][A-Z0-9-]{2,39}$")
    period: str = PydanticField(
        pattern=PERIOD_PATTERN,
        description="a period of the item's scheme inside its validity: 2026 (annual), "
        "2026-Q3 (quarterly), 2026-07 (monthly) or once (one-off)",
        examples=["2026"],
    )
    materials: Materials = PydanticField(default_factory=dict)
    project: ProjectClaim | None = PydanticField(
        default=None,
        description="the project the money is for, where the item funds one: compared "
        "with every other case's to find the same project or invoices funded twice",
    )
    declared: DeclaredFigures = PydanticField(
        default_factory=dict,
        description="figures the firm declares (fact kind: value), shown to reviewers "
        "beside the public data platform's",
    )


class ApplicationInput(BaseModel):
    case_id: str
    item_code: str
    version: int
    period: str
    uscc: str
    applicant: str
    materials: dict[str, str]
    attempt: int = 1  # a firm may apply again after a case closed unpaid
    budget_year: int | None = None  # whose quota pays; None: the period's year
    project: ProjectClaim | None = None
    declared: dict[str, FactValue] = PydanticField(default_factory=dict)


def budget_year(application: ApplicationInput) -> int:
    return application.budget_year or int(application.period[:4])


class CheckResult(BaseModel):
    verdict: Verdict
    conditions: list[ConditionResult]
    amount_fen: int | None
    amount_explanation: str
    stages: list[StageLimit]
    region_code: str
    # Set when the automatic check could not evaluate the rule or the amount: a
    # person decides instead.
    failure: str | None = None


class ReviewAction(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    RETURN = "return"  # 退回补正


class CaseDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: ReviewAction
    amount_fen: PositiveFen | None = PydanticField(
        default=None,
        description="approve: the amount in fen, at most the computed one (a lower amount "
        "needs a reason; required where no amount could be computed); never 0 (reject instead)",
    )
    reason: Reason = ""
    corrections: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] = (
        PydanticField(default_factory=list, max_length=20)
    )
    findings: list[Annotated[StrictInt, PydanticField(ge=1, le=2**31 - 1)]] = PydanticField(
        default_factory=list,
        max_length=50,
        description="duplicate-funding findings this decision upholds (by id): a rejection, "
        "or an approval reduced to at most what they leave due",
    )


class DecisionRequest(BaseModel):
    actor: Actor
    decision: CaseDecision


class Resubmission(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    materials: Materials = PydanticField(default_factory=dict)
    note: Reason = ""


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
    # What the automatic check found, and what a reviewer must verify by hand
    # (conditions it could not decide, or why the check itself failed).
    conditions: list[ConditionResult] = PydanticField(default_factory=list)
    to_verify: list[str] = PydanticField(default_factory=list)
    failure_reason: str | None = None  # why the last payment could not be made
    # Recognition: the batch that identified the firm, and until when it may confirm.
    batch_id: str | None = None
    confirm_by: datetime | None = None
    # The moments that matter for time to money (entitled, verified, confirmed,
    # instructed, paid...), by name, as they happened.
    moments: dict[str, datetime] = PydanticField(default_factory=dict)
    # A second unit that must act now too (a commitment's joint review runs in parallel).
    also_waiting_for_department: str | None = None
    commitment: CommitmentView | None = None
    # The smart review: facts from data beside the firm's, and duplicate-funding findings.
    evidence: list[Evidence] = PydanticField(default_factory=list)
    findings: list[FindingView] = PydanticField(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def computed_amount_yuan(self) -> str | None:
        return yuan_text(self.computed_amount_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def approved_amount_yuan(self) -> str | None:
        return yuan_text(self.approved_amount_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def paid_amount_yuan(self) -> str:
        return format_yuan(self.paid_amount_fen)


class ReviewEntry(BaseModel):
    """A case entering a review: its state to project, with the review's deadline
    (`working_days` working days from `start`) computed and written in one activity."""

    state: CaseState
    start: datetime
    working_days: int


class StageDeadlineMissed(BaseModel):
    case_id: str
    item_code: str
    stage: CaseStage
    department_code: str
    due_at: datetime


class CaseClosure(BaseModel):
    """A case ended by its firm (withdrawn) or by finance (cancelled) before payment."""

    case_id: str
    item_code: str
    uscc: str
    instalment: int
    stage: CaseStage
    actor: str
    reason: str


class CaseRecord(SQLModel, table=True):
    """Projection of a case for lists, inboxes and dashboards; Temporal holds the truth."""

    __tablename__ = "case_record"
    __table_args__ = (
        # Every column the dashboards read, so that they scan this index and never the
        # wide rows (case ids, JSON details): ordered by item, which most of them group by.
        sa.Index(
            "ix_case_record_dashboard",
            "item_code",
            "region_code",
            "category",
            "year",
            "stage",
            "uscc",
            "approved_amount_fen",
            "paid_amount_fen",
            "paid_at",
            "entitled_at",
            "days_to_money",
        ),
        # Cases paid in a window (a quarter's bulletin), with what time to money needs.
        sa.Index(
            "ix_case_record_paid",
            "paid_at",
            "days_to_money",
            "region_code",
            "item_code",
            "category",
        ),
        # The ledger's entries joined to their case's region.
        sa.Index("ix_case_record_case_region", "case_id", "region_code"),
        # Inboxes: only the cases that wait on a unit are indexed. With every other row
        # in the index as NULL, the planner's statistics (SQLite's ANALYZE counts NULL
        # as a value) made a unit's inbox look unselective and it scanned the table.
        # In the inbox's order (soonest deadline first, none last), so that a page is
        # read off the index rather than every waiting case sorted.
        *(
            sa.Index(
                f"ix_case_record_{column}",
                column,
                sa.column("due_at").is_(None),
                "due_at",
                "case_id",
                sqlite_where=sa.text(f"{column} IS NOT NULL"),
                postgresql_where=sa.text(f"{column} IS NOT NULL"),
            )
            for column in ("waiting_for_department", "also_waiting_for_department")
        ),
    )

    case_id: str = Field(primary_key=True, max_length=160)
    category: str = Field(max_length=16, index=True)
    item_code: str = Field(max_length=40, index=True)
    version: int
    period: str = Field(max_length=8)
    uscc: str = Field(max_length=18, index=True)
    region_code: str = Field(max_length=16, index=True)
    stage: str = Field(max_length=24, index=True)
    waiting_for_role: str | None = Field(default=None, max_length=64)
    waiting_for_department: str | None = Field(default=None, max_length=32)
    also_waiting_for_department: str | None = Field(default=None, max_length=32)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    overdue: bool = False
    approved_amount_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    paid_amount_fen: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    details: Any = Field(default=None, sa_type=sa.JSON)
    # For the dashboards: the budget year (the period's; a one-off period's is the year
    # the case opened), when the firm became entitled (a recognition batch's data, else
    # the day it applied or committed), and when its first money reached its account
    # (the first receipt in the ledger): time to money runs between the two.
    year: int | None = Field(default=None, index=True)
    entitled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Working days between the two (the calendar of the settings, 调休 included), counted
    # when the money arrives: time to money, summed per case.
    days_to_money: int | None = None


class CaseFirm(SQLModel, table=True):
    """One firm's cases of one item in one budget year, summed up for the dashboards,
    which count firms (a firm may have several cases: periods, attempts): whether one
    was approved, one paid, and when money first came. Kept by the projection."""

    __tablename__ = "case_firm"
    __table_args__ = (
        sa.Index(
            "ix_case_firm_dashboard",
            "item_code",
            "year",
            "region_code",
            "approved",
            "paid",
            "first_paid_at",
            "uscc",
        ),
    )

    item_code: str = Field(primary_key=True, max_length=40)
    uscc: str = Field(primary_key=True, max_length=18)
    year: int = Field(primary_key=True)
    region_code: str = Field(max_length=16)
    approved: bool = False  # approved (and not closed unpaid), or paid
    paid: bool = False
    first_paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


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

    @computed_field  # type: ignore[prop-decorator]
    @property
    def approved_amount_yuan(self) -> str | None:
        return yuan_text(self.approved_amount_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def paid_amount_yuan(self) -> str:
        return format_yuan(self.paid_amount_fen)


class ClaimState(enum.StrEnum):
    OPEN = "open"
    PAID = "paid"
    CLOSED = "closed"  # rejected, withdrawn, cancelled or expired before payment
    # A recognition case the firm declined: the period stays taken (no later batch of
    # the same period identifies the firm again).
    DECLINED = "declined"


class CaseClaim(SQLModel, table=True):
    """A firm's claim on one period of one item: at most one open or paid claim per
    item, firm and period (the partial unique index), so a firm is paid at most once
    per period, while a claim closed unpaid leaves room for a new attempt."""

    __tablename__ = "case_claim"
    __table_args__ = (
        sa.UniqueConstraint("item_code", "uscc", "period", "attempt"),
        sa.Index(
            "uq_case_claim_active",
            "item_code",
            "uscc",
            "period",
            unique=True,
            sqlite_where=sa.text("state != 'closed'"),
            postgresql_where=sa.text("state != 'closed'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=160, unique=True)
    category: str = Field(max_length=16)
    item_code: str = Field(max_length=40)
    uscc: str = Field(max_length=18, index=True)
    period: str = Field(max_length=8)
    attempt: int = 1
    state: ClaimState = Field(default=ClaimState.OPEN, sa_type=sa.String(8))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
