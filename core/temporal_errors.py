"""The type names of zhida's Temporal failures, in one vocabulary: the activities that
raise them, the retry policies that stop on them, the workflows' update validators, and
the API that turns a refusal into an HTTP answer all spell them from here.

The values are written into workflow histories (failures, retry policies): never change
one. A domain error (domain/errors.py) crosses into Temporal under its class name
(activities/errors.py), so the first members spell class names. No imports beyond the
standard library: workflows read this through `imports_passed_through()`.
"""

from __future__ import annotations

import enum


class ErrorType(enum.StrEnum):
    # Domain errors, under the names of their classes.
    CONFLICT = "Conflict"
    DUPLICATE_CASE = "DuplicateCase"
    NOT_FOUND = "NotFound"
    INVALID_INPUT = "InvalidInput"
    FORBIDDEN = "Forbidden"
    QUOTA_EXHAUSTED = "QuotaExhausted"
    QUOTA_NOT_SET = "QuotaNotSet"
    # An update sent to a workflow at a stage that does not take it.
    WRONG_STAGE = "WrongStage"
    # The budget system and payment instructions.
    BUDGET_SYSTEM_REFUSED = "BudgetSystemRefused"
    BUDGET_SYSTEM_UNAVAILABLE = "BudgetSystemUnavailable"
    INVALID_INSTRUCTION = "InvalidInstruction"
    INSTRUCTION_MISSING = "InstructionMissing"
    NOT_SETTLED = "NotSettled"
    # The message channel and matching runs.
    CHANNEL_UNAVAILABLE = "ChannelUnavailable"
    MATCH_DATA_ERROR = "MatchDataError"
    # Policy intake.
    POLICY_FEED_REFUSED = "PolicyFeedRefused"
    DATA_PLATFORM_REFUSED = "DataPlatformRefused"
