"""inboxes: the indexes on the unit a case waits for hold only the cases that wait on
one. Most cases wait on nobody, and with their NULLs in the index the planner's
statistics made a unit's inbox look unselective (SQLite scanned all cases: 38 ms for
the count of 1,603 among 100,000; 0.2 ms with the partial index)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("waiting_for_department", "also_waiting_for_department")


def upgrade() -> None:
    for column in COLUMNS:
        name = f"ix_case_record_{column}"
        op.drop_index(name, table_name="case_record")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "case_record", [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for column in COLUMNS:
        name = f"ix_case_record_{column}"
        op.drop_index(name, table_name="case_record")
        op.create_index(name, "case_record", [column])
