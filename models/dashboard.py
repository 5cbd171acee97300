"""Dashboards (绩效看板): what the performance pages read, in fen and working days.

Every figure is computed from the case projection, the ledger, the quotas, the match
library and the registry, filtered to what the reader may see (a district its
district, a department its items), so a page never shows more than the API would.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# The traditional flow the reform is measured against: about 60 working days from
# entitlement to money (DESIGN.md, "time to money").
TRADITIONAL_WORKING_DAYS = 60
# The reform's headline goal: 80% less time.
TARGET_REDUCTION_PCT = 80


class DashboardFilters(BaseModel):
    """What every dashboard may be narrowed to."""

    model_config = ConfigDict(extra="forbid")

    year: int | None = Field(default=None, description="budget year (the period's year)")
    region_code: str | None = Field(default=None, description="the firm's region, or under it")
    department_code: str | None = Field(default=None, description="the item's department")
    category: str | None = Field(default=None, description="application, recognition, commitment")


class Money(BaseModel):
    """Cases and money of one slice: committed (approved, not closed unpaid), reserved
    (approved and held on the quota, not yet in the account) and paid (in the account)."""

    key: str
    name: str
    cases: int = 0
    committed_fen: int = 0
    reserved_fen: int = 0
    paid_fen: int = 0


class Funnel(BaseModel):
    """One item from matched to paid: firms at each step."""

    item_code: str
    title: str
    category: str
    department_code: str
    matched: int
    pushed: int
    pushes_opened: int
    acted: int  # applied, identified or committed: a case was opened
    approved: int
    paid: int
    paid_fen: int


class BudgetUse(BaseModel):
    item_code: str
    title: str
    year: int
    quota_fen: int
    reserved_fen: int
    paid_fen: int

    used_pct: float  # reserved and paid, of the quota


class Overview(BaseModel):
    filters: DashboardFilters
    totals: Money
    by_region: list[Money]
    by_department: list[Money]
    by_category: list[Money]
    by_month: list[Money]  # money paid by month of receipt (Asia/Shanghai), key YYYY-MM
    funnel: list[Funnel]
    budget: list[BudgetUse]
    generated_at: datetime


class OverdueReview(BaseModel):
    case_id: str
    item_code: str
    uscc: str
    stage: str
    department_code: str | None
    department_name: str | None
    waiting_for_role: str | None
    due_at: datetime | None
    working_days_late: int


class QuotaWarning(BaseModel):
    item_code: str
    title: str
    year: int
    quota_fen: int
    used_fen: int
    used_pct: float
    waiting_cases: int  # cases awaiting budget on this item


class ReturnedPayment(BaseModel):
    case_id: str
    item_code: str
    uscc: str
    stage: str
    returned_fen: int
    returned_at: datetime


class RecoveryWarning(BaseModel):
    case_id: str
    item_code: str
    uscc: str
    status: str
    outstanding_fen: int
    due_on: str | None
    defaulted: bool


class MatchingWarning(BaseModel):
    item_code: str | None
    run_id: int
    errors: int
    example: str
    at: datetime


class FindingsWaiting(BaseModel):
    item_code: str
    cases: int
    findings: int
    excess_fen: int
    oldest: datetime


class Warnings(BaseModel):
    overdue_reviews: list[OverdueReview]
    quotas: list[QuotaWarning]
    returned_payments: list[ReturnedPayment]
    recoveries: list[RecoveryWarning]
    matching: list[MatchingWarning]
    findings: list[FindingsWaiting]
    quota_threshold_pct: int
    generated_at: datetime


class Speed(BaseModel):
    """Working days from entitlement to money in the account, over the cases paid."""

    key: str
    name: str
    paid_cases: int
    median_days: float | None
    p90_days: float | None
    reduction_pct: float | None  # against TRADITIONAL_WORKING_DAYS, of the median


class TimeToMoney(BaseModel):
    filters: DashboardFilters
    headline: Speed
    traditional_days: int = TRADITIONAL_WORKING_DAYS
    target_reduction_pct: int = TARGET_REDUCTION_PCT
    by_category: list[Speed]
    by_item: list[Speed]
    method: str
    generated_at: datetime


class Standing(BaseModel):
    """A district or department in the quarterly bulletin (亮晒比拼)."""

    rank: int
    key: str
    name: str
    median_days: float | None
    # Coverage counts entitlements, firm and item pairs: the match library's eligible
    # pairs of the unit, and those of them paid in the year up to the quarter's end.
    eligible_pairs: int
    paid_pairs: int
    coverage_pct: float | None
    overdue: int
    paid_fen: int


class Bulletin(BaseModel):
    year: int
    quarter: int
    starts_on: str
    ends_on: str
    districts: list[Standing]
    departments: list[Standing]
    ranking: str
    generated_at: datetime


class Movement(BaseModel):
    """How one figure moved from the year before payment to the year of it."""

    kind: str
    label: str
    paid_firms: int  # paid firms with the figure for both years
    paid_change_pct: float | None  # median change of paid firms
    comparison_firms: int
    comparison_change_pct: float | None  # median change of eligible firms not (yet) paid
    difference_pts: float | None


class ItemEffect(BaseModel):
    item_code: str
    title: str
    year: int  # the year of payment; compared with the year before
    paid_firms: int
    eligible_firms: int  # the match library's eligible firms, paid ones included
    movements: list[Movement]


class EffectChoice(BaseModel):
    item_code: str
    title: str
    paid_firms: int  # firms paid, once for each year they were paid in


class PolicyEffect(BaseModel):
    filters: DashboardFilters
    items: list[ItemEffect]  # the item asked for, else the one with most firms paid
    choices: list[EffectChoice]  # every item with firms paid in the reader's scope
    method: str
    caveats: list[str]
    generated_at: datetime
