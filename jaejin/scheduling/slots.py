"""Slots computed on demand from availability rules; nothing is pre-generated.

How a slot grid is made, per local date of the owner's zone:
1. open hours = the weekly rules of that weekday for the mode (none on a public holiday unless an
   `open_on_holiday` exception), minus `closed` exceptions, plus `extra_hours` exceptions, merged
   into disjoint windows;
2. inside each window, candidate starts are the window start, then every duration + buffer after
   it, in local wall-clock time (so a 09:00 window gives 09:00, 09:15, ... on any day of the year);
3. a candidate whose wall time does not exist (spring-forward gap) is skipped; one that exists
   twice (fall-back overlap) is offered once, at its first occurrence; a candidate whose visit
   would run past the window's end instant, or that would start inside the previous candidate's
   visit and buffer (possible only across a clock change), is dropped.
Search then removes slots in the past, slots overlapping busy time and, when an interpreter is
needed, slots without a free interpreter for the whole visit.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from jaejin.core.i18n import N_
from jaejin.scheduling.errors import ErrorCode, SchedulingError
from jaejin.scheduling.model import (
    Availability,
    ExceptionKind,
    Interval,
    IntervalSet,
    Slot,
    VisitMode,
    VisitType,
    ensure_mode_offered,
)
from jaejin.scheduling.public_holidays import NO_HOLIDAYS
from jaejin.scheduling.zones import (
    MINUTES_PER_DAY,
    WallTimeKind,
    classify_wall_time,
    ensure_aware,
    local_day_start,
    wall_datetime,
    wall_to_instant,
)

#: The longest slot search accepted, in days (a quarter of a year).
MAX_SEARCH_DAYS = 92

Minutes = tuple[int, int]


def _merge(ranges: Iterable[Minutes]) -> list[Minutes]:
    merged: list[Minutes] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(ranges: list[Minutes], removed: list[Minutes]) -> list[Minutes]:
    remaining: list[Minutes] = []
    for start, end in ranges:
        cursor = start
        for cut_start, cut_end in removed:
            if cut_end <= cursor or cut_start >= end:
                continue
            if cut_start > cursor:
                remaining.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
        if cursor < end:
            remaining.append((cursor, end))
    return remaining


def open_hours_on(
    availability: Availability,
    day: date,
    mode: VisitMode,
    holidays_calendar: Container[date] = NO_HOLIDAYS,
) -> list[Minutes]:
    """Disjoint (start, end) local minutes open on `day` for `mode`, after every exception."""
    exceptions = [item for item in availability.exceptions_on(day) if item.mode.covers(mode)]
    weekly = [
        (rule.start, rule.end)
        for rule in availability.weekly
        if rule.weekday == day.isoweekday() and rule.mode.covers(mode)
    ]
    if day in holidays_calendar:
        regular: list[Minutes] = []
        for opening in exceptions:
            if opening.kind is ExceptionKind.OPEN_ON_HOLIDAY:
                regular.extend(weekly if opening.hours is None else [opening.hours])
    else:
        regular = weekly
    closed = _merge(
        item.hours or (0, MINUTES_PER_DAY)
        for item in exceptions
        if item.kind is ExceptionKind.CLOSED
    )
    # Closures remove regular hours; extra hours entered for the same day are kept, so "closed
    # all day, extra hours 14:00-16:00" means working only that afternoon.
    extra = [item.hours for item in exceptions if item.kind is ExceptionKind.EXTRA_HOURS]
    return _merge(_subtract(_merge(regular), closed) + [hours for hours in extra if hours])


@dataclass(frozen=True, slots=True)
class LocalWindow:
    """One stretch of open hours on a local date, with the instants that bound it."""

    day: date
    start_minute: int
    end_minute: int
    start: datetime
    end: datetime


def local_windows(
    availability: Availability,
    zone: ZoneInfo,
    mode: VisitMode,
    days: Iterable[date],
    holidays_calendar: Container[date] = NO_HOLIDAYS,
) -> list[LocalWindow]:
    windows: list[LocalWindow] = []
    for day in days:
        for start_minute, end_minute in open_hours_on(availability, day, mode, holidays_calendar):
            start = wall_to_instant(wall_datetime(day, start_minute, zone))
            end = wall_to_instant(wall_datetime(day, end_minute, zone))
            if end > start:
                windows.append(LocalWindow(day, start_minute, end_minute, start, end))
    return windows


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _local_dates_touching(range_start: datetime, range_end: datetime, zone: ZoneInfo) -> list[date]:
    first = range_start.astimezone(zone).date()
    last = (range_end - timedelta(microseconds=1)).astimezone(zone).date()
    return _days(first, last)


def free_windows(
    availability: Availability,
    zone: ZoneInfo,
    mode: VisitMode,
    range_start: datetime,
    range_end: datetime,
    busy_intervals: Iterable[Interval] = (),
    holidays_calendar: Container[date] = NO_HOLIDAYS,
) -> list[Interval]:
    """Open time between two instants, as UTC intervals, with busy time removed.

    Used for interpreters: their own rules in their own zone (and usually no Korean holidays),
    minus the visits they already interpret; the union over interpreters of a language is what
    `compute_slots` takes as `interpreter_windows`.
    """
    range_start = ensure_aware(range_start, "range_start")
    range_end = ensure_aware(range_end, "range_end")
    if range_end <= range_start:
        return []
    busy = IntervalSet(busy_intervals)
    days = _local_dates_touching(range_start, range_end, zone)
    free: list[Interval] = []
    for window in local_windows(availability, zone, mode, days, holidays_calendar):
        start, end = max(window.start, range_start), min(window.end, range_end)
        if start < end:
            free.extend(busy.subtract_from(Interval(start, end)))
    return list(IntervalSet(free).intervals)


def _grid_in_window(
    window: LocalWindow, zone: ZoneInfo, visit_type: VisitType, mode: VisitMode
) -> list[Slot]:
    slots: list[Slot] = []
    previous_occupied_until: datetime | None = None
    duration_minutes, step_minutes = visit_type.duration_minutes, visit_type.step_minutes
    minute = window.start_minute
    while minute + duration_minutes <= window.end_minute:
        local = wall_datetime(window.day, minute, zone)
        minute += step_minutes
        if classify_wall_time(local) is WallTimeKind.NONEXISTENT:
            continue
        start = local.replace(fold=0).astimezone(UTC)
        end = start + visit_type.duration
        fits = end <= window.end
        clear_of_previous = previous_occupied_until is None or start >= previous_occupied_until
        previous_occupied_until = end + visit_type.buffer_after
        if fits and clear_of_previous:
            slots.append(
                Slot(
                    start=start,
                    end=end,
                    visit_type=visit_type.code,
                    mode=mode,
                    buffer_after=visit_type.buffer_after,
                )
            )
    return slots


def slot_grid(
    availability: Availability,
    zone: ZoneInfo,
    visit_type: VisitType,
    mode: VisitMode,
    days: Iterable[date],
    holidays_calendar: Container[date] = NO_HOLIDAYS,
) -> list[Slot]:
    """Every slot the rules allow on the given local dates, ignoring bookings and the clock."""
    ensure_mode_offered(visit_type, mode)
    slots: list[Slot] = []
    for window in local_windows(availability, zone, mode, days, holidays_calendar):
        slots.extend(_grid_in_window(window, zone, visit_type, mode))
    slots.sort(key=lambda slot: slot.start)
    return slots


def validate_date_range(start_date: date, end_date: date, max_days: int = MAX_SEARCH_DAYS) -> None:
    """Raise INVALID_RANGE (end before start) or RANGE_TOO_LONG (over `max_days` days)."""
    if end_date < start_date:
        raise SchedulingError(
            ErrorCode.INVALID_RANGE,
            N_("The end date {end} is before the start date {start}."),
            field="end",
            start=start_date.isoformat(),
            end=end_date.isoformat(),
        )
    days = (end_date - start_date).days + 1
    if days > max_days:
        raise SchedulingError(
            ErrorCode.RANGE_TOO_LONG,
            N_("A search covers at most {max_days} days; this one covers {days}."),
            field="end",
            max_days=max_days,
            days=days,
        )


def search_interval(start_date: date, end_date: date, zone: ZoneInfo) -> Interval | None:
    """The instants from the start of `start_date` to the end of `end_date` (inclusive) in `zone`;
    None when the zone skipped every one of those days (Pacific/Kiritimati's 1994-12-31): there
    is no instant to search, and a search of them finds nothing.

    Callers use it to load busy time and interpreter windows for a search.
    """
    start = local_day_start(start_date, zone)
    end = local_day_start(end_date + timedelta(days=1), zone)
    return Interval(start, end) if end > start else None


def _select(
    grid: Iterable[Slot],
    *,
    busy: IntervalSet,
    now: datetime,
    min_notice: timedelta,
    interpreter_windows: Sequence[Interval] | None,
    require_interpreter: bool,
) -> list[Slot]:
    earliest = now + min_notice
    interpreters = IntervalSet(interpreter_windows or ())
    chosen: list[Slot] = []
    for slot in grid:
        if slot.start < earliest or busy.overlaps(slot.start, slot.occupied_until):
            continue
        interpreter_free = interpreter_windows is not None and interpreters.covers(
            slot.start, slot.end
        )
        if interpreter_windows is not None and require_interpreter and not interpreter_free:
            continue
        chosen.append(replace(slot, interpreter_available=True) if interpreter_free else slot)
    return chosen


def compute_slots(
    availability: Availability,
    zone: ZoneInfo,
    visit_type: VisitType,
    mode: VisitMode,
    start_date: date,
    end_date: date,
    busy_intervals: Iterable[Interval],
    holidays_calendar: Container[date],
    now: datetime,
    interpreter_windows: Sequence[Interval] | None = None,
    *,
    range_zone: ZoneInfo | None = None,
    require_interpreter: bool = True,
    min_notice: timedelta = timedelta(0),
    max_days: int = MAX_SEARCH_DAYS,
) -> list[Slot]:
    """Free slots starting between `start_date` and `end_date` (inclusive), ordered by start.

    - `zone`: the availability owner's zone (the institution's), in which rules are read;
    - `range_zone`: the zone the two dates are meant in (the patient's `tz`; default `zone`);
    - `busy_intervals`: time already taken (each booking's start to its end plus buffer);
    - `interpreter_windows`: None when no interpreter is needed; otherwise the free time of every
      interpreter of the patient's language: slots are kept only if one covers the whole visit
      (`require_interpreter=False` keeps all slots and only marks `interpreter_available`).
    """
    validate_date_range(start_date, end_date, max_days)
    now = ensure_aware(now, "now")
    requested = search_interval(start_date, end_date, range_zone or zone)
    if requested is None:
        return []
    days = _local_dates_touching(requested.start, requested.end, zone)
    grid = [
        slot
        for slot in slot_grid(availability, zone, visit_type, mode, days, holidays_calendar)
        if requested.start <= slot.start < requested.end
    ]
    return _select(
        grid,
        busy=IntervalSet(busy_intervals),
        now=now,
        min_notice=min_notice,
        interpreter_windows=interpreter_windows,
        require_interpreter=require_interpreter,
    )


def is_on_grid(
    availability: Availability,
    zone: ZoneInfo,
    visit_type: VisitType,
    mode: VisitMode,
    start: datetime,
    holidays_calendar: Container[date] = NO_HOLIDAYS,
) -> bool:
    """True if the rules offer a slot of `visit_type` starting exactly at `start`."""
    return _grid_slot_at(availability, zone, visit_type, mode, start, holidays_calendar) is not None


def _grid_slot_at(
    availability: Availability,
    zone: ZoneInfo,
    visit_type: VisitType,
    mode: VisitMode,
    start: datetime,
    holidays_calendar: Container[date],
) -> Slot | None:
    start = ensure_aware(start, "start")
    day = start.astimezone(zone).date()
    for slot in slot_grid(availability, zone, visit_type, mode, [day], holidays_calendar):
        if slot.start == start:
            return slot
    return None


def validate_booking_start(
    availability: Availability,
    zone: ZoneInfo,
    visit_type: VisitType,
    mode: VisitMode,
    start: datetime,
    holidays_calendar: Container[date],
    now: datetime,
    busy_intervals: Iterable[Interval] = (),
    interpreter_windows: Sequence[Interval] | None = None,
    *,
    min_notice: timedelta = timedelta(0),
) -> Slot:
    """The slot at `start` if it can be booked now, else a SchedulingError saying why.

    Checks, in order: the mode (MODE_NOT_OFFERED), the clock (SLOT_IN_PAST, SLOT_TOO_SOON), the
    rules (OUTSIDE_AVAILABILITY, SLOT_NOT_ON_GRID), bookings (SLOT_TAKEN) and, when
    `interpreter_windows` is given, an interpreter (INTERPRETER_UNAVAILABLE).
    """
    start = ensure_aware(start, "start")
    now = ensure_aware(now, "now")
    ensure_mode_offered(visit_type, mode)
    if start < now:
        raise SchedulingError(
            ErrorCode.SLOT_IN_PAST,
            N_("This time has already passed."),
            field="start",
        )
    if start < now + min_notice:
        raise SchedulingError(
            ErrorCode.SLOT_TOO_SOON,
            N_("Appointments must be booked at least {minutes} minutes ahead."),
            field="start",
            minutes=int(min_notice // timedelta(minutes=1)),
        )
    slot = _grid_slot_at(availability, zone, visit_type, mode, start, holidays_calendar)
    if slot is None:
        visit = Interval(start, start + visit_type.duration)
        day = start.astimezone(zone).date()
        windows = local_windows(availability, zone, mode, [day], holidays_calendar)
        if any(Interval(window.start, window.end).contains(visit) for window in windows):
            raise SchedulingError(
                ErrorCode.SLOT_NOT_ON_GRID,
                N_("Appointments start on the schedule's grid; choose one of the offered times."),
                field="start",
            )
        raise SchedulingError(
            ErrorCode.OUTSIDE_AVAILABILITY,
            N_("The practitioner is not available at this time."),
            field="start",
        )
    if IntervalSet(busy_intervals).overlaps(slot.start, slot.occupied_until):
        raise SchedulingError(
            ErrorCode.SLOT_TAKEN,
            N_("This time has just been taken."),
            field="start",
        )
    if interpreter_windows is not None:
        if not IntervalSet(interpreter_windows).covers(slot.start, slot.end):
            raise SchedulingError(
                ErrorCode.INTERPRETER_UNAVAILABLE,
                N_("No interpreter is free at this time."),
                field="start",
            )
        return replace(slot, interpreter_available=True)
    return slot


def next_free_slots(
    availability: Availability,
    zone: ZoneInfo,
    visit_type: VisitType,
    mode: VisitMode,
    after: datetime,
    busy_intervals: Iterable[Interval],
    holidays_calendar: Container[date],
    now: datetime,
    count: int = 3,
    interpreter_windows: Sequence[Interval] | None = None,
    *,
    horizon_days: int = MAX_SEARCH_DAYS,
    require_interpreter: bool = True,
    min_notice: timedelta = timedelta(0),
) -> list[Slot]:
    """The first `count` free slots starting at or after `after` (and not before `now`).

    For the 409 answer to a taken slot: pass the taken start as `after`. Looks ahead at most
    `horizon_days` local dates; interpreter windows must cover that horizon to be useful.
    """
    after = ensure_aware(after, "after")
    now = ensure_aware(now, "now")
    earliest = max(after, now)
    busy = IntervalSet(busy_intervals)
    first_day = earliest.astimezone(zone).date()
    found: list[Slot] = []
    chunk_days = 7
    for offset in range(0, horizon_days, chunk_days):
        chunk_first = first_day + timedelta(days=offset)
        chunk_last = first_day + timedelta(days=min(offset + chunk_days, horizon_days) - 1)
        grid = slot_grid(
            availability, zone, visit_type, mode, _days(chunk_first, chunk_last), holidays_calendar
        )
        found.extend(
            _select(
                (slot for slot in grid if slot.start >= earliest),
                busy=busy,
                now=now,
                min_notice=min_notice,
                interpreter_windows=interpreter_windows,
                require_interpreter=require_interpreter,
            )
        )
        if len(found) >= count:
            break
    return found[:count]
