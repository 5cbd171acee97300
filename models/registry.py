"""Enterprise registry (用户库): firms, their bank accounts and dated facts."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from sqlmodel import Field, SQLModel, col

from models.facts import FACT_KINDS, SIZE_CLASSES, FactValue, coerce_fact_value, period_end
from models.types import UTCDateTime, utcnow
from models.uscc import validate_uscc

INDUSTRY_CODE = re.compile(r"^[A-T](\d{2}){0,2}$")


class Enterprise(SQLModel, table=True):
    uscc: str = Field(primary_key=True, max_length=18)
    name: str = Field(max_length=128, index=True)
    region_code: str = Field(foreign_key="region.code", max_length=16, index=True)
    industry_code: str = Field(max_length=8, index=True)
    size_class: str = Field(max_length=8)
    established_on: date
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BankAccount(SQLModel, table=True):
    __tablename__ = "bank_account"
    __table_args__ = (sa.UniqueConstraint("uscc", "account_number"),)

    id: int | None = Field(default=None, primary_key=True)
    uscc: str = Field(foreign_key="enterprise.uscc", max_length=18, index=True)
    bank_name: str = Field(max_length=64)
    account_name: str = Field(max_length=128)
    account_number: str = Field(max_length=34)
    is_default: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When a payment into this account was receipted (paid, not returned): the bank has
    # shown that the account takes money, so the firm need not confirm it again. A later
    # return (退票) into it clears it.
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Fact(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("uscc", "kind", "period"),
        sa.Index("ix_fact_uscc_kind_period_end", "uscc", "kind", "period_end"),
    )

    id: int | None = Field(default=None, primary_key=True)
    uscc: str = Field(foreign_key="enterprise.uscc", max_length=18)
    kind: str = Field(max_length=40)
    period: str = Field(max_length=8)
    period_end: date
    value: Any = Field(sa_type=sa.JSON)
    source: str = Field(max_length=64)
    fetched_at: datetime = Field(sa_type=UTCDateTime)
    imported_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class FactsVersion(SQLModel, table=True):
    """One row whose token changes, in the same transaction, with every write of a
    firm's profile or facts: a process that keeps every firm's facts in memory
    (`domain.registry.enterprises.FactTableCache`) knows from it whether they are
    still the database's.

    The listeners below change it whichever code path writes: the flush of an
    `Enterprise` or a `Fact`, and an ORM insert, update or delete statement on either.
    (SQL written as text passes them by; the platform writes neither as text.) They
    live with the models so that no writer can be without them."""

    __tablename__ = "facts_version"

    id: int = Field(default=1, primary_key=True)
    token: str = Field(max_length=32)


_FACTS_CHANGED = "zhida.facts_changed"


def _change_facts_version(session: Session) -> None:
    # On the session's connection: inside the same transaction, without an autoflush.
    session.connection().execute(
        sa.update(FactsVersion).where(col(FactsVersion.id) == 1).values(token=uuid.uuid4().hex)
    )


@event.listens_for(Session, "before_flush")
def _on_flush(session: Session, _context: UOWTransaction, _instances: Any) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    if any(isinstance(instance, Enterprise | Fact) for instance in changed):
        session.info[_FACTS_CHANGED] = True


@event.listens_for(Session, "do_orm_execute")
def _on_statement(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in {"enterprise", "fact"}:
            state.session.info[_FACTS_CHANGED] = True


@event.listens_for(Session, "before_commit")
def _on_commit(session: Session) -> None:
    """The token changes as the transaction commits, not at the first write: its row
    is locked from the update to the commit, and an import's transaction lasts minutes
    while other writers (a default recorded by a workflow) must not wait on it."""
    session.flush()  # what is still pending is written, and flagged, now
    # (A flag left by writes rolled back costs one needless reload, never a stale read.)
    if session.info.pop(_FACTS_CHANGED, False):
        _change_facts_version(session)


# ----- import rows: what the public data platform sends ---------------------------


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("uscc", check_fields=False)
    @classmethod
    def _uscc(cls, value: str) -> str:
        return validate_uscc(value.upper())


class EnterpriseRow(_Row):
    uscc: str
    name: str = PydanticField(min_length=1, max_length=128)
    region_code: str = PydanticField(min_length=6, max_length=16)
    industry_code: str
    size_class: str
    established_on: date

    @field_validator("industry_code")
    @classmethod
    def _industry(cls, value: str) -> str:
        if not INDUSTRY_CODE.match(value):
            raise ValueError("must be a GB/T 4754 code: section letter and up to 4 digits")
        return value

    @field_validator("size_class")
    @classmethod
    def _size(cls, value: str) -> str:
        if value not in SIZE_CLASSES:
            raise ValueError(f"must be one of {', '.join(SIZE_CLASSES)}")
        return value

    @field_validator("established_on")
    @classmethod
    def _established(cls, value: date) -> date:
        coerce_fact_value(FACT_KINDS["established_on"], value)  # the facts' date range
        return value


class FactRow(_Row):
    uscc: str
    kind: str
    value: Any
    period: str
    source: str
    fetched_at: AwareDatetime

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        kind = FACT_KINDS.get(value)
        if kind is None or kind.profile:
            raise ValueError(f"unknown fact kind '{value}'")
        return value

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        period_end(value)
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any, info: ValidationInfo) -> Any:
        kind = FACT_KINDS.get(info.data.get("kind", ""))
        return value if kind is None else coerce_fact_value(kind, value)

    @property
    def typed_value(self) -> FactValue:
        assert isinstance(self.value, int | str | bool | date)
        return self.value


class AccountRow(_Row):
    uscc: str
    bank_name: str
    account_name: str
    account_number: str
    is_default: bool = False

    @field_validator("account_number")
    @classmethod
    def _number(cls, value: str) -> str:
        if not re.fullmatch(r"\d{8,34}", value):
            raise ValueError("must be 8 to 34 digits")
        return value


# ----- what the API shows -----------------------------------------------------------


def mask_account(number: str) -> str:
    return f"{number[:4]}{'*' * (len(number) - 8)}{number[-4:]}"


class BankAccountPublic(BaseModel):
    id: int
    bank_name: str
    account_name: str
    account_number_masked: str
    is_default: bool
    verified_at: datetime | None = None


class FactPublic(BaseModel):
    kind: str
    label: str
    value: Any
    period: str
    source: str
    fetched_at: datetime


class EnterprisePublic(BaseModel):
    uscc: str
    name: str
    region_code: str
    industry_code: str
    size_class: str
    established_on: date


class EnterpriseDetail(EnterprisePublic):
    accounts: list[BankAccountPublic]
    facts: list[FactPublic]
