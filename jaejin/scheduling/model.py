"""Scheduling domain values: availability rules, visit types, intervals and slots.

Pure data and small rules; no I/O. Times of day are minutes after local midnight (0-1440) in the
zone of whoever owns the availability (the institution for practitioners, the interpreter's own
zone for interpreters). Instants are timezone-aware datetimes in UTC.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from jaejin.core.i18n import N_, translate
from jaejin.scheduling.errors import ErrorCode, Message, SchedulingError
from jaejin.scheduling.zones import MINUTES_PER_DAY, ensure_aware


class VisitMode(StrEnum):
    """How a visit happens."""

    VIDEO = "video"
    IN_PERSON = "in_person"


class HoursMode(StrEnum):
    """Which kind of visit a stretch of hours is for; `any` serves both."""

    VIDEO = "video"
    IN_PERSON = "in_person"
    ANY = "any"

    def covers(self, mode: VisitMode) -> bool:
        return self is HoursMode.ANY or self.value == mode.value

    def overlaps(self, other: HoursMode) -> bool:
        return HoursMode.ANY in (self, other) or self is other


MODE_NAMES: dict[VisitMode, str] = {
    VisitMode.VIDEO: N_("video visit"),
    VisitMode.IN_PERSON: N_("in-person visit"),
}


class ExceptionKind(StrEnum):
    CLOSED = "closed"
    EXTRA_HOURS = "extra_hours"
    OPEN_ON_HOLIDAY = "open_on_holiday"


def _check_minutes(start: int, end: int) -> None:
    if not 0 <= start < end <= MINUTES_PER_DAY:
        raise ValueError(f"hours must satisfy 0 <= start < end <= 1440 minutes, got {start}-{end}")


@dataclass(frozen=True, slots=True)
class WeeklyRule:
    """Every `weekday` (ISO: Monday=1 .. Sunday=7), open from `start` to `end` local minutes."""

    weekday: int
    start: int
    end: int
    mode: HoursMode = HoursMode.ANY

    def __post_init__(self) -> None:
        if not 1 <= self.weekday <= 7:
            raise ValueError(f"weekday must be 1 (Monday) to 7 (Sunday), got {self.weekday}")
        _check_minutes(self.start, self.end)


@dataclass(frozen=True, slots=True)
class AvailabilityException:
    """A change to the weekly hours on `day` (through `until`, inclusive, when given).

    - closed: no hours (the whole day, or only `start`-`end`), e.g. leave or a conference;
    - extra_hours: `start`-`end` open in addition to anything else;
    - open_on_holiday: a public holiday worked anyway, with the weekly hours of that weekday or
      only `start`-`end`.
    """

    day: date
    kind: ExceptionKind
    start: int | None = None
    end: int | None = None
    mode: HoursMode = HoursMode.ANY
    until: date | None = None

    def __post_init__(self) -> None:
        if (self.start is None) != (self.end is None):
            raise ValueError("an exception gives both start and end, or neither")
        if self.start is not None and self.end is not None:
            _check_minutes(self.start, self.end)
        elif self.kind is ExceptionKind.EXTRA_HOURS:
            raise ValueError("extra hours need a start and an end")
        if self.until is not None and self.until < self.day:
            raise ValueError("an exception's until date cannot be before its date")

    @property
    def hours(self) -> tuple[int, int] | None:
        if self.start is None or self.end is None:
            return None
        return (self.start, self.end)

    def days(self) -> Iterable[date]:
        last = self.until or self.day
        for offset in range((last - self.day).days + 1):
            yield self.day + timedelta(days=offset)


@dataclass(frozen=True)
class Availability:
    """Weekly hours plus dated exceptions, in the owner's local wall-clock time."""

    weekly: tuple[WeeklyRule, ...] = ()
    exceptions: tuple[AvailabilityException, ...] = ()
    _exceptions_by_day: Mapping[date, tuple[AvailabilityException, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_day: dict[date, list[AvailabilityException]] = {}
        for exception in self.exceptions:
            for day in exception.days():
                by_day.setdefault(day, []).append(exception)
        object.__setattr__(
            self, "_exceptions_by_day", {day: tuple(found) for day, found in by_day.items()}
        )

    def exceptions_on(self, day: date) -> tuple[AvailabilityException, ...]:
        return self._exceptions_by_day.get(day, ())


@dataclass(frozen=True, slots=True)
class VisitType:
    """A kind of appointment: how long it lasts, the pause after it, and how it can happen."""

    code: str
    duration: timedelta
    buffer_after: timedelta
    modes: frozenset[VisitMode]
    name: str

    def __post_init__(self) -> None:
        for label, value in (("duration", self.duration), ("buffer_after", self.buffer_after)):
            if value % timedelta(minutes=1) or value < timedelta(0):
                raise ValueError(f"{label} must be a non-negative whole number of minutes")
        if self.duration <= timedelta(0):
            raise ValueError("a visit type needs a positive duration")
        if not self.modes:
            raise ValueError("a visit type needs at least one mode")

    @property
    def step(self) -> timedelta:
        """Distance between consecutive slot starts inside one availability window."""
        return self.duration + self.buffer_after

    @property
    def duration_minutes(self) -> int:
        return int(self.duration // timedelta(minutes=1))

    @property
    def step_minutes(self) -> int:
        return int(self.step // timedelta(minutes=1))

    def display_name(self, lang: str) -> str:
        return translate(lang, self.name)


def _visit_type(
    code: str, minutes: int, buffer: int, modes: set[VisitMode], name: str
) -> VisitType:
    return VisitType(
        code=code,
        duration=timedelta(minutes=minutes),
        buffer_after=timedelta(minutes=buffer),
        modes=frozenset(modes),
        name=name,
    )


#: The visit types every institution starts with. Buffers leave time for notes and, for
#: international visits, for connection checks and the interpreter's hand-over.
VISIT_TYPES: tuple[VisitType, ...] = (
    _visit_type("follow_up", 15, 0, {VisitMode.VIDEO}, N_("Follow-up")),
    _visit_type(
        "international_follow_up", 30, 10, {VisitMode.VIDEO}, N_("International follow-up")
    ),
    _visit_type(
        "tri_party_consultation", 45, 15, {VisitMode.VIDEO},
        N_("Tri-party consultation with your local doctor"),
    ),
    _visit_type("in_person_follow_up", 15, 5, {VisitMode.IN_PERSON}, N_("In-person follow-up")),
)

VISIT_TYPES_BY_CODE: dict[str, VisitType] = {visit.code: visit for visit in VISIT_TYPES}


def visit_type_by_code(
    code: str, table: Mapping[str, VisitType] = VISIT_TYPES_BY_CODE
) -> VisitType:
    try:
        return table[code]
    except KeyError:
        raise SchedulingError(
            ErrorCode.UNKNOWN_VISIT_TYPE,
            N_("Unknown visit type \"{code}\"; known types: {known}."),
            field="visit_type",
            code=code,
            known=", ".join(sorted(table)),
        ) from None


def ensure_mode_offered(visit_type: VisitType, mode: VisitMode) -> None:
    if mode not in visit_type.modes:
        raise SchedulingError(
            ErrorCode.MODE_NOT_OFFERED,
            N_("Visit type \"{code}\" is not offered as {mode}."),
            field="mode",
            code=visit_type.code,
            mode=Message(MODE_NAMES[mode]),
        )


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """A half-open stretch of time [start, end) between two instants, kept in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", ensure_aware(self.start, "interval start"))
        object.__setattr__(self, "end", ensure_aware(self.end, "interval end"))
        if self.end <= self.start:
            raise ValueError(f"an interval must end after it starts: {self.start} - {self.end}")

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end

    def contains(self, other: Interval) -> bool:
        return self.start <= other.start and other.end <= self.end


class IntervalSet:
    """A union of intervals, merged, for quick overlap and containment questions."""

    def __init__(self, intervals: Iterable[Interval] = ()) -> None:
        merged: list[Interval] = []
        for interval in sorted(intervals):
            if merged and interval.start <= merged[-1].end:
                if interval.end > merged[-1].end:
                    merged[-1] = Interval(merged[-1].start, interval.end)
            else:
                merged.append(interval)
        self.intervals: tuple[Interval, ...] = tuple(merged)
        self._starts = [interval.start for interval in merged]

    def __bool__(self) -> bool:
        return bool(self.intervals)

    def _last_starting_at_or_before(self, moment: datetime) -> int:
        return bisect.bisect_right(self._starts, moment) - 1

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """True if any part of [start, end) is inside the set."""
        index = self._last_starting_at_or_before(start)
        if index >= 0 and self.intervals[index].end > start:
            return True
        following = index + 1
        return following < len(self.intervals) and self.intervals[following].start < end

    def covers(self, start: datetime, end: datetime) -> bool:
        """True if all of [start, end) is inside one merged interval of the set."""
        index = self._last_starting_at_or_before(start)
        return index >= 0 and self.intervals[index].end >= end

    def subtract_from(self, interval: Interval) -> list[Interval]:
        """The parts of `interval` outside the set."""
        remaining: list[Interval] = []
        cursor = interval.start
        first = max(self._last_starting_at_or_before(interval.start), 0)
        for taken in self.intervals[first:]:
            if taken.start >= interval.end:
                break
            if taken.end <= cursor:
                continue
            if taken.start > cursor:
                remaining.append(Interval(cursor, taken.start))
            cursor = max(cursor, taken.end)
        if cursor < interval.end:
            remaining.append(Interval(cursor, interval.end))
        return remaining


@dataclass(frozen=True, slots=True)
class Slot:
    """A bookable start: [start, end) is the visit; the buffer follows it."""

    start: datetime
    end: datetime
    visit_type: str
    mode: VisitMode
    buffer_after: timedelta = timedelta(0)
    interpreter_available: bool = False

    @property
    def occupied_until(self) -> datetime:
        """When the practitioner is free again: the end plus the visit type's buffer."""
        return self.end + self.buffer_after

    @property
    def interval(self) -> Interval:
        return Interval(self.start, self.end)


def occupied_interval(start: datetime, visit_type: VisitType) -> Interval:
    """The busy time an appointment of `visit_type` at `start` blocks, buffer included."""
    return Interval(start, start + visit_type.step)


def needs_interpreter(practitioner_languages: Iterable[str], patient_language: str) -> bool:
    """A visit needs an interpreter when the practitioner does not speak the patient's language.

    Languages compare by primary subtag, so `zh-Hant` and `zh-Hans` are not told apart here
    (spoken Chinese is the same); callers wanting script precision compare full tags first.
    """
    wanted = patient_language.strip().lower().split("-", 1)[0]
    spoken = {language.strip().lower().split("-", 1)[0] for language in practitioner_languages}
    return wanted not in spoken


def ensure_interpreter_language_offered(language: str, offered: Iterable[str]) -> None:
    """Raise INTERPRETER_LANGUAGE_UNAVAILABLE if no interpreter offers `language`."""
    wanted = language.strip().lower().split("-", 1)[0]
    if wanted not in {item.strip().lower().split("-", 1)[0] for item in offered}:
        raise SchedulingError(
            ErrorCode.INTERPRETER_LANGUAGE_UNAVAILABLE,
            N_("No interpreter offers the language \"{language}\"."),
            field="language",
            language=language,
        )


def interpreters_free_for(
    slot: Slot | Interval, windows_by_interpreter: Mapping[str, Sequence[Interval]]
) -> list[str]:
    """Identifiers of the interpreters whose free windows cover the whole visit, in given order."""
    return [
        interpreter
        for interpreter, windows in windows_by_interpreter.items()
        if IntervalSet(windows).covers(slot.start, slot.end)
    ]
