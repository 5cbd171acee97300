"""Import every table module so the metadata is complete (Alembic, tests)."""

from models import enterprise, notice, policy, reference

__all__ = ["enterprise", "notice", "policy", "reference"]
