"""match_tally keeps the sum of the known amounts of each group, so that an item's match
view reads a few tally rows instead of summing its hundred thousand library rows per
request (55 ms of CPU at city scale); the tally is counted again from the library.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-29 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("match_tally") as batch:
        batch.add_column(
            sa.Column("amount_fen", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("DELETE FROM match_tally")
    op.execute(
        "INSERT INTO match_tally (item_code, region_code, verdict, firms, amount_fen) "
        "SELECT item_code, region_code, verdict, count(*), coalesce(sum(amount_fen), 0) "
        "FROM match_result GROUP BY item_code, region_code, verdict"
    )


def downgrade() -> None:
    with op.batch_alter_table("match_tally") as batch:
        batch.drop_column("amount_fen")
