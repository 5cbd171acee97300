"""The wire protocol of the city's public data platform (公共数据平台) as zhida uses it.

The platform answers, for one firm, the latest reading of each kind of figure asked
for, with the day it holds for (`as_of`) and the department it came from; kinds it has
no figure for are named in `missing`. It also tells a firm's related parties: firms
sharing its legal representative, its parent and its subsidiaries.

The answers zhida keeps (`FactsAnswer`, `RelatedParties`) add when they arrived
(`retrieved_at`, set by adapters/data_platform.py), since a figure's worth depends on
both the day it holds for and the day it was read.
"""

from __future__ import annotations

import enum
from datetime import date
from typing import Annotated, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from models.recognition import USCC_PATTERN

# Kind -> the department whose figure the platform serves.
DATA_PLATFORM_KINDS: dict[str, str] = {
    "tax_paid_fen": "市税务局",
    "social_security_headcount": "市人力社保局",
    "credit_rating": "市信用办",  # A/B/C/D
    "blacklisted": "市信用办",
    "env_credit_colour": "市生态环境局",
    "env_penalty_count": "市生态环境局",  # environmental penalties in the last 3 years
    "patent_count": "市市场监管局",
    "revenue_fen": "市税务局",
    "tax_per_mu_fen": "市经信局",
    "mu_grade": "市经信局",
}
# Kind -> the type of its value. Only the type is the platform's contract; ranges and
# choices are the domain's to judge (models/facts.py), so an unexpected grade is a
# figure to refuse there, not an answer to throw away here.
DATA_PLATFORM_VALUE_TYPES: dict[str, type[bool] | type[int] | type[str]] = {
    "tax_paid_fen": int,
    "social_security_headcount": int,
    "credit_rating": str,
    "blacklisted": bool,
    "env_credit_colour": str,
    "env_penalty_count": int,
    "patent_count": int,
    "revenue_fen": int,
    "tax_per_mu_fen": int,
    "mu_grade": str,
}
MAX_KINDS_PER_REQUEST = 50
MAX_FIRMS_PER_BATCH = 1000
MAX_CHANGES_PER_PAGE = 500

Uscc = Annotated[str, Field(pattern=USCC_PATTERN)]
# Strict: JSON `true` is a bool and `1` an int, never the one read as the other.
DataValue = StrictBool | StrictInt | StrictStr


def check_value(kind: str, value: DataValue) -> None:
    """Raise ValueError unless `kind` is served and `value` has its type."""
    expected = DATA_PLATFORM_VALUE_TYPES.get(kind)
    if expected is None:
        raise ValueError(f"unknown kind: {kind}")
    if type(value) is not expected:  # `is`: a bool is an int to isinstance
        raise ValueError(f"{kind} must be {expected.__name__}, got {type(value).__name__}")


class DataReading(BaseModel):
    """One figure: the platform's latest of its kind for the firm."""

    model_config = ConfigDict(frozen=True)

    kind: str
    value: DataValue
    as_of: date  # the day the figure holds for (a year's figure: 31 December)
    source: str = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _value_of_its_kind(self) -> Self:
        check_value(self.kind, self.value)
        return self


class FactsReply(BaseModel):
    """`GET /v1/enterprises/{uscc}/facts`: every kind asked for is read or missing."""

    uscc: Uscc
    readings: list[DataReading]
    missing: list[str]


class FirmFacts(BaseModel):
    """A firm whose figures changed, with its latest figure of every kind."""

    uscc: Uscc
    readings: list[DataReading] = Field(max_length=len(DATA_PLATFORM_KINDS))


class FactChangesPage(BaseModel):
    """`GET /v1/fact-changes?cursor=...&limit=...`: the firms whose figures changed
    after the cursor, in the order they changed, and the cursor after the last."""

    changes: list[FirmFacts]
    next_cursor: str = Field(min_length=1, max_length=256)
    has_more: bool


class FactsAnswer(FactsReply):
    retrieved_at: AwareDatetime

    def reading(self, kind: str) -> DataReading | None:
        return next((r for r in self.readings if r.kind == kind), None)


class Relation(enum.StrEnum):
    LEGAL_REPRESENTATIVE = "legal_representative"  # the same legal representative
    PARENT = "parent"  # the firm's parent
    SUBSIDIARY = "subsidiary"  # a firm whose parent this firm is


class RelatedParty(BaseModel):
    model_config = ConfigDict(frozen=True)

    uscc: Uscc
    relation: Relation


class RelatedPartiesReply(BaseModel):
    """`GET /v1/enterprises/{uscc}/related-parties`."""

    uscc: Uscc
    legal_representative: str = Field(min_length=1, description="an opaque id, not a name")
    parent_uscc: Uscc | None
    related: list[RelatedParty]
    as_of: date


class RelatedParties(RelatedPartiesReply):
    retrieved_at: AwareDatetime


class RelatedPartiesQuery(BaseModel):
    """`POST /v1/related-parties:batchGet`."""

    model_config = ConfigDict(extra="forbid")

    usccs: list[Uscc] = Field(max_length=MAX_FIRMS_PER_BATCH)


class RelatedPartiesBatch(BaseModel):
    parties: list[RelatedPartiesReply]
    unknown: list[str]  # asked for, and not known to the platform


# ----- the simulator's records (`PUT /v1/_simulator/enterprises`) ------------------------


class RecordedFact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: DataValue
    as_of: date


class EnterpriseRecord(BaseModel):
    """What the simulated platform holds of one firm; its related parties are derived
    from every record's representative and parent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uscc: Uscc
    facts: dict[str, RecordedFact] = Field(default_factory=dict)
    legal_representative: str = Field(min_length=1, max_length=64)
    parent_uscc: Uscc | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for kind, fact in self.facts.items():
            check_value(kind, fact.value)
        if self.parent_uscc == self.uscc:
            raise ValueError("a firm is not its own parent")
        return self
