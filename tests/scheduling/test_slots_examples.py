from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from jaejin.scheduling.errors import ErrorCode, SchedulingError
from jaejin.scheduling.model import (
    VISIT_TYPES_BY_CODE,
    Availability,
    ExceptionKind,
    HoursMode,
    Interval,
    VisitMode,
    occupied_interval,
)
from jaejin.scheduling.public_holidays import KOREAN_PUBLIC_HOLIDAYS, NO_HOLIDAYS
from jaejin.scheduling.schemas import SlotOut
from jaejin.scheduling.slots import (
    compute_slots,
    free_windows,
    is_on_grid,
    next_free_slots,
    search_interval,
    validate_booking_start,
)

from .builders import (
    KATHMANDU,
    KIRITIMATI,
    LONDON,
    LONG_AGO,
    LORD_HOWE,
    NEW_YORK,
    PAGO_PAGO,
    SEOUL,
    ULAANBAATAR,
    at,
    every_day,
    exception,
    local_clock,
    weekdays_only,
    weekly,
)

FOLLOW_UP = VISIT_TYPES_BY_CODE["follow_up"]
INTERNATIONAL = VISIT_TYPES_BY_CODE["international_follow_up"]
IN_PERSON = VISIT_TYPES_BY_CODE["in_person_follow_up"]
SURGEON = weekdays_only("09:00", "12:00")


def seoul_slots(availability: Availability, first: date, last: date, **options: object) -> list:
    kwargs: dict[str, object] = {
        "busy_intervals": [],
        "holidays_calendar": KOREAN_PUBLIC_HOLIDAYS,
        "now": LONG_AGO,
    }
    kwargs.update(options)
    visit_type = kwargs.pop("visit_type", FOLLOW_UP)
    mode = kwargs.pop("mode", VisitMode.VIDEO)
    return compute_slots(availability, SEOUL, visit_type, mode, first, last, **kwargs)  # type: ignore[arg-type]


def test_a_seoul_morning_is_the_previous_evening_in_new_york_before_the_us_clock_change() -> None:
    slots = seoul_slots(SURGEON, date(2026, 3, 3), date(2026, 3, 3))

    assert len(slots) == 12
    first = SlotOut.from_slot(slots[0], SEOUL, NEW_YORK, "en")
    wire = first.model_dump(mode="json")
    assert wire["start"] == "2026-03-03T09:00:00+09:00"
    assert wire["start_local"] == "2026-03-02T19:00:00-05:00"
    assert wire["end"] == "2026-03-03T09:15:00+09:00"
    assert first.label == "Tue 09:00 Seoul = Mon 19:00 New York"
    assert local_clock(slots[-1].start, SEOUL) == "2026-03-03 11:45 +0900"


def test_the_same_seoul_morning_moves_an_hour_in_new_york_after_the_us_clock_change() -> None:
    slots = seoul_slots(SURGEON, date(2026, 3, 10), date(2026, 3, 10))

    assert len(slots) == 12
    first = SlotOut.from_slot(slots[0], SEOUL, NEW_YORK, "en")
    assert first.model_dump(mode="json")["start_local"] == "2026-03-09T20:00:00-04:00"
    assert first.label == "Tue 09:00 Seoul = Mon 20:00 New York"
    assert SlotOut.from_slot(slots[0], SEOUL, NEW_YORK, "ko").label == (
        "서울 (화) 09:00 = 뉴욕 (월) 20:00"
    )


def test_a_new_york_patient_asking_for_their_monday_sees_the_seoul_tuesday_morning() -> None:
    slots = seoul_slots(SURGEON, date(2026, 3, 2), date(2026, 3, 2), range_zone=NEW_YORK)

    assert [local_clock(slot.start, SEOUL) for slot in slots][:2] == [
        "2026-03-03 09:00 +0900",
        "2026-03-03 09:15 +0900",
    ]
    assert all(slot.start.astimezone(NEW_YORK).date() == date(2026, 3, 2) for slot in slots)
    assert len(slots) == 12


def test_kathmandu_quarter_hour_offset_is_shown_to_the_minute() -> None:
    slots = seoul_slots(SURGEON, date(2026, 6, 2), date(2026, 6, 2))

    out = SlotOut.from_slot(slots[0], SEOUL, KATHMANDU, "en")
    assert out.model_dump(mode="json")["start_local"] == "2026-06-02T05:45:00+05:45"
    assert out.label == "09:00 Seoul = 05:45 Kathmandu"


def test_an_institution_in_kathmandu_keeps_its_grid_on_local_quarter_hours() -> None:
    slots = compute_slots(
        every_day("10:00", "11:00"), KATHMANDU, FOLLOW_UP, VisitMode.VIDEO,
        date(2026, 6, 2), date(2026, 6, 2), [], NO_HOLIDAYS, LONG_AGO,
    )

    assert [slot.start.strftime("%H:%M") for slot in slots] == ["04:15", "04:30", "04:45", "05:00"]


def test_kiritimati_and_pago_pago_are_two_calendar_days_apart() -> None:
    # Wednesday 00:00-02:00 on Kiritimati (+14) is Monday 23:00-01:00 in Pago Pago (-11).
    clinic = Availability(weekly=weekly([3], "00:00", "02:00"))
    slots = compute_slots(
        clinic, KIRITIMATI, INTERNATIONAL, VisitMode.VIDEO,
        date(2026, 3, 9), date(2026, 3, 9), [], NO_HOLIDAYS, LONG_AGO, range_zone=PAGO_PAGO,
    )

    assert [local_clock(slot.start, PAGO_PAGO) for slot in slots] == [
        "2026-03-09 23:00 -1100",
        "2026-03-09 23:40 -1100",
    ]
    labels = [SlotOut.from_slot(slot, KIRITIMATI, PAGO_PAGO, "en").label for slot in slots]
    assert labels == [
        "Wed 00:00 Kiritimati = Mon 23:00 Pago Pago",
        "Wed 00:40 Kiritimati = Mon 23:40 Pago Pago",
    ]
    tuesday_in_pago_pago = compute_slots(
        clinic, KIRITIMATI, INTERNATIONAL, VisitMode.VIDEO,
        date(2026, 3, 10), date(2026, 3, 10), [], NO_HOLIDAYS, LONG_AGO, range_zone=PAGO_PAGO,
    )
    assert [local_clock(slot.start, KIRITIMATI) for slot in tuesday_in_pago_pago] == [
        "2026-03-11 01:20 +1400"
    ]


def test_the_day_kiritimati_skipped_has_no_slots_and_its_neighbours_do() -> None:
    slots = compute_slots(
        every_day("09:00", "10:00"), KIRITIMATI, FOLLOW_UP, VisitMode.VIDEO,
        date(1994, 12, 30), date(1995, 1, 1), [], NO_HOLIDAYS, datetime(1980, 1, 1, tzinfo=UTC),
    )

    days = sorted({slot.start.astimezone(KIRITIMATI).date() for slot in slots})
    assert days == [date(1994, 12, 30), date(1995, 1, 1)]
    assert len(slots) == 8


def test_a_search_of_only_the_day_kiritimati_skipped_finds_nothing() -> None:
    # Its first instant is the next day's first: the search covers no time at all.
    assert compute_slots(
        every_day("09:00", "10:00"), KIRITIMATI, FOLLOW_UP, VisitMode.VIDEO,
        date(1994, 12, 31), date(1994, 12, 31), [], NO_HOLIDAYS, datetime(1980, 1, 1, tzinfo=UTC),
    ) == []


def test_london_spring_forward_skips_the_missing_hour_without_losing_others() -> None:
    slots = compute_slots(
        every_day("00:00", "03:00"), LONDON, FOLLOW_UP, VisitMode.VIDEO,
        date(2026, 3, 29), date(2026, 3, 29), [], NO_HOLIDAYS, LONG_AGO,
    )

    assert [slot.start.astimezone(LONDON).strftime("%H:%M") for slot in slots] == [
        "00:00", "00:15", "00:30", "00:45", "02:00", "02:15", "02:30", "02:45",
    ]


def test_london_fall_back_offers_the_repeated_hour_once() -> None:
    slots = compute_slots(
        every_day("00:00", "03:00"), LONDON, FOLLOW_UP, VisitMode.VIDEO,
        date(2026, 10, 25), date(2026, 10, 25), [], NO_HOLIDAYS, LONG_AGO,
    )

    walls = [slot.start.astimezone(LONDON).strftime("%H:%M%z") for slot in slots]
    assert len(walls) == 12
    assert walls[4:8] == ["01:00+0100", "01:15+0100", "01:30+0100", "01:45+0100"]
    assert walls[8] == "02:00+0000"


def test_lord_howe_half_hour_clock_change_moves_slots_by_thirty_minutes() -> None:
    slots = compute_slots(
        every_day("01:00", "04:00"), LORD_HOWE, VISIT_TYPES_BY_CODE["tri_party_consultation"],
        VisitMode.VIDEO, date(2026, 10, 4), date(2026, 10, 4), [], NO_HOLIDAYS, LONG_AGO,
    )

    # Grid every hour from 01:00; 02:00 does not exist on that night (02:00 -> 02:30).
    assert [slot.start.astimezone(LORD_HOWE).strftime("%H:%M%z") for slot in slots] == [
        "01:00+1030",
        "03:00+1100",
    ]


def test_chuseok_is_closed_without_an_exception() -> None:
    slots = seoul_slots(SURGEON, date(2026, 9, 24), date(2026, 9, 28))

    days = sorted({slot.start.astimezone(SEOUL).date() for slot in slots})
    assert days == [date(2026, 9, 28)]


def test_an_alternative_holiday_is_closed_too() -> None:
    # 2026-10-03 (National Foundation Day) is a Saturday; Monday 10-05 replaces it.
    slots = seoul_slots(SURGEON, date(2026, 10, 5), date(2026, 10, 6))

    assert {slot.start.astimezone(SEOUL).date() for slot in slots} == {date(2026, 10, 6)}


def test_open_on_holiday_restores_the_weekly_hours_or_only_the_hours_given() -> None:
    whole = weekdays_only(
        "09:00", "12:00", exception(date(2026, 9, 25), ExceptionKind.OPEN_ON_HOLIDAY)
    )
    partial = weekdays_only(
        "09:00", "12:00",
        exception(date(2026, 9, 25), ExceptionKind.OPEN_ON_HOLIDAY, "10:00", "10:30"),
    )

    assert len(seoul_slots(whole, date(2026, 9, 25), date(2026, 9, 25))) == 12
    assert [
        local_clock(slot.start, SEOUL) for slot in seoul_slots(partial, date(2026, 9, 25),
                                                                date(2026, 9, 25))
    ] == ["2026-09-25 10:00 +0900", "2026-09-25 10:15 +0900"]


def test_leave_closes_days_and_extra_hours_open_a_saturday() -> None:
    availability = weekdays_only(
        "09:00", "12:00",
        exception(date(2026, 7, 6), ExceptionKind.CLOSED, until=date(2026, 7, 8)),
        exception(date(2026, 7, 9), ExceptionKind.CLOSED, "09:00", "11:00"),
        exception(date(2026, 7, 11), ExceptionKind.EXTRA_HOURS, "10:00", "11:00"),
    )

    slots = seoul_slots(availability, date(2026, 7, 6), date(2026, 7, 12))

    per_day: dict[date, int] = {}
    for slot in slots:
        day = slot.start.astimezone(SEOUL).date()
        per_day[day] = per_day.get(day, 0) + 1
    assert per_day == {date(2026, 7, 9): 4, date(2026, 7, 10): 12, date(2026, 7, 11): 4}


def test_in_person_and_video_hours_are_separate() -> None:
    availability = Availability(
        weekly=weekly([2], "09:00", "10:00", HoursMode.VIDEO)
        + weekly([2], "14:00", "15:00", HoursMode.IN_PERSON)
    )

    video = seoul_slots(availability, date(2026, 6, 2), date(2026, 6, 2))
    in_person = seoul_slots(
        availability, date(2026, 6, 2), date(2026, 6, 2),
        visit_type=IN_PERSON, mode=VisitMode.IN_PERSON,
    )

    assert {slot.start.astimezone(SEOUL).hour for slot in video} == {9}
    assert [slot.start.astimezone(SEOUL).strftime("%H:%M") for slot in in_person] == [
        "14:00", "14:20", "14:40",
    ]


def test_a_visit_type_is_refused_in_a_mode_it_is_not_offered_in() -> None:
    with pytest.raises(SchedulingError) as raised:
        seoul_slots(SURGEON, date(2026, 6, 2), date(2026, 6, 2), mode=VisitMode.IN_PERSON)

    assert raised.value.code is ErrorCode.MODE_NOT_OFFERED
    assert "대면진료" in raised.value.translated("ko")


def test_busy_time_and_its_buffer_remove_overlapping_slots() -> None:
    taken = occupied_interval(at(SEOUL, 2026, 6, 2, 9, 40), INTERNATIONAL)  # 09:40-10:20

    slots = seoul_slots(
        SURGEON, date(2026, 6, 2), date(2026, 6, 2), visit_type=INTERNATIONAL,
        busy_intervals=[
            taken, Interval(at(SEOUL, 2026, 6, 2, 11, 15), at(SEOUL, 2026, 6, 2, 11, 16))
        ],
    )

    assert [slot.start.astimezone(SEOUL).strftime("%H:%M") for slot in slots] == ["09:00", "10:20"]


def test_slots_before_now_are_not_offered() -> None:
    now = at(SEOUL, 2026, 6, 2, 10, 50)

    slots = seoul_slots(SURGEON, date(2026, 6, 2), date(2026, 6, 2), now=now)

    assert [slot.start.astimezone(SEOUL).strftime("%H:%M") for slot in slots] == [
        "11:00", "11:15", "11:30", "11:45",
    ]


def mongolian_interpreter_windows() -> list[Interval]:
    # 07:00-09:00 in Ulaanbaatar is 08:00-10:00 in Seoul; 08:00-08:30 is already booked.
    interpreter = every_day("07:00", "09:00")
    return free_windows(
        interpreter, ULAANBAATAR, VisitMode.VIDEO,
        at(SEOUL, 2026, 6, 2), at(SEOUL, 2026, 6, 3),
        busy_intervals=[
            Interval(at(ULAANBAATAR, 2026, 6, 2, 8), at(ULAANBAATAR, 2026, 6, 2, 8, 30))
        ],
    )


def test_with_an_interpreter_needed_only_times_they_are_free_are_offered() -> None:
    slots = seoul_slots(
        SURGEON, date(2026, 6, 2), date(2026, 6, 2),
        interpreter_windows=mongolian_interpreter_windows(),
    )

    assert [slot.start.astimezone(SEOUL).strftime("%H:%M") for slot in slots] == ["09:30", "09:45"]
    assert all(slot.interpreter_available for slot in slots)


def test_interpreter_availability_can_be_marked_instead_of_required() -> None:
    slots = seoul_slots(
        SURGEON, date(2026, 6, 2), date(2026, 6, 2),
        interpreter_windows=mongolian_interpreter_windows(), require_interpreter=False,
    )

    assert len(slots) == 12
    marked = [slot.start.astimezone(SEOUL).strftime("%H:%M") for slot in slots
              if slot.interpreter_available]
    assert marked == ["09:30", "09:45"]


def test_without_an_interpreter_needed_no_slot_claims_one() -> None:
    slots = seoul_slots(SURGEON, date(2026, 6, 2), date(2026, 6, 2))

    assert not any(slot.interpreter_available for slot in slots)


@pytest.mark.parametrize(
    ("first", "last", "code"),
    [
        (date(2026, 6, 2), date(2026, 6, 1), ErrorCode.INVALID_RANGE),
        (date(2026, 1, 1), date(2026, 4, 3), ErrorCode.RANGE_TOO_LONG),
    ],
)
def test_a_backwards_or_overlong_search_is_refused(
    first: date, last: date, code: ErrorCode
) -> None:
    with pytest.raises(SchedulingError) as raised:
        seoul_slots(SURGEON, first, last)

    assert raised.value.code is code
    assert raised.value.field == "end"


def test_a_search_of_exactly_ninety_two_days_is_accepted() -> None:
    slots = seoul_slots(SURGEON, date(2026, 1, 1), date(2026, 4, 2))

    assert slots
    assert slots == sorted(slots, key=lambda slot: slot.start)


def test_search_interval_covers_whole_local_days() -> None:
    interval = search_interval(date(2026, 3, 8), date(2026, 3, 8), NEW_YORK)

    assert interval.end - interval.start == timedelta(hours=23)


NOW = at(SEOUL, 2026, 6, 1, 12)


def book(start: datetime, **options: object):
    kwargs: dict[str, object] = {"busy_intervals": [], "interpreter_windows": None}
    kwargs.update(options)
    return validate_booking_start(
        SURGEON, SEOUL, FOLLOW_UP, VisitMode.VIDEO, start, KOREAN_PUBLIC_HOLIDAYS, NOW,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_free_slot_on_the_grid_can_be_booked() -> None:
    slot = book(at(SEOUL, 2026, 6, 2, 9, 15))

    assert slot.start == at(SEOUL, 2026, 6, 2, 9, 15)
    assert slot.end - slot.start == timedelta(minutes=15)


def test_the_same_instant_written_in_another_zone_is_the_same_booking() -> None:
    assert book(at(NEW_YORK, 2026, 6, 1, 20, 15)).start == at(SEOUL, 2026, 6, 2, 9, 15)


@pytest.mark.parametrize(
    ("start", "code"),
    [
        (at(SEOUL, 2026, 6, 2, 9, 5), ErrorCode.SLOT_NOT_ON_GRID),
        (at(SEOUL, 2026, 6, 2, 11, 40), ErrorCode.SLOT_NOT_ON_GRID),
        (at(SEOUL, 2026, 6, 2, 13, 0), ErrorCode.OUTSIDE_AVAILABILITY),
        (at(SEOUL, 2026, 6, 2, 11, 55), ErrorCode.OUTSIDE_AVAILABILITY),
        (at(SEOUL, 2026, 6, 6, 9, 0), ErrorCode.OUTSIDE_AVAILABILITY),
        (at(SEOUL, 2026, 6, 3, 9, 0), ErrorCode.OUTSIDE_AVAILABILITY),  # local election day
        (at(SEOUL, 2026, 5, 29, 9, 0), ErrorCode.SLOT_IN_PAST),
    ],
)
def test_a_booking_off_the_grid_outside_hours_or_in_the_past_is_refused(
    start: datetime, code: ErrorCode
) -> None:
    with pytest.raises(SchedulingError) as raised:
        book(start)

    assert raised.value.code is code
    assert raised.value.field == "start"


def test_a_booking_inside_the_minimum_notice_is_refused() -> None:
    with pytest.raises(SchedulingError) as raised:
        validate_booking_start(
            SURGEON, SEOUL, FOLLOW_UP, VisitMode.VIDEO, at(SEOUL, 2026, 6, 2, 9), NO_HOLIDAYS,
            at(SEOUL, 2026, 6, 2, 8), min_notice=timedelta(hours=2),
        )

    assert raised.value.code is ErrorCode.SLOT_TOO_SOON
    assert raised.value.translated("ko") == "예약은 진료 시작 최소 120분 전까지 해야 합니다."


def test_a_taken_slot_is_refused_and_the_next_free_slots_are_offered() -> None:
    taken = [occupied_interval(at(SEOUL, 2026, 6, 2, 9, 15), FOLLOW_UP),
             occupied_interval(at(SEOUL, 2026, 6, 2, 9, 30), FOLLOW_UP)]

    with pytest.raises(SchedulingError) as raised:
        book(at(SEOUL, 2026, 6, 2, 9, 15), busy_intervals=taken)
    following = next_free_slots(
        SURGEON, SEOUL, FOLLOW_UP, VisitMode.VIDEO, at(SEOUL, 2026, 6, 2, 9, 15), taken,
        KOREAN_PUBLIC_HOLIDAYS, NOW,
    )

    assert raised.value.code is ErrorCode.SLOT_TAKEN
    assert raised.value.http_status == 409
    assert [local_clock(slot.start, SEOUL) for slot in following] == [
        "2026-06-02 09:45 +0900", "2026-06-02 10:00 +0900", "2026-06-02 10:15 +0900",
    ]


def test_next_free_slots_look_past_closed_days_and_stop_at_the_horizon() -> None:
    # From the evening of Chuseok eve: Chuseok days and the weekend are skipped.
    after = at(SEOUL, 2026, 9, 24, 18)
    found = next_free_slots(
        SURGEON, SEOUL, FOLLOW_UP, VisitMode.VIDEO, after, [], KOREAN_PUBLIC_HOLIDAYS, after,
        count=2,
    )
    nothing = next_free_slots(
        Availability(), SEOUL, FOLLOW_UP, VisitMode.VIDEO, after, [], KOREAN_PUBLIC_HOLIDAYS,
        after,
    )

    assert [local_clock(slot.start, SEOUL) for slot in found] == [
        "2026-09-28 09:00 +0900", "2026-09-28 09:15 +0900",
    ]
    assert nothing == []


def test_a_booking_needing_an_absent_interpreter_is_refused() -> None:
    windows = mongolian_interpreter_windows()

    with pytest.raises(SchedulingError) as raised:
        book(at(SEOUL, 2026, 6, 2, 9), interpreter_windows=windows)
    slot = book(at(SEOUL, 2026, 6, 2, 9, 30), interpreter_windows=windows)

    assert raised.value.code is ErrorCode.INTERPRETER_UNAVAILABLE
    assert slot.interpreter_available


def test_naive_datetimes_are_refused_as_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        book(datetime(2026, 6, 2, 9, 0))  # noqa: DTZ001


def test_is_on_grid_follows_the_grid_of_the_visit_type() -> None:
    tuesday_0940 = at(SEOUL, 2026, 6, 2, 9, 40)

    assert is_on_grid(SURGEON, SEOUL, INTERNATIONAL, VisitMode.VIDEO, tuesday_0940)
    assert not is_on_grid(SURGEON, SEOUL, FOLLOW_UP, VisitMode.VIDEO, tuesday_0940)


def test_free_windows_are_clipped_to_the_range_and_merge_touching_hours() -> None:
    availability = Availability(
        weekly=weekly([2], "09:00", "10:00") + weekly([2], "10:00", "11:00", HoursMode.VIDEO)
    )

    windows = free_windows(
        availability, SEOUL, VisitMode.VIDEO, at(SEOUL, 2026, 6, 2, 9, 30), at(SEOUL, 2026, 6, 3),
    )

    assert windows == [Interval(at(SEOUL, 2026, 6, 2, 9, 30), at(SEOUL, 2026, 6, 2, 11))]


def test_hours_starting_inside_a_repeated_hour_run_continuously_through_it() -> None:
    # New York, 2026-11-01: 01:00-02:00 happens twice. Hours 01:30-03:00 start at the first
    # 01:30 and continue through the repeat, so a 30-minute visit at 01:30 EDT is whole.
    slots = compute_slots(
        every_day("01:30", "03:00"), NEW_YORK, INTERNATIONAL, VisitMode.VIDEO,
        date(2026, 11, 1), date(2026, 11, 1), [], NO_HOLIDAYS, LONG_AGO,
    )

    assert [local_clock(slot.start, NEW_YORK) for slot in slots] == [
        "2026-11-01 01:30 -0400",
        "2026-11-01 02:10 -0500",
    ]
    assert slots[0].end == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
