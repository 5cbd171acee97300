"""An update validator's refusal, in the one shape the API reads (api/updates.py): the
type says which 4xx it is (`ErrorType`), and a refusal of wrong input names the field,
so that the answer is a 422 naming it like any other. Refusals are never recorded in a
history: their shape may change freely."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from core.temporal_errors import ErrorType


def invalid_input(message: str, field: str) -> ApplicationError:
    """Wrong input to an update: a 422 naming `field` (the failure's one detail)."""
    return ApplicationError(message, field, type=ErrorType.INVALID_INPUT)
