"""facts_change: each committed write of firms' profiles or facts with the firms it
touched, numbered by facts_version.seq, so that a process keeping every firm's facts
in memory reads again only those firms' facts, not 300,000 firms'

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-29 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("facts_version") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=False, server_default="0"))
    table = op.create_table(
        "facts_change",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("token", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("usccs", sa.JSON(), nullable=True),
    )
    # The change a copy read from now on starts from: the current token, at seq 0.
    token = op.get_bind().scalar(sa.text("SELECT token FROM facts_version WHERE id = 1"))
    op.bulk_insert(table, [{"seq": 0, "token": token, "usccs": []}])


def downgrade() -> None:
    op.drop_table("facts_change")
    with op.batch_alter_table("facts_version") as batch:
        batch.drop_column("seq")
