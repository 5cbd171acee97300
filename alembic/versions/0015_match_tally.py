"""dashboards: the match library counted per item, region and verdict (match_tally),
kept by every run that changes the library, so that a dashboard does not count
millions of pairs per request

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "match_tally",
        sa.Column("item_code", sa.String(40), primary_key=True),
        sa.Column("region_code", sa.String(16), primary_key=True),
        sa.Column("verdict", sa.String(24), primary_key=True),
        sa.Column("firms", sa.Integer(), nullable=False),
    )
    op.execute(
        "INSERT INTO match_tally (item_code, region_code, verdict, firms) "
        "SELECT item_code, region_code, verdict, count(*) FROM match_result "
        "GROUP BY item_code, region_code, verdict"
    )


def downgrade() -> None:
    op.drop_table("match_tally")
