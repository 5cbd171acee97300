"""Path and query parameters shared by the routers, bounded and shaped in the OpenAPI
and validated before any handler runs: a bad one is a 422 naming it, and no value out
of range ever reaches the database (where a huge integer would overflow)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BeforeValidator

from models.case_fields import PERIOD_PATTERN  # the shape; the item's scheme decides the rest
from models.uscc import validate_uscc

MAX_OFFSET = 1_000_000
MAX_LIMIT = 200
MAX_VERSION = 100_000
MAX_ROW_ID = 2**31 - 1  # ids are PostgreSQL integers
ITEM_CODE_PATTERN = r"^[A-Z0-9][A-Z0-9-]{2,39}$"
USCC_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{18}$"  # models/uscc.py ALPHABET

CreditCode = Annotated[
    str,
    Path(
        description="unified social credit code (统一社会信用代码): 18 characters of "
        "0-9 and A-Z without I, O, S, V, Z, ending in its GB 32100-2015 check character",
        min_length=18,
        max_length=18,
        pattern=USCC_PATTERN,
        examples=["91330502MA2B3C4D58"],
    ),
    AfterValidator(validate_uscc),
]
ItemCode = Annotated[
    str,
    Path(description="policy item code (政策条目编号)", pattern=ITEM_CODE_PATTERN),
]
Period = Annotated[
    str,
    Path(
        description="the case's period: a year (2026), quarter (2026-Q3), month (2026-07) "
        "or `once`",
        pattern=PERIOD_PATTERN,
        max_length=7,
    ),
]
VersionNumber = Annotated[
    int, Path(description="version number of a policy item", ge=1, le=MAX_VERSION)
]
VersionQuery = Annotated[
    int | None,
    Query(description="a version number; default: the published one", ge=1, le=MAX_VERSION),
]
NoticeId = Annotated[int, Path(description="notice id", ge=1, le=MAX_ROW_ID)]
MatchRunId = Annotated[int, Path(description="match run id", ge=1, le=MAX_ROW_ID)]
Year = Annotated[int, Path(description="budget year", ge=2000, le=2100)]
Offset = Annotated[int, Query(description="how many items to skip", ge=0, le=MAX_OFFSET)]
Limit = Annotated[int, Query(description="page size", ge=1, le=MAX_LIMIT)]


MIN_YEAR, MAX_YEAR = 2000, 2100  # as budget years: nothing the platform holds lies outside


def _iso_date(value: object) -> object:
    # Pydantic would also take a number (days or seconds since 1970): the OpenAPI says
    # `format: date`, and a client sending `0` has made a mistake worth telling.
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("须为日期 YYYY-MM-DD")
    return value


def _iso_datetime(value: object) -> object:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*", value):
        raise ValueError("须为 ISO 8601 时间，例如 2026-11-01T00:00:00+08:00")
    return value


def _in_years(value: date) -> date:
    # A far date or offset would overflow on its way to UTC (9999-12-31 plus a day).
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"须在 {MIN_YEAR} 至 {MAX_YEAR} 年之间")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date), AfterValidator(_in_years)]
WrittenDate = Annotated[date, BeforeValidator(_iso_date)]
"""A day written YYYY-MM-DD (never a number), whatever its year: its caller checks that."""
"""A query parameter that is a calendar day, written YYYY-MM-DD, in 2000-2100."""
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime), AfterValidator(_in_years)]
"""A query parameter that is a moment, written in ISO 8601, in 2000-2100."""
