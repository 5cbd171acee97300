"""The audit trail and what auditors get: the request log, one case as one story, replay
verdicts, cross-check differences and export manifests."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.budget_system import InstructionStatus
from models.cases import CaseState
from models.types import UTCDateTime, utcnow


class AuditKind(enum.StrEnum):
    WRITE = "write"  # a request that changes something (every POST, PUT, PATCH, DELETE)
    SENSITIVE_READ = "sensitive_read"  # full bank account numbers, decoded histories
    EXPORT = "export"  # an audit bundle leaving the platform
    REPLAY = "replay"  # an auditor's replay of workflow histories


class AuditEvent(SQLModel, table=True):
    """Who did or read what, when, from where: one row per write request (whatever its
    outcome) and per read of sensitive data or export. Never changed, never deleted."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    kind: str = Field(max_length=16, index=True)
    actor: str = Field(max_length=64, index=True)  # "-" when no user was signed in
    role: str | None = Field(default=None, max_length=32)
    method: str = Field(max_length=8)
    path: str = Field(max_length=400)
    # The case (or other subject) the request was about, when the route says so.
    subject: str | None = Field(default=None, max_length=200, index=True)
    status: int
    correlation_id: str = Field(max_length=128)
    client: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=200)
    details: Any = Field(default=None, sa_type=sa.JSON)


class AuditEventPublic(BaseModel):
    id: int
    at: datetime
    kind: str
    actor: str
    role: str | None
    method: str
    path: str
    subject: str | None
    status: int
    correlation_id: str
    client: str | None
    user_agent: str | None
    details: Any = None


class WorkflowRun(BaseModel):
    """One workflow of a case (the case's own, or a payment it started)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    started_at: datetime | None
    closed_at: datetime | None
    events: int


class LedgerLine(BaseModel):
    id: int
    kind: str
    instalment: int
    year: int
    amount_fen: int
    idempotency_key: str | None
    voucher_no: str | None
    bank_serial: str | None
    at: datetime
    details: Any = None


class CaseStory(BaseModel):
    """One case as one story: where it stands and how it got there (the workflow's own
    state, with the timeline, evidence and rule outcomes it was decided on), the policy
    version in force, every ledger entry and budget-system record, the requests that
    acted on it with their origin, and its workflows (decoded histories on request)."""

    case_id: str
    category: str
    state: CaseState | None
    state_source: str  # "result" (closed), "query" (running) or "unavailable: …"
    policy_version: dict[str, Any] | None
    ledger: list[LedgerLine]
    budget_system: list[InstructionStatus]
    budget_system_error: str | None = None
    requests: list[AuditEventPublic]
    workflows: list[WorkflowRun]
    histories: dict[str, Any] | None = None  # workflow id -> decoded history (protobuf JSON)


class ReplayVerdict(BaseModel):
    workflow_id: str
    workflow_type: str
    identical: bool
    first_diverging_event: int | None = None
    error: str | None = None


class ReplayReport(BaseModel):
    replayed: int
    identical: int
    verdicts: list[ReplayVerdict]


class CrosscheckLine(BaseModel):
    case_id: str
    instalment: int
    problem: str


class Crosscheck(BaseModel):
    instructions: int
    payment_workflows: int
    differences: list[CrosscheckLine] = PydanticField(default_factory=list)


class Manifest(BaseModel):
    """The bundle's table of contents: every file with its SHA-256, and what was asked."""

    format: str = "zhida-audit-bundle/1"
    created_at: datetime
    created_by: str
    query: dict[str, Any]
    cases: list[str]
    files: dict[str, str]  # path in the bundle -> SHA-256 hex


class PolicyChangeLine(BaseModel):
    """One step of a policy item's change (the library's own trail)."""

    id: int
    item_code: str
    version: int
    action: str
    actor: str
    actor_role: str
    reason: str
    details: Any = None
    at: datetime


class FullAccount(BaseModel):
    """A firm's bank account in full (auditors only; every read is in the trail)."""

    id: int
    bank_name: str
    account_name: str
    account_number: str
    is_default: bool
    created_at: datetime
    verified_at: datetime | None
