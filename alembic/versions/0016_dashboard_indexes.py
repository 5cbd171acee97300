"""dashboards: indexes that hold every column the dashboards read, so that they scan
an index instead of the tables' wide rows; a push keeps its firm's region

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 15:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CASE_COLUMNS = [
    "item_code",
    "region_code",
    "category",
    "year",
    "stage",
    "uscc",
    "approved_amount_fen",
    "paid_amount_fen",
    "paid_at",
    "entitled_at",
]
PAID_COLUMNS = ["paid_at", "entitled_at", "region_code", "item_code", "category", "uscc"]


def upgrade() -> None:
    op.create_index("ix_case_record_dashboard", "case_record", CASE_COLUMNS)
    op.drop_index("ix_case_record_paid_at", "case_record")
    op.create_index("ix_case_record_paid", "case_record", PAID_COLUMNS)
    op.create_index("ix_case_record_case_region", "case_record", ["case_id", "region_code"])
    op.create_index(
        "ix_ledger_entry_kind_at", "ledger_entry", ["kind", "at", "case_id", "amount_fen"]
    )
    with op.batch_alter_table("policy_push") as batch:
        batch.add_column(sa.Column("region_code", sa.String(16), nullable=True))
    op.execute(
        "UPDATE policy_push SET region_code = "
        "(SELECT region_code FROM enterprise WHERE enterprise.uscc = policy_push.uscc)"
    )
    op.create_index(
        "ix_policy_push_item_region_opened",
        "policy_push",
        ["item_code", "region_code", "opened_at"],
    )
    op.drop_index("ix_match_result_item_verdict", "match_result")
    op.create_index(
        "ix_match_result_item_verdict_region",
        "match_result",
        ["item_code", "verdict", "region_code", "uscc"],
    )


def downgrade() -> None:
    op.drop_index("ix_match_result_item_verdict_region", "match_result")
    op.create_index("ix_match_result_item_verdict", "match_result", ["item_code", "verdict"])
    op.drop_index("ix_policy_push_item_region_opened", "policy_push")
    with op.batch_alter_table("policy_push") as batch:
        batch.drop_column("region_code")
    op.drop_index("ix_ledger_entry_kind_at", "ledger_entry")
    op.drop_index("ix_case_record_case_region", "case_record")
    op.drop_index("ix_case_record_paid", "case_record")
    op.create_index("ix_case_record_paid_at", "case_record", ["paid_at"])
    op.drop_index("ix_case_record_dashboard", "case_record")
