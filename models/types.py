"""Column types shared by the tables."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator
from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both backends (SQLite stores no offset, so we restore it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _not_a_number(value: object) -> object:
    # Pydantic would read a number as seconds (or days) since 1970: a client sending
    # 946684800 for a day has made a mistake worth telling.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("须为日期 YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_not_a_number)]
"""A calendar day in a body: written YYYY-MM-DD (or a date), never a number."""
