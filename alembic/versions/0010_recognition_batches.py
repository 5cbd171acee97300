"""recognition batches: the frozen snapshot of a batch and its entries

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import models.types
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recognition_batch",
        sa.Column("batch_id", sa.String(96), primary_key=True),
        sa.Column("item_code", sa.String(40), sa.ForeignKey("policy_item.code"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("budget_year", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("department_code", sa.String(32), nullable=False),
        sa.Column("finance_department_code", sa.String(32), nullable=False),
        sa.Column("straight_through", sa.Boolean(), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("open_key", sa.String(64), nullable=True, unique=True),
        sa.Column("started_by", sa.String(64), nullable=False),
        sa.Column("started_at", models.types.UTCDateTime(), nullable=False),
        sa.Column("identified_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("candidates", sa.Integer(), nullable=False),
        sa.Column("listed", sa.Integer(), nullable=False),
        sa.Column("possible", sa.Integer(), nullable=False),
        sa.Column("not_eligible", sa.Integer(), nullable=False),
        sa.Column("already_claimed", sa.Integer(), nullable=False),
        sa.Column("listed_total_fen", sa.BigInteger(), nullable=False),
        sa.Column("department_decision", sa.JSON(), nullable=True),
        sa.Column("finance_decision", sa.JSON(), nullable=True),
        sa.Column("closed_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
    )
    op.create_index("ix_recognition_batch_item_code", "recognition_batch", ["item_code"])
    op.create_index(
        "ix_recognition_batch_department_code", "recognition_batch", ["department_code"]
    )
    op.create_index(
        "ix_recognition_batch_finance_department_code",
        "recognition_batch",
        ["finance_department_code"],
    )
    op.create_index("ix_recognition_batch_phase", "recognition_batch", ["phase"])
    op.create_table(
        "recognition_entry",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "batch_id",
            sa.String(96),
            sa.ForeignKey("recognition_batch.batch_id"),
            nullable=False,
        ),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("case_id", sa.String(160), nullable=False, unique=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("region_code", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(24), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("amount_explanation", sa.Text(), nullable=False),
        sa.Column("outcomes", sa.Text(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("figures", sa.JSON(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=True),
        sa.Column("entitled_at", models.types.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("department_by", sa.String(64), nullable=True),
        sa.Column("department_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("finance_by", sa.String(64), nullable=True),
        sa.Column("finance_at", models.types.UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("start_round", sa.Integer(), nullable=True),
        sa.UniqueConstraint("batch_id", "uscc"),
    )
    op.create_index("ix_recognition_entry_uscc", "recognition_entry", ["uscc"])
    op.create_index(
        "ix_recognition_entry_batch_status", "recognition_entry", ["batch_id", "status"]
    )
    # Starting a round's cases pages through its firms by credit code.
    op.create_index(
        "ix_recognition_entry_batch_round_uscc",
        "recognition_entry",
        ["batch_id", "start_round", "uscc"],
    )


def downgrade() -> None:
    op.drop_table("recognition_entry")
    op.drop_table("recognition_batch")
