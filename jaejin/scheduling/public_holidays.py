"""Korean public holidays (공휴일), alternative holidays (대체공휴일) included.

Dates come from the `holidays` package (KR), which also carries election days and temporary
holidays declared by the government. Each year is computed once and then read without locks.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import date
from functools import lru_cache

import holidays

#: For owners without a holiday calendar (e.g. an interpreter abroad).
NO_HOLIDAYS: frozenset[date] = frozenset()

_HOLIDAY_LANGUAGES = {"ko": "ko", "en": "en_US", "th": "th"}


@lru_cache(maxsize=64)
def _korean_holidays(year: int, language: str) -> dict[date, str]:
    calendar = holidays.country_holidays("KR", years=year, language=language)
    return {day: str(name) for day, name in calendar.items()}


class KoreanPublicHolidays(Container[date]):
    """`day in KoreanPublicHolidays()` is true on Korean public and alternative holidays."""

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and day in _korean_holidays(day.year, "ko")

    def name(self, day: date, lang: str = "ko") -> str | None:
        """The holiday's name in `lang` (Korean, English or Thai; English otherwise)."""
        language = _HOLIDAY_LANGUAGES.get(lang.split("-", 1)[0], "en_US")
        return _korean_holidays(day.year, language).get(day)

    def in_year(self, year: int) -> dict[date, str]:
        return dict(_korean_holidays(year, "ko"))


KOREAN_PUBLIC_HOLIDAYS = KoreanPublicHolidays()
