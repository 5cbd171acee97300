"""Eligibility verdicts: the outcome of each condition and of an item as a whole."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


class UnknownReason(enum.StrEnum):
    MISSING = "missing"
    STALE = "stale"
    INVALID = "invalid"  # the stored value is outside its kind's type or range
    MANUAL = "manual"


class Verdict(enum.StrEnum):
    ELIGIBLE = "eligible"
    POSSIBLY_ELIGIBLE = "possibly_eligible"
    NOT_ELIGIBLE = "not_eligible"


class ConditionResult(BaseModel):
    path: str
    description: str
    outcome: Outcome
    fact: str | None = None
    expected: Any = None
    actual: Any = None
    reason: UnknownReason | None = None


class Evaluation(BaseModel):
    verdict: Verdict
    conditions: list[ConditionResult]
