"""commitment cases: terms on item versions, recovery orders and their credits

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import models.types
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Commitment versions written before terms existed have none: their cases cannot
    # start until a new version with terms is published (none were ever started).
    with op.batch_alter_table("policy_item_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("commitment_terms", sa.JSON(), nullable=True))
    op.create_table(
        "recovery_order",
        sa.Column("case_id", sa.String(160), primary_key=True),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("item_code", sa.String(40), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("principal_fen", sa.BigInteger(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("daily_interest_rate", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("payment_code", sa.String(64), nullable=True),
        sa.Column("created_at", models.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", models.types.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_recovery_order_uscc", "recovery_order", ["uscc"])
    op.create_index("ix_recovery_order_item_code", "recovery_order", ["item_code"])
    op.create_index("ix_recovery_order_status", "recovery_order", ["status"])
    op.create_table(
        "recovery_credit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.String(160), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("on", sa.Date(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("at", models.types.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("case_id", "reference"),
    )
    op.create_index("ix_recovery_credit_case_id", "recovery_credit", ["case_id"])
    with op.batch_alter_table("case_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("also_waiting_for_department", sa.String(32), nullable=True))
        batch_op.create_index(
            "ix_case_record_also_waiting_for_department", ["also_waiting_for_department"]
        )


def downgrade() -> None:
    with op.batch_alter_table("case_record", schema=None) as batch_op:
        batch_op.drop_index("ix_case_record_also_waiting_for_department")
        batch_op.drop_column("also_waiting_for_department")
    op.drop_index("ix_recovery_credit_case_id", table_name="recovery_credit")
    op.drop_table("recovery_credit")
    for column in ("status", "item_code", "uscc"):
        op.drop_index(f"ix_recovery_order_{column}", table_name="recovery_order")
    op.drop_table("recovery_order")
    with op.batch_alter_table("policy_item_version", schema=None) as batch_op:
        batch_op.drop_column("commitment_terms")
