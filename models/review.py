"""Smart review (智审): evidence from data beside what the firm declared, and
duplicate-funding findings (多维度查重, 就高不重复).

A finding is an alert, never a verdict: it holds the case at review until a reviewer
clears it (with a reason, confirmed by a second person) or upholds it (reducing or
rejecting the case, citing it).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    computed_field,
    field_validator,
)
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.money import Fen, yuan_text
from models.reference import Actor
from models.types import UTCDateTime, utcnow


class Dimension(enum.StrEnum):
    EXCLUSIVITY = "exclusivity"  # 就高不重复: one item of a group per firm, project, period
    PROJECT = "project"  # the same project funded twice, beyond its eligible cost
    INVOICE = "invoice"  # the same invoice number in two cases
    FIRM_GROUP = "firm_group"  # related firms splitting one project past a per-firm cap


DIMENSION_LABELS = {
    Dimension.EXCLUSIVITY: "同组政策就高不重复",
    Dimension.PROJECT: "同一项目重复扶持",
    Dimension.INVOICE: "同一发票重复使用",
    Dimension.FIRM_GROUP: "关联企业拆分项目",
}


class ReviewChecks(BaseModel):
    """Which duplicate checks an item version runs, and their thresholds."""

    model_config = ConfigDict(extra="forbid")

    dimensions: list[Dimension] = PydanticField(
        default_factory=lambda: [Dimension.EXCLUSIVITY, Dimension.PROJECT, Dimension.INVOICE],
        description="the checks that apply; an item with an exclusivity group is always "
        "checked against its group, whatever this says",
    )
    exclusivity_per_project: bool = PydanticField(
        default=False,
        description="the group pays a firm once per project (not once per firm and period): "
        "cases naming different projects do not exclude each other",
    )
    name_similarity: float = PydanticField(
        default=0.8,
        ge=0.5,
        le=1.0,
        description="two projects of one firm at one location are the same project when "
        "their normalised names are at least this similar (0.5-1) and name the same numbers",
    )
    investment_tolerance_pct: int = PydanticField(
        default=10,
        ge=0,
        le=100,
        description="...and their investments differ by at most this share (where both are known)",
    )
    firm_group_cap_fen: Fen | None = PydanticField(
        default=None,
        description="the per-firm cap related firms must not pass together; omitted: any "
        "two related firms funded for one project is a finding",
    )
    evidence_facts: list[str] = PydanticField(
        default_factory=list,
        max_length=20,
        description="facts fetched from the public data platform at review besides those "
        "the eligibility rule names",
    )
    declared_tolerance_pct: int = PydanticField(
        default=10,
        ge=0,
        le=100,
        description="a declared figure further than this from the data's is shown as a mismatch",
    )

    @field_validator("dimensions")
    @classmethod
    def _once_each(cls, value: list[Dimension]) -> list[Dimension]:
        if len(value) != len(set(value)):
            raise ValueError("a dimension is named twice")
        return value

    @field_validator("evidence_facts")
    @classmethod
    def _served_facts(cls, value: list[str]) -> list[str]:
        from models.data_platform import DATA_PLATFORM_KINDS  # the platform's catalogue

        for kind in value:
            if kind not in DATA_PLATFORM_KINDS:
                raise ValueError(f"{kind}: not a fact the public data platform serves")
        if len(value) != len(set(value)):
            raise ValueError("a fact is named twice")
        return value


Token = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]


# One line of text people read: no control characters, no bidirectional overrides.
TEXT_LINE = r"^[^\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]+$"


class ProjectClaim(BaseModel):
    """The project a case funds, as the firm declares it: what the duplicate check
    compares across items, levels and firms."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = PydanticField(min_length=1, max_length=256, pattern=TEXT_LINE)
    location: str = PydanticField(min_length=1, max_length=256, pattern=TEXT_LINE)
    investment_fen: Fen | None = None
    eligible_cost_fen: Fen | None = PydanticField(
        default=None,
        description="the project's eligible cost: public funding from all items together "
        "must not exceed it",
    )
    invoices: list[Token] = PydanticField(default_factory=list, max_length=500)
    equipment_serials: list[Token] = PydanticField(default_factory=list, max_length=500)


# ----- evidence -----------------------------------------------------------------------


class EvidenceStatus(enum.StrEnum):
    CONFIRMED = "confirmed"  # the data has it, current, and it agrees with what was declared
    FROM_DATA = "from_data"  # the data has it, current; nothing was declared to compare
    MISMATCH = "mismatch"  # the data disagrees with the declared figure
    STALE = "stale"  # the data's figure is older than the fact's maximum age
    MISSING = "missing"  # the platform has no such figure for the firm
    UNAVAILABLE = "unavailable"  # the platform could not be asked


UNKNOWN_EVIDENCE = frozenset(
    {EvidenceStatus.STALE, EvidenceStatus.MISSING, EvidenceStatus.UNAVAILABLE}
)

FactValue = int | str | bool


MAX_COUNT = 10**6  # penalties, patents: the kinds only the platform serves


def _declared_kinds(value: dict[str, FactValue]) -> dict[str, FactValue]:
    """Each figure of a kind the platform serves, of its type, and inside the fact's
    range or choices (models/facts.py), as the importer would take it."""
    from models.data_platform import DATA_PLATFORM_KINDS, check_value
    from models.facts import FACT_KINDS, coerce_fact_value

    for kind, figure in value.items():
        if kind not in DATA_PLATFORM_KINDS:
            raise ValueError(f"{kind}: not a figure the public data platform can confirm")
        check_value(kind, figure)
        if kind in FACT_KINDS:
            try:
                coerce_fact_value(FACT_KINDS[kind], figure)
            except ValueError as exc:
                raise ValueError(f"{kind}: {exc}") from None
        elif isinstance(figure, int) and not 0 <= figure <= MAX_COUNT:
            raise ValueError(f"{kind}: must be from 0 to {MAX_COUNT}")
    return value


DeclaredFigures = Annotated[
    dict[str, StrictBool | StrictInt | StrictStr],
    PydanticField(max_length=20),
    AfterValidator(_declared_kinds),
]


class Evidence(BaseModel):
    """One fact as the review saw it: declared beside the data's, with where and when."""

    kind: str
    label: str
    declared: FactValue | None = None
    declared_source: str | None = None  # 企业申报 / 企业库
    data: FactValue | None = None
    as_of: date | None = None
    source: str | None = None
    retrieved_at: datetime | None = None
    status: EvidenceStatus
    reason: str = ""


# ----- findings -----------------------------------------------------------------------


class FindingStatus(enum.StrEnum):
    OPEN = "open"
    CLEARING = "clearing"  # one person proposed to clear it; a second must confirm
    CLEARED = "cleared"
    UPHELD = "upheld"
    LAPSED = "lapsed"  # its case closed unpaid (withdrawn, cancelled, expired) before a decision


HOLDING = frozenset({FindingStatus.OPEN, FindingStatus.CLEARING})


class Counterpart(BaseModel):
    """The other case a finding names, as it stood when the finding was raised."""

    case_id: str
    uscc: str
    item_code: str
    period: str
    amount_fen: int | None
    paid_fen: int
    state: str
    project_name: str | None = None


class FindingDraft(BaseModel):
    """What a check found, before it is stored."""

    dimension: Dimension
    key: str  # what makes it this finding and no other (the counterpart, the invoice)
    score: int = PydanticField(ge=0, le=100)
    summary: str
    evidence: dict[str, Any]
    counterparts: list[Counterpart]
    amount_fen: int | None  # what the case is entitled to before the finding
    excess_fen: int  # the part that would be paid twice
    suggested_fen: int | None  # what remains due if the finding is upheld


class ReviewFinding(SQLModel, table=True):
    __tablename__ = "review_finding"
    __table_args__ = (sa.UniqueConstraint("case_id", "dimension", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=160, index=True)
    category: str = Field(max_length=16)
    item_code: str = Field(max_length=40, index=True)
    department_code: str = Field(max_length=32, index=True)
    region_code: str = Field(max_length=16, index=True)
    uscc: str = Field(max_length=18, index=True)
    period: str = Field(max_length=8)
    dimension: Dimension = Field(sa_type=sa.String(16), index=True)
    key: str = Field(max_length=200)
    score: int
    summary: str = Field(sa_type=sa.Text)
    evidence: Any = Field(sa_type=sa.JSON)
    counterparts: Any = Field(sa_type=sa.JSON)
    amount_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    excess_fen: int = Field(sa_type=sa.BigInteger)
    suggested_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    status: FindingStatus = Field(default=FindingStatus.OPEN, sa_type=sa.String(16), index=True)
    proposed_by: str | None = Field(default=None, max_length=64)
    proposed_reason: str | None = Field(default=None, sa_type=sa.Text)
    decided_by: str | None = Field(default=None, max_length=64)
    decided_reason: str | None = Field(default=None, sa_type=sa.Text)
    raised_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class FindingView(BaseModel):
    id: int
    case_id: str
    category: str
    item_code: str
    department_code: str
    region_code: str
    uscc: str
    period: str
    dimension: Dimension
    score: int
    summary: str
    evidence: dict[str, Any]
    counterparts: list[Counterpart]
    amount_fen: int | None
    excess_fen: int
    suggested_fen: int | None
    status: FindingStatus
    proposed_by: str | None
    proposed_reason: str | None
    decided_by: str | None
    decided_reason: str | None
    raised_at: datetime
    decided_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def dimension_label(self) -> str:
        return DIMENSION_LABELS[self.dimension]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def excess_yuan(self) -> str | None:
        return yuan_text(self.excess_fen)


class FindingCount(BaseModel):
    dimension: Dimension
    status: FindingStatus
    findings: int
    cases: int
    amount_held_fen: int  # the entitlement of the cases the findings hold
    excess_fen: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def dimension_label(self) -> str:
        return DIMENSION_LABELS[self.dimension]


class FundingClaim(SQLModel, table=True):
    """What one case claims, in the terms the duplicate check compares: written when the
    case is reviewed, read by every later case's check."""

    __tablename__ = "funding_claim"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=160, unique=True)
    category: str = Field(max_length=16)
    uscc: str = Field(max_length=18, index=True)
    item_code: str = Field(max_length=40, index=True)
    exclusivity_group: str | None = Field(default=None, max_length=64, index=True)
    period: str = Field(max_length=8)
    amount_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    project_name: str | None = Field(default=None, max_length=256)
    location_key: str | None = Field(default=None, max_length=256, index=True)
    investment_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    eligible_cost_fen: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TokenKind(enum.StrEnum):
    INVOICE = "invoice"
    SERIAL = "serial"


class FundingToken(SQLModel, table=True):
    """An invoice number or equipment serial a case's project lists (normalised)."""

    __tablename__ = "funding_token"
    __table_args__ = (sa.UniqueConstraint("case_id", "kind", "token"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=160)
    kind: TokenKind = Field(sa_type=sa.String(8))
    token: str = Field(max_length=64, index=True)


# ----- payloads of the case workflows ------------------------------------------------


class ReviewRequest(BaseModel):
    """A case asks for its review: evidence and duplicate check, at a named point."""

    case_id: str
    category: str
    item_code: str
    version: int
    period: str
    uscc: str
    amount_fen: int | None
    project: ProjectClaim | None = None
    declared: dict[str, FactValue] = PydanticField(default_factory=dict)
    point: str  # check, joint_review, settlement_review


class ReviewOutcome(BaseModel):
    evidence: list[Evidence]
    findings: list[FindingView]
    to_verify: list[str]  # what the evidence leaves a reviewer to check by hand


class FindingClearance(BaseModel):
    """What a reviewer sends to clear a finding (the first proposes, a second confirms)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = PydanticField(min_length=1, max_length=2000)


class ClearanceRequest(BaseModel):
    actor: Actor
    finding_id: int
    clearance: FindingClearance


class FindingDecision(BaseModel):
    """A finding's new status, as the case records it in the database."""

    case_id: str
    finding_ids: list[int]
    status: FindingStatus
    actor: str
    reason: str
