"""Periods of entitlement: the span of time one payment of an item covers.

Each item declares a period scheme; a case names one period of that scheme
(`2026`, `2026-Q3`, `2026-07`, or `once`). The text of a period is canonical: one
span has exactly one spelling, so a firm cannot be paid twice for the same span by
writing it differently.
"""

from __future__ import annotations

import calendar
import enum
import re
from dataclasses import dataclass
from datetime import date

FIRST_YEAR = 2000
LAST_YEAR = 2100
ONCE = "once"


class PeriodScheme(enum.StrEnum):
    """How an item's entitlement is divided in time: the periods a case may be for.

    An item pays a firm at most once per period. The scheme is fixed once a version
    of the item has been published, so periods of two schemes can never both fund
    the same item for the same span of time (a department that changes the rhythm
    publishes a new item).
    """

    ANNUAL = "annual"  # 2026
    QUARTERLY = "quarterly"  # 2026-Q3
    MONTHLY = "monthly"  # 2026-07
    ONE_OFF = "one_off"  # once: at most one payment per firm over the item's life


_SHAPES = {
    PeriodScheme.ANNUAL: (re.compile(r"^(\d{4})$"), "YYYY, e.g. 2026"),
    PeriodScheme.QUARTERLY: (re.compile(r"^(\d{4})-Q([1-4])$"), "YYYY-Qn, e.g. 2026-Q3"),
    PeriodScheme.MONTHLY: (re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$"), "YYYY-MM, e.g. 2026-07"),
}


@dataclass(frozen=True)
class Period:
    text: str
    scheme: PeriodScheme
    start: date | None  # None for a one-off period: it spans the item's whole life
    end: date | None


def parse_period(text: str, scheme: PeriodScheme) -> Period:
    """The period `text` names under `scheme`, or ValueError saying what is expected."""
    if scheme is PeriodScheme.ONE_OFF:
        if text != ONCE:
            raise ValueError(f"this item pays once: the period must be '{ONCE}'")
        return Period(ONCE, scheme, None, None)
    pattern, shape = _SHAPES[scheme]
    match = pattern.match(text)
    if match is None:
        raise ValueError(f"this item's periods are {scheme.value}: write {shape}")
    year = int(match.group(1))
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"the year must be between {FIRST_YEAR} and {LAST_YEAR}")
    if scheme is PeriodScheme.ANNUAL:
        first_month, last_month = 1, 12
    elif scheme is PeriodScheme.QUARTERLY:
        quarter = int(match.group(2))
        first_month, last_month = 3 * quarter - 2, 3 * quarter
    else:
        first_month = last_month = int(match.group(2))
    last_day = calendar.monthrange(year, last_month)[1]
    return Period(text, scheme, date(year, first_month, 1), date(year, last_month, last_day))


def whole_periods(scheme: PeriodScheme, valid_from: date, valid_to: date) -> bool:
    """Whether at least one whole period of `scheme` lies within the validity window."""
    if scheme is PeriodScheme.ONE_OFF:
        return valid_from <= valid_to
    step = {PeriodScheme.ANNUAL: 12, PeriodScheme.QUARTERLY: 3, PeriodScheme.MONTHLY: 1}[scheme]
    # The first period that starts on or after valid_from.
    month_index = valid_from.year * 12 + valid_from.month - 1
    if valid_from.day != 1:
        month_index += 1
    month_index += (-month_index) % step  # periods start on months divisible by their length
    year, month = divmod(month_index, 12)
    last_month = month + step
    end_year, end_month = year + (last_month - 1) // 12, (last_month - 1) % 12 + 1
    end = date(end_year, end_month, calendar.monthrange(end_year, end_month)[1])
    return end <= valid_to


def within(period: Period, valid_from: date, valid_to: date) -> bool:
    """Whether the period lies inside a validity window (a one-off period always does)."""
    if period.start is None or period.end is None:
        return True
    return valid_from <= period.start and period.end <= valid_to
