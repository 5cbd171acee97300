"""dashboards: indexes that hold every column the dashboards read, so that they scan
an index instead of the tables' wide rows; a push keeps its firm's region; a case keeps
its working days to money, and each firm's cases of an item and year are summed up
(case_firm), so that firms are counted without DISTINCT over every case

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 15:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import models.types
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
    "days_to_money",
]
PAID_COLUMNS = ["paid_at", "days_to_money", "region_code", "item_code", "category"]
UNPAID = "('rejected', 'withdrawn', 'cancelled', 'declined', 'expired')"


def _days_to_money() -> None:
    """Working days to money of the cases paid before (the country's calendar: local
    days off and on in the settings are not known here)."""
    from core.workdays import WorkingCalendar

    calendar = WorkingCalendar()
    record = sa.table(
        "case_record",
        sa.column("case_id", sa.String),
        sa.column("entitled_at", models.types.UTCDateTime()),
        sa.column("paid_at", models.types.UTCDateTime()),
        sa.column("days_to_money", sa.Integer),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(record.c.case_id, record.c.entitled_at, record.c.paid_at).where(
            record.c.paid_at.is_not(None), record.c.entitled_at.is_not(None)
        )
    ).all()
    for case_id, entitled_at, paid_at in rows:
        bind.execute(
            record.update()
            .where(record.c.case_id == case_id)
            .values(days_to_money=calendar.working_days_between(entitled_at, paid_at))
        )


def upgrade() -> None:
    with op.batch_alter_table("case_record") as batch:
        batch.add_column(sa.Column("days_to_money", sa.Integer(), nullable=True))
    _days_to_money()
    op.create_table(
        "case_firm",
        sa.Column("item_code", sa.String(40), primary_key=True),
        sa.Column("uscc", sa.String(18), primary_key=True),
        sa.Column("year", sa.Integer(), primary_key=True),
        sa.Column("region_code", sa.String(16), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("paid", sa.Boolean(), nullable=False),
        sa.Column("first_paid_at", models.types.UTCDateTime(), nullable=True),
    )
    op.execute(
        "INSERT INTO case_firm (item_code, uscc, year, region_code, approved, paid, "
        "first_paid_at) SELECT item_code, uscc, year, min(region_code), "
        "max(CASE WHEN approved_amount_fen IS NOT NULL AND (stage NOT IN "
        f"{UNPAID} OR paid_amount_fen > 0) THEN 1 ELSE 0 END) = 1, "
        "max(CASE WHEN paid_amount_fen > 0 THEN 1 ELSE 0 END) = 1, min(paid_at) "
        "FROM case_record WHERE year IS NOT NULL GROUP BY item_code, uscc, year"
    )
    op.create_index(
        "ix_case_firm_dashboard",
        "case_firm",
        ["item_code", "year", "region_code", "approved", "paid", "first_paid_at", "uscc"],
    )
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
    # Eligible firms of an item in the order of their credit codes' organisation part
    # (random, unlike the region prefix): policy effect's comparison sample.
    op.create_index(
        "ix_match_result_item_verdict_organisation",
        "match_result",
        ["item_code", "verdict", sa.text("substr(uscc, 10, 9)")],
    )


def downgrade() -> None:
    op.drop_index("ix_match_result_item_verdict_organisation", "match_result")
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
    op.drop_table("case_firm")
    with op.batch_alter_table("case_record") as batch:
        batch.drop_column("days_to_money")
