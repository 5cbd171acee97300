"""match_result without foreign keys: the library is derived data written only by
matching runs, from items and firms they have just read (neither is ever deleted).
Its first full write is millions of rows, and on PostgreSQL the keys' per-row
checks were more than half of it (19 s of 35 s at 300,000 firms); setting them
aside for that write would take a lock that stops every read of the firms.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29 05:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's keys have no names: batch mode names them by this convention to drop them.
_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_KEYS = (("item_code", "policy_item", "code"), ("uscc", "enterprise", "uscc"))


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table("match_result", naming_convention=_NAMES) as batch:
            for column, table, _ in _KEYS:
                batch.drop_constraint(f"fk_match_result_{column}_{table}", type_="foreignkey")
        return
    for column, _, _ in _KEYS:
        op.drop_constraint(f"match_result_{column}_fkey", "match_result", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("match_result") as batch:
        for column, table, referred in _KEYS:
            batch.create_foreign_key(f"match_result_{column}_fkey", table, [column], [referred])
