"""Small helpers to write availability the way people say it ("Mon-Fri 09:00-12:00")."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from jaejin.scheduling.model import (
    Availability,
    AvailabilityException,
    ExceptionKind,
    HoursMode,
    WeeklyRule,
)

SEOUL = ZoneInfo("Asia/Seoul")
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")
PAGO_PAGO = ZoneInfo("Pacific/Pago_Pago")
ULAANBAATAR = ZoneInfo("Asia/Ulaanbaatar")

LONG_AGO = datetime(1990, 1, 1, tzinfo=UTC)


def minutes(clock: str) -> int:
    hours, mins = clock.split(":")
    return int(hours) * 60 + int(mins)


def weekly(
    weekdays: range | list[int], start: str, end: str, mode: HoursMode = HoursMode.ANY
) -> tuple[WeeklyRule, ...]:
    return tuple(WeeklyRule(day, minutes(start), minutes(end), mode) for day in weekdays)


def every_day(start: str, end: str, mode: HoursMode = HoursMode.ANY) -> Availability:
    return Availability(weekly=weekly(range(1, 8), start, end, mode))


def weekdays_only(start: str, end: str, *extra: AvailabilityException) -> Availability:
    return Availability(weekly=weekly(range(1, 6), start, end), exceptions=extra)


def exception(
    day: date,
    kind: ExceptionKind,
    start: str | None = None,
    end: str | None = None,
    mode: HoursMode = HoursMode.ANY,
    until: date | None = None,
) -> AvailabilityException:
    return AvailabilityException(
        day=day,
        kind=kind,
        start=None if start is None else minutes(start),
        end=None if end is None else minutes(end),
        mode=mode,
        until=until,
    )


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def local_clock(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")
