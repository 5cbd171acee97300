"""A unit's contact (科室、电话), shown with its items in the public catalogue.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-29 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("department") as batch:
        batch.add_column(sa.Column("contact", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("department") as batch:
        batch.drop_column("contact")
