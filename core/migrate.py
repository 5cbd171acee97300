"""Apply Alembic migrations programmatically (used by `zhida migrate`, `make run`, tests)."""

from __future__ import annotations

import asyncio

from alembic.config import Config

from alembic import command
from core.settings import PROJECT_ROOT


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_async(database_url: str) -> None:
    """Alembic's env runs its own event loop, so give it a thread of its own."""
    await asyncio.to_thread(upgrade, database_url)
