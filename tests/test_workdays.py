from datetime import UTC, date, datetime

from core.workdays import SHANGHAI, WorkingCalendar


def test_weekend_is_skipped() -> None:
    calendar = WorkingCalendar()
    friday = datetime(2026, 11, 27, 10, 0, tzinfo=SHANGHAI)
    # One working day after Friday is Monday; the deadline is the end of Monday, Shanghai.
    assert calendar.add_working_days(friday, 1) == datetime(
        2026, 12, 1, 0, 0, tzinfo=SHANGHAI
    ).astimezone(UTC)


def test_national_day_holidays_and_make_up_working_day() -> None:
    calendar = WorkingCalendar()
    # 2025: 1-8 October are holidays; Sunday 28 September and Saturday 11 October are working days.
    assert calendar.is_working_day(date(2025, 9, 28))
    assert not calendar.is_working_day(date(2025, 10, 3))
    assert calendar.is_working_day(date(2025, 10, 11))
    start = datetime(2025, 9, 30, 9, 0, tzinfo=SHANGHAI)
    assert calendar.add_working_days(start, 1).astimezone(SHANGHAI).date() == date(2025, 10, 10)


def test_local_overrides_win() -> None:
    calendar = WorkingCalendar(
        extra_holidays=frozenset({date(2026, 11, 30)}),
        extra_working_days=frozenset({date(2026, 11, 28)}),
    )
    friday = datetime(2026, 11, 27, 10, 0, tzinfo=SHANGHAI)
    assert calendar.add_working_days(friday, 1).astimezone(SHANGHAI).date() == date(2026, 11, 29)
    assert calendar.add_working_days(friday, 2).astimezone(SHANGHAI).date() == date(2026, 12, 2)
