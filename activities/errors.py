"""Domain errors as Temporal sees them: one way for every activity."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.exceptions import ApplicationError

from domain.errors import AppError


@contextmanager
def business_errors() -> Iterator[None]:
    """An `AppError` raised inside leaves as a typed, non-retryable `ApplicationError`:
    a business outcome (a conflict, a quota exhausted, a missing row) that no retry
    changes. Its type is the error's class name, which `ErrorType` spells where a
    workflow or a retry policy looks for it; any other exception passes unchanged."""
    try:
        yield
    except AppError as exc:
        raise ApplicationError(exc.detail, type=type(exc).__name__, non_retryable=True) from exc
