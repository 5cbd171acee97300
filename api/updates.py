"""Sending a workflow update from a route: a validator's refusal becomes the matching 4xx,
and an update the server could not deliver becomes a 503 that is safe to retry."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from core.temporal_errors import ErrorType
from domain.errors import AppError, Conflict, FieldError, Forbidden, InvalidInput, Unavailable

T = TypeVar("T")

_REFUSALS: dict[str | None, type[AppError]] = {
    ErrorType.FORBIDDEN: Forbidden,
    ErrorType.WRONG_STAGE: Conflict,
    ErrorType.INVALID_INPUT: InvalidInput,
}
RETRY = "not delivered this time; send it again with the same Idempotency-Key"


async def send_update(handle: WorkflowHandle[Any, Any], update: Awaitable[T]) -> T:
    try:
        return await update
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            # workflows/refusals.py: a refusal of wrong input names its field.
            field = cause.details[0] if cause.details else None
            errors = [FieldError(str(field), cause.message)] if field else []
            raise _REFUSALS.get(cause.type, Conflict)(cause.message, errors) from None
        raise
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise Unavailable(RETRY) from None
    except RPCError as exc:
        # NOT_FOUND means no such workflow, or an update lost with a crashed worker
        # before it was accepted: only the first is final.
        if exc.status is RPCStatusCode.NOT_FOUND and not await _running(handle):
            raise Conflict("nothing is waiting for this decision any more") from None
        raise Unavailable(RETRY) from None


async def _running(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING
