"""Small value types the rules are written in: calendar periods and KCD (ICD-10 based) codes."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

_PERIOD = re.compile(r"^P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<days>\d+)D)?$")
KCD_CODE = re.compile(r"^[A-Z][0-9]{2}(?:\.?[0-9A-Z]{1,4})?$")
_KCD_RANGE = re.compile(r"^(?P<start>[A-Z][0-9]{2})(?:-(?P<end>[A-Z][0-9]{2}))?$")
ATC_CODE = re.compile(r"^[A-Z](?:[0-9]{2}(?:[A-Z](?:[A-Z](?:[0-9]{2})?)?)?)?$")


@dataclass(frozen=True, slots=True)
class CalendarPeriod:
    """A period in calendar units, as the rules state it ("30 days", "6 months", "1 year").

    Months and years are calendar months, not 30-day blocks: a visit on 31 August is within six
    months of the last day of February.
    """

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> CalendarPeriod:
        normalised = text.strip().upper()
        match = _PERIOD.match(normalised)
        if match is None or normalised == "P":
            raise ValueError(
                f"{text!r} is not a period; write it as ISO 8601, e.g. P30D, P6M or P1Y"
            )
        return cls(**{name: int(value or 0) for name, value in match.groupdict().items()})

    def after(self, start: date) -> date:
        """The last day still inside the period that begins on `start`."""
        return _last_day(self, start)

    def __str__(self) -> str:
        text = "P"
        if self.years:
            text += f"{self.years}Y"
        if self.months:
            text += f"{self.months}M"
        if self.days or text == "P":
            text += f"{self.days}D"
        return text


@lru_cache(maxsize=16384)
def _last_day(period: CalendarPeriod, start: date) -> date:
    total_months = start.month - 1 + period.months + 12 * period.years
    year = start.year + total_months // 12
    month = total_months % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return date.fromordinal(date(year, month, day).toordinal() + period.days)


def kcd_category(code: str) -> str:
    """The three-character KCD category of a code ("E11.9" -> "E11")."""
    return code[:3].upper()


def _category_index(category: str) -> int:
    return (ord(category[0]) - ord("A")) * 100 + int(category[1:3])


def expand_kcd_ranges(ranges: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Every three-character category inside ranges such as ["I10-I13", "I15", "S00-T14"]."""
    categories: set[str] = set()
    for text in ranges:
        match = _KCD_RANGE.match(text.strip().upper())
        if match is None:
            raise ValueError(f"{text!r} is not a KCD category or range such as I10 or I10-I13")
        start = _category_index(match["start"])
        end = _category_index(match["end"] or match["start"])
        if end < start:
            raise ValueError(f"{text!r}: the range ends before it starts")
        for index in range(start, end + 1):
            categories.add(f"{chr(ord('A') + index // 100)}{index % 100:02d}")
    return frozenset(categories)
