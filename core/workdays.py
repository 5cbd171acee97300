"""Working-day arithmetic for stage time limits (weekends, public holidays, 调休)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import holidays

if TYPE_CHECKING:  # workflows import this module: no settings in their sandbox
    from core.settings import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass
class WorkingCalendar:
    """Public holidays and make-up working days of one country, plus local overrides."""

    country: str = "CN"
    extra_holidays: frozenset[date] = field(default_factory=frozenset)
    extra_working_days: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self._public = holidays.country_holidays(self.country)
        self._known: dict[date, bool] = {}  # days already looked up (dashboards ask often)

    def is_working_day(self, day: date) -> bool:
        known = self._known.get(day)
        if known is None:
            if day in self.extra_working_days:
                known = True
            elif day in self.extra_holidays:
                known = False
            else:
                known = bool(self._public.is_working_day(day))
            self._known[day] = known
        return known

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Working days from `start` to `end`, by their days in Shanghai: the days after
        the start's up to and including the end's (0 on the same day, or if `end` is
        earlier)."""
        first = start.astimezone(SHANGHAI).date()
        last = end.astimezone(SHANGHAI).date()
        days = (last - first).days
        return sum(self.is_working_day(first + timedelta(days=n)) for n in range(1, days + 1))

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """The deadline `days` working days after `start`: end of that day, Shanghai time.

        The day of `start` itself does not count (a case received on Monday with a
        limit of one working day is due at the end of Tuesday).
        """
        if days < 0:
            raise ValueError("days must not be negative")
        day = start.astimezone(SHANGHAI).date()
        remaining = days
        while remaining > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                remaining -= 1
        end_of_day = datetime.combine(day + timedelta(days=1), time(0), tzinfo=SHANGHAI)
        return end_of_day.astimezone(UTC)


def calendar_from(settings: Settings) -> WorkingCalendar:
    """The calendar the settings describe: the country's, plus local days off and on."""
    return WorkingCalendar(
        country=settings.holiday_country,
        extra_holidays=parse_days(settings.extra_holidays),
        extra_working_days=parse_days(settings.extra_working_days),
    )


def parse_days(values: list[str]) -> frozenset[date]:
    return frozenset(date.fromisoformat(v) for v in values)
