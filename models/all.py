"""Import every table module so the metadata is complete (Alembic, tests)."""

from models import budget, case, enterprise, idempotency, matching, notice, policy, reference

__all__ = [
    "budget",
    "case",
    "enterprise",
    "idempotency",
    "matching",
    "notice",
    "policy",
    "reference",
]
