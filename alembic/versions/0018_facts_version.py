"""facts_version: one row whose token changes with every write of firms' profiles or
facts, so that a process keeping every firm's facts in memory (budget preview at
300,000 firms) knows when they are stale

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29 02:00:00
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "facts_version",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("token", sa.String(length=32), nullable=False),
    )
    # A token of its own per database: one made again starts from a new one.
    op.bulk_insert(table, [{"id": 1, "token": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("facts_version")
