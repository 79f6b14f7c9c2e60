"""Korean time: the zone the rules are written in, public holidays, "night and holiday" hours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

KST = ZoneInfo("Asia/Seoul")
SATURDAY = 5
SUNDAY = 6


class OffHours(StrEnum):
    """Why a moment counts as "night or holiday"."""

    PUBLIC_HOLIDAY = "public_holiday"
    SUNDAY = "sunday"
    SATURDAY_AFTERNOON = "saturday_afternoon"
    WEEKDAY_NIGHT = "weekday_night"
    EARLY_MORNING = "early_morning"


@dataclass(frozen=True, slots=True)
class Holiday:
    name_en: str
    name_ko: str


@dataclass(frozen=True, slots=True)
class OffHoursFinding:
    kind: OffHours
    holiday: Holiday | None = None


@lru_cache(maxsize=64)
def holidays_in(calendar_code: str, year: int) -> dict[date, Holiday]:
    """Public holidays (with alternative holidays) of one year, named in English and Korean."""
    english = holidays.country_holidays(calendar_code, years=year, language="en_US")
    korean = holidays.country_holidays(calendar_code, years=year, language="ko")
    return {
        day: Holiday(name_en=str(name), name_ko=str(korean.get(day, name)))
        for day, name in english.items()
    }


def off_hours(
    local: datetime,
    *,
    weekday_from: time,
    saturday_from: time,
    ends: time,
    calendar_code: str = "KR",
) -> OffHoursFinding | None:
    """Whether `local` (already in Korean time) falls in night or holiday hours, and why.

    Holidays and Sundays count all day; Saturdays from `saturday_from`; other days from
    `weekday_from`; and every morning before `ends` belongs to the night before.
    """
    day = local.date()
    holiday = holidays_in(calendar_code, day.year).get(day)
    if holiday is not None:
        return OffHoursFinding(OffHours.PUBLIC_HOLIDAY, holiday)
    weekday = day.weekday()
    if weekday == SUNDAY:
        return OffHoursFinding(OffHours.SUNDAY)
    clock = local.timetz().replace(tzinfo=None)
    if clock < ends:
        return OffHoursFinding(OffHours.EARLY_MORNING)
    if weekday == SATURDAY:
        return OffHoursFinding(OffHours.SATURDAY_AFTERNOON) if clock >= saturday_from else None
    return OffHoursFinding(OffHours.WEEKDAY_NIGHT) if clock >= weekday_from else None


def age_on(birth_date: date, day: date) -> int:
    """Age in completed years (만 나이) on `day`."""
    before_birthday = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - before_birthday
