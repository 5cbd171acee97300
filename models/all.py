"""Import every table module so the metadata is complete (Alembic, tests)."""

from models import (
    audit,
    budget,
    cases,
    commitment,
    idempotency,
    matching,
    notices,
    policy,
    policy_feed,
    recognition,
    reference,
    registry,
    review,
)

__all__ = [
    "audit",
    "budget",
    "cases",
    "commitment",
    "idempotency",
    "matching",
    "notices",
    "policy",
    "policy_feed",
    "recognition",
    "reference",
    "registry",
    "review",
]
