"""Sending a workflow update from a route: a validator's refusal becomes the matching 4xx."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain.errors import AppError, Conflict, Forbidden, InvalidInput

T = TypeVar("T")

_REFUSALS: dict[str | None, type[AppError]] = {
    "Forbidden": Forbidden,
    "WrongStage": Conflict,
    "InvalidInput": InvalidInput,
}


async def send_update(update: Awaitable[T]) -> T:
    try:
        return await update
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            raise _REFUSALS.get(cause.type, Conflict)(cause.message) from None
        raise
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise Conflict("nothing is waiting for this decision any more") from None
        raise
