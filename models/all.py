"""Import every table module so the metadata is complete (Alembic, tests)."""

from models import budget, enterprise, notice, policy, reference

__all__ = ["budget", "enterprise", "notice", "policy", "reference"]
