"""An update validator's refusal, in the one shape the API reads (api/updates.py): the
type says which 4xx it is (`ErrorType`), and a refusal of wrong input names the field,
so that the answer is a 422 naming it like any other. Refusals are never recorded in a
history: their shape may change freely."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from core.temporal_errors import ErrorType

with workflow.unsafe.imports_passed_through():
    from models.cases import CaseDecision, ReviewAction


def invalid_input(message: str, field: str) -> ApplicationError:
    """Wrong input to an update: a 422 naming `field` (the failure's one detail)."""
    return ApplicationError(message, field, type=ErrorType.INVALID_INPUT)


def check_review(decision: CaseDecision, ceiling: int | None) -> None:
    """A reviewer's decision on a case, against the most it may approve (`ceiling`: the
    amount approved so far, else the computed one; None when neither exists): an
    approval names an amount where none could be computed, never more than the
    ceiling, and a lower one with a reason; a rejection or return has a reason."""
    if decision.action is ReviewAction.APPROVE:
        if decision.amount_fen is None and ceiling is None:
            raise invalid_input(
                "amount_fen is required: the amount could not be computed", "amount_fen"
            )
        if decision.amount_fen is not None and ceiling is not None:
            if decision.amount_fen > ceiling:
                raise invalid_input(f"amount_fen may not exceed {ceiling}", "amount_fen")
            if decision.amount_fen < ceiling and not decision.reason:
                raise invalid_input("a reduced amount needs a reason", "reason")
    elif not decision.reason:
        raise invalid_input(f"{decision.action.value} needs a reason", "reason")
