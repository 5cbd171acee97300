"""Payloads of the policy-change workflow (library change approval)."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, Field

from models.reference import Actor, Role


class ChangeStage(enum.StrEnum):
    DEPARTMENT_HEAD_REVIEW = "department_head_review"
    FINANCE_REVIEW = "finance_review"
    PUBLISHED = "published"
    REJECTED = "rejected"


REVIEWER_ROLE = {
    ChangeStage.DEPARTMENT_HEAD_REVIEW: Role.DEPARTMENT_HEAD,
    ChangeStage.FINANCE_REVIEW: Role.FINANCE_CASEWORKER,
}


class PolicyChangeInput(BaseModel):
    item_code: str
    version: int
    title: str
    author: str
    department_code: str
    region_code: str
    finance_department_code: str
    money_changed: bool
    head_review_days: int = Field(ge=1)
    finance_review_days: int = Field(ge=1)


class ReviewDecision(BaseModel):
    actor: Actor
    comment: str = ""


class ReviewRecord(BaseModel):
    stage: ChangeStage
    decision: str  # approved | rejected
    actor: str
    comment: str
    at: datetime


class PolicyChangeState(BaseModel):
    item_code: str
    version: int
    stage: ChangeStage
    waiting_for_role: Role | None
    waiting_for_department: str | None
    due_at: datetime | None
    overdue: bool
    decisions: list[ReviewRecord]


class DeadlineRequest(BaseModel):
    start: datetime
    working_days: int


class StageOverdue(BaseModel):
    subject: str
    item_code: str
    version: int
    stage: ChangeStage
    department_code: str
    due_at: datetime


class ReviewOutcome(BaseModel):
    item_code: str
    version: int
    stage: ChangeStage
    approved: bool
    actor: Actor
    comment: str
    subject: str
