"""inboxes in deadline order: the indexes on the unit a case waits for carry the
inbox's order (no deadline last, then the deadline, then the case), so that a page of
50 is read off them rather than every case waiting on a department sorted (1,600 in
the load city)

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-29 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("waiting_for_department", "also_waiting_for_department")


def upgrade() -> None:
    for column in COLUMNS:
        name = f"ix_case_record_{column}"
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name="case_record")
        op.create_index(
            name,
            "case_record",
            [column, sa.text("(due_at IS NULL)"), "due_at", "case_id"],
            sqlite_where=where,
            postgresql_where=where,
        )


def downgrade() -> None:
    for column in COLUMNS:
        name = f"ix_case_record_{column}"
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name="case_record")
        op.create_index(name, "case_record", [column], sqlite_where=where, postgresql_where=where)
