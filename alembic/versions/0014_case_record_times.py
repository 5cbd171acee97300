"""dashboards: when each case's firm became entitled, when its first money arrived, and
its budget year, as columns of the case projection (time to money, filters by year)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28 15:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

import models.types
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def upgrade() -> None:
    with op.batch_alter_table("case_record") as batch:
        batch.add_column(sa.Column("year", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("entitled_at", models.types.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("paid_at", models.types.UTCDateTime(), nullable=True))
    op.create_index("ix_case_record_year", "case_record", ["year"])
    op.create_index("ix_case_record_paid_at", "case_record", ["paid_at"])
    # Cases projected before: their year from the period, entitlement from the moments
    # the workflow recorded (else the day the case opened), first money from the ledger.
    bind = op.get_bind()
    record = sa.table(
        "case_record",
        sa.column("case_id", sa.String),
        sa.column("period", sa.String),
        sa.column("created_at", models.types.UTCDateTime()),
        sa.column("details", sa.JSON),
        sa.column("year", sa.Integer),
        sa.column("entitled_at", models.types.UTCDateTime()),
        sa.column("paid_at", models.types.UTCDateTime()),
    )
    ledger = sa.table(
        "ledger_entry",
        sa.column("case_id", sa.String),
        sa.column("kind", sa.String),
        sa.column("at", models.types.UTCDateTime()),
    )
    first_receipt = dict(
        bind.execute(
            sa.select(ledger.c.case_id, sa.func.min(ledger.c.at))
            .where(ledger.c.kind == "receipt")
            .group_by(ledger.c.case_id)
        ).all()
    )
    rows = bind.execute(
        sa.select(record.c.case_id, record.c.period, record.c.created_at, record.c.details)
    ).all()
    for case_id, period, created_at, details in rows:
        moments = (details or {}).get("moments") or {}
        entitled = _instant(moments.get("entitled") or moments.get("applied")) or created_at
        year = int(period[:4]) if period[:4].isdigit() else created_at.year
        bind.execute(
            record.update()
            .where(record.c.case_id == case_id)
            .values(year=year, entitled_at=entitled, paid_at=_instant(first_receipt.get(case_id)))
        )


def downgrade() -> None:
    op.drop_index("ix_case_record_paid_at", "case_record")
    op.drop_index("ix_case_record_year", "case_record")
    with op.batch_alter_table("case_record") as batch:
        batch.drop_column("paid_at")
        batch.drop_column("entitled_at")
        batch.drop_column("year")
