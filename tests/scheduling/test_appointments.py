from __future__ import annotations

from datetime import timedelta

import pytest

from jaejin.scheduling.appointments import (
    ALLOWED_TRANSITIONS,
    AppointmentState,
    AppointmentStatus,
    can_cancel,
    can_transition,
    cancel,
    complete,
    mark_no_show,
    reschedule,
)
from jaejin.scheduling.errors import ErrorCode, SchedulingError

from .builders import SEOUL, at

START = at(SEOUL, 2026, 6, 10, 9)
BOOKED = AppointmentState(AppointmentStatus.BOOKED, START, START + timedelta(minutes=15))


def test_a_patient_can_cancel_until_exactly_the_cutoff() -> None:
    assert can_cancel(START - timedelta(hours=24), START, timedelta(hours=24))
    assert not can_cancel(START - timedelta(hours=23, minutes=59), START, timedelta(hours=24))


def test_cancelling_bumps_the_sequence_so_calendars_replace_the_invitation() -> None:
    cancelled = cancel(BOOKED, now=START - timedelta(days=2))

    assert cancelled.status is AppointmentStatus.CANCELLED
    assert cancelled.sequence == 1


def test_a_patient_inside_the_cutoff_is_told_to_call_the_clinic_but_staff_may_cancel() -> None:
    late = START - timedelta(hours=3)

    with pytest.raises(SchedulingError) as raised:
        cancel(BOOKED, now=late)
    by_staff = cancel(BOOKED, now=late, by_staff=True)

    assert raised.value.code is ErrorCode.CANCELLATION_CUTOFF_PASSED
    assert raised.value.translated("ko").startswith("예약 변경과 취소는 진료 시작 24시간 전까지만")
    assert by_staff.status is AppointmentStatus.CANCELLED


def test_nobody_cancels_a_visit_that_has_started() -> None:
    with pytest.raises(SchedulingError) as raised:
        cancel(BOOKED, now=START, by_staff=True)

    assert raised.value.code is ErrorCode.APPOINTMENT_ALREADY_STARTED


def test_rescheduling_moves_the_time_and_bumps_the_sequence_each_time() -> None:
    once = reschedule(
        BOOKED, START + timedelta(days=1), START + timedelta(days=1, minutes=15),
        now=START - timedelta(days=3),
    )
    twice = reschedule(
        once, START + timedelta(days=2), START + timedelta(days=2, minutes=15),
        now=START - timedelta(days=3),
    )

    assert (once.status, once.sequence) == (AppointmentStatus.RESCHEDULED, 1)
    assert (twice.start, twice.sequence) == (START + timedelta(days=2), 2)


def test_rescheduling_follows_the_cutoff_of_the_current_time() -> None:
    with pytest.raises(SchedulingError) as raised:
        reschedule(
            BOOKED, START + timedelta(days=1), START + timedelta(days=1, minutes=15),
            now=START - timedelta(hours=1), cutoff=timedelta(hours=2),
        )

    assert raised.value.code is ErrorCode.CANCELLATION_CUTOFF_PASSED
    assert "2 hours" in raised.value.translated("en")


def test_no_show_and_completion_only_after_the_start() -> None:
    with pytest.raises(SchedulingError) as raised:
        mark_no_show(BOOKED, now=START - timedelta(minutes=1))

    assert raised.value.code is ErrorCode.APPOINTMENT_NOT_STARTED
    assert mark_no_show(BOOKED, now=START + timedelta(minutes=10)).status is (
        AppointmentStatus.NO_SHOW
    )
    assert complete(BOOKED, now=START + timedelta(minutes=15)).status is (
        AppointmentStatus.COMPLETED
    )


@pytest.mark.parametrize(
    "final", [AppointmentStatus.CANCELLED, AppointmentStatus.NO_SHOW, AppointmentStatus.COMPLETED]
)
def test_final_states_stay_final(final: AppointmentStatus) -> None:
    state = AppointmentState(final, START, START + timedelta(minutes=15))

    for target in AppointmentStatus:
        assert not can_transition(final, target)
    with pytest.raises(SchedulingError) as raised:
        cancel(state, now=START - timedelta(days=5))
    assert raised.value.code is ErrorCode.INVALID_STATUS_TRANSITION
    assert raised.value.http_status == 409


def test_the_refused_transition_is_explained_in_korean_with_korean_status_names() -> None:
    done = AppointmentState(AppointmentStatus.COMPLETED, START, START + timedelta(minutes=15))

    with pytest.raises(SchedulingError) as raised:
        mark_no_show(done, now=START + timedelta(hours=1))

    assert raised.value.translated("ko") == "완료됨 상태의 예약은 불참 상태로 바꿀 수 없습니다."


def test_active_appointments_can_reach_every_other_state_but_booked() -> None:
    for active in (AppointmentStatus.BOOKED, AppointmentStatus.RESCHEDULED):
        assert AppointmentStatus.BOOKED not in ALLOWED_TRANSITIONS[active]
        assert len(ALLOWED_TRANSITIONS[active]) == 4


def test_an_appointment_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        AppointmentState(AppointmentStatus.BOOKED, START, START)
