"""notice dedupe key: a notice is sent once per recipient and key

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notice", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dedupe_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
        )
    # Unique per recipient and key; notices from before keys (NULL) never collide. Key
    # first, so that lookups by recipient keep using ix_notice_recipient.
    op.create_index(
        "uq_notice_dedupe_key_recipient", "notice", ["dedupe_key", "recipient"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_notice_dedupe_key_recipient", table_name="notice")
    with op.batch_alter_table("notice", schema=None) as batch_op:
        batch_op.drop_column("dedupe_key")
