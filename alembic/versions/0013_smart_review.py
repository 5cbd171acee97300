"""smart review: what each case claims, its findings, and the checks items declare

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import models.types
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("policy_item_version") as batch:
        batch.add_column(sa.Column("review_checks", sa.JSON(), nullable=True))
    op.create_table(
        "funding_claim",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.String(160), nullable=False, unique=True),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("item_code", sa.String(40), nullable=False),
        sa.Column("exclusivity_group", sa.String(64), nullable=True),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("project_name", sa.String(256), nullable=True),
        sa.Column("location_key", sa.String(256), nullable=True),
        sa.Column("investment_fen", sa.BigInteger(), nullable=True),
        sa.Column("eligible_cost_fen", sa.BigInteger(), nullable=True),
        sa.Column("created_at", models.types.UTCDateTime(), nullable=False),
    )
    for column in ("uscc", "item_code", "exclusivity_group", "location_key"):
        op.create_index(f"ix_funding_claim_{column}", "funding_claim", [column])
    op.create_table(
        "funding_token",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.String(160), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.UniqueConstraint("case_id", "kind", "token"),
    )
    op.create_index("ix_funding_token_token", "funding_token", ["token"])
    op.create_table(
        "review_finding",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.String(160), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("item_code", sa.String(40), nullable=False),
        sa.Column("department_code", sa.String(32), nullable=False),
        sa.Column("region_code", sa.String(16), nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("counterparts", sa.JSON(), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("excess_fen", sa.BigInteger(), nullable=False),
        sa.Column("suggested_fen", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("proposed_by", sa.String(64), nullable=True),
        sa.Column("proposed_reason", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_reason", sa.Text(), nullable=True),
        sa.Column("raised_at", models.types.UTCDateTime(), nullable=False),
        sa.Column("decided_at", models.types.UTCDateTime(), nullable=True),
        sa.UniqueConstraint("case_id", "dimension", "key"),
    )
    for column in (
        "case_id",
        "item_code",
        "department_code",
        "region_code",
        "uscc",
        "dimension",
        "status",
    ):
        op.create_index(f"ix_review_finding_{column}", "review_finding", [column])


def downgrade() -> None:
    op.drop_table("review_finding")
    op.drop_table("funding_token")
    op.drop_table("funding_claim")
    with op.batch_alter_table("policy_item_version") as batch:
        batch.drop_column("review_checks")
