"""The match library (政策匹配库), matching runs, and pushes to firms (政策快享)."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, computed_field
from sqlmodel import Field, SQLModel

from models.eligibility import Outcome, UnknownReason, Verdict
from models.money import format_yuan, yuan_text
from models.types import UTCDateTime, utcnow


class MatchResult(SQLModel, table=True):
    """One firm that an item matches (eligible or possibly eligible). Pairs that are
    not eligible are not stored; `domain.policy.library.evaluate_eligibility` explains any pair."""

    __tablename__ = "match_result"
    __table_args__ = (
        # The firms of an item by verdict (and region), from the index alone.
        sa.Index(
            "ix_match_result_item_verdict_region", "item_code", "verdict", "region_code", "uscc"
        ),
        # Eligible firms of an item in the order of their credit codes' organisation part
        # (random, unlike the region prefix): policy effect's comparison sample.
        sa.Index(
            "ix_match_result_item_verdict_organisation",
            "item_code",
            "verdict",
            sa.func.substr(sa.column("uscc"), 10, 9),
        ),
    )

    # No foreign keys, on purpose: the library is derived data, written only by a
    # matching run from the items and firms it has just read (neither is ever
    # deleted), and its first write is millions of rows. On PostgreSQL the two
    # keys' per-row checks were 19 s of a 35 s first write, and setting them aside
    # for the write would lock every read of the firms (migration 0019).
    item_code: str = Field(primary_key=True, max_length=40)
    uscc: str = Field(primary_key=True, max_length=18, index=True)
    version: int
    verdict: str = Field(max_length=24)
    amount_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    # One letter per condition of the version's rule, in rule order: P pass, F fail,
    # U unknown (see domain.engine.arrays.leaves for the order).
    outcomes: str = Field(sa_type=sa.Text)
    region_code: str = Field(max_length=16, index=True)
    first_matched_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When the verdict, amount or reasons last changed (a run that confirms them
    # writes nothing).
    matched_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MatchTally(SQLModel, table=True):
    """How many firms each item matches in each region, by verdict, and the sum of their
    known amounts: the match library counted at the end of every run that changed it,
    for the dashboards and an item's match view, which would otherwise count millions
    of rows per request."""

    __tablename__ = "match_tally"

    item_code: str = Field(primary_key=True, max_length=40)
    region_code: str = Field(primary_key=True, max_length=16)
    verdict: str = Field(primary_key=True, max_length=24)
    firms: int
    amount_fen: int = Field(default=0, sa_type=sa.BigInteger)  # of those with an amount


class MatchScope(enum.StrEnum):
    FULL = "full"  # every published item against every firm
    ITEM = "item"  # one item, newly published, against every firm
    FIRMS = "firms"  # every published item against firms whose data changed


class MatchRun(SQLModel, table=True):
    __tablename__ = "match_run"

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=8)
    item_code: str | None = Field(default=None, max_length=40)
    workflow_id: str = Field(max_length=160)
    firms: int
    items: int
    eligible: int
    possible: int
    added: int
    removed: int
    compute_ms: int
    # Item versions the run could not evaluate (skipped, their library rows kept) and
    # stored facts it could not use (read as unknown): see MatchError.
    item_errors: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    fact_errors: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MatchError(SQLModel, table=True):
    """What a run could not evaluate: an item version (item_code, version), or a firm's
    stored fact (uscc, fact) that fails its kind's type or range. A run records at
    most MAX_RECORDED_ERRORS; MatchRun counts them all."""

    __tablename__ = "match_error"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="match_run.id", index=True)
    item_code: str | None = Field(default=None, max_length=40, index=True)
    version: int | None = None
    uscc: str | None = Field(default=None, max_length=18, index=True)
    fact: str | None = Field(default=None, max_length=40)
    message: str = Field(sa_type=sa.Text)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


MAX_RECORDED_ERRORS = 1000


class PushStatus(enum.StrEnum):
    PENDING = "pending"  # decided and in the firm's inbox; the channel message not sent yet
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"


class PolicyPush(SQLModel, table=True):
    """A matched policy pushed to a firm: at most once per firm and item, ever."""

    __tablename__ = "policy_push"
    __table_args__ = (
        # The funnel: pushes and openings per item and region, from the index alone.
        sa.Index("ix_policy_push_item_region_opened", "item_code", "region_code", "opened_at"),
        sa.UniqueConstraint("uscc", "item_code"),
        sa.Index("ix_policy_push_uscc_pushed_at", "uscc", "pushed_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    uscc: str = Field(foreign_key="enterprise.uscc", max_length=18)
    item_code: str = Field(foreign_key="policy_item.code", max_length=40, index=True)
    region_code: str | None = Field(default=None, max_length=16)  # the firm's, when pushed
    version: int
    verdict: str = Field(max_length=24)
    amount_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    status: str = Field(default=PushStatus.PENDING, max_length=16, index=True)
    message_id: str | None = Field(default=None, max_length=64)
    pushed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    opened_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    applied_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# ----- workflow payloads --------------------------------------------------------------


class MatchRequest(BaseModel):
    scope: MatchScope
    item_code: str | None = None
    changed_since: datetime | None = None  # FIRMS: facts or profile changed since then
    as_of: date | None = None  # defaults to today in Asia/Shanghai
    # After sending, ask the channel for delivery receipts after each of these waits.
    receipt_polls_s: list[float] = Field(default_factory=lambda: [30.0, 120.0, 600.0])


class MatchSummary(BaseModel):
    run_id: int
    firms: int
    items: int
    eligible: int
    possible: int
    added: int
    removed: int
    compute_ms: int
    item_errors: int = 0  # defaults: summaries recorded before these were counted
    fact_errors: int = 0


class PushSummary(BaseModel):
    planned: int
    deferred: int  # over the weekly limit: pushed by a later run


# ----- API views ------------------------------------------------------------------------


class ConditionView(BaseModel):
    path: str
    description: str
    outcome: Outcome


class PolicyForMe(BaseModel):
    item_code: str
    version: int
    title: str
    category: str
    department_code: str
    verdict: Verdict
    amount_fen: int | None
    conditions: list[ConditionView]
    pushed_at: datetime | None
    matched_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_yuan(self) -> str | None:
        return yuan_text(self.amount_fen)


class Gap(BaseModel):
    """A condition that stands between a firm and an item, and what it would take."""

    path: str
    description: str
    outcome: Outcome
    fact: str | None
    needed: str  # in words, e.g. 需满足：公共信用评价等级 属于 A、B
    expected: Any = None  # the rule's value (for `between`, [low, high])
    actual: Any = None  # what the data says now; None when missing
    reason: UnknownReason | None = None


class GapReport(BaseModel):
    item_code: str
    version: int
    uscc: str
    verdict: Verdict
    gaps: list[Gap]


class RegionCount(BaseModel):
    region_code: str
    eligible: int
    possibly_eligible: int


class MatchErrorView(BaseModel):
    run_id: int
    item_code: str | None
    version: int | None
    uscc: str | None
    fact: str | None
    message: str
    at: datetime


class ItemMatchView(BaseModel):
    item_code: str
    version: int | None
    eligible: int
    possibly_eligible: int
    eligible_amount_fen: int
    by_region: list[RegionCount]
    # From the latest run that covered the item: why it could not be evaluated (its
    # library rows are then those of an earlier run), and firms whose stored value of
    # a fact its rule reads could not be used (they read as unknown).
    errors: list[MatchErrorView] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eligible_amount_yuan(self) -> str:
        return format_yuan(self.eligible_amount_fen)


class MatchRunView(BaseModel):
    """A matching run for ops, with what it could not evaluate."""

    id: int
    scope: str
    item_code: str | None
    workflow_id: str
    firms: int
    items: int
    eligible: int
    possible: int
    added: int
    removed: int
    compute_ms: int
    item_errors: int
    fact_errors: int
    started_at: datetime
    finished_at: datetime
    errors: list[MatchErrorView] = Field(default_factory=list)


class MatchedFirm(BaseModel):
    uscc: str
    name: str
    region_code: str
    verdict: Verdict
    amount_fen: int | None
    matched_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_yuan(self) -> str | None:
        return yuan_text(self.amount_fen)


class BudgetPreview(BaseModel):
    """Before publishing: who a version would match and what they would receive."""

    item_code: str
    version: int
    as_of: date
    firms: int
    eligible: int
    possibly_eligible: int
    eligible_amount_fen: int
    possible_amount_fen: int
    unknown_amount: int  # eligible firms whose amount cannot be computed (fact missing)
    annual_quota_fen: int
    covers: Literal["eligible_and_possible", "eligible_only", "neither"]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eligible_amount_yuan(self) -> str:
        return format_yuan(self.eligible_amount_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def possible_amount_yuan(self) -> str:
        return format_yuan(self.possible_amount_fen)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def annual_quota_yuan(self) -> str:
        return format_yuan(self.annual_quota_fen)


class PushStats(BaseModel):
    """Success counts firms that acted, not messages sent."""

    item_code: str
    pushed: int
    delivered: int
    opened: int
    applied: int
    confirmed: int
    acted: int
    success_rate: float
