"""recognition terms on item versions; bank accounts verified by a payment

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import models.types
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# RecognitionTerms() as this revision knows them, spelled out: a migration must not
# change with the model.
DEFAULT_TERMS = {
    "straight_through": False,
    "confirmation": "always",
    "remind_after_days": 7,
    "expire_after_days": 30,
}


def upgrade() -> None:
    with op.batch_alter_table("policy_item_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recognition_terms", sa.JSON(), nullable=True))
    # Recognition versions written before terms existed ran on the defaults: say so, so
    # that NULL means "not a recognition item".
    versions = sa.table(
        "policy_item_version",
        sa.column("category", sa.String()),
        sa.column("recognition_terms", sa.JSON()),
    )
    op.execute(
        versions.update()
        .where(versions.c.category == "recognition")
        .values(recognition_terms=DEFAULT_TERMS)
    )
    with op.batch_alter_table("bank_account", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verified_at", models.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("bank_account", schema=None) as batch_op:
        batch_op.drop_column("verified_at")
    with op.batch_alter_table("policy_item_version", schema=None) as batch_op:
        batch_op.drop_column("recognition_terms")
