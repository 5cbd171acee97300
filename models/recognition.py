"""Recognition (认定类 / 免申即享): firms identified from data, verified as a list, paid
without applying.

A department starts a batch for one item and period, from the match library or from a
list it uploads. The batch's list, amounts and evidence are frozen as a snapshot (one
`RecognitionBatch` row and one `RecognitionEntry` per firm) the moment it starts; the
batch workflow carries only the batch id. The department verifies the list, then
finance verifies it and its total against the quota (名单核定), or the item is
straight-through and the system verifies the clean entries; then one case workflow per
firm notifies the firm, takes its confirmation (or correction, or decline) of the
receiving account and pays it through the shared disbursement tail.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, StringConstraints, computed_field, model_validator
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.money import Fen, format_yuan, yuan_text
from models.reference import Actor
from models.types import UTCDateTime, utcnow

# The workflow types, named here so that the worker, the starts and the batch agree.
CASE_WORKFLOW = "RecognitionCaseWorkflow"
BATCH_WORKFLOW = "RecognitionBatchWorkflow"
MAX_BATCH_FIRMS = 100_000


def recognition_case_id(item_code: str, period: str, uscc: str, attempt: int = 1) -> str:
    """One case per firm, item and period: a batch run again, or resumed, finds the case
    it started. A case that closed unpaid (declined, expired, rejected) leaves room for
    a later batch's attempt, under its own id."""
    base = f"recognition/{item_code}/{period}/{uscc}"
    return base if attempt == 1 else f"{base}/{attempt}"


def batch_id_of(item_code: str, period: str, number: int) -> str:
    return f"recognition-batch/{item_code}/{period}/{number}"


# ----- the item's terms ---------------------------------------------------------------


class ConfirmationRule(enum.StrEnum):
    """Whether the firm must confirm its receiving account before it is paid."""

    ALWAYS = "always"
    # A firm whose account on file was verified by an earlier payment is paid at once
    # (and told so); others confirm.
    UNLESS_VERIFIED = "unless_verified"


class RecognitionTerms(BaseModel):
    """How a recognition item's cases run (set on the item version)."""

    model_config = ConfigDict(extra="forbid")

    straight_through: bool = PydanticField(
        default=False,
        description="verification is automatic (by the system) for firms whose every "
        "condition passed on fresh data and that carry no duplicate-funding flag; "
        "every other firm still goes to a person",
    )
    confirmation: ConfirmationRule = PydanticField(
        default=ConfirmationRule.ALWAYS,
        description="always: the firm confirms its account; unless_verified: a firm "
        "whose account was verified by an earlier payment is paid without confirming",
    )
    remind_after_days: int = PydanticField(
        default=7, ge=1, le=180, description="days after the notice to remind the firm"
    )
    expire_after_days: int = PydanticField(
        default=30,
        ge=2,
        le=365,
        description="days after the notice at which an unconfirmed case expires",
    )

    @model_validator(mode="after")
    def _reminder_before_expiry(self) -> RecognitionTerms:
        if self.remind_after_days >= self.expire_after_days:
            raise ValueError("remind_after_days must be less than expire_after_days")
        return self


# ----- the snapshot ---------------------------------------------------------------------


class BatchSource(enum.StrEnum):
    LIBRARY = "library"  # the match library's firms, re-assessed at start
    UPLOAD = "upload"  # a list the department uploaded


class BatchPhase(enum.StrEnum):
    IDENTIFYING = "identifying"
    DEPARTMENT_VERIFICATION = "department_verification"
    FINANCE_VERIFICATION = "finance_verification"
    STARTING = "starting"  # starting one case per verified firm
    DISBURSING = "disbursing"  # cases running; the batch follows them
    DONE = "done"  # every case closed
    FAILED = "failed"  # could not be identified (the reason is on the batch)


OPEN_PHASES = frozenset(
    {
        BatchPhase.IDENTIFYING,
        BatchPhase.DEPARTMENT_VERIFICATION,
        BatchPhase.FINANCE_VERIFICATION,
        BatchPhase.STARTING,
    }
)


class EntryStatus(enum.StrEnum):
    LISTED = "listed"  # eligible: on the list, waiting for the department
    POSSIBLE = "possible"  # possibly eligible: listed apart, never included unasked
    DEPARTMENT_VERIFIED = "department_verified"
    INDIVIDUAL_REVIEW = "individual_review"  # taken off the list for a review of its own
    VERIFIED = "verified"  # department and finance verified: its case starts
    DROPPED = "dropped"  # removed, with the reason


class RecognitionBatch(SQLModel, table=True):
    __tablename__ = "recognition_batch"

    batch_id: str = Field(primary_key=True, max_length=96)
    item_code: str = Field(foreign_key="policy_item.code", max_length=40, index=True)
    version: int
    period: str = Field(max_length=8)
    number: int  # 1, 2, ... per item and period
    budget_year: int
    source: BatchSource = Field(sa_type=sa.String(16))
    department_code: str = Field(max_length=32, index=True)
    finance_department_code: str = Field(max_length=32, index=True)
    straight_through: bool = False
    phase: BatchPhase = Field(sa_type=sa.String(32), index=True)
    # item/period while the batch is being identified, verified or started: at most
    # one such batch per item and period (NULL once it is past starting).
    open_key: str | None = Field(default=None, max_length=64, unique=True)
    started_by: str = Field(max_length=64)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    identified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Counts fixed by the snapshot.
    candidates: int = 0
    listed: int = 0
    possible: int = 0
    not_eligible: int = 0  # library source: no longer eligible on today's facts
    already_claimed: int = 0  # a case of another batch holds the firm's period
    listed_total_fen: int = Field(default=0, sa_type=sa.BigInteger)
    # Who verified the list, when and what (the decision as sent), per level.
    department_decision: Any = Field(default=None, sa_type=sa.JSON)
    finance_decision: Any = Field(default=None, sa_type=sa.JSON)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    failure: str | None = Field(default=None, sa_type=sa.Text)


class RecognitionEntry(SQLModel, table=True):
    """One firm of a batch's snapshot: its verdict, amount, evidence and verification."""

    __tablename__ = "recognition_entry"
    __table_args__ = (
        sa.UniqueConstraint("batch_id", "uscc"),
        sa.Index("ix_recognition_entry_batch_status", "batch_id", "status"),
        sa.Index("ix_recognition_entry_batch_round_uscc", "batch_id", "start_round", "uscc"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(foreign_key="recognition_batch.batch_id", max_length=96)
    uscc: str = Field(max_length=18, index=True)
    case_id: str = Field(max_length=160, unique=True)
    attempt: int = 1
    region_code: str = Field(max_length=16)
    verdict: str = Field(max_length=24)
    amount_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    amount_explanation: str = Field(default="", sa_type=sa.Text)
    # One letter per leaf condition of the rule (P pass, F fail, U unknown), in rule
    # order, as the match library stores them.
    outcomes: str = Field(default="", sa_type=sa.Text)
    # Each fact the rule and amount read: {kind: [value, period, source, fetched_at]}.
    facts: Any = Field(default=None, sa_type=sa.JSON)
    figures: Any = Field(default=None, sa_type=sa.JSON)  # uploaded figures, by fact kind
    flags: Any = Field(default=None, sa_type=sa.JSON)  # duplicate-funding flags (text)
    entitled_at: datetime = Field(sa_type=UTCDateTime)
    status: EntryStatus = Field(sa_type=sa.String(24))
    # The verification that covered the firm: who, when, and why (for an exception).
    department_by: str | None = Field(default=None, max_length=64)
    department_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finance_by: str | None = Field(default=None, max_length=64)
    finance_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reason: str = Field(default="", sa_type=sa.Text)
    # Which start of the batch starts the firm's case: 1 with the identification
    # (straight-through), 2 after finance verified the list; None while it waits.
    start_round: int | None = None


# ----- requests ---------------------------------------------------------------------------

Reason = Annotated[str, StringConstraints(min_length=1, max_length=500)]
USCC_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$"


class BatchStart(BaseModel):
    """A department starts a batch from the match library (JSON body)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    item_code: str = PydanticField(pattern=r"^[A-Z0-9][A-Z0-9-]{2,39}$")
    period: str = PydanticField(
        pattern=r"^(\d{4}(-(Q[1-4]|0[1-9]|1[0-2]))?|once)$",
        description="a period of the item's scheme inside its validity, begun by today",
        examples=["2026"],
    )


class Disposition(enum.StrEnum):
    INDIVIDUAL_REVIEW = "individual_review"  # a person reviews the firm's case alone
    DROP = "drop"  # no case for this firm in this batch


class ListException(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    uscc: str = PydanticField(pattern=USCC_PATTERN)
    disposition: Disposition
    reason: Reason


class Inclusion(BaseModel):
    """A possibly-eligible firm the department includes by name, after checking what
    the data could not decide; its case gets an individual review."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    uscc: str = PydanticField(pattern=USCC_PATTERN)
    reason: Reason


class DepartmentVerification(BaseModel):
    """The department verifies the list: every listed firm, except those named."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    exceptions: list[ListException] = PydanticField(default_factory=list, max_length=5_000)
    include: list[Inclusion] = PydanticField(default_factory=list, max_length=5_000)
    comment: str = PydanticField(default="", max_length=2000)

    @model_validator(mode="after")
    def _each_firm_once(self) -> DepartmentVerification:
        named = [e.uscc for e in self.exceptions] + [i.uscc for i in self.include]
        if len(named) != len(set(named)):
            raise ValueError("a firm is named twice among exceptions and include")
        return self


class FinanceAction(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class FinanceVerification(BaseModel):
    """Finance verifies the list and its total against the quota."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: FinanceAction
    expected_total_fen: Fen | None = PydanticField(
        default=None,
        description="approve: the list's total finance verified, in fen (the batch "
        "progress's `department_verified_total_fen`); refused unless it is the total",
    )
    reason: str = PydanticField(default="", max_length=2000)


class VerificationRequest(BaseModel):
    """What the batch workflow receives: who verifies, and the decision."""

    actor: Actor
    department: DepartmentVerification | None = None
    finance: FinanceVerification | None = None


class VerificationRecord(BaseModel):
    """A verification as applied to the snapshot."""

    batch_id: str
    actor: str
    at: datetime
    department: DepartmentVerification | None = None
    finance: FinanceVerification | None = None


class AccountIn(BaseModel):
    """A receiving account the firm gives instead of the one on file."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    bank_name: str = PydanticField(min_length=2, max_length=64)
    account_name: str = PydanticField(min_length=2, max_length=128)
    account_number: str = PydanticField(pattern=r"^[0-9]{8,34}$")


class AccountConfirmation(BaseModel):
    """The firm confirms where the money goes (the account on file, or a corrected one)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account: AccountIn | None = PydanticField(
        default=None, description="a corrected receiving account; omitted: the one on file"
    )


class Decline(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = PydanticField(default="", max_length=500)


class FirmConfirmation(BaseModel):
    actor: Actor
    account: AccountIn | None = None


class FirmDecline(BaseModel):
    actor: Actor
    reason: str = ""


# ----- workflow payloads ---------------------------------------------------------------


class BatchInput(BaseModel):
    batch_id: str
    # Carried across continue-as-new: where the run left off.
    phase: BatchPhase = BatchPhase.IDENTIFYING
    round: int = 0  # the start round in progress (RecognitionEntry.start_round)
    after_uscc: str = ""  # within it: the last firm whose case was started
    started: int = 0
    # Tuning (tests lower them to show continue-as-new).
    page_size: int = 200
    history_limit: int = 10_000
    follow_every_s: int = 60


class BatchFailure(BaseModel):
    batch_id: str
    reason: str


class BatchOpening(BaseModel):
    """What the batch workflow needs of its snapshot."""

    batch_id: str
    item_code: str
    period: str
    department_code: str
    finance_department_code: str
    straight_through: bool
    department_working_days: int
    finance_working_days: int
    phase: BatchPhase


class CasePageRequest(BaseModel):
    """The next page of cases a start round starts."""

    batch_id: str
    start_round: int
    after_uscc: str
    limit: int


class CaseStartPage(BaseModel):
    cases: list[RecognitionCaseInput]
    last_uscc: str


class RecognitionCaseInput(BaseModel):
    case_id: str
    batch_id: str
    item_code: str
    version: int
    period: str
    uscc: str
    attempt: int = 1
    individual_review: bool = False


class BatchState(BaseModel):
    """What the batch workflow knows of itself (its query); the API's progress read
    counts the cases from the database."""

    batch_id: str
    phase: BatchPhase
    cases_started: int
    due_at: datetime | None
    overdue: bool
    progress: BatchProgress | None


class VerificationStep(BaseModel):
    """A verification that covered the firm, for its timeline."""

    at: datetime
    actor: str
    action: str
    detail: str = ""


class CaseOpening(BaseModel):
    """What a recognition case reads of its snapshot entry when it starts."""

    title: str
    amount_fen: int | None
    amount_explanation: str
    region_code: str
    budget_year: int
    entitled_at: datetime
    department_code: str
    finance_department_code: str
    department_working_days: int
    finance_working_days: int
    terms: RecognitionTerms
    account_verified: bool  # the account on file was verified by an earlier payment
    steps: list[VerificationStep]
    to_verify: list[str] = PydanticField(default_factory=list)


class RecognitionNotice(BaseModel):
    """A notice to the firm (in-app and the message channel)."""

    case_id: str
    uscc: str
    item_code: str
    version: int
    period: str
    kind: str  # identified | reminder | expired
    amount_fen: int | None
    deadline: datetime | None = None


class AccountChange(BaseModel):
    case_id: str
    uscc: str
    item_code: str
    account: AccountIn | None
    actor: str


# ----- reads ------------------------------------------------------------------------------


class StageMoney(BaseModel):
    stage: str
    cases: int
    amount_fen: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_yuan(self) -> str:
        return format_yuan(self.amount_fen)


class BatchProgress(BaseModel):
    batch_id: str
    item_code: str
    version: int
    period: str
    source: BatchSource
    phase: BatchPhase
    straight_through: bool
    started_by: str
    started_at: datetime
    identified: int  # firms on the list (eligible) and listed apart (possible)
    possible: int
    not_eligible: int
    already_claimed: int
    verified: int
    individual_review: int
    dropped: int
    cases_started: int
    waiting_for_firm: int
    reserved: int  # money reserved and not yet paid (cases past reservation)
    paid: int
    returned: int
    declined: int
    expired: int
    listed_total_fen: int
    # What finance verifies (approves) now. A default: stored histories carry progress
    # from before this field.
    department_verified_total_fen: int = 0
    verified_total_fen: int
    reserved_fen: int
    paid_fen: int
    by_stage: list[StageMoney]
    department_decision: Any = None
    finance_decision: Any = None
    failure: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def paid_yuan(self) -> str:
        return format_yuan(self.paid_fen)


class BatchSummary(BaseModel):
    batch_id: str
    item_code: str
    period: str
    source: BatchSource
    phase: BatchPhase
    department_code: str
    started_by: str
    started_at: datetime
    listed: int
    possible: int
    listed_total_fen: int


class EntryView(BaseModel):
    uscc: str
    name: str
    region_code: str
    case_id: str
    status: EntryStatus
    verdict: str
    amount_fen: int | None
    amount_explanation: str
    conditions: list[Any]
    facts: list[Any]
    figures: Any
    flags: list[str]
    reason: str
    department_by: str | None
    department_at: datetime | None
    finance_by: str | None
    finance_at: datetime | None
    case_stage: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_yuan(self) -> str | None:
        return yuan_text(self.amount_fen)


CaseStartPage.model_rebuild()
BatchState.model_rebuild()
