"""periods, case claims and quota changes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import models.types
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("policy_item_version") as batch:
        batch.add_column(
            sa.Column("period_scheme", sa.String(16), nullable=False, server_default="annual")
        )
    op.create_table(
        "case_claim",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.String(160), nullable=False, unique=True),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("item_code", sa.String(40), nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False, index=True),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("created_at", models.types.UTCDateTime(), nullable=False),
        sa.Column("closed_at", models.types.UTCDateTime(), nullable=True),
        sa.UniqueConstraint("item_code", "uscc", "period", "attempt"),
    )
    op.create_index(
        "uq_case_claim_active",
        "case_claim",
        ["item_code", "uscc", "period"],
        unique=True,
        sqlite_where=sa.text("state != 'closed'"),
        postgresql_where=sa.text("state != 'closed'"),
    )
    # Cases from before claims existed hold theirs from now on.
    op.execute(
        """
        INSERT INTO case_claim
            (case_id, category, item_code, uscc, period, attempt, state, created_at)
        SELECT case_id, category, item_code, uscc, period, 1,
               CASE WHEN stage = 'paid' THEN 'paid'
                    WHEN stage IN ('rejected', 'withdrawn', 'cancelled') THEN 'closed'
                    ELSE 'open' END,
               created_at
        FROM case_record WHERE category = 'application'
        """
    )
    op.create_table(
        "quota_change",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_code", sa.String(40), nullable=False, index=True),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("before_fen", sa.BigInteger(), nullable=True),
        sa.Column("after_fen", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", models.types.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quota_change")
    op.drop_index("uq_case_claim_active", table_name="case_claim")
    op.drop_table("case_claim")
    with op.batch_alter_table("policy_item_version") as batch:
        batch.drop_column("period_scheme")
