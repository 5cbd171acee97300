"""Commitment cases (承诺类 / 事中预付): a firm commits to a project's targets, signs the
item's commitment letter, is prepaid a share after a joint review, and is settled after
completion: the rest is paid, or what was prepaid beyond the final amount is recovered
(追回) with late interest, by repayment, offset, an instalment plan, or waived.

The item's `CommitmentTerms` say which targets a firm commits to, how achieved targets
turn into the final amount (`SettlementRule`), the prepaid share and cap, the reminders
before completion, and the recovery terms. One `CommitmentWorkflow` runs each case for
the years its project lasts; `RecoveryOrder` is the order's record for lists and for
the offsets that other cases of the same firm make against it.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    computed_field,
    field_validator,
)
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.case_fields import PERIOD_PATTERN, Materials, Reason
from models.commitment_terms import MAX_TARGETS, CommitmentTarget, CommitmentTerms
from models.eligibility import ConditionResult, Verdict
from models.facts import FACT_KINDS, fact_range
from models.money import Fen, PositiveFen, format_yuan, yuan_text
from models.policy import StageLimit
from models.reference import Actor
from models.review import TEXT_LINE, Token
from models.types import UTCDateTime, utcnow

COMMITMENT_WORKFLOW = "CommitmentWorkflow"


def commitment_case_id(item_code: str, period: str, uscc: str, attempt: int = 1) -> str:
    """One open or settled commitment per firm, item and period (like applications)."""
    base = f"commitment/{item_code}/{period}/{uscc}"
    return base if attempt == 1 else f"{base}/{attempt}"


# ----- what a firm sends ---------------------------------------------------------------

Figures = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], int],
    PydanticField(
        max_length=MAX_TARGETS,
        description="figures by target fact, each in the fact's unit (fen, persons...)",
        examples=[{"renovation_investment_fen": 500_000_000, "tax_paid_fen": 20_000_000}],
    ),
]


def check_figures(figures: dict[str, int], targets: list[CommitmentTarget], what: str) -> None:
    """Figures for exactly the item's targets, each inside its fact's range; raises
    ValueError naming the first wrong one (`what` is the field's name)."""
    wanted = {t.fact for t in targets}
    unknown = sorted(set(figures) - wanted)
    if unknown:
        raise ValueError(f"{what}.{unknown[0]}: not a target of this item")
    for fact in sorted(wanted):
        if fact not in figures:
            raise ValueError(f"{what}.{fact}: missing")
        low, high = fact_range(FACT_KINDS[fact])
        if not low <= figures[fact] <= high:
            raise ValueError(f"{what}.{fact}: must be from {low} to {high}")


class Project(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = PydanticField(min_length=1, max_length=256, pattern=TEXT_LINE)
    location: str = PydanticField(min_length=1, max_length=256, pattern=TEXT_LINE)
    investment_plan: str = PydanticField(default="", max_length=4000)
    committed: Figures = PydanticField(description="the committed target figures")
    completion_date: date
    investment_fen: Fen | None = PydanticField(
        default=None, description="the project's planned investment in fen"
    )
    eligible_cost_fen: Fen | None = PydanticField(
        default=None,
        description="the project's eligible cost: public funding from all items together "
        "must not exceed it (the duplicate-funding check)",
    )
    invoices: list[Token] = PydanticField(default_factory=list, max_length=500)
    equipment_serials: list[Token] = PydanticField(default_factory=list, max_length=500)

    @field_validator("committed")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        for fact, figure in value.items():
            if figure <= 0:
                raise ValueError(f"{fact}: a committed figure must be positive")
        return value


class LetterAcceptance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    letter_sha256: str = PydanticField(
        pattern=r"^[0-9a-f]{64}$",
        description="the SHA-256 of the letter text the firm was shown "
        "(GET /api/v1/items/{code}/commitment-letter)",
    )
    accepted: Literal[True] = PydanticField(description="the firm accepts the letter")


class CommitmentRequest(BaseModel):
    """What a firm sends to commit (POST /api/v1/commitments)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    item_code: str = PydanticField(pattern=r"^[A-Z0-9][A-Z0-9-]{2,39}$")
    period: str = PydanticField(pattern=PERIOD_PATTERN, examples=["2026"])
    project: Project
    letter: LetterAcceptance
    materials: Materials = PydanticField(default_factory=dict)


class Signature(BaseModel):
    """A signed commitment letter: what, by whom, when, from where. `provider` names the
    e-signature service that made it (`platform`: the platform's own acceptance record)."""

    letter_sha256: str
    signer: str
    uscc: str
    signed_at: datetime
    origin: str
    provider: str = "platform"


class LetterPublic(BaseModel):
    item_code: str
    version: int
    text: str
    sha256: str
    targets: list[CommitmentTarget]
    prepaid_pct: int
    prepaid_cap_fen: int | None


class CommitmentInput(BaseModel):
    case_id: str
    item_code: str
    version: int
    period: str
    uscc: str
    applicant: str
    project: Project
    signature: Signature
    materials: dict[str, str]
    attempt: int = 1
    budget_year: int | None = None


# ----- during the project ---------------------------------------------------------------


class ProgressReport(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    note: str = PydanticField(min_length=1, max_length=4000)
    figures: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], int] = (
        PydanticField(default_factory=dict, max_length=MAX_TARGETS)
    )


class ExtensionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    completion_date: date = PydanticField(description="the new completion date asked for")
    reason: str = PydanticField(min_length=1, max_length=2000)


class ExtensionDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    approve: bool
    reason: str = PydanticField(min_length=1, max_length=2000)


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    achieved: Figures = PydanticField(description="the achieved target figures")
    materials: Materials = PydanticField(default_factory=dict)
    note: Reason = ""

    @field_validator("achieved")
    @classmethod
    def _not_negative(cls, value: dict[str, int]) -> dict[str, int]:
        for fact, figure in value.items():
            if figure < 0:
                raise ValueError(f"{fact}: an achieved figure is not negative")
        return value


class CompletionAction(enum.StrEnum):
    ACCEPT = "accept"
    RETURN = "return"


class CompletionReview(BaseModel):
    """The department accepts the completion (possibly correcting figures, with a reason)
    or returns it to the firm with what to correct."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: CompletionAction
    corrected: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], int] = (
        PydanticField(default_factory=dict, max_length=MAX_TARGETS)
    )
    reason: Reason = ""
    corrections: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] = (
        PydanticField(default_factory=list, max_length=20)
    )


class InstalmentGrant(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    instalments: int = PydanticField(ge=2, le=36, description="monthly instalments")
    reason: str = PydanticField(min_length=1, max_length=2000)


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    amount_fen: PositiveFen | None = PydanticField(
        default=None, description="how much to waive; omitted: everything outstanding"
    )
    reason: str = PydanticField(min_length=1, max_length=2000)


class ProgressUpdate(BaseModel):
    actor: Actor
    report: ProgressReport


class ExtensionAsk(BaseModel):
    actor: Actor
    request: ExtensionRequest


class ExtensionRuling(BaseModel):
    actor: Actor
    decision: ExtensionDecision


class CompletionSubmission(BaseModel):
    actor: Actor
    completion: Completion


class CompletionRuling(BaseModel):
    actor: Actor
    review: CompletionReview


class PlanGrant(BaseModel):
    actor: Actor
    grant: InstalmentGrant


class WaiverRequest(BaseModel):
    actor: Actor
    waiver: Waiver


# ----- settlement and recovery ------------------------------------------------------------


class TargetOutcome(BaseModel):
    fact: str
    label: str
    weight: int
    committed: int
    achieved: int
    share_bp: int  # achieved / committed in basis points, at most 10,000
    explanation: str


class Settlement(BaseModel):
    committed_fen: int
    share_bp: int
    final_fen: int
    targets: list[TargetOutcome]
    explanation: str


class SettlementRequest(BaseModel):
    terms: CommitmentTerms
    committed: dict[str, int]
    achieved: dict[str, int]
    committed_fen: int


class PlannedInstalment(BaseModel):
    due_on: date
    amount_fen: int


class CreditKind(enum.StrEnum):
    REPAYMENT = "repayment"  # money back through the budget system
    OFFSET = "offset"  # withheld from a later payment to the same firm
    WAIVER = "waiver"  # forgiven by the finance head


class Credit(BaseModel):
    kind: CreditKind
    on: date  # the day it counts from (Asia/Shanghai)
    amount_fen: int
    reference: str = ""  # receipt serial, paying case, or who waived


class RecoveryBalance(BaseModel):
    """Where a recovery order stands on a day: principal and interest, due and paid."""

    principal_fen: int
    interest_fen: int  # accrued to date, simple, never compounded
    credited_fen: int
    principal_outstanding_fen: int
    interest_outstanding_fen: int
    outstanding_fen: int
    days_late: int
    plan_broken_on: date | None = None
    explanation: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outstanding_yuan(self) -> str:
        return format_yuan(self.outstanding_fen)


class RecoveryStatus(enum.StrEnum):
    OPEN = "open"
    DEFAULTED = "defaulted"  # past deadline plus grace, still owed
    SETTLED = "settled"  # nothing outstanding (repaid, offset or waived)


class RecoveryOrder(SQLModel, table=True):
    """A recovery order (追回通知): what a firm must pay back for one commitment case.
    The case workflow holds the truth; this row lets other cases of the firm offset
    against it and lets lists and auditors find it."""

    __tablename__ = "recovery_order"

    case_id: str = Field(primary_key=True, max_length=160)
    uscc: str = Field(max_length=18, index=True)
    item_code: str = Field(max_length=40, index=True)
    year: int  # the quota year the recovered principal returns to
    principal_fen: int = Field(sa_type=sa.BigInteger)
    due_on: date
    daily_interest_rate: str = Field(max_length=16)
    reason: str = Field(sa_type=sa.Text)
    status: RecoveryStatus = Field(default=RecoveryStatus.OPEN, sa_type=sa.String(12), index=True)
    # Instalments finance granted, as [{"due_on": "...", "amount_fen": ...}], or NULL.
    plan: Any = Field(default=None, sa_type=sa.JSON)
    payment_code: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RecoveryCredit(SQLModel, table=True):
    """One amount credited to a recovery order: a repayment the budget system received,
    an offset withheld from another case's payment, or a waiver. Unique on the order and
    its reference, so a credit recorded twice counts once."""

    __tablename__ = "recovery_credit"
    __table_args__ = (sa.UniqueConstraint("case_id", "reference"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=160, index=True)
    kind: CreditKind = Field(sa_type=sa.String(12))
    on: date
    amount_fen: int = Field(sa_type=sa.BigInteger)
    reference: str = Field(max_length=200)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RecoveryOpening(BaseModel):
    case_id: str
    uscc: str
    item_code: str
    year: int
    principal_fen: int
    due_on: date
    daily_interest_rate: Decimal
    reason: str
    purpose: str


class RecoveryView(BaseModel):
    """A case's recovery as the firm, caseworkers and auditors read it."""

    principal_fen: int
    due_on: date
    status: RecoveryStatus
    payment_code: str | None = None
    plan: list[PlannedInstalment] = PydanticField(default_factory=list)
    credits: list[Credit] = PydanticField(default_factory=list)
    balance: RecoveryBalance | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def principal_yuan(self) -> str:
        return format_yuan(self.principal_fen)


class CommitmentView(BaseModel):
    """What a commitment case adds to `CaseState` (`CaseState.commitment`)."""

    project: Project
    signature: Signature
    committed_fen: int | None
    prepaid_fen: int
    completion_date: date
    completion_deadline: datetime | None  # completion date plus grace, end of day
    extension: dict[str, Any] | None = None
    progress: list[dict[str, Any]] = PydanticField(default_factory=list)
    achieved: dict[str, int] | None = None
    evidence: dict[str, Any] = PydanticField(default_factory=dict)
    settlement: Settlement | None = None
    final_payment_fen: int = 0
    recovery: RecoveryView | None = None
    joint_review: dict[str, str] = PydanticField(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def committed_yuan(self) -> str | None:
        return yuan_text(self.committed_fen)


# ----- what the case learns from the database ----------------------------------------------


class CommitmentCheck(BaseModel):
    """The automatic check of a commitment: eligibility today, and the committed amount
    (the item's amount rule over the firm's facts with its committed figures in place)."""

    verdict: Verdict
    conditions: list[ConditionResult]
    committed_fen: int | None
    amount_explanation: str
    stages: list[StageLimit]
    region_code: str
    department_code: str  # the item's department
    title: str
    terms: CommitmentTerms
    failure: str | None = None


class EvidenceLine(BaseModel):
    """A figure from data beside the firm's own (智审): the latest known value of a target."""

    fact: str
    label: str
    declared: int | None
    recorded: int | None
    period_end: date | None
    source: str | None
    note: str


class EvidenceRequest(BaseModel):
    uscc: str
    declared: dict[str, int]
    facts: list[str]


class SettlementInput(BaseModel):
    case_id: str
    item_code: str
    year: int
    terms: CommitmentTerms
    committed: dict[str, int]
    achieved: dict[str, int] | None  # None: nothing was submitted in time
    committed_fen: int
    prepaid_fen: int


class CommitmentNoticeKind(enum.StrEnum):
    APPROVED = "approved"
    PREPAID = "prepaid"
    REMINDER = "reminder"
    EXTENSION = "extension"
    SETTLED = "settled"
    PLAN = "plan"
    CLOSED = "closed"


class CommitmentNotice(BaseModel):
    """A notice to the firm, composed by the activity from its kind and facts."""

    case_id: str
    uscc: str
    title: str
    kind: CommitmentNoticeKind
    key: str  # once per key (a retried activity sends it once)
    amount_fen: int = 0
    other_fen: int = 0
    day: date | None = None
    days: int = 0
    approved: bool = False
    text: str = ""
    plan: list[PlannedInstalment] = PydanticField(default_factory=list)


class RecoveryCheck(BaseModel):
    case_id: str
    as_of: date  # the workflow's today, Asia/Shanghai


class PlanRequest(BaseModel):
    case_id: str
    instalments: int
    first_due: date
    principal_fen: int


class WaiverRecord(BaseModel):
    case_id: str
    amount_fen: int
    on: date
    reference: str


class RecoveryDefault(BaseModel):
    case_id: str
    uscc: str
    item_code: str
    title: str
    on: date
    outstanding_fen: int
    department_code: str
    finance_department_code: str
    due_at: datetime


class RecoveryClose(BaseModel):
    case_id: str
    uscc: str
    title: str
    how: str
