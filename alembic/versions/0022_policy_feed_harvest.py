"""Policy intake: harvested documents with every version and source, the feed's cursor,
the items proposed from their articles, and alerts to an item's department when its
document is amended or repealed.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-29 12:29:57.631396
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import models.types
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feed_cursor",
        sa.Column("feed", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("cursor", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("updated_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("feed"),
    )
    op.create_table(
        "harvested_document",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("doc_number", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("region_code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("department", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=True),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("versions", sa.Integer(), nullable=False),
        sa.Column("amends_id", sa.Integer(), nullable=True),
        sa.Column("repealed_by_id", sa.Integer(), nullable=True),
        sa.Column("first_seen_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("changed_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["amends_id"],
            ["harvested_document.id"],
        ),
        sa.ForeignKeyConstraint(
            ["repealed_by_id"],
            ["harvested_document.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("issuer", "doc_number"),
    )
    with op.batch_alter_table("harvested_document", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_harvested_document_doc_number"), ["doc_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_harvested_document_level"), ["level"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_harvested_document_region_code"), ["region_code"], unique=False
        )

    op.create_table(
        "harvested_source",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("portal", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("source_url", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("published_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["harvested_document.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("document_id", "portal"),
    )
    with op.batch_alter_table("harvested_source", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_harvested_source_document_id"), ["document_id"], unique=False
        )

    op.create_table(
        "harvested_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("published_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["harvested_document.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("document_id", "content_sha256"),
        sa.UniqueConstraint("document_id", "version"),
    )
    with op.batch_alter_table("harvested_version", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_harvested_version_document_id"), ["document_id"], unique=False
        )

    op.create_table(
        "policy_alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("item_code", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("department_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("cause_document_id", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("raised_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("handled_at", models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("handled_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["cause_document_id"],
            ["harvested_document.id"],
        ),
        sa.ForeignKeyConstraint(
            ["department_code"],
            ["department.code"],
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["harvested_document.id"],
        ),
        sa.ForeignKeyConstraint(
            ["item_code"],
            ["policy_item.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "item_code", "cause_document_id"),
    )
    with op.batch_alter_table("policy_alert", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_policy_alert_department_code"), ["department_code"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_policy_alert_item_code"), ["item_code"], unique=False)

    op.create_table(
        "document_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cause_document_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("issuer", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("doc_number", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(["cause_document_id"], ["harvested_document.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cause_document_id", "kind", "issuer", "doc_number"),
    )
    with op.batch_alter_table("document_change", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_document_change_cause_document_id"), ["cause_document_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_document_change_doc_number"), ["doc_number"], unique=False
        )
    op.create_table(
        "draft_proposal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("article", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("category", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("period_scheme", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("eligibility", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("amount_rule", sa.JSON(), nullable=True),
        sa.Column("amount_quote", sa.Text(), nullable=True),
        sa.Column("amount_confidence", sa.Float(), nullable=True),
        sa.Column("amount_note", sa.Text(), nullable=True),
        sa.Column("adopted_item_code", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("adopted_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("adopted_at", models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["harvested_document.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("document_id", "version", "article"),
    )
    with op.batch_alter_table("draft_proposal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_draft_proposal_document_id"), ["document_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("document_change")
    with op.batch_alter_table("draft_proposal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_draft_proposal_document_id"))
    op.drop_table("draft_proposal")
    with op.batch_alter_table("policy_alert", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_alert_item_code"))
        batch_op.drop_index(batch_op.f("ix_policy_alert_department_code"))

    op.drop_table("policy_alert")
    with op.batch_alter_table("harvested_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_harvested_version_document_id"))

    op.drop_table("harvested_version")
    with op.batch_alter_table("harvested_source", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_harvested_source_document_id"))

    op.drop_table("harvested_source")
    with op.batch_alter_table("harvested_document", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_harvested_document_region_code"))
        batch_op.drop_index(batch_op.f("ix_harvested_document_level"))
        batch_op.drop_index(batch_op.f("ix_harvested_document_doc_number"))

    op.drop_table("harvested_document")
    op.drop_table("feed_cursor")
