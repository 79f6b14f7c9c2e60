"""The booking service's cached slot grids give exactly what the pure slot search gives."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.directory.store import Institution, Practitioner
from jaejin.scheduling import service
from jaejin.scheduling.model import (
    VISIT_TYPES,
    Availability,
    AvailabilityException,
    ExceptionKind,
    HoursMode,
    Interval,
    WeeklyRule,
)
from jaejin.scheduling.public_holidays import KOREAN_PUBLIC_HOLIDAYS
from jaejin.scheduling.slots import compute_slots, search_interval

ZONES = [ZoneInfo(name) for name in (
    "Asia/Seoul", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu",
    "Pacific/Pago_Pago", "Pacific/Kiritimati", "Asia/Ulaanbaatar")]


@st.composite
def hours(draw: st.DrawFn) -> tuple[int, int]:
    start = draw(st.integers(0, 1439 - 5))
    end = draw(st.integers(start + 5, 1440))
    return start, end


@st.composite
def availabilities(draw: st.DrawFn) -> Availability:
    rules = []
    for weekday in draw(st.sets(st.integers(1, 7), max_size=7)):
        start, end = draw(hours())
        rules.append(WeeklyRule(weekday, start, end, draw(st.sampled_from(list(HoursMode)))))
    exceptions = []
    for _ in range(draw(st.integers(0, 3))):
        day = date(2026, 3, 1) + timedelta(days=draw(st.integers(0, 300)))
        kind = draw(st.sampled_from(list(ExceptionKind)))
        span = draw(st.one_of(st.none(), hours())) if kind is not ExceptionKind.EXTRA_HOURS \
            else draw(hours())
        exceptions.append(AvailabilityException(
            day=day, kind=kind, start=span[0] if span else None, end=span[1] if span else None,
            mode=draw(st.sampled_from(list(HoursMode)))))
    return Availability(weekly=tuple(rules), exceptions=tuple(exceptions))


@settings(max_examples=200, deadline=None)
@given(
    availability=availabilities(),
    zone=st.sampled_from(ZONES),
    range_zone=st.sampled_from(ZONES),
    choice=st.sampled_from([(visit, mode) for visit in VISIT_TYPES for mode in visit.modes]),
    first=st.dates(date(2026, 3, 1), date(2026, 12, 31)),
    span=st.integers(0, 20),
    now_offset_hours=st.integers(-48, 24 * 25),
    busy=st.lists(st.tuples(st.integers(0, 24 * 25 * 12), st.integers(1, 36)), max_size=6),
)
def test_cached_grids_offer_the_same_slots_as_the_pure_search(
        availability, zone, range_zone, choice, first, span, now_offset_hours, busy):
    visit_type, mode = choice
    last = first + timedelta(days=span)
    schedule = service.Schedule(
        institution=Institution(id=1, time_zone=zone.key), practitioner=Practitioner(id=1),
        zone=zone, availability=availability, visit_type=visit_type, mode=mode)
    origin = datetime(first.year, first.month, first.day, tzinfo=UTC)
    now = origin + timedelta(hours=now_offset_hours)
    taken = [Interval(origin + timedelta(minutes=5 * at), origin + timedelta(minutes=5 * (at + n)))
             for at, n in busy]
    expected = compute_slots(availability, zone, visit_type, mode, first, last, taken,
                             KOREAN_PUBLIC_HOLIDAYS, now, None, range_zone=range_zone)
    requested = search_interval(first, last, range_zone)
    wire = service.slots_wire(expected, zone, range_zone)
    # Twice: the second answer comes from the cache.
    for _ in range(2):
        assert service.free_grid_slots(schedule, requested, now=now, busy=taken) == expected
        assert service.wire_of_free_slots(schedule, requested, range_zone, now=now,
                                          busy=taken) == wire
