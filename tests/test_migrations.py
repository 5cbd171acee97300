"""The migrations make the schema the models describe: no table, column, index or
constraint of one is missing from the other (alembic's own comparison)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

import models  # noqa: F401  - every table registered on the metadata

# JSON columns the models declare NOT NULL and the migrations created nullable (the
# application always writes them). Known drift, pinned here so that no new one joins
# it unnoticed; making them NOT NULL rebuilds these tables on SQLite.
NULLABLE_JSON = {
    ("audit_event", "details"),
    ("policy_item_version", "recognition_terms"),
    ("policy_item_version", "commitment_terms"),
    ("policy_item_version", "review_checks"),
    ("recognition_batch", "department_decision"),
    ("recognition_batch", "finance_decision"),
    ("recognition_entry", "facts"),
    ("recognition_entry", "figures"),
    ("recognition_entry", "flags"),
    ("recovery_order", "plan"),
    ("review_finding", "evidence"),
    ("review_finding", "counterparts"),
}


# SQLite cannot reflect the library's expression index; alembic says so and skips it.
@pytest.mark.filterwarnings("ignore:.*expression-based index")
async def test_the_migrated_schema_is_the_models_schema(own_engine: AsyncEngine) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        return list(compare_metadata(context, SQLModel.metadata))

    async with own_engine.connect() as connection:
        found = await connection.run_sync(differences)
    # Index changes come one per entry, column changes as lists of them.
    changes = [
        change for entry in found for change in (entry if isinstance(entry, list) else [entry])
    ]
    nullable = {(c[2], c[3]) for c in changes if c[0] == "modify_nullable"}
    assert nullable == NULLABLE_JSON
    assert [c for c in changes if c[0] != "modify_nullable"] == []


async def test_inbox_indexes_hold_only_cases_that_wait(own_engine: AsyncEngine) -> None:
    """Alembic does not compare an index's WHERE: read it from the catalogue."""
    if own_engine.dialect.name == "sqlite":
        query = "SELECT name, sql FROM sqlite_master WHERE name LIKE 'ix_case_record_%waiting%'"
    else:
        query = (
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE indexname LIKE 'ix_case_record_%waiting%'"
        )
    async with own_engine.connect() as connection:
        found: dict[str, str] = {n: d for n, d in await connection.execute(sa.text(query))}
    assert sorted(found) == [
        "ix_case_record_also_waiting_for_department",
        "ix_case_record_waiting_for_department",
    ]
    for name, definition in found.items():
        column = name.removeprefix("ix_case_record_")
        assert re.search(rf"WHERE \(?{column} IS NOT NULL\)?$", definition), definition
