"""Demo schedules: clinic hours with telemedicine hours, interpreters' hours in their own zones,
and a few upcoming appointments booked through the booking service (its rules, the policy for
video visits, the double-booking guard, the invitations and reminders in the outbox):
- Bat-Erdene (Ulaanbaatar, after bypass surgery) with dr_lee and the Mongolian interpreter;
- Emily Carter (New York, after an excision) with dr_kim, together with her local doctor;
- Kim Young-su (Busan, hypertension) with dr_park, domestic;
- Lin Wei-ting (Taipei, oncology) with dr_choi and the Chinese interpreter, in person.
Times are relative to the day the demo is loaded (two working days ahead and later).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from jaejin.core.accounts import Role, User
from jaejin.core.authn import Principal
from jaejin.core.config import get_settings
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem
from jaejin.demo import DemoContext
from jaejin.scheduling import service
from jaejin.scheduling.model import VisitMode
from jaejin.scheduling.public_holidays import KOREAN_PUBLIC_HOLIDAYS
from jaejin.scheduling.schemas import AvailabilityIn
from jaejin.scheduling.store import OwnerKind, save_availability

log = logging.getLogger(__name__)

WEEKDAYS = range(1, 6)


def _hours(*blocks: tuple[range | list[int], str, str, str]) -> AvailabilityIn:
    return AvailabilityIn.model_validate({"weekly": [
        {"weekday": day, "start": start, "end": end, "mode": mode}
        for days, start, end, mode in blocks for day in days]})


#: Practitioner key -> weekly hours in the institution's zone (Asia/Seoul): mornings in the
#: clinic, afternoons on video, a Saturday clinic at the dermatologist's.
PRACTITIONER_HOURS: dict[str, AvailabilityIn] = {
    "dr_kim": _hours((WEEKDAYS, "09:00", "12:30", "in_person"),
                     (WEEKDAYS, "14:00", "18:00", "video"), ([6], "09:00", "13:00", "any")),
    "dr_park": _hours((WEEKDAYS, "08:30", "12:30", "in_person"),
                      (WEEKDAYS, "13:30", "17:30", "any")),
    "dr_lee": _hours((WEEKDAYS, "09:00", "12:00", "in_person"),
                     (WEEKDAYS, "13:00", "17:00", "video")),
    "dr_choi": _hours((WEEKDAYS, "08:00", "12:00", "in_person"),
                      ([1, 3, 5], "13:00", "16:00", "video")),
}

#: Interpreter key -> weekly hours in the interpreter's own zone.
INTERPRETER_HOURS: dict[str, AvailabilityIn] = {
    "mn": _hours(([1, 2, 3, 4, 5, 6], "08:00", "18:00", "any")),  # Ulaanbaatar
    "ja": _hours((WEEKDAYS, "09:00", "18:00", "any")),  # Tokyo
    "zh": _hours((WEEKDAYS, "09:00", "18:00", "any")),  # Seoul
    "vi": _hours((WEEKDAYS, "08:00", "17:00", "any")),  # Ho Chi Minh City
    "ru": _hours((WEEKDAYS, "10:00", "19:00", "any")),  # Seoul
    "th": _hours((WEEKDAYS, "08:00", "16:00", "any")),  # Bangkok
}


@dataclass(frozen=True, slots=True)
class Story:
    patient: str
    practitioner: str
    booked_by: str
    working_days_ahead: int
    clock: str
    visit_type: str
    mode: VisitMode
    condition: str


STORIES: tuple[Story, ...] = (
    Story("bat_erdene", "dr_lee", "coordinator", 2, "14:20", "international_follow_up",
          VisitMode.VIDEO, "I25.1"),
    Story("emily_carter", "dr_kim", "dr_kim", 2, "15:00", "tri_party_consultation",
          VisitMode.VIDEO, "L57.0"),
    Story("kim_youngsu", "dr_park", "dr_park", 3, "14:00", "follow_up", VisitMode.VIDEO, "I10"),
    Story("lin_weiting", "dr_choi", "coordinator", 4, "10:00", "in_person_follow_up",
          VisitMode.IN_PERSON, "C50.9"),
)


def principal_of(user: User) -> Principal:
    """The principal a user's own request would carry, for booking on their behalf."""
    return Principal(
        kind="user", subject_id=user.id, label=user.display_name, language=user.language,
        time_zone=user.time_zone,
        memberships=frozenset((item.institution_id, Role(item.role))
                              for item in user.memberships))


def working_day(today: date, ahead: int) -> date:
    """The `ahead`-th Korean working day after `today` (no weekends, no public holidays)."""
    day, counted = today, 0
    while counted < ahead:
        day += timedelta(days=1)
        if day.isoweekday() <= 5 and day not in KOREAN_PUBLIC_HOLIDAYS:
            counted += 1
    return day


def _start(day: date, clock: str, zone: str) -> datetime:
    hours, minutes = clock.split(":")
    return datetime(day.year, day.month, day.day, int(hours), int(minutes),
                    tzinfo=ZoneInfo(zone))


def load_demo(db: Session, demo: DemoContext) -> None:
    for key, hours in PRACTITIONER_HOURS.items():
        practitioner = demo.practitioners[key]
        for role in practitioner.roles:
            save_availability(db, OwnerKind.PRACTITIONER, practitioner.id, role.institution_id,
                              hours, updated_by="demo")
    for key, hours in INTERPRETER_HOURS.items():
        interpreter = demo.interpreters[key]
        save_availability(db, OwnerKind.INTERPRETER, interpreter.id, interpreter.institution_id,
                          hours, updated_by="demo")
    db.flush()
    settings = get_settings()
    today = utcnow().astimezone(ZoneInfo("Asia/Seoul")).date()
    for story in STORIES:
        patient = demo.patients[story.patient]
        practitioner = demo.practitioners[story.practitioner]
        start = _start(working_day(today, story.working_days_ahead), story.clock, "Asia/Seoul")
        request = service.BookingRequest(
            patient_id=patient.id, practitioner_id=practitioner.id, start=start,
            visit_type=story.visit_type, mode=story.mode, condition=story.condition)
        booked: dict[str, Any] = {"patient": story.patient, "start": start.isoformat()}
        try:
            # A savepoint per story: one refused booking leaves the rest of the demo intact.
            with db.begin_nested():
                service.book(db, principal_of(demo.users[story.booked_by]), request,
                             settings=settings)
        except Problem as refusal:
            log.warning("demo appointment not booked (%s): %s", refusal.code, booked)
