"""Policy library (政策库): documents, items and their immutable versions."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated, Any

import sqlalchemy as sa
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationInfo,
    WithJsonSchema,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.commitment_terms import CommitmentTerms
from models.money import Fen, format_yuan
from models.period import PeriodScheme, whole_periods
from models.recognition import RecognitionTerms
from models.review import ReviewChecks
from models.types import Day, UTCDateTime, utcnow


class Category(enum.StrEnum):
    RECOGNITION = "recognition"
    COMMITMENT = "commitment"
    APPLICATION = "application"


class Level(enum.StrEnum):
    NATIONAL = "national"
    PROVINCE = "province"
    CITY = "city"
    DISTRICT = "district"


class VersionStatus(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    PUBLISHED = "published"
    SUPERSEDED = "superseded"
    SUSPENDED = "suspended"
    EXPIRED = "expired"


class Stage(enum.StrEnum):
    """Stages of a case; each item version names who acts at each and in how long."""

    IDENTIFY = "identify"
    JOINT_REVIEW = "joint_review"
    DEPARTMENT_REVIEW = "department_review"
    FINANCE_REVIEW = "finance_review"
    PREPAYMENT = "prepayment"
    COMPLETION_REVIEW = "completion_review"
    SETTLEMENT = "settlement"
    PAYMENT = "payment"


STAGES_BY_CATEGORY: dict[Category, tuple[Stage, ...]] = {
    Category.RECOGNITION: (
        Stage.IDENTIFY,
        Stage.DEPARTMENT_REVIEW,
        Stage.FINANCE_REVIEW,
        Stage.PAYMENT,
    ),
    Category.COMMITMENT: (
        Stage.JOINT_REVIEW,
        Stage.PREPAYMENT,
        Stage.COMPLETION_REVIEW,
        Stage.SETTLEMENT,
    ),
    Category.APPLICATION: (Stage.DEPARTMENT_REVIEW, Stage.FINANCE_REVIEW, Stage.PAYMENT),
}
FINANCE_STAGES = frozenset(
    {Stage.FINANCE_REVIEW, Stage.PAYMENT, Stage.PREPAYMENT, Stage.SETTLEMENT}
)


class PolicyDocument(SQLModel, table=True):
    __tablename__ = "policy_document"

    id: int | None = Field(default=None, primary_key=True)
    doc_number: str = Field(max_length=64, unique=True)
    title: str = Field(max_length=256)
    issuer: str = Field(max_length=128)
    level: Level = Field(sa_type=sa.String(16))
    issued_on: date
    text: str = Field(default="", sa_type=sa.Text)


class PolicyItem(SQLModel, table=True):
    __tablename__ = "policy_item"

    code: str = Field(primary_key=True, max_length=40)
    document_id: int = Field(foreign_key="policy_document.id", index=True)
    department_code: str = Field(foreign_key="department.code", max_length=32, index=True)
    region_code: str = Field(foreign_key="region.code", max_length=16, index=True)
    latest_version: int = 1
    published_version: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PolicyItemVersion(SQLModel, table=True):
    """One version of an item. Content is frozen from submission on; only status moves."""

    __tablename__ = "policy_item_version"
    __table_args__ = (sa.UniqueConstraint("item_code", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    item_code: str = Field(foreign_key="policy_item.code", max_length=40, index=True)
    version: int
    status: VersionStatus = Field(sa_type=sa.String(16), index=True)
    title: str = Field(max_length=256, index=True)
    summary: str = Field(default="", sa_type=sa.Text)
    category: Category = Field(sa_type=sa.String(16), index=True)
    eligibility: Any = Field(sa_type=sa.JSON)
    amount_rule: Any = Field(sa_type=sa.JSON)
    annual_quota_fen: int = Field(sa_type=sa.BigInteger)
    period_scheme: PeriodScheme = Field(default=PeriodScheme.ANNUAL, sa_type=sa.String(16))
    exclusivity_group: str | None = Field(default=None, max_length=64)
    # RecognitionTerms as JSON for a recognition item (NULL: the defaults); NULL otherwise.
    recognition_terms: Any = Field(default=None, sa_type=sa.JSON)
    # CommitmentTerms as JSON for a commitment item; NULL otherwise.
    commitment_terms: Any = Field(default=None, sa_type=sa.JSON)
    # ReviewChecks as JSON (NULL: the defaults): the duplicate checks its cases run.
    review_checks: Any = Field(default=None, sa_type=sa.JSON)
    stages: Any = Field(sa_type=sa.JSON)
    valid_from: date
    valid_to: date
    author: str = Field(foreign_key="user.name", max_length=64)
    change_reason: str = Field(default="", sa_type=sa.Text)
    money_changed: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    submitted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    review_workflow_id: str | None = Field(default=None, max_length=128)


class PolicyChangeEvent(SQLModel, table=True):
    """Who did what to an item version, when and why (the library's audit trail)."""

    __tablename__ = "policy_change_event"

    id: int | None = Field(default=None, primary_key=True)
    item_code: str = Field(foreign_key="policy_item.code", max_length=40, index=True)
    version: int
    action: str = Field(max_length=32)
    actor: str = Field(max_length=64)
    actor_role: str = Field(max_length=32)
    reason: str = Field(default="", sa_type=sa.Text)
    details: Any = Field(default=None, sa_type=sa.JSON)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StageWarning(SQLModel, table=True):
    """A stage not acted on within its time limit (预警)."""

    __tablename__ = "stage_warning"

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=128, index=True)  # workflow id of the case or change
    stage: str = Field(max_length=32)
    department_code: str | None = Field(default=None, max_length=32, index=True)
    due_at: datetime = Field(sa_type=UTCDateTime)
    raised_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    escalated_to_role: str = Field(max_length=32)
    message: str = Field(sa_type=sa.Text)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# ----- payloads -------------------------------------------------------------------


ELIGIBILITY_RULE_SCHEMA = "EligibilityRule"
AMOUNT_RULE_SCHEMA = "AmountRule"
# The shapes are validated by domain.engine.rules / domain.engine.amounts (with path-named errors);
# the OpenAPI document describes them under these component names (api/rule_docs.py).
EligibilityRuleField = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                {"$ref": f"#/components/schemas/{ELIGIBILITY_RULE_SCHEMA}"},
                {"type": "string", "description": "the same rule written in YAML"},
            ]
        }
    ),
]
AmountRuleField = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                {"$ref": f"#/components/schemas/{AMOUNT_RULE_SCHEMA}"},
                {"type": "string", "description": "the same rule written in YAML"},
            ]
        }
    ),
]


class StageLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Stage
    department_code: str = PydanticField(min_length=1, max_length=32)
    working_days: int = PydanticField(ge=1, le=60)


# An item's validity lies in these years (as every date a query takes, api/params.py).
EARLIEST_VALID = date(2000, 1, 1)
LATEST_VALID = date(2099, 12, 31)


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    doc_number: str = PydanticField(min_length=3, max_length=64)
    title: str = PydanticField(min_length=1, max_length=256)
    issuer: str = PydanticField(min_length=1, max_length=128)
    level: Level
    issued_on: date
    text: str = PydanticField(default="", max_length=200_000)


class ItemContent(BaseModel):
    """The editable content of a version. Rules arrive as JSON (or YAML, parsed first)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: str = PydanticField(min_length=1, max_length=256)
    summary: str = PydanticField(default="", max_length=4000)
    category: Category
    eligibility: EligibilityRuleField
    amount_rule: AmountRuleField
    annual_quota_fen: Fen = PydanticField(
        description="the planned annual budget in fen; finance sets each year's quota"
    )
    period_scheme: PeriodScheme = PydanticField(
        default=PeriodScheme.ANNUAL,
        description="the periods a case may be for: annual (2026), quarterly (2026-Q3), "
        "monthly (2026-07) or one_off (once); fixed once the item has been published",
    )
    exclusivity_group: str | None = PydanticField(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="items of one group pay a firm at most once per period (就高不重复): "
        "a code of letters, digits, '_', '.' and '-', compared exactly",
        examples=["specialised"],
    )
    recognition: RecognitionTerms | None = PydanticField(
        default=None,
        validate_default=True,
        description="how the cases of a recognition item run; omitted: the defaults. "
        "Only recognition items have them",
    )
    commitment: CommitmentTerms | None = PydanticField(
        default=None,
        validate_default=True,
        description="the targets, settlement rule, prepayment, letter and recovery terms "
        "of a commitment item (required there); only commitment items have them",
    )
    review: ReviewChecks | None = PydanticField(
        default=None,
        description="the duplicate-funding checks its cases run and their thresholds; "
        "omitted: exclusivity (where the item has a group), project and invoice",
    )
    stages: list[StageLimit]
    valid_from: Day = PydanticField(ge=EARLIEST_VALID, le=LATEST_VALID)
    valid_to: Day = PydanticField(ge=EARLIEST_VALID, le=LATEST_VALID)

    @field_validator("title", "summary")
    @classmethod
    def _storable(cls, value: str) -> str:
        # PostgreSQL cannot hold a NUL, and SQLite would keep one nobody can see.
        if "\x00" in value:
            raise ValueError("不能包含 NUL 字符")
        return value

    @field_validator("eligibility", "amount_rule", mode="before")
    @classmethod
    def _yaml_text(cls, value: Any) -> Any:
        """People write rules in YAML; a string is parsed as YAML (JSON is YAML too)."""
        if isinstance(value, str):
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ValueError(f"not valid YAML: {exc}") from None
        return value

    @field_validator("recognition")
    @classmethod
    def _terms_of_recognition(
        cls, value: RecognitionTerms | None, info: ValidationInfo
    ) -> RecognitionTerms | None:
        # A field validator (category is validated before it), so that the error names
        # `recognition` rather than the whole body.
        category = info.data.get("category")
        if category is Category.RECOGNITION:
            return RecognitionTerms() if value is None else value
        if value is not None and category is not None:
            raise ValueError("recognition terms apply only to recognition items")
        return value

    @field_validator("commitment")
    @classmethod
    def _terms_of_commitment(
        cls, value: CommitmentTerms | None, info: ValidationInfo
    ) -> CommitmentTerms | None:
        category = info.data.get("category")
        if category is Category.COMMITMENT and value is None:
            raise ValueError("a commitment item needs its commitment terms")
        if value is not None and category is not None and category is not Category.COMMITMENT:
            raise ValueError("commitment terms apply only to commitment items")
        return value

    @model_validator(mode="after")
    def _window_and_stages(self) -> ItemContent:
        if self.valid_to < self.valid_from:
            raise ValueError("valid_to must not be before valid_from")
        if not whole_periods(self.period_scheme, self.valid_from, self.valid_to):
            raise ValueError(
                f"no whole {self.period_scheme.value} period lies between valid_from and "
                "valid_to: no case could ever be paid"
            )
        wanted = STAGES_BY_CATEGORY[self.category]
        given = tuple(s.stage for s in self.stages)
        if given != wanted:
            names = ", ".join(s.value for s in wanted)
            raise ValueError(f"stages of a {self.category.value} item must be, in order: {names}")
        return self


class ItemCreate(ItemContent):
    code: str = PydanticField(pattern=r"^[A-Z0-9][A-Z0-9-]{2,39}$")
    document: DocumentIn
    department_code: str
    region_code: str
    change_reason: str = PydanticField(min_length=1, max_length=2000)


class DraftUpdate(ItemContent):
    change_reason: str = PydanticField(min_length=1, max_length=2000)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    comment: str = PydanticField(default="", max_length=2000)


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = PydanticField(min_length=1, max_length=2000)


class Suspension(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = PydanticField(min_length=1, max_length=2000)


class VersionPublic(BaseModel):
    version: int
    status: VersionStatus
    title: str
    summary: str
    category: Category
    eligibility: EligibilityRuleField
    amount_rule: AmountRuleField
    annual_quota_fen: int
    period_scheme: PeriodScheme
    exclusivity_group: str | None
    recognition: RecognitionTerms | None = None
    commitment: CommitmentTerms | None = None
    review: ReviewChecks | None = None
    stages: list[StageLimit]
    valid_from: date
    valid_to: date
    author: str
    change_reason: str
    money_changed: bool
    created_at: datetime
    submitted_at: datetime | None
    published_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def annual_quota_yuan(self) -> str:
        return format_yuan(self.annual_quota_fen)


class ChangeEventPublic(BaseModel):
    version: int
    action: str
    actor: str
    actor_role: str
    reason: str
    details: Any
    at: datetime


class ItemSummary(BaseModel):
    code: str
    title: str
    category: Category
    department_code: str
    region_code: str
    status: VersionStatus
    latest_version: int
    published_version: int | None
    annual_quota_fen: int
    period_scheme: PeriodScheme
    valid_from: date
    valid_to: date

    @computed_field  # type: ignore[prop-decorator]
    @property
    def annual_quota_yuan(self) -> str:
        return format_yuan(self.annual_quota_fen)


class DocumentPublic(BaseModel):
    doc_number: str
    title: str
    issuer: str
    level: Level
    issued_on: date


class ItemDetail(BaseModel):
    code: str
    department_code: str
    region_code: str
    document: DocumentPublic
    latest_version: int
    published_version: int | None
    versions: list[VersionPublic]
    history: list[ChangeEventPublic]
