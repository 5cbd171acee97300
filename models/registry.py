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
from sqlalchemy.sql import operators
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
    still the database's. `seq` counts those writes; each leaves a `FactsChange`.

    The listeners below change it whichever code path writes: the flush of an
    `Enterprise` or a `Fact`, and an ORM insert, update or delete statement on either.
    (SQL written as text passes them by; the platform writes neither as text.) They
    live with the models so that no writer can be without them."""

    __tablename__ = "facts_version"

    id: int = Field(default=1, primary_key=True)
    token: str = Field(max_length=32)
    seq: int = 0


class FactsChange(SQLModel, table=True):
    """One committed write of profiles or facts: the firms it touched, so that a copy
    of every firm's facts is brought up to date by reading theirs again, not all.

    `usccs` is None where they are unknown or too many to list (a statement with a
    condition other than the credit code, an import of more than `TRACKED_FIRMS`
    firms): a copy older than that change is read again whole. `token` is the token
    the write set: a copy is patched forward only from the change whose token it
    holds, so a copy of another database (one made again at the same address) is
    never patched. The last `KEPT_CHANGES` are kept."""

    __tablename__ = "facts_change"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    token: str = Field(max_length=32)
    usccs: list[str] | None = Field(default=None, sa_type=sa.JSON)


class FactsSnapshot(SQLModel, table=True):
    """Every firm's facts as the engine reads them (a `FactTable`, in columns), as they
    stood at change `seq`: a process starting cold reads this one row and the firms
    changed since (`FactsChange`), not every fact (seconds of a database's work and
    of Python's for 300,000 firms). `layout` names the code's reading of the facts
    (`domain.registry.facts_snapshot.LAYOUT`): a snapshot another release wrote is not
    read. One row; a newer one replaces it."""

    __tablename__ = "facts_snapshot"

    id: int = Field(default=1, primary_key=True)
    token: str = Field(max_length=32)
    seq: int
    layout: str = Field(max_length=64)
    data: bytes = Field(sa_type=sa.LargeBinary)
    written_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


TRACKED_FIRMS = 10_000  # a write touching more firms is recorded as "unknown"
KEPT_CHANGES = 1_000

_FACTS_CHANGED = "zhida.facts_changed"
_ALL = "all"  # what a session has changed: a set of credit codes, or every firm


def _touched(session: Session, usccs: Any) -> None:
    """Note in the session that these firms' facts or profiles were written (None:
    firms unknown), to be recorded as its transaction commits."""
    held = session.info.get(_FACTS_CHANGED)
    if held == _ALL:
        return
    if usccs is None:
        session.info[_FACTS_CHANGED] = _ALL
        return
    held = session.info.setdefault(_FACTS_CHANGED, set())
    held.update(usccs)
    if len(held) > TRACKED_FIRMS:
        session.info[_FACTS_CHANGED] = _ALL


def _record_facts_change(session: Session, usccs: set[str] | None) -> None:
    # On the session's connection: inside the same transaction, without an autoflush.
    # The update locks the version row until the commit, so changes are numbered in
    # the order they commit, also on PostgreSQL.
    connection = session.connection()
    token = uuid.uuid4().hex
    version = col(FactsVersion.id) == 1
    connection.execute(
        sa.update(FactsVersion).where(version).values(token=token, seq=col(FactsVersion.seq) + 1)
    )
    seq = connection.scalar(sa.select(col(FactsVersion.seq)).where(version))
    assert seq is not None  # the row is made by the migration
    listed = None if usccs is None else sorted(usccs)
    connection.execute(sa.insert(FactsChange).values(seq=seq, token=token, usccs=listed))
    connection.execute(sa.delete(FactsChange).where(col(FactsChange.seq) <= seq - KEPT_CHANGES))


@event.listens_for(Session, "before_flush")
def _on_flush(session: Session, _context: UOWTransaction, _instances: Any) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    firms = [i.uscc for i in changed if isinstance(i, Enterprise | Fact)]
    if firms:
        _touched(session, firms)


@event.listens_for(Session, "do_orm_execute")
def _on_statement(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in {"enterprise", "fact"}:
            _touched(state.session, _firms_written(state))


def _firms_written(state: ORMExecuteState) -> list[str] | None:
    """The credit codes an ORM statement writes, where they can be read off it: the
    rows of an insert or of a bulk update by primary key, or a condition that is the
    credit code alone (`== x`, `in_(xs)`); None for any other."""
    statement: Any = state.statement
    if state.is_update:
        # An update that sets the credit code itself moves a firm to a code it does not
        # name. (SQLAlchemy keeps `.values()` in `_values`; older releases kept an
        # ordered update's in `_ordered_values`.)
        written = [
            *(getattr(statement, "_values", None) or {}),
            *dict(getattr(statement, "_ordered_values", None) or ()),
        ]
        if any(getattr(column, "key", column) == "uscc" for column in written):
            return None
    where = None if state.is_insert else statement.whereclause
    given = state.parameters
    rows: list[Any] = [given] if isinstance(given, dict) else list(given or [])
    if where is None:
        if rows and all(isinstance(r.get("uscc"), str) for r in rows):
            return [r["uscc"] for r in rows]
        return None
    if (
        isinstance(where, sa.BinaryExpression)
        and getattr(getattr(where.left, "table", None), "name", None) == statement.table.name
        and getattr(where.left, "name", None) == "uscc"
        and isinstance(where.right, sa.BindParameter)
    ):
        value = where.right.effective_value
        if where.operator is operators.eq and isinstance(value, str):
            return [value]
        if where.operator is operators.in_op and isinstance(value, list | tuple):
            return [str(v) for v in value]
    return None


@event.listens_for(Session, "before_commit")
def _on_commit(session: Session) -> None:
    """The change is recorded as the transaction commits, not at the first write: the
    version row is locked from the update to the commit, and an import's transaction
    lasts minutes while other writers (a default recorded by a workflow) must not wait
    on it."""
    session.flush()  # what is still pending is written, and noted, now
    # (Firms noted by writes rolled back cost a needless reading of theirs, never a
    # stale one.)
    changed = session.info.pop(_FACTS_CHANGED, None)
    if changed is not None:
        _record_facts_change(session, None if changed == _ALL else changed)


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
