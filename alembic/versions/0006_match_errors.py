"""match errors

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import models.types
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("match_run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("item_errors", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("fact_errors", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "match_error",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("item_code", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("uscc", sqlmodel.sql.sqltypes.AutoString(length=18), nullable=True),
        sa.Column("fact", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["match_run.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("match_error", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_match_error_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_match_error_item_code"), ["item_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_match_error_uscc"), ["uscc"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("match_error", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_match_error_uscc"))
        batch_op.drop_index(batch_op.f("ix_match_error_item_code"))
        batch_op.drop_index(batch_op.f("ix_match_error_run_id"))
    op.drop_table("match_error")
    with op.batch_alter_table("match_run", schema=None) as batch_op:
        batch_op.drop_column("fact_errors")
        batch_op.drop_column("item_errors")
