"""Calendar periods, KCD ranges, Korean holidays and night hours."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.policy.korean_time import KST, OffHours, age_on, holidays_in, off_hours
from jaejin.policy.units import CalendarPeriod, expand_kcd_ranges

PILOT_NIGHT = {"weekday_from": time(18), "saturday_from": time(13), "ends": time(9)}


def test_periods_parse_iso_8601_and_print_back() -> None:
    assert CalendarPeriod.parse("P6M") == CalendarPeriod(months=6)
    assert str(CalendarPeriod.parse("p1y")) == "P1Y"
    for text in ("6 months", "P", "PT6H", "30"):
        with pytest.raises(ValueError, match="not a period"):
            CalendarPeriod.parse(text)


def test_calendar_months_clamp_to_the_end_of_the_month() -> None:
    assert CalendarPeriod(months=6).after(date(2023, 8, 31)) == date(2024, 2, 29)
    assert CalendarPeriod(years=1).after(date(2024, 2, 29)) == date(2025, 2, 28)
    assert CalendarPeriod(days=30).after(date(2023, 12, 15)) == date(2024, 1, 14)


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)),
       st.integers(0, 5), st.integers(0, 24), st.integers(0, 400))
def test_a_period_never_ends_before_it_starts_and_grows_with_each_unit(
    start: date, years: int, months: int, days: int,
) -> None:
    period = CalendarPeriod(years, months, days)
    end = period.after(start)
    assert end >= start
    assert CalendarPeriod(years, months, days + 1).after(start) > end


def test_kcd_ranges_expand_across_letters() -> None:
    assert expand_kcd_ranges(["I10-I13", "I15"]) == {"I10", "I11", "I12", "I13", "I15"}
    wounds = expand_kcd_ranges(["S00-T14"])
    assert {"S00", "S99", "T00", "T14"} <= wounds and "T15" not in wounds
    with pytest.raises(ValueError, match="ends before it starts"):
        expand_kcd_ranges(["I13-I10"])


@pytest.mark.parametrize(
    ("day", "holiday"),
    [
        (date(2023, 10, 2), True),    # temporary public holiday
        (date(2024, 2, 12), True),    # alternative holiday for Seollal
        (date(2024, 4, 10), True),    # National Assembly election day
        (date(2027, 10, 11), True),   # alternative holiday for Hangul Day
        (date(2024, 2, 13), False),
    ],
)
def test_korean_public_holidays_include_alternative_and_temporary_ones(
    day: date, holiday: bool,
) -> None:
    assert (day in holidays_in("KR", day.year)) is holiday


def test_holiday_names_come_in_korean_and_english() -> None:
    chuseok = holidays_in("KR", 2023)[date(2023, 9, 29)]
    assert chuseok.name_en == "Chuseok" and chuseok.name_ko == "추석"


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2024, 1, 17, 17, 59, tzinfo=KST), None),
        (datetime(2024, 1, 17, 18, 0, tzinfo=KST), OffHours.WEEKDAY_NIGHT),
        (datetime(2024, 1, 18, 8, 59, tzinfo=KST), OffHours.EARLY_MORNING),
        (datetime(2024, 1, 18, 9, 0, tzinfo=KST), None),
        (datetime(2024, 1, 20, 12, 59, tzinfo=KST), None),
        (datetime(2024, 1, 20, 13, 0, tzinfo=KST), OffHours.SATURDAY_AFTERNOON),
        (datetime(2024, 1, 21, 10, 0, tzinfo=KST), OffHours.SUNDAY),
        (datetime(2024, 2, 12, 10, 0, tzinfo=KST), OffHours.PUBLIC_HOLIDAY),
    ],
)
def test_night_and_holiday_hours(moment: datetime, expected: OffHours | None) -> None:
    finding = off_hours(moment, **PILOT_NIGHT)
    assert (finding.kind if finding else None) == expected


def test_age_counts_completed_years() -> None:
    assert age_on(date(2009, 3, 2), date(2027, 3, 1)) == 17
    assert age_on(date(2009, 3, 2), date(2027, 3, 2)) == 18
