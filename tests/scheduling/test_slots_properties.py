"""Properties of slot search over random zones, dates, rules and bookings.

The oracles here do not reuse the engine: availability is checked minute by minute through
plain UTC -> local conversion, and the wall-clock minutes that exist on a day are found by
walking the day's instants.
"""

from __future__ import annotations

import itertools
import os
import random
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaejin.scheduling.model import (
    VISIT_TYPES,
    Availability,
    AvailabilityException,
    ExceptionKind,
    HoursMode,
    Interval,
    Slot,
    VisitMode,
    VisitType,
    WeeklyRule,
)
from jaejin.scheduling.schemas import SlotOut
from jaejin.scheduling.slots import (
    compute_slots,
    free_windows,
    is_on_grid,
    search_interval,
    validate_booking_start,
)
from jaejin.scheduling.zones import (
    WallTimeKind,
    _zone_names_by_folded_name,
    classify_wall_time,
    wall_datetime,
    wall_to_instant,
)

ALL_ZONES = sorted(_zone_names_by_folded_name().values())
NAMED_ZONES = [
    "Asia/Seoul", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu",
    "Pacific/Kiritimati", "Pacific/Pago_Pago", "America/Santiago", "America/Havana",
    "Pacific/Chatham", "Asia/Tehran", "Europe/Dublin", "Africa/Casablanca", "Pacific/Apia",
]
zones = st.one_of(st.sampled_from(NAMED_ZONES), st.sampled_from(ALL_ZONES)).map(ZoneInfo)
days = st.dates(min_value=date(1975, 1, 1), max_value=date(2045, 12, 31))
MODES = list(VisitMode)
# A deeper search on demand: JAEJIN_PROPERTY_EXAMPLES=5000 pytest tests/scheduling
EXAMPLES = int(os.environ.get("JAEJIN_PROPERTY_EXAMPLES", "100"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def video_or_in_person_type(mode: VisitMode) -> st.SearchStrategy[VisitType]:
    return st.sampled_from([visit for visit in VISIT_TYPES if mode in visit.modes])


@st.composite
def disjoint_hours(draw: st.DrawFn, most: int) -> list[tuple[int, int]]:
    cuts = draw(
        st.lists(st.integers(0, 288).map(lambda five: five * 5), max_size=most * 2, unique=True)
    )
    cuts.sort()
    return [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]


@st.composite
def availabilities(draw: st.DrawFn, first_day: date, span: int) -> Availability:
    rules: list[WeeklyRule] = []
    for weekday in range(1, 8):
        for start, end in draw(disjoint_hours(3)):
            rules.append(WeeklyRule(weekday, start, end, draw(st.sampled_from(list(HoursMode)))))
    exceptions: list[AvailabilityException] = []
    for _ in range(draw(st.integers(0, 4))):
        day = first_day + timedelta(days=draw(st.integers(-1, span)))
        kind = draw(st.sampled_from(list(ExceptionKind)))
        hours = draw(disjoint_hours(1))
        if kind is ExceptionKind.EXTRA_HOURS and not hours:
            continue
        start, end = hours[0] if hours else (None, None)
        exceptions.append(
            AvailabilityException(
                day=day, kind=kind, start=start, end=end,
                mode=draw(st.sampled_from(list(HoursMode))),
            )
        )
    return Availability(weekly=tuple(rules), exceptions=tuple(exceptions))


@cache
def clock_changes_in_year(zone_name: str, year: int) -> tuple[date, ...]:
    """Local dates of `year` during which the zone's UTC offset changes."""
    zone = ZoneInfo(zone_name)
    first = date(year, 1, 1)
    midnights = [
        datetime.combine(first + timedelta(days=offset), datetime.min.time(), tzinfo=zone)
        for offset in range(367)
    ]
    return tuple(
        today.date()
        for today, tomorrow in itertools.pairwise(midnights)
        if today.utcoffset() != tomorrow.utcoffset()
    )


@st.composite
def search_days(draw: st.DrawFn, zone: ZoneInfo) -> date:
    """Any date, or (half the time) a date on which the zone's clocks change, when it has one."""
    if draw(st.booleans()):
        changes = clock_changes_in_year(zone.key, draw(st.integers(1975, 2045)))
        if changes:
            return draw(st.sampled_from(changes)) - timedelta(days=draw(st.integers(0, 2)))
    return draw(days)


@st.composite
def searches(draw: st.DrawFn) -> dict[str, object]:
    zone = draw(zones)
    first_day = draw(search_days(zone))
    span = draw(st.integers(0, 6))
    mode = draw(st.sampled_from(MODES))
    visit_type = draw(video_or_in_person_type(mode))
    availability = draw(availabilities(first_day, span))
    holidays = frozenset(
        first_day + timedelta(days=offset)
        for offset in draw(st.lists(st.integers(-1, span + 1), max_size=3))
    )
    base = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    busy = [
        Interval(base + timedelta(minutes=start), base + timedelta(minutes=start + length))
        for start, length in draw(
            st.lists(
                st.tuples(st.integers(-1440, (span + 2) * 1440), st.integers(1, 240)),
                max_size=6,
            )
        )
    ]
    now = base + timedelta(minutes=draw(st.integers(-3 * 1440, (span + 1) * 1440)))
    return {
        "availability": availability,
        "zone": zone,
        "visit_type": visit_type,
        "mode": mode,
        "start_date": first_day,
        "end_date": first_day + timedelta(days=span),
        "busy_intervals": busy,
        "holidays_calendar": holidays,
        "now": now,
    }


def run(search: dict[str, object], **overrides: object) -> list[Slot]:
    arguments = dict(search) | overrides
    return compute_slots(**arguments)  # type: ignore[arg-type]


def open_minutes(
    availability: Availability, day: date, mode: VisitMode, holidays: frozenset[date]
) -> set[int]:
    """The minutes of `day` open for `mode`, by sets of minutes rather than intervals."""
    applicable = [item for item in availability.exceptions_on(day) if item.mode.covers(mode)]
    weekly: set[int] = set()
    for rule in availability.weekly:
        if rule.weekday == day.isoweekday() and rule.mode.covers(mode):
            weekly |= set(range(rule.start, rule.end))
    if day in holidays:
        regular: set[int] = set()
        for item in applicable:
            if item.kind is ExceptionKind.OPEN_ON_HOLIDAY:
                regular |= weekly if item.hours is None else set(range(*item.hours))
    else:
        regular = weekly
    for item in applicable:
        if item.kind is ExceptionKind.CLOSED:
            regular -= set(range(*(item.hours or (0, 1440))))
    for item in applicable:
        if item.kind is ExceptionKind.EXTRA_HOURS and item.hours:
            regular |= set(range(*item.hours))
    return regular


def runs(minutes: set[int]) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for minute in sorted(minutes):
        if found and found[-1][1] == minute:
            found[-1] = (found[-1][0], minute + 1)
        else:
            found.append((minute, minute + 1))
    return found


@given(searches())
@PROPERTY_SETTINGS
def test_every_slot_lies_inside_open_hours_outside_busy_time_and_after_now(search) -> None:
    slots = run(search)
    zone: ZoneInfo = search["zone"]
    for slot in slots:
        assert slot.start >= search["now"]
        assert slot.end - slot.start == search["visit_type"].duration
        for busy in search["busy_intervals"]:
            assert not (slot.start < busy.end and busy.start < slot.occupied_until)
        local_start = slot.start.astimezone(zone)
        day = local_start.date()
        open_now = open_minutes(
            search["availability"], day, search["mode"], search["holidays_calendar"]
        )
        assert local_start.hour * 60 + local_start.minute in open_now
        # The visit runs without a break inside one stretch of open hours; across a clock change
        # the stretch is the continuous time from its first wall-clock minute to its last.
        assert any(
            wall_to_instant(wall_datetime(day, start, zone))
            <= slot.start
            < slot.end
            <= wall_to_instant(wall_datetime(day, end, zone))
            for start, end in runs(open_now)
        )
        if local_start.utcoffset() == slot.end.astimezone(zone).utcoffset():
            minute = slot.start
            while minute < slot.end:
                local = minute.astimezone(zone)
                assert local.date() == day
                assert local.hour * 60 + local.minute in open_now
                minute += timedelta(minutes=1)


@given(searches())
@PROPERTY_SETTINGS
def test_no_two_slots_overlap_and_they_come_in_order(search) -> None:
    slots = run(search)

    for earlier, later in itertools.pairwise(slots):
        assert earlier.end <= later.start


@given(searches(), st.randoms(use_true_random=False))
@PROPERTY_SETTINGS
def test_slot_search_is_deterministic_whatever_the_order_of_busy_time(
    search, shuffler: random.Random
) -> None:
    shuffled = list(search["busy_intervals"])
    shuffler.shuffle(shuffled)

    assert run(search) == run(search, busy_intervals=shuffled) == run(search)


@given(searches(), st.integers(0, 6))
@PROPERTY_SETTINGS
def test_splitting_a_search_in_two_loses_and_doubles_nothing(search, cut: int) -> None:
    first, last = search["start_date"], search["end_date"]
    middle = min(first + timedelta(days=cut), last)
    if middle == last:
        return
    whole = run(search)
    halves = run(search, end_date=middle) + run(search, start_date=middle + timedelta(days=1))

    assert whole == halves


@given(searches(), zones)
@PROPERTY_SETTINGS
def test_every_slot_is_in_the_requested_zones_dates_when_searched_from_elsewhere(
    search, patient_zone: ZoneInfo
) -> None:
    slots = run(search, range_zone=patient_zone)

    requested = search_interval(search["start_date"], search["end_date"], patient_zone)
    for slot in slots:
        assert requested.start <= slot.start < requested.end


@given(searches(), zones, st.sampled_from(["en", "ko"]))
@PROPERTY_SETTINGS
def test_a_slot_shown_in_any_zone_and_read_back_is_the_same_instant(
    search, patient_zone: ZoneInfo, lang: str
) -> None:
    zone: ZoneInfo = search["zone"]
    for slot in run(search)[:5]:
        wire = SlotOut.from_slot(slot, zone, patient_zone, lang).model_dump(mode="json")
        start_local = datetime.fromisoformat(wire["start_local"])
        assert start_local == slot.start
        assert datetime.fromisoformat(wire["start"]) == slot.start
        assert datetime.fromisoformat(wire["end_local"]) == slot.end
        assert start_local.utcoffset() == slot.start.astimezone(patient_zone).utcoffset()
        institution_offset = slot.start.astimezone(zone).utcoffset()
        assert datetime.fromisoformat(wire["start"]).utcoffset() == institution_offset


instants = st.datetimes(
    min_value=datetime(1975, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive by design
    max_value=datetime(2045, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(instants, zones)
@settings(max_examples=2 * EXAMPLES, deadline=None)
def test_converting_an_instant_to_wall_time_and_back_returns_it_unless_it_is_a_repeated_hour(
    instant: datetime, zone: ZoneInfo
) -> None:
    local = instant.astimezone(zone)

    assert local.astimezone(UTC) == instant
    back = wall_to_instant(local.replace(fold=0))
    if classify_wall_time(local) is WallTimeKind.AMBIGUOUS and local.fold == 1:
        # The second occurrence of a repeated wall time maps to the first, never to a third.
        assert back < instant
        assert back.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None)
    else:
        assert back == instant


@given(searches())
@PROPERTY_SETTINGS
def test_every_offered_slot_can_be_booked_as_offered(search) -> None:
    for slot in run(search)[:5]:
        assert is_on_grid(
            search["availability"], search["zone"], search["visit_type"], search["mode"],
            slot.start, search["holidays_calendar"],
        )
        booked = validate_booking_start(
            search["availability"], search["zone"], search["visit_type"], search["mode"],
            slot.start, search["holidays_calendar"], search["now"], search["busy_intervals"],
        )
        assert booked == slot


@given(searches(), zones, st.data())
@PROPERTY_SETTINGS
def test_with_an_interpreter_every_slot_is_covered_by_their_free_time(
    search, interpreter_zone: ZoneInfo, data: st.DataObject
) -> None:
    requested = search_interval(search["start_date"], search["end_date"], search["zone"])
    interpreter = data.draw(availabilities(search["start_date"], 6))
    windows = free_windows(
        interpreter, interpreter_zone, search["mode"], requested.start, requested.end,
        busy_intervals=search["busy_intervals"][:2],
    )
    required = run(search, interpreter_windows=windows)
    marked = run(search, interpreter_windows=windows, require_interpreter=False)

    for slot in required:
        assert any(window.start <= slot.start and slot.end <= window.end for window in windows)
    assert required == [slot for slot in marked if slot.interpreter_available]
    assert [times_of(slot) for slot in marked] == [times_of(slot) for slot in run(search)]


def times_of(slot: Slot) -> tuple[datetime, datetime]:
    return (slot.start, slot.end)


# --- Clock-change days: nothing lost, nothing doubled -------------------------------------------

# Zones whose clocks change away from midnight, so a whole-day window keeps its two ends.
DST_ZONES = [
    "America/New_York", "Europe/London", "Australia/Lord_Howe", "Australia/Sydney",
    "Europe/Berlin", "America/Los_Angeles", "Pacific/Auckland", "America/St_Johns",
]


@cache
def clock_change_days(zone_name: str) -> tuple[date, ...]:
    zone = ZoneInfo(zone_name)
    found: list[date] = []
    day = date(2000, 1, 1)
    while day < date(2040, 1, 1):
        today = datetime.combine(day, datetime.min.time(), tzinfo=zone).utcoffset()
        tomorrow = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
        if today != tomorrow.utcoffset():
            found.append(day)
        day += timedelta(days=1)
    return tuple(found)


def existing_wall_minutes(day: date, zone: ZoneInfo) -> set[int]:
    """Every local minute of `day` that some instant shows, found by walking instants."""
    instant = datetime.combine(day, datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
    last = instant + timedelta(days=3)
    seen: set[int] = set()
    while instant < last:
        local = instant.astimezone(zone)
        if local.date() == day:
            seen.add(local.hour * 60 + local.minute)
        instant += timedelta(minutes=1)
    return seen


@st.composite
def clock_change_searches(draw: st.DrawFn) -> tuple[ZoneInfo, date, VisitType, int]:
    zone_name = draw(st.sampled_from(DST_ZONES))
    day = draw(st.sampled_from(clock_change_days(zone_name)))
    duration = draw(st.sampled_from([5, 10, 15, 30]))
    step = draw(st.sampled_from([step for step in (15, 30) if step >= duration]))
    visit_type = VisitType(
        code="probe", duration=timedelta(minutes=duration),
        buffer_after=timedelta(minutes=step - duration),
        modes=frozenset({VisitMode.VIDEO}), name="probe",
    )
    anchor = draw(st.integers(0, 40)) * 15
    return ZoneInfo(zone_name), day, visit_type, anchor


@given(clock_change_searches())
@settings(max_examples=EXAMPLES, deadline=None)
def test_on_a_clock_change_day_every_existing_grid_time_is_offered_exactly_once(case) -> None:
    zone, day, visit_type, anchor = case
    availability = Availability(weekly=(WeeklyRule(day.isoweekday(), anchor, 1440),))
    slots = compute_slots(
        availability, zone, visit_type, VisitMode.VIDEO, day, day, [], frozenset(),
        datetime(1990, 1, 1, tzinfo=UTC),
    )

    offered = [slot.start.astimezone(zone) for slot in slots]
    offered_minutes = [local.hour * 60 + local.minute for local in offered]
    exists = existing_wall_minutes(day, zone)
    grid = range(anchor, 1440 - visit_type.duration_minutes + 1, visit_type.step_minutes)
    expected = [minute for minute in grid if minute in exists]

    assert all(local.date() == day for local in offered)
    assert len(offered_minutes) == len(set(offered_minutes))
    assert offered_minutes == expected
