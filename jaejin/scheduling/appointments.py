"""An appointment's life: booked, moved, cancelled, missed or done.

Patients may cancel or move a visit only until the institution's cut-off (24 hours by default);
staff may do so until the visit starts. Every change to the time or a cancellation bumps the
iCalendar SEQUENCE, so calendar programs replace the old invitation instead of adding one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from jaejin.core.i18n import N_
from jaejin.scheduling.errors import ErrorCode, Message, SchedulingError
from jaejin.scheduling.zones import ensure_aware

DEFAULT_CANCELLATION_CUTOFF = timedelta(hours=24)


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"
    COMPLETED = "completed"


STATUS_NAMES: dict[AppointmentStatus, str] = {
    AppointmentStatus.BOOKED: N_("booked"),
    AppointmentStatus.RESCHEDULED: N_("rescheduled"),
    AppointmentStatus.CANCELLED: N_("cancelled"),
    AppointmentStatus.NO_SHOW: N_("no-show"),
    AppointmentStatus.COMPLETED: N_("completed"),
}

_ACTIVE = frozenset({AppointmentStatus.BOOKED, AppointmentStatus.RESCHEDULED})

#: Allowed status changes. Cancelled, no-show and completed are final: a mistake there is
#: corrected by a new appointment, so the record of what happened stays.
ALLOWED_TRANSITIONS: dict[AppointmentStatus, frozenset[AppointmentStatus]] = {
    AppointmentStatus.BOOKED: frozenset(
        {
            AppointmentStatus.RESCHEDULED,
            AppointmentStatus.CANCELLED,
            AppointmentStatus.NO_SHOW,
            AppointmentStatus.COMPLETED,
        }
    ),
    AppointmentStatus.RESCHEDULED: frozenset(
        {
            AppointmentStatus.RESCHEDULED,
            AppointmentStatus.CANCELLED,
            AppointmentStatus.NO_SHOW,
            AppointmentStatus.COMPLETED,
        }
    ),
    AppointmentStatus.CANCELLED: frozenset(),
    AppointmentStatus.NO_SHOW: frozenset(),
    AppointmentStatus.COMPLETED: frozenset(),
}


def can_transition(current: AppointmentStatus, target: AppointmentStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def ensure_transition(current: AppointmentStatus, target: AppointmentStatus) -> None:
    if not can_transition(current, target):
        raise SchedulingError(
            ErrorCode.INVALID_STATUS_TRANSITION,
            N_("An appointment that is {current} cannot become {target}."),
            field="status",
            current=Message(STATUS_NAMES[current]),
            target=Message(STATUS_NAMES[target]),
        )


def can_cancel(
    now: datetime, start: datetime, cutoff: timedelta = DEFAULT_CANCELLATION_CUTOFF
) -> bool:
    """True while at least `cutoff` remains before `start` (the patient's cancellation rule)."""
    return ensure_aware(now, "now") + cutoff <= ensure_aware(start, "start")


@dataclass(frozen=True, slots=True)
class AppointmentState:
    """What the lifecycle needs to know about an appointment."""

    status: AppointmentStatus
    start: datetime
    end: datetime
    sequence: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", ensure_aware(self.start, "start"))
        object.__setattr__(self, "end", ensure_aware(self.end, "end"))
        if self.end <= self.start:
            raise ValueError("an appointment must end after it starts")

    @property
    def is_active(self) -> bool:
        return self.status in _ACTIVE


def _ensure_changeable(
    state: AppointmentState, *, now: datetime, cutoff: timedelta, by_staff: bool
) -> None:
    if ensure_aware(now, "now") >= state.start:
        raise SchedulingError(
            ErrorCode.APPOINTMENT_ALREADY_STARTED,
            N_("The appointment has already started."),
        )
    if not by_staff and not can_cancel(now, state.start, cutoff):
        raise SchedulingError(
            ErrorCode.CANCELLATION_CUTOFF_PASSED,
            N_(
                "Appointments can be changed or cancelled up to {hours} hours before they "
                "start; please contact the clinic."
            ),
            hours=_hours(cutoff),
        )


def _hours(cutoff: timedelta) -> str:
    hours = cutoff / timedelta(hours=1)
    return str(int(hours)) if hours.is_integer() else f"{hours:g}"


def cancel(
    state: AppointmentState,
    *,
    now: datetime,
    cutoff: timedelta = DEFAULT_CANCELLATION_CUTOFF,
    by_staff: bool = False,
) -> AppointmentState:
    ensure_transition(state.status, AppointmentStatus.CANCELLED)
    _ensure_changeable(state, now=now, cutoff=cutoff, by_staff=by_staff)
    return replace(state, status=AppointmentStatus.CANCELLED, sequence=state.sequence + 1)


def reschedule(
    state: AppointmentState,
    new_start: datetime,
    new_end: datetime,
    *,
    now: datetime,
    cutoff: timedelta = DEFAULT_CANCELLATION_CUTOFF,
    by_staff: bool = False,
) -> AppointmentState:
    """Move the appointment; the new start must already be validated against the grid
    (`slots.validate_booking_start`), which also refuses a new start in the past."""
    ensure_transition(state.status, AppointmentStatus.RESCHEDULED)
    _ensure_changeable(state, now=now, cutoff=cutoff, by_staff=by_staff)
    return AppointmentState(
        status=AppointmentStatus.RESCHEDULED,
        start=new_start,
        end=new_end,
        sequence=state.sequence + 1,
    )


def _ensure_started(state: AppointmentState, now: datetime) -> None:
    if ensure_aware(now, "now") < state.start:
        raise SchedulingError(
            ErrorCode.APPOINTMENT_NOT_STARTED,
            N_("The appointment has not started yet."),
        )


def mark_no_show(state: AppointmentState, *, now: datetime) -> AppointmentState:
    ensure_transition(state.status, AppointmentStatus.NO_SHOW)
    _ensure_started(state, now)
    return replace(state, status=AppointmentStatus.NO_SHOW)


def complete(state: AppointmentState, *, now: datetime) -> AppointmentState:
    ensure_transition(state.status, AppointmentStatus.COMPLETED)
    _ensure_started(state, now)
    return replace(state, status=AppointmentStatus.COMPLETED)
