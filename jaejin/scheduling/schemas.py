"""Wire format (Pydantic v2) for availability and slot search.

Custom error types equal the domain error codes in lower case (`unknown_time_zone`,
`invalid_range`, `range_too_long`, ...), so an API can answer every input problem the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from datetime import date
from typing import Annotated, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from jaejin.scheduling.display import dual_zone_label, zone_label
from jaejin.scheduling.errors import SchedulingError
from jaejin.scheduling.model import (
    VISIT_TYPES_BY_CODE,
    Availability,
    AvailabilityException,
    ExceptionKind,
    HoursMode,
    Slot,
    VisitMode,
    WeeklyRule,
)
from jaejin.scheduling.slots import MAX_SEARCH_DAYS
from jaejin.scheduling.zones import MINUTES_PER_DAY, canonical_zone_name

_CLOCK = re.compile(r"^(?:([01]\d|2[0-3]):([0-5]\d)|24:00)$")
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_WEEKLY_RULES = 100
MAX_EXCEPTIONS = 1000
MAX_EXCEPTION_SPAN_DAYS = 366


def _check_zone(name: str) -> str:
    try:
        return canonical_zone_name(name)
    except SchedulingError:
        raise PydanticCustomError(
            "unknown_time_zone",
            "Unknown time zone \"{zone}\": use an IANA name such as Asia/Seoul",
            {"zone": name},
        ) from None


def _check_clock(value: str) -> str:
    if not _CLOCK.match(value):
        raise PydanticCustomError(
            "invalid_clock_time",
            "Times are HH:MM on a 24-hour clock (00:00 to 24:00), got \"{value}\"",
            {"value": value},
        )
    return value


def _check_visit_type(code: str) -> str:
    if code not in VISIT_TYPES_BY_CODE:
        raise PydanticCustomError(
            "unknown_visit_type",
            "Unknown visit type \"{code}\"; known types: {known}",
            {"code": code, "known": ", ".join(sorted(VISIT_TYPES_BY_CODE))},
        )
    return code


#: An IANA zone name, normalised to its canonical spelling.
IanaZone = Annotated[str, AfterValidator(_check_zone)]
#: "HH:MM", 00:00 to 24:00.
ClockTime = Annotated[str, AfterValidator(_check_clock)]
VisitTypeCode = Annotated[str, AfterValidator(_check_visit_type)]


def clock_to_minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def minutes_to_clock(minutes: int) -> str:
    if not 0 <= minutes <= MINUTES_PER_DAY:
        raise ValueError(f"minutes must be 0-1440, got {minutes}")
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class WeeklyRuleIn(BaseModel):
    """Open every `weekday` (ISO 8601: 1 = Monday ... 7 = Sunday) from `start` to `end`."""

    model_config = ConfigDict(extra="forbid")

    weekday: int = Field(ge=1, le=7)
    start: ClockTime
    end: ClockTime
    mode: HoursMode = HoursMode.ANY

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        if clock_to_minutes(self.end) <= clock_to_minutes(self.start):
            raise PydanticCustomError(
                "end_not_after_start",
                "end {end} must be after start {start}",
                {"start": self.start, "end": self.end},
            )
        return self

    def to_domain(self) -> WeeklyRule:
        return WeeklyRule(
            weekday=self.weekday,
            start=clock_to_minutes(self.start),
            end=clock_to_minutes(self.end),
            mode=self.mode,
        )


class AvailabilityExceptionIn(BaseModel):
    """A dated change; `until` (inclusive) repeats it over several days, e.g. for leave."""

    model_config = ConfigDict(extra="forbid")

    date: dt.date
    until: dt.date | None = None
    kind: ExceptionKind
    start: ClockTime | None = None
    end: ClockTime | None = None
    mode: HoursMode = HoursMode.ANY

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.start is None) != (self.end is None):
            raise PydanticCustomError(
                "incomplete_hours", "give both start and end, or neither", {}
            )
        if self.kind is ExceptionKind.EXTRA_HOURS and self.start is None:
            raise PydanticCustomError(
                "missing_hours", "extra_hours needs a start and an end", {}
            )
        if (
            self.start is not None
            and self.end is not None
            and clock_to_minutes(self.end) <= clock_to_minutes(self.start)
        ):
            raise PydanticCustomError(
                "end_not_after_start",
                "end {end} must be after start {start}",
                {"start": self.start, "end": self.end},
            )
        if self.until is not None:
            if self.until < self.date:
                raise PydanticCustomError(
                    "invalid_range",
                    "until {until} is before date {date}",
                    {"date": self.date.isoformat(), "until": self.until.isoformat()},
                )
            if (self.until - self.date).days + 1 > MAX_EXCEPTION_SPAN_DAYS:
                raise PydanticCustomError(
                    "range_too_long",
                    "an exception spans at most {max_days} days",
                    {"max_days": MAX_EXCEPTION_SPAN_DAYS},
                )
        return self

    def to_domain(self) -> AvailabilityException:
        return AvailabilityException(
            day=self.date,
            until=self.until,
            kind=self.kind,
            start=None if self.start is None else clock_to_minutes(self.start),
            end=None if self.end is None else clock_to_minutes(self.end),
            mode=self.mode,
        )


class AvailabilityIn(BaseModel):
    """Body of `PUT /api/v1/practitioners/{id}/availability` (and of its GET)."""

    model_config = ConfigDict(extra="forbid")

    weekly: list[WeeklyRuleIn] = Field(default_factory=list, max_length=MAX_WEEKLY_RULES)
    exceptions: list[AvailabilityExceptionIn] = Field(
        default_factory=list, max_length=MAX_EXCEPTIONS
    )

    @field_validator("weekly")
    @classmethod
    def _no_overlapping_rules(cls, rules: list[WeeklyRuleIn]) -> list[WeeklyRuleIn]:
        for index, rule in enumerate(rules):
            for other_index in range(index):
                other = rules[other_index]
                same_day = rule.weekday == other.weekday
                if not (same_day and rule.mode.overlaps(other.mode)):
                    continue
                if clock_to_minutes(rule.start) < clock_to_minutes(other.end) and (
                    clock_to_minutes(other.start) < clock_to_minutes(rule.end)
                ):
                    raise PydanticCustomError(
                        "overlapping_rules",
                        "weekly rules {first} and {second} overlap on {weekday}: "
                        "{first_hours} ({first_mode}) and {second_hours} ({second_mode})",
                        {
                            "first": other_index,
                            "second": index,
                            "weekday": _WEEKDAY_NAMES[rule.weekday - 1],
                            "first_hours": f"{other.start}-{other.end}",
                            "first_mode": other.mode.value,
                            "second_hours": f"{rule.start}-{rule.end}",
                            "second_mode": rule.mode.value,
                        },
                    )
        return rules

    def to_domain(self) -> Availability:
        return Availability(
            weekly=tuple(rule.to_domain() for rule in self.weekly),
            exceptions=tuple(item.to_domain() for item in self.exceptions),
        )

    @classmethod
    def from_domain(cls, availability: Availability) -> AvailabilityIn:
        return cls(
            weekly=[
                WeeklyRuleIn(
                    weekday=rule.weekday,
                    start=minutes_to_clock(rule.start),
                    end=minutes_to_clock(rule.end),
                    mode=rule.mode,
                )
                for rule in availability.weekly
            ],
            exceptions=[
                AvailabilityExceptionIn(
                    date=item.day,
                    until=item.until,
                    kind=item.kind,
                    start=None if item.start is None else minutes_to_clock(item.start),
                    end=None if item.end is None else minutes_to_clock(item.end),
                    mode=item.mode,
                )
                for item in availability.exceptions
            ],
        )


class SlotQuery(BaseModel):
    """Query of `GET /api/v1/practitioners/{id}/slots`; dates are inclusive and meant in `tz`."""

    model_config = ConfigDict(extra="forbid")

    start: date
    end: date
    tz: IanaZone
    visit_type: VisitTypeCode
    mode: VisitMode = VisitMode.VIDEO

    @model_validator(mode="after")
    def _bounded_range(self) -> Self:
        if self.end < self.start:
            raise PydanticCustomError(
                "invalid_range",
                "end {end} is before start {start}",
                {"start": self.start.isoformat(), "end": self.end.isoformat()},
            )
        days = (self.end - self.start).days + 1
        if days > MAX_SEARCH_DAYS:
            raise PydanticCustomError(
                "range_too_long",
                "a search covers at most {max_days} days; this one covers {days}",
                {"max_days": MAX_SEARCH_DAYS, "days": days},
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


class SlotOut(BaseModel):
    """One free slot: instants with the institution's and the requested zone's offsets."""

    start: AwareDatetime
    start_local: AwareDatetime
    end: AwareDatetime
    end_local: AwareDatetime
    visit_type: str
    mode: VisitMode
    interpreter_available: bool
    label: str
    label_institution: str
    label_local: str

    @classmethod
    def from_slot(
        cls, slot: Slot, institution_zone: ZoneInfo, requested_zone: ZoneInfo, lang: str
    ) -> SlotOut:
        return cls(
            start=slot.start.astimezone(institution_zone),
            start_local=slot.start.astimezone(requested_zone),
            end=slot.end.astimezone(institution_zone),
            end_local=slot.end.astimezone(requested_zone),
            visit_type=slot.visit_type,
            mode=slot.mode,
            interpreter_available=slot.interpreter_available,
            label=dual_zone_label(slot.start, institution_zone, requested_zone, lang),
            label_institution=zone_label(slot.start, institution_zone, lang),
            label_local=zone_label(slot.start, requested_zone, lang),
        )


def slots_out(
    slots: list[Slot], institution_zone: ZoneInfo, requested_zone: ZoneInfo, lang: str
) -> list[SlotOut]:
    return [SlotOut.from_slot(slot, institution_zone, requested_zone, lang) for slot in slots]
