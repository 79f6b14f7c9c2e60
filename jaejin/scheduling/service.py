"""How an appointment is booked, moved, cancelled, missed, and given an interpreter.

Every change goes through one function here; the JSON API and the pages only translate between
the wire and these calls, and commit. Each action, in one transaction:
1. checks who is asking (another institution's records are reported absent: 404);
2. checks the input against the rules (`jaejin.scheduling.slots`, `...appointments`): a time not
   on the grid, in the past, after the cut-off... is a 422 naming the problem;
3. for a telemedicine booking, asks the policy engine (`jaejin.policy.records`); a denial is a
   422 POLICY_DENIED with the reasons and the alternatives, and the decision is kept with the
   appointment. In-person bookings are never judged by it;
4. writes the appointment and its occupancy blocks: the database refuses a double booking
   (`jaejin.scheduling.store`), answered as a 409 with the next free slots;
5. queues invitations and reminders in the outbox (`jaejin.scheduling.notifications`), sent
   after commit, and writes the audit entry (`jaejin.core.audit`: one row, sealed into the
   chain after commit; a booking's is written by its write statement on PostgreSQL).

A booking is split in two (`plan_booking`: steps 1-3, reads only; `write_planned_booking`:
4-5) so that on SQLite, where one writer at a time holds the database, the booking route
reads outside the write transaction and holds the write turn only while it writes and
commits (`jaejin.scheduling.api.create_appointment`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar
from zoneinfo import ZoneInfo

import orjson
from fastapi import Depends
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditActor, AuditEvent
from jaejin.core.authn import Principal, audit, get_db
from jaejin.core.config import Settings
from jaejin.core.database import utcnow
from jaejin.core.errors import FieldError, Problem, not_found
from jaejin.core.i18n import N_
from jaejin.directory.store import (
    Encounter,
    Institution,
    Interpreter,
    Patient,
    Practitioner,
    PractitionerRole,
)
from jaejin.policy.decision import Decision
from jaejin.policy.errors import RequestError
from jaejin.policy.records import VisitRecords, decide_for_visit, policy_denied_problem
from jaejin.policy.vocabulary import DecisionKind
from jaejin.scheduling import appointments as lifecycle
from jaejin.scheduling import notifications, wire
from jaejin.scheduling.alternatives import held_time
from jaejin.scheduling.appointments import AppointmentStatus
from jaejin.scheduling.errors import ErrorCode, SchedulingError
from jaejin.scheduling.model import (
    Availability,
    Interval,
    IntervalSet,
    Slot,
    VisitMode,
    VisitType,
    ensure_interpreter_language_offered,
    ensure_mode_offered,
    needs_interpreter,
    visit_type_by_code,
)
from jaejin.scheduling.public_holidays import KOREAN_PUBLIC_HOLIDAYS, NO_HOLIDAYS
from jaejin.scheduling.schemas import AvailabilityIn, clock_to_minutes
from jaejin.scheduling.slots import (
    MAX_SEARCH_DAYS,
    free_windows,
    search_interval,
    slot_grid,
    validate_booking_start,
    validate_date_range,
)
from jaejin.scheduling.store import (
    BLOCK_MINUTES,
    Appointment,
    BookingRows,
    OwnerKind,
    ResourceKind,
    booking_rows,
    bump_calendar,
    claim_occupancy,
    holders_of,
    hours_of_version,
    interpreters_busy,
    load_availability,
    load_hours,
    practitioner_and_patient_busy,
    practitioner_busy,
    practitioner_workplaces,
    release_occupancy,
    resource_key,
    save_availability,
    write_booking,
)
from jaejin.scheduling.wire import Piece
from jaejin.scheduling.zones import resolve_zone

#: Staff who book for their institution's patients.
BOOKING_STAFF: tuple[Role, ...] = (Role.CLINICIAN, Role.COORDINATOR)
#: Staff who see their institution's appointments and calendars.
VIEWING_STAFF: tuple[Role, ...] = (Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN)
#: Staff who assign interpreters and keep interpreters' hours.
COORDINATING_STAFF: tuple[Role, ...] = (Role.COORDINATOR, Role.INSTITUTION_ADMIN)
#: How many alternatives a 409 offers, and how far ahead it looks for them.
NEXT_FREE_COUNT = 3
NEXT_FREE_HORIZON_DAYS = 14


# --------------------------------------------------------------------------- transactions

P = ParamSpec("P")



def ends_transaction(endpoint: Callable[P, Response]) -> Callable[P, Response]:
    """Make a route end its transaction itself: rolled back on any error, and whatever it read
    after committing released before the response leaves.

    Why: otherwise the session is closed by the request's dependency teardown, which waits for
    the event loop; on SQLite an open transaction holds the database's write lock, and the loop
    may itself be waiting for that lock in another request's sign-in check.
    The route takes its session as the keyword argument `db`.
    """

    @functools.wraps(endpoint)
    def route(*args: P.args, **kwargs: P.kwargs) -> Response:
        db = kwargs["db"]
        assert isinstance(db, Session)
        try:
            return endpoint(*args, **kwargs)
        finally:
            db.rollback()

    return route


def released(dependency: Callable[..., Any]) -> Callable[..., Any]:
    """An access dependency whose database reads end as soon as the caller is known.

    Who is asking is looked up on the event loop, in the request's session; left open, that
    transaction would keep a pooled connection (and, on SQLite, the write lock) while the route
    waits for a worker thread, and simultaneous requests would wait for each other through the
    loop. Rolling it back here returns both at once.
    """

    async def principal_released(principal: Principal = Depends(dependency),
                                 db: Session = Depends(get_db)) -> Principal:
        db.rollback()
        return principal

    return principal_released


# --------------------------------------------------------------------------- errors


def scheduling_problem(
    error: SchedulingError, lang: str, *, extra: dict[str, Any] | None = None
) -> Problem:
    """A rule of scheduling broken by the input, as the API answers it."""
    params = error.params_in(lang)
    field_errors = []
    if error.field is not None:
        field_errors.append(FieldError(error.field, str(error.code).lower(), error.message,
                                       params))
    return Problem(error.http_status, str(error.code), error.message, params=params,
                   errors=field_errors, extra=extra)


def _invalid(field: str, code: str, message: str, **params: Any) -> Problem:
    return Problem(422, code, message, params=params,
                   errors=[FieldError(field, code.lower(), message, params)])


# --------------------------------------------------------------------------- who may do what


def is_staff_of(principal: Principal, institution_id: int, *roles: Role) -> bool:
    if principal.kind == "client":
        return principal.can_act_for(institution_id, Role.SYSTEM_CLIENT)
    return principal.can_act_for(institution_id, *roles)


def own_patient_rows(db: Session, principal: Principal) -> list[Patient]:
    if principal.user_id is None or Role.PATIENT not in principal.roles:
        return []
    return list(db.execute(select(Patient).where(Patient.user_id == principal.user_id)
                           .order_by(Patient.id)).scalars())


def patient_for_booking(db: Session, principal: Principal, patient_id: int) -> Patient:
    """The patient, if the caller may book for them: themself, or their institution's staff."""
    patient = db.get(Patient, patient_id)
    if patient is None:
        raise not_found("patient")
    if principal.user_id is not None and patient.user_id == principal.user_id:
        return patient
    if is_staff_of(principal, patient.institution_id, *BOOKING_STAFF):
        return patient
    raise not_found("patient")


def own_practitioner(db: Session, principal: Principal) -> Practitioner | None:
    if principal.user_id is None:
        return None
    return db.execute(select(Practitioner).where(Practitioner.user_id == principal.user_id)
                      ).scalar_one_or_none()


def own_interpreters(db: Session, principal: Principal) -> list[Interpreter]:
    if principal.user_id is None:
        return []
    return list(db.execute(select(Interpreter).where(Interpreter.user_id == principal.user_id)
                           ).scalars())


@dataclass(frozen=True, slots=True)
class AppointmentAccess:
    """How the caller relates to an appointment."""

    appointment: Appointment
    as_patient: bool
    as_staff: bool
    as_interpreter: bool


def appointment_access(db: Session, principal: Principal, appointment_id: int) -> AppointmentAccess:
    """The appointment if the caller may see it: its patient, its interpreter, the
    institution's staff or system client; anyone else is told it does not exist."""
    appointment = db.get(Appointment, appointment_id)
    if appointment is None:
        raise not_found("appointment")
    as_staff = is_staff_of(principal, appointment.institution_id, *VIEWING_STAFF)
    as_patient = False
    as_interpreter = False
    if principal.user_id is not None:
        patient = db.get(Patient, appointment.patient_id)
        as_patient = patient is not None and patient.user_id == principal.user_id
        if appointment.interpreter_id is not None:
            interpreter = db.get(Interpreter, appointment.interpreter_id)
            as_interpreter = interpreter is not None and interpreter.user_id == principal.user_id
    if not (as_staff or as_patient or as_interpreter):
        raise not_found("appointment")
    return AppointmentAccess(appointment, as_patient, as_staff, as_interpreter)


def changeable_appointment(db: Session, principal: Principal, appointment_id: int
                           ) -> tuple[Appointment, bool]:
    """(appointment, by_staff) for a reschedule or cancellation by its patient or by staff
    who book; interpreters may see but not change an appointment."""
    access = appointment_access(db, principal, appointment_id)
    by_staff = is_staff_of(principal, access.appointment.institution_id, *BOOKING_STAFF,
                           Role.INSTITUTION_ADMIN)
    if not (by_staff or access.as_patient):
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    return access.appointment, by_staff


def practitioner_at(db: Session, practitioner_id: int, institution_id: int) -> Practitioner:
    practitioner = db.execute(
        select(Practitioner).join(PractitionerRole).where(
            Practitioner.id == practitioner_id,
            PractitionerRole.institution_id == institution_id,
            PractitionerRole.active,
        )
    ).scalar_one_or_none()
    if practitioner is None:
        raise not_found("practitioner")
    return practitioner


def practitioner_institutions(db: Session, practitioner_id: int) -> list[int]:
    return list(db.execute(
        select(PractitionerRole.institution_id).where(
            PractitionerRole.practitioner_id == practitioner_id, PractitionerRole.active)
        .order_by(PractitionerRole.institution_id)).scalars())


def institutions_seen_by(principal: Principal) -> set[int]:
    """Institutions whose schedules the caller may search."""
    if principal.kind == "client":
        return principal.institutions_where(Role.SYSTEM_CLIENT)
    return principal.institutions_where(Role.PATIENT, *VIEWING_STAFF)


_Place = TypeVar("_Place")


def the_one_place(places: Sequence[_Place]) -> _Place:
    """The practitioner's one workplace the caller means: 404 when there is none they may see,
    422 INSTITUTION_REQUIRED when several (the caller must say which)."""
    if not places:
        raise not_found("practitioner")
    if len(places) > 1:
        raise Problem(422, "INSTITUTION_REQUIRED",
                      N_("This practitioner works at several of your institutions: say which "
                         "one (institution_id)."))
    return places[0]


def choose_institution(db: Session, principal: Principal, practitioner_id: int,
                       requested: int | None) -> Institution:
    """The institution whose schedule of the practitioner is meant: the one asked for, or the
    only one the practitioner and the caller share."""
    shared = set(practitioner_institutions(db, practitioner_id)) & institutions_seen_by(principal)
    if requested is not None:
        shared &= {requested}
    institution = db.get(Institution, the_one_place(sorted(shared)))
    assert institution is not None
    return institution


# --------------------------------------------------------------------------- availability


def check_block_aligned(rules: AvailabilityIn) -> None:
    """Hours start and end on 5-minute marks, so occupancy blocks describe bookings exactly."""
    errors: list[FieldError] = []
    message = N_("Times are on 5-minute marks (such as 09:00 or 09:05), got {value}.")
    for index, rule in enumerate(rules.weekly):
        for name in ("start", "end"):
            value: str = getattr(rule, name)
            if clock_to_minutes(value) % BLOCK_MINUTES:
                errors.append(FieldError(f"weekly.{index}.{name}", "not_on_five_minutes",
                                         message, {"value": value}))
    for index, item in enumerate(rules.exceptions):
        for name in ("start", "end"):
            clock: str | None = getattr(item, name)
            if clock is not None and clock_to_minutes(clock) % BLOCK_MINUTES:
                errors.append(FieldError(f"exceptions.{index}.{name}", "not_on_five_minutes",
                                         message, {"value": clock}))
    if errors:
        raise Problem(422, "VALIDATION_FAILED", N_("Some fields are not valid."),
                      errors=errors)


def may_edit_practitioner_hours(principal: Principal, practitioner: Practitioner,
                                institution_id: int) -> bool:
    if principal.user_id is not None and practitioner.user_id == principal.user_id:
        return True
    return is_staff_of(principal, institution_id, *COORDINATING_STAFF)


def set_practitioner_availability(
    db: Session, principal: Principal, practitioner: Practitioner, institution: Institution,
    rules: AvailabilityIn,
) -> None:
    if not may_edit_practitioner_hours(principal, practitioner, institution.id):
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    check_block_aligned(rules)
    save_availability(db, OwnerKind.PRACTITIONER, practitioner.id, institution.id, rules,
                      updated_by=actor_ref(principal))
    audit(db, principal, AuditEvent("update", "availability", f"practitioner:{practitioner.id}",
                                    None, institution.id, purpose="operations",
                                    detail={"weekly": len(rules.weekly),
                                            "exceptions": len(rules.exceptions)}))


def set_interpreter_availability(
    db: Session, principal: Principal, interpreter: Interpreter, rules: AvailabilityIn
) -> None:
    own = principal.user_id is not None and interpreter.user_id == principal.user_id
    if not (own or is_staff_of(principal, interpreter.institution_id, *COORDINATING_STAFF)):
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    check_block_aligned(rules)
    save_availability(db, OwnerKind.INTERPRETER, interpreter.id, interpreter.institution_id,
                      rules, updated_by=actor_ref(principal))
    audit(db, principal, AuditEvent("update", "availability", f"interpreter:{interpreter.id}",
                                    None, interpreter.institution_id, purpose="operations",
                                    detail={"weekly": len(rules.weekly),
                                            "exceptions": len(rules.exceptions)}))


def actor_ref(principal: Principal) -> str:
    return f"{principal.kind}:{principal.subject_id}"


# --------------------------------------------------------------------------- interpreters


def _primary(language: str) -> str:
    return language.strip().lower().split("-", 1)[0]


def interpreter_language_needed(
    practitioner: Practitioner, patient: Patient | None, requested: str | None
) -> str | None:
    """The language an interpreter is needed for: the one asked for, or the patient's when the
    practitioner does not speak it; None when no interpreter is needed."""
    if requested:
        return requested
    if patient is None:
        return None
    if needs_interpreter(practitioner.languages or [], patient.preferred_language):
        return patient.preferred_language
    return None


def interpreters_for(db: Session, institution_id: int, language: str) -> list[Interpreter]:
    """The institution's active interpreters who speak `language` (primary subtag)."""
    candidates = db.execute(
        select(Interpreter).where(Interpreter.institution_id == institution_id,
                                  Interpreter.active).order_by(Interpreter.id)
    ).scalars()
    wanted = _primary(language)
    return [item for item in candidates if wanted in {_primary(x) for x in item.languages or []}]


def interpreter_windows(
    db: Session, interpreters: Sequence[Interpreter], mode: VisitMode,
    start: datetime, end: datetime, *, excluding: int | None = None,
) -> dict[int, list[Interval]]:
    """Each interpreter's free time in [start, end): their own hours, in their own zone,
    minus the visits they already interpret."""
    busy = interpreters_busy(db, [item.id for item in interpreters], start, end,
                             excluding=excluding)
    windows: dict[int, list[Interval]] = {}
    for interpreter in interpreters:
        availability = load_availability(db, OwnerKind.INTERPRETER, interpreter.id,
                                         interpreter.institution_id)
        windows[interpreter.id] = free_windows(
            availability, resolve_zone(interpreter.time_zone), mode, start, end,
            busy[interpreter.id], NO_HOLIDAYS)
    return windows


def _first_free_interpreter(windows: dict[int, list[Interval]], visit: Interval,
                            preferred: int | None = None) -> int | None:
    order = sorted(windows, key=lambda identifier: identifier != preferred)
    for identifier in order:
        if IntervalSet(windows[identifier]).covers(visit.start, visit.end):
            return identifier
    return None


def require_interpreter_language(db: Session, institution_id: int, language: str) -> list[
        Interpreter]:
    interpreters = interpreters_for(db, institution_id, language)
    offered = sorted({code for item in interpreters for code in item.languages or []})
    ensure_interpreter_language_offered(language, offered)
    return interpreters


# --------------------------------------------------------------------------- slot search


@dataclass(frozen=True, slots=True)
class Schedule:
    """A practitioner's bookable hours at one institution, for one visit type and mode."""

    institution: Institution
    practitioner: Practitioner
    zone: ZoneInfo
    availability: Availability
    visit_type: VisitType
    mode: VisitMode
    #: Stands for `availability` in cache keys (the saved hours' version: cheap to hash);
    #: None: the hours themselves are the key.
    hours_key: Hashable | None = None

    @property
    def grid_key(self) -> tuple[Hashable, str, str, str]:
        hours = self.availability if self.hours_key is None else self.hours_key
        return (hours, self.zone.key, self.visit_type.code, self.mode.value)


def schedule_for(db: Session, practitioner: Practitioner, institution: Institution,
                 visit_type_code: str, mode: VisitMode) -> Schedule:
    hours_key, availability = load_hours(db, OwnerKind.PRACTITIONER, practitioner.id,
                                         institution.id)
    return schedule_of(practitioner, institution, hours_key, availability, visit_type_code,
                       mode)


def schedule_of(practitioner: Practitioner, institution: Institution, hours_key: Hashable,
                availability: Availability, visit_type_code: str, mode: VisitMode
                ) -> Schedule:
    """The schedule from hours already read (raises SchedulingError for a visit type or mode
    not offered)."""
    visit_type = visit_type_by_code(visit_type_code)
    ensure_mode_offered(visit_type, mode)
    return Schedule(institution=institution, practitioner=practitioner,
                    zone=resolve_zone(institution.time_zone), availability=availability,
                    visit_type=visit_type, mode=mode, hours_key=hours_key)


def search_schedule(db: Session, principal: Principal, practitioner_id: int,
                    requested_institution: int | None, visit_type_code: str, mode: VisitMode
                    ) -> Schedule:
    """The schedule a slot search is about, read in one query: the practitioner at the
    institution asked for, or the only one the practitioner and the caller share (404 when
    there is none, 422 INSTITUTION_REQUIRED when several). SchedulingError for a visit type or
    mode not offered."""
    visible = institutions_seen_by(principal)
    if requested_institution is not None:
        visible &= {requested_institution}
    place = the_one_place(practitioner_workplaces(db, practitioner_id, visible))
    hours_key, availability = hours_of_version(db, place.hours)
    return schedule_of(place.practitioner, place.institution, hours_key, availability,
                       visit_type_code, mode)


def find_slots(
    db: Session,
    schedule: Schedule,
    start_date: date,
    end_date: date,
    range_zone: ZoneInfo,
    *,
    now: datetime,
    interpreter_language: str | None,
    patient: Patient | None = None,
    excluding: int | None = None,
    require_interpreter: bool = True,
    max_days: int = MAX_SEARCH_DAYS,
) -> list[Slot]:
    """Free slots starting on the dates (inclusive, meant in `range_zone`).

    With an interpreter language, each slot says whether one interpreter is free for the whole
    visit, and (with `require_interpreter`) only such slots are kept. With a patient, times the
    patient is already booked are left out. `excluding` ignores one appointment's own time
    (for a reschedule).
    """
    validate_date_range(start_date, end_date, max_days)
    requested = search_interval(start_date, end_date, range_zone)
    if requested is None:
        return []
    reach = requested.end + schedule.visit_type.step
    if patient is None:
        busy = practitioner_busy(db, schedule.practitioner.id, requested.start, reach,
                                 excluding=excluding)
        slots = free_grid_slots(schedule, requested, now=now, busy=busy)
    else:
        busy, patient_times = practitioner_and_patient_busy(
            db, schedule.practitioner.id, patient.id, requested.start, reach,
            excluding=excluding)
        slots = free_grid_slots(schedule, requested, now=now, busy=busy)
        own = IntervalSet(patient_times)
        if own and slots:
            slots = [slot for slot in slots if not own.overlaps(slot.start, slot.end)]
    if interpreter_language is None or not slots:
        return slots
    interpreters = interpreters_for(db, schedule.institution.id, interpreter_language)
    windows = interpreter_windows(db, interpreters, schedule.mode, requested.start, reach,
                                  excluding=excluding)
    free_sets = [IntervalSet(item) for item in windows.values()]
    chosen: list[Slot] = []
    for slot in slots:
        if any(free.covers(slot.start, slot.end) for free in free_sets):
            chosen.append(replace(slot, interpreter_available=True))
        elif not require_interpreter:
            chosen.append(slot)
    return chosen


class GridSource(Protocol):
    """What slot grids are made from: a `Schedule`, or a search's `jaejin.scheduling.search.
    SearchGrid` (which needs no ORM rows)."""

    @property
    def availability(self) -> Availability: ...
    @property
    def zone(self) -> ZoneInfo: ...
    @property
    def visit_type(self) -> VisitType: ...
    @property
    def mode(self) -> VisitMode: ...
    @property
    def grid_key(self) -> tuple[Hashable, str, str, str]: ...


# Slot grids are pure functions of the hours, the zone, the visit type, the mode and the local
# date, so each is computed once per process and reused by every search and booking (the
# hours are part of the key: saving new hours starts new grids). Equivalent to
# `slots.compute_slots` without interpreter windows (tests/scheduling/test_booking_grids.py).
_GRID_OWNERS_LIMIT = 1024
_grids: dict[tuple[Hashable, str, str, str], dict[date, tuple[Slot, ...]]] = {}


def day_grids(schedule: GridSource) -> dict[date, tuple[Slot, ...]]:
    """The cached grids of a schedule, by local date of its zone."""
    key = schedule.grid_key
    grids = _grids.get(key)
    if grids is None:
        if len(_grids) >= _GRID_OWNERS_LIMIT:
            _grids.clear()
        grids = _grids.setdefault(key, {})
    return grids


def grid_on(schedule: GridSource, day: date, grids: dict[date, tuple[Slot, ...]] | None = None
            ) -> tuple[Slot, ...]:
    """Every slot the rules allow on one local date, bookings and the clock aside."""
    grids = day_grids(schedule) if grids is None else grids
    found = grids.get(day)
    if found is None:
        found = grids[day] = tuple(slot_grid(
            schedule.availability, schedule.zone, schedule.visit_type, schedule.mode, [day],
            KOREAN_PUBLIC_HOLIDAYS))
    return found


def free_grid_slots(schedule: GridSource, requested: Interval, *, now: datetime,
                    busy: Sequence[Interval]) -> list[Slot]:
    """The grid's slots starting in `requested`, not before `now`, clear of `busy`."""
    zone = schedule.zone
    day = requested.start.astimezone(zone).date()
    last = (requested.end - timedelta(microseconds=1)).astimezone(zone).date()
    taken = IntervalSet(busy)
    grids = day_grids(schedule)
    earliest = max(requested.start, now)
    found: list[Slot] = []
    while day <= last:
        for slot in grid_on(schedule, day, grids):
            if earliest <= slot.start < requested.end and not (
                    taken and taken.overlaps(slot.start, slot.occupied_until)):
                found.append(slot)
        day += timedelta(days=1)
    found.sort(key=lambda slot: slot.start)
    return found


_DAY_WIRES_LIMIT = 1 << 16
_day_wires: dict[tuple[Any, ...], tuple[Piece, tuple[bytes, ...]]] = {}


def _day_wire(schedule: GridSource, day: date, slots: tuple[Slot, ...],
              requested_zone: ZoneInfo) -> tuple[Piece, tuple[bytes, ...]]:
    """A day's slots in wire form: the whole day as one piece (its compressed form is kept
    with it), and each slot on its own."""
    key = (*schedule.grid_key, day, requested_zone.key)
    found = _day_wires.get(key)
    if found is None:
        if len(_day_wires) >= _DAY_WIRES_LIMIT:
            _day_wires.clear()
        parts = tuple(_slot_wire(slot.start, slot.end, schedule.zone, requested_zone, False)
                      for slot in slots)
        found = _day_wires[key] = (Piece(b",".join(parts)), parts)
    return found


def free_slots_wire(db: Session, schedule: Schedule, start_date: date, end_date: date,
                    requested_zone: ZoneInfo, *, now: datetime) -> list[Piece]:
    """`slots_wire(find_slots(...))` when no interpreter and no patient is involved, as
    pieces (`jaejin.scheduling.wire`): days wholly free are cached pieces, the rest is made
    slot by slot."""
    validate_date_range(start_date, end_date)
    requested = search_interval(start_date, end_date, requested_zone)
    if requested is None:
        return wire.json_array([])
    busy = practitioner_busy(db, schedule.practitioner.id, requested.start,
                             requested.end + schedule.visit_type.step)
    return free_slot_pieces(schedule, requested, requested_zone, now=now, busy=busy)


def wire_of_free_slots(schedule: Schedule, requested: Interval, requested_zone: ZoneInfo, *,
                       now: datetime, busy: Sequence[Interval]) -> bytes:
    """The JSON of `free_grid_slots` (see `free_slots_wire`)."""
    return wire.joined(free_slot_pieces(schedule, requested, requested_zone, now=now,
                                        busy=busy))


def free_slot_pieces(schedule: GridSource, requested: Interval, requested_zone: ZoneInfo, *,
                     now: datetime, busy: Sequence[Interval]) -> list[Piece]:
    """The JSON of `free_grid_slots` as pieces (see `free_slots_wire`)."""
    taken = IntervalSet(busy)
    earliest = max(requested.start, now)
    zone = schedule.zone
    day = requested.start.astimezone(zone).date()
    last = (requested.end - timedelta(microseconds=1)).astimezone(zone).date()
    grids = day_grids(schedule)
    chunks: list[Piece] = []
    previous_start: datetime | None = None
    while day <= last:
        slots = grid_on(schedule, day, grids)
        day += timedelta(days=1)
        if not slots:
            continue
        if previous_start is not None and slots[0].start < previous_start:
            # A clock change reordered days (never in Korea): take the exact, sorted path.
            found = free_grid_slots(schedule, requested, now=now, busy=busy)
            return [Piece(slots_wire(found, zone, requested_zone), wire.ONE_OFF_LEVEL)]
        previous_start = slots[-1].start
        whole, parts = _day_wire(schedule, day - timedelta(days=1), slots, requested_zone)
        if (slots[0].start >= earliest and slots[-1].start < requested.end
                and not (taken and taken.overlaps(slots[0].start, slots[-1].occupied_until))):
            chunks.append(whole)
            continue
        kept = [part for slot, part in zip(slots, parts, strict=True)
                if earliest <= slot.start < requested.end
                and not (taken and taken.overlaps(slot.start, slot.occupied_until))]
        if kept:
            chunks.append(Piece(b",".join(kept), wire.ONE_OFF_LEVEL))
    return wire.json_array(chunks)


def next_free(db: Session, schedule: Schedule, after: datetime, *, now: datetime,
              interpreter_language: str | None, patient: Patient | None,
              excluding: int | None = None) -> list[Slot]:
    """The first few free slots from `after` on: what a 409 offers instead.

    The same slots as `find_slots` over the horizon, but the grid is walked day by day only
    until enough are found (a 409 must stay cheap: a burst on one slot answers many)."""
    first = max(after, now).astimezone(schedule.zone).date()
    last = first + timedelta(days=NEXT_FREE_HORIZON_DAYS - 1)
    if interpreter_language is not None:
        with_interpreter = find_slots(db, schedule, first, last, schedule.zone, now=now,
                                      interpreter_language=interpreter_language,
                                      patient=patient, excluding=excluding)
        return [slot for slot in with_interpreter if slot.start >= after][:NEXT_FREE_COUNT]
    found: list[Slot] = []
    # The first two days first: they usually hold the alternatives, and a busy practitioner's
    # fortnight is hundreds of appointments to read.
    for window_first, window_last in ((first, min(last, first + timedelta(days=1))),
                                      (first + timedelta(days=2), last)):
        if window_first > window_last or len(found) >= NEXT_FREE_COUNT:
            break
        found.extend(_free_slots_in(db, schedule, window_first, window_last, after=after,
                                    now=now, patient=patient, excluding=excluding))
    found.sort(key=lambda slot: slot.start)
    return found[:NEXT_FREE_COUNT]


def _free_slots_in(db: Session, schedule: Schedule, first: date, last: date, *,
                   after: datetime, now: datetime, patient: Patient | None,
                   excluding: int | None) -> list[Slot]:
    """`next_free`'s search over the local dates `first`..`last`: the grid walked day by day
    until enough slots are found (and one day more: a clock change could put an earlier slot
    on the next local date)."""
    requested = search_interval(first, last, schedule.zone)
    if requested is None:
        return []
    reach = requested.end + schedule.visit_type.step
    own: list[Interval] = []
    if patient is None:
        busy = practitioner_busy(db, schedule.practitioner.id, requested.start, reach,
                                 excluding=excluding)
    else:
        busy, own = held_time(db, schedule.practitioner.id, patient.id, requested.start, reach,
                              excluding=excluding)
    taken, patient_taken = IntervalSet(busy), IntervalSet(own)
    earliest = max(requested.start, now, after)
    grids = day_grids(schedule)
    found: list[Slot] = []
    day, enough_on = first, None
    while day <= last and (enough_on is None or day <= enough_on):
        for slot in grid_on(schedule, day, grids):
            if (earliest <= slot.start < requested.end
                    and not (taken and taken.overlaps(slot.start, slot.occupied_until))
                    and not (patient_taken and patient_taken.overlaps(slot.start, slot.end))):
                found.append(slot)
        if enough_on is None and len(found) >= NEXT_FREE_COUNT:
            enough_on = day + timedelta(days=1)
        day += timedelta(days=1)
    return found


@functools.lru_cache(maxsize=1 << 16)
def _slot_wire(start: datetime, end: datetime, institution_zone: ZoneInfo,
               requested_zone: ZoneInfo, interpreter_available: bool) -> bytes:
    return orjson.dumps({
        "start": start.astimezone(institution_zone).isoformat(),
        "start_local": start.astimezone(requested_zone).isoformat(),
        "end": end.astimezone(institution_zone).isoformat(),
        "end_local": end.astimezone(requested_zone).isoformat(),
        "interpreter_available": interpreter_available,
    })


def slots_wire(slots: Sequence[Slot], institution_zone: ZoneInfo, requested_zone: ZoneInfo
               ) -> bytes:
    """The JSON array of `slot_json` items; each item's bytes are reused across searches (the
    same instants recur for every practitioner with the same hours)."""
    return b"[" + b",".join(
        _slot_wire(slot.start, slot.end, institution_zone, requested_zone,
                   slot.interpreter_available) for slot in slots) + b"]"


def slot_json(slot: Slot, institution_zone: ZoneInfo, requested_zone: ZoneInfo) -> dict[str, Any]:
    """The wire form of a slot (the API contract): instants with both zones' offsets."""
    return {
        "start": slot.start.astimezone(institution_zone).isoformat(),
        "start_local": slot.start.astimezone(requested_zone).isoformat(),
        "end": slot.end.astimezone(institution_zone).isoformat(),
        "end_local": slot.end.astimezone(requested_zone).isoformat(),
        "interpreter_available": slot.interpreter_available,
    }


# --------------------------------------------------------------------------- the policy


def visit_condition(db: Session, patient: Patient, institution: Institution,
                    requested: str | None) -> str | None:
    """The diagnosis a follow-up is about: the one given, or the latest recorded at the
    institution."""
    if requested:
        return requested
    rows = db.execute(
        select(Encounter.conditions).where(Encounter.patient_id == patient.id,
                                           Encounter.institution_id == institution.id)
        .order_by(Encounter.started_at.desc()).limit(5)
    ).scalars()
    for conditions in rows:
        if conditions:
            return str(conditions[0])
    return None


def judge_telemedicine(db: Session, *, patient: Patient, institution: Institution,
                       at: datetime, condition: str | None, tri_party: bool,
                       lang: str, records: VisitRecords | None = None) -> Decision:
    if condition is None:
        raise _invalid("condition", "CONDITION_REQUIRED",
                       N_("Say which condition this video visit follows up (a KCD code such as "
                          "I10): the patient has no diagnosis recorded here."))
    try:
        decision = decide_for_visit(db, patient=patient, institution=institution, at=at,
                                    mode=VisitMode.VIDEO.value, condition=condition,
                                    tri_party=tri_party, lang=lang, records=records)
    except ValidationError as error:
        fields = [".".join(str(part) for part in item["loc"]) for item in error.errors()]
        raise Problem(422, "POLICY_INPUT_INVALID",
                      N_("The telemedicine rules cannot judge this visit: {fields}"),
                      params={"fields": ", ".join(fields)}) from None
    except RequestError as error:
        raise Problem(422, "POLICY_INPUT_INVALID",
                      N_("The telemedicine rules cannot judge this visit: {fields}"),
                      params={"fields": str(error)}) from None
    if decision.decision is DecisionKind.DENIED:
        raise policy_denied_problem(decision)
    return decision


# --------------------------------------------------------------------------- booking


@dataclass(frozen=True, slots=True)
class BookingRequest:
    patient_id: int
    practitioner_id: int
    start: datetime
    visit_type: str
    mode: VisitMode
    interpreter_language: str | None = None
    interpreter_id: int | None = None
    condition: str | None = None
    tri_party: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """What an appointment tried to hold: enough to explain a clash after the savepoint that
    wrote it has been rolled back (which also restores the appointment's old values)."""

    keys: dict[str, str]
    start: datetime
    until: datetime
    language: str | None

    @classmethod
    def of(cls, appointment: Appointment) -> Attempt:
        keys = {
            "practitioner": resource_key(ResourceKind.PRACTITIONER, appointment.practitioner_id),
            "patient": resource_key(ResourceKind.PATIENT, appointment.patient_id),
        }
        if appointment.interpreter_id is not None:
            keys["interpreter"] = resource_key(ResourceKind.INTERPRETER,
                                               appointment.interpreter_id)
        return cls(keys, appointment.start_at, appointment.occupied_until,
                   appointment.interpreter_language)


class _Clash(Exception):
    """A block the attempt needed was held: undo the attempt's savepoint."""


def _conflict(
    db: Session, attempt: Attempt, schedule: Schedule,
    patient: Patient, *, now: datetime, lang: str, range_zone: ZoneInfo,
    excluding: int | None = None,
) -> Problem:
    """Who was taken and what is free instead (the attempt is already undone)."""
    taken = {name for name, key in attempt.keys.items()
             if holders_of(db, [key], attempt.start, attempt.until) - {excluding}}
    return _taken_problem(taken, schedule, db, attempt.start, now=now, lang=lang,
                          language=attempt.language, patient=patient, range_zone=range_zone,
                          excluding=excluding)


def _taken_problem(taken: set[str], schedule: Schedule, db: Session, start: datetime, *,
                   now: datetime, lang: str, language: str | None, patient: Patient,
                   range_zone: ZoneInfo, excluding: int | None = None) -> Problem:
    """409 naming who was taken ("practitioner", "patient", "interpreter"), with the next
    free slots."""
    alternatives = next_free(db, schedule, start, now=now, interpreter_language=language,
                             patient=patient, excluding=excluding)
    extra = {"next_free_slots": [slot_json(slot, schedule.zone, range_zone)
                                 for slot in alternatives]}
    if "practitioner" in taken or not taken:
        error_ = SchedulingError(ErrorCode.SLOT_TAKEN, N_("This time has just been taken."),
                                 field="start")
        return scheduling_problem(error_, lang, extra=extra)
    if "patient" in taken:
        return Problem(409, "PATIENT_ALREADY_BOOKED",
                       N_("The patient already has an appointment at this time."),
                       extra=extra)
    error_ = SchedulingError(ErrorCode.INTERPRETER_UNAVAILABLE,
                             N_("No interpreter is free at this time."), field="start")
    return scheduling_problem(error_, lang, extra=extra)


def _busy_conflict(code: ErrorCode, schedule: Schedule, db: Session, start: datetime, *,
                   now: datetime, lang: str, language: str | None, patient: Patient,
                   range_zone: ZoneInfo, excluding: int | None = None) -> Problem:
    """409 for a time found taken before writing anything, with the next free slots."""
    alternatives = next_free(db, schedule, start, now=now, interpreter_language=language,
                             patient=patient, excluding=excluding)
    extra = {"next_free_slots": [slot_json(slot, schedule.zone, range_zone)
                                 for slot in alternatives]}
    if code is ErrorCode.INTERPRETER_UNAVAILABLE:
        return scheduling_problem(SchedulingError(
            ErrorCode.INTERPRETER_UNAVAILABLE, N_("No interpreter is free at this time."),
            field="start"), lang, extra=extra)
    return scheduling_problem(SchedulingError(
        ErrorCode.SLOT_TAKEN, N_("This time has just been taken."), field="start"),
        lang, extra=extra)


def _check_start(schedule: Schedule, db: Session, start: datetime, *, now: datetime,
                 lang: str, excluding: int | None = None) -> Slot:
    """The slot at `start` if the rules allow it; SLOT_TAKEN is left to the caller.

    The grid and the clock are checked here; whether the time is free is the occupancy
    constraint's to say when the booking is written (a 409 then)."""
    if start >= now:
        for slot in grid_on(schedule, start.astimezone(schedule.zone).date()):
            if slot.start == start:
                return slot
    # Not on the grid, or in the past: the rules say precisely why.
    busy = practitioner_busy(db, schedule.practitioner.id, start,
                             start + schedule.visit_type.step, excluding=excluding)
    try:
        return validate_booking_start(
            schedule.availability, schedule.zone, schedule.visit_type, schedule.mode, start,
            KOREAN_PUBLIC_HOLIDAYS, now, busy)
    except SchedulingError as error:
        if error.code is ErrorCode.SLOT_TAKEN:
            raise
        raise scheduling_problem(error, lang) from None


def _pick_interpreter(
    db: Session, schedule: Schedule, language: str, visit: Interval, *,
    requested_id: int | None, preferred_id: int | None = None, excluding: int | None = None,
) -> int | None:
    candidates = require_interpreter_language(db, schedule.institution.id, language)
    if requested_id is not None:
        candidates = [item for item in candidates if item.id == requested_id]
        if not candidates:
            raise _invalid("interpreter_id", "INTERPRETER_NOT_SUITABLE",
                           N_("This interpreter does not interpret {language} here."),
                           language=language)
    windows = interpreter_windows(db, candidates, schedule.mode, visit.start, visit.end,
                                  excluding=excluding)
    return _first_free_interpreter(windows, visit, preferred_id)


def book(db: Session, principal: Principal, request: BookingRequest, *, settings: Settings,
         now: datetime | None = None) -> Appointment:
    """Book an appointment; on success it is written, queued and audited (the caller commits).

    Raises Problem: 404 (unknown or another institution's patient or practitioner), 422 (bad
    input, POLICY_DENIED), 409 (SLOT_TAKEN, PATIENT_ALREADY_BOOKED, INTERPRETER_UNAVAILABLE,
    with `next_free_slots`). After a 409 nothing of the attempt is left in the transaction.
    """
    return book_with_rows(db, principal, request, settings=settings, now=now)[0]


def _known_visit_type(code: str) -> VisitType | None:
    try:
        return visit_type_by_code(code)
    except SchedulingError:
        return None


def book_with_rows(db: Session, principal: Principal, request: BookingRequest, *,
                   settings: Settings, now: datetime | None = None
                   ) -> tuple[Appointment, BookingRows]:
    """`book`, also returning the rows it read (the patient and the institution, for the
    answer): `plan_booking` then `write_planned_booking`, in the caller's transaction."""
    planned = plan_booking(db, principal, request, settings=settings, now=now)
    return write_planned_booking(db, planned), planned.rows


@dataclass(frozen=True, slots=True)
class PlannedBooking:
    """A booking read, checked and decided on, not yet written (`write_planned_booking`)."""

    #: Every column set (on PostgreSQL the id too); still transient.
    appointment: Appointment
    rows: BookingRows
    messages_for: Callable[[Appointment], list[dict[str, Any]]]
    audit_entry: Callable[[Appointment], tuple[AuditActor, AuditEvent]]
    #: The 409 for a clash found on writing: who (resource names) was taken meanwhile.
    taken_problem: Callable[[Session, set[str]], Problem]


def plan_booking(db: Session, principal: Principal, request: BookingRequest, *,
                 settings: Settings, now: datetime | None = None) -> PlannedBooking:
    """Everything a booking does before it writes: it only reads (Problem for every refusal
    known by then), so on SQLite it may run outside the write transaction, with the
    statements' own reads (`AUTOCOMMIT_READ`), as PostgreSQL's READ COMMITTED lets it run
    without a lock. The decisions rest on what this read saw; the occupancy's UNIQUE
    constraint still decides at the write whether the time is free.

    The hot path in statements: one read of everything the decision needs (patient,
    institution, practitioner, the version of their hours, whether the time is already held: a
    taken slot is answered from it, before anything is written; for a video visit the records
    the telemedicine rules decide on, which also give the latest diagnosis; and on PostgreSQL
    the new appointment's id). `write_planned_booking` then writes the appointment, its
    occupancy blocks, its outbox rows, the practitioner's calendar version and the audit entry
    (one statement on PostgreSQL, one each on SQLite: `store.write_booking`).
    """
    now = now or utcnow()
    lang = principal.language
    visit_type = _known_visit_type(request.visit_type)
    # An unknown visit type is refused below, before the holds read here are looked at.
    step = visit_type.step if visit_type else timedelta(minutes=BLOCK_MINUTES)
    duration = (timedelta(minutes=visit_type.duration_minutes) if visit_type
                else timedelta(minutes=BLOCK_MINUTES))
    rows = booking_rows(
        db, patient_id=request.patient_id, practitioner_id=request.practitioner_id,
        practitioner_busy=Interval(request.start, request.start + step),
        patient_busy=Interval(request.start, request.start + duration),
        records_at=request.start if request.mode is VisitMode.VIDEO else None)
    if rows is None:
        raise not_found("patient")
    patient, institution, practitioner = rows.patient, rows.institution, rows.practitioner
    if not ((principal.user_id is not None and patient.user_id == principal.user_id)
            or is_staff_of(principal, patient.institution_id, *BOOKING_STAFF)):
        raise not_found("patient")
    if practitioner is None:
        raise not_found("practitioner")
    if request.interpreter_id is not None and not is_staff_of(
            principal, institution.id, *BOOKING_STAFF):
        raise Problem(403, "FORBIDDEN", N_("Only the clinic's staff choose the interpreter."))
    try:
        hours_key, availability = hours_of_version(db, rows.hours)
        schedule = schedule_of(practitioner, institution, hours_key, availability,
                               request.visit_type, request.mode)
    except SchedulingError as error:
        raise scheduling_problem(error, lang) from None
    patient_zone = resolve_zone(patient.time_zone)
    language = interpreter_language_needed(practitioner, patient, request.interpreter_language)
    if language is not None:
        try:
            require_interpreter_language(db, institution.id, language)
        except SchedulingError as error:
            raise scheduling_problem(replace_field(error, "interpreter_language"), lang) from None
    try:
        slot = _check_start(schedule, db, request.start, now=now, lang=lang)
    except SchedulingError:
        raise _busy_conflict(ErrorCode.SLOT_TAKEN, schedule, db, request.start, now=now,
                             lang=lang, language=language, patient=patient,
                             range_zone=patient_zone) from None
    if rows.practitioner_held or rows.patient_held:
        # Taken before this attempt began: answered without writing anything.
        raise _taken_problem({"practitioner"} if rows.practitioner_held else {"patient"},
                             schedule, db, slot.start, now=now, lang=lang, language=language,
                             patient=patient, range_zone=patient_zone)

    tri_party = request.tri_party or schedule.visit_type.code == "tri_party_consultation"
    latest = rows.records.latest_conditions() if rows.records else None
    condition = request.condition or (str(latest[0]) if latest else None)
    decision: Decision | None = None
    if schedule.mode is VisitMode.VIDEO:
        decision = judge_telemedicine(db, patient=patient, institution=institution,
                                      at=slot.start, condition=condition,
                                      tri_party=tri_party, lang=lang, records=rows.records)

    interpreter_id: int | None = None
    if language is not None:
        interpreter_id = _pick_interpreter(db, schedule, language, slot.interval,
                                           requested_id=request.interpreter_id)
        if interpreter_id is None:
            raise _busy_conflict(ErrorCode.INTERPRETER_UNAVAILABLE, schedule, db, slot.start,
                                 now=now, lang=lang, language=language, patient=patient,
                                 range_zone=patient_zone)

    appointment = Appointment(
        id=rows.next_appointment_id,
        institution_id=institution.id, patient_id=patient.id, practitioner_id=practitioner.id,
        interpreter_id=interpreter_id, interpreter_language=language,
        visit_type=schedule.visit_type.code, mode=schedule.mode.value,
        start_at=slot.start, end_at=slot.end, occupied_until=slot.occupied_until,
        status=AppointmentStatus.BOOKED.value, sequence=0,
        booked_by_user_id=principal.user_id, booked_by=actor_ref(principal),
        created_at=now, updated_at=now, cancelled_at=None, cancelled_by=None,
        cancel_reason=None, no_show_at=None, condition_code=condition, tri_party=tri_party,
        policy_pack=decision.pack if decision else None,
        policy_decision=decision.model_dump(mode="json") if decision else None,
    )
    texts_patient = bool(patient.phone)

    def messages_for(written: Appointment) -> list[dict[str, Any]]:
        return notifications.messages_for_change(
            written, notifications.Change.BOOKED, settings=settings, now=now,
            texts_patient=texts_patient)

    def audit_entry(written: Appointment) -> tuple[AuditActor, AuditEvent]:
        return principal.audit_actor, AuditEvent(
            "create", "appointment", str(written.id), patient.id, institution.id,
            detail={"start": slot.start.isoformat(), "mode": schedule.mode.value,
                    "visit_type": schedule.visit_type.code, "interpreter_id": interpreter_id,
                    "decision": decision.decision.value if decision else None})

    def taken_problem(db: Session, taken: set[str]) -> Problem:
        return _taken_problem(taken, schedule, db, slot.start, now=now, lang=lang,
                              language=language, patient=patient, range_zone=patient_zone)

    return PlannedBooking(appointment, rows, messages_for, audit_entry, taken_problem)


def write_planned_booking(db: Session, planned: PlannedBooking) -> Appointment:
    """Write what `plan_booking` decided: the appointment, its occupancy blocks, its
    invitations and reminders, the practitioner's calendar version and the audit entry (one
    statement on PostgreSQL). A clash means a booking that committed since the plan's read took
    the time: nothing of this attempt is left (the caller's transaction may go on), and it is
    explained (409 with the next free slots)."""
    appointment = planned.appointment
    clashed = write_booking(db, appointment, planned.messages_for, planned.audit_entry)
    if clashed:
        names = {name for name, key in Attempt.of(appointment).keys.items() if key in clashed}
        raise planned.taken_problem(db, names)
    return appointment


def replace_field(error: SchedulingError, field: str) -> SchedulingError:
    error.field = field
    return error


# --------------------------------------------------------------------------- changes


def cutoff_of(institution: Institution) -> timedelta:
    return timedelta(hours=institution.cancellation_cutoff_hours)


def _lifecycle_error(error: SchedulingError, lang: str) -> Problem:
    return scheduling_problem(error, lang)


def reschedule(db: Session, principal: Principal, appointment: Appointment, new_start: datetime,
               *, by_staff: bool, settings: Settings, now: datetime | None = None
               ) -> Appointment:
    """Move an appointment to another slot of the same practitioner, visit type and mode."""
    now = now or utcnow()
    lang = principal.language
    institution = db.get(Institution, appointment.institution_id)
    patient = db.get(Patient, appointment.patient_id)
    practitioner = db.get(Practitioner, appointment.practitioner_id)
    assert institution is not None and patient is not None and practitioner is not None
    try:
        # Status and cut-off first: a moved visit's end is known only once its slot is.
        lifecycle.reschedule(appointment.state(), new_start, new_start + timedelta(minutes=1),
                             now=now, cutoff=cutoff_of(institution), by_staff=by_staff)
        schedule = schedule_for(db, practitioner, institution, appointment.visit_type,
                                appointment.visit_mode)
    except SchedulingError as error:
        raise _lifecycle_error(error, lang) from None
    patient_zone = resolve_zone(patient.time_zone)
    language = appointment.interpreter_language
    try:
        slot = _check_start(schedule, db, new_start, now=now, lang=lang, excluding=appointment.id)
    except SchedulingError:
        raise _busy_conflict(ErrorCode.SLOT_TAKEN, schedule, db, new_start, now=now, lang=lang,
                             language=language, patient=patient, range_zone=patient_zone,
                             excluding=appointment.id) from None
    decision: Decision | None = None
    if schedule.mode is VisitMode.VIDEO:
        condition = visit_condition(db, patient, institution, appointment.condition_code)
        decision = judge_telemedicine(db, patient=patient, institution=institution,
                                      at=slot.start, condition=condition,
                                      tri_party=appointment.tri_party, lang=lang)
        appointment.condition_code = condition
    interpreter_id = appointment.interpreter_id
    if language is not None:
        interpreter_id = _pick_interpreter(db, schedule, language, slot.interval,
                                           requested_id=None,
                                           preferred_id=appointment.interpreter_id,
                                           excluding=appointment.id)
        if interpreter_id is None:
            raise _busy_conflict(ErrorCode.INTERPRETER_UNAVAILABLE, schedule, db, slot.start,
                                 now=now, lang=lang, language=language, patient=patient,
                                 range_zone=patient_zone, excluding=appointment.id)
    previous = {"start": appointment.start_at.isoformat(),
                "interpreter_id": appointment.interpreter_id}
    moved = lifecycle.reschedule(appointment.state(), slot.start, slot.end, now=now,
                                 cutoff=cutoff_of(institution), by_staff=by_staff)
    former_interpreter = appointment.interpreter_id
    db.flush()
    try:
        with db.begin_nested():
            release_occupancy(db, appointment.id)
            appointment.start_at, appointment.end_at = moved.start, moved.end
            appointment.occupied_until = slot.occupied_until
            appointment.status, appointment.sequence = moved.status.value, moved.sequence
            appointment.interpreter_id = interpreter_id
            appointment.updated_at = now
            if decision is not None:
                appointment.policy_pack = decision.pack
                appointment.policy_decision = decision.model_dump(mode="json")
            attempt = Attempt.of(appointment)
            db.flush()
            if not claim_occupancy(db, appointment):
                raise _Clash()
            bump_calendar(db, appointment.practitioner_id)
    except _Clash:
        # The savepoint is rolled back: the appointment keeps its old time and blocks.
        raise _conflict(db, attempt, schedule, patient, now=now, lang=lang,
                        range_zone=patient_zone, excluding=appointment.id) from None
    notifications.queue_for_change(db, appointment, notifications.Change.RESCHEDULED,
                                   settings=settings, now=now,
                                   former_interpreter_id=former_interpreter)
    audit(db, principal, AuditEvent(
        "update", "appointment", str(appointment.id), patient.id, institution.id,
        detail={"change": "reschedule", "from": previous, "start": slot.start.isoformat(),
                "interpreter_id": interpreter_id, "sequence": appointment.sequence}))
    return appointment


def cancel(db: Session, principal: Principal, appointment: Appointment, *, by_staff: bool,
           reason: str | None, settings: Settings, now: datetime | None = None) -> Appointment:
    """Cancel: the time is freed at once and everyone's calendar gets the cancellation."""
    now = now or utcnow()
    institution = db.get(Institution, appointment.institution_id)
    assert institution is not None
    try:
        cancelled = lifecycle.cancel(appointment.state(), now=now, cutoff=cutoff_of(institution),
                                     by_staff=by_staff)
    except SchedulingError as error:
        raise _lifecycle_error(error, principal.language) from None
    release_occupancy(db, appointment.id)
    bump_calendar(db, appointment.practitioner_id)
    appointment.status, appointment.sequence = cancelled.status.value, cancelled.sequence
    appointment.cancelled_at, appointment.cancelled_by = now, actor_ref(principal)
    appointment.cancel_reason = reason
    appointment.updated_at = now
    db.flush()
    notifications.queue_for_change(db, appointment, notifications.Change.CANCELLED,
                                   settings=settings, now=now)
    audit(db, principal, AuditEvent(
        "update", "appointment", str(appointment.id), appointment.patient_id, institution.id,
        detail={"change": "cancel", "by_staff": by_staff, "sequence": appointment.sequence}))
    return appointment


def record_outcome(db: Session, principal: Principal, appointment: Appointment,
                   status: AppointmentStatus, *, now: datetime | None = None) -> Appointment:
    """No-show or completed, once the appointment has started; staff only."""
    now = now or utcnow()
    if not is_staff_of(principal, appointment.institution_id, *BOOKING_STAFF,
                       Role.INSTITUTION_ADMIN):
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    if status not in (AppointmentStatus.NO_SHOW, AppointmentStatus.COMPLETED):
        raise ValueError(f"an outcome is no-show or completed, not {status}")
    try:
        if status is AppointmentStatus.NO_SHOW:
            changed = lifecycle.mark_no_show(appointment.state(), now=now)
            appointment.no_show_at = now
        else:
            changed = lifecycle.complete(appointment.state(), now=now)
    except SchedulingError as error:
        raise _lifecycle_error(error, principal.language) from None
    appointment.status = changed.status.value
    appointment.updated_at = now
    db.flush()
    # Reminders still queued for a missed visit are withdrawn with the appointment's change.
    notifications.withdraw_pending(db, appointment.id, now=now)
    audit(db, principal, AuditEvent(
        "update", "appointment", str(appointment.id), appointment.patient_id,
        appointment.institution_id, detail={"change": status.value}))
    return appointment


def assign_interpreter(db: Session, principal: Principal, appointment: Appointment,
                       interpreter_id: int | None, *, settings: Settings,
                       language: str | None = None, now: datetime | None = None) -> Appointment:
    """Coordinators assign, reassign or remove the interpreter of an upcoming appointment."""
    now = now or utcnow()
    lang = principal.language
    if not is_staff_of(principal, appointment.institution_id, *COORDINATING_STAFF):
        raise Problem(403, "FORBIDDEN", N_("Only coordinators assign interpreters."))
    if not appointment.is_active or appointment.start_at <= now:
        raise Problem(409, "APPOINTMENT_NOT_UPCOMING",
                      N_("Only upcoming appointments get interpreters assigned."))
    former = appointment.interpreter_id
    if interpreter_id == former and language in (None, appointment.interpreter_language):
        return appointment
    if interpreter_id is not None:
        wanted_language = language or appointment.interpreter_language
        interpreter = db.get(Interpreter, interpreter_id)
        if interpreter is None or interpreter.institution_id != appointment.institution_id:
            raise not_found("interpreter")
        if wanted_language is None:
            wanted_language = interpreter.languages[0] if interpreter.languages else None
        if wanted_language is None or _primary(wanted_language) not in {
                _primary(code) for code in interpreter.languages or []}:
            raise _invalid("interpreter_id", "INTERPRETER_NOT_SUITABLE",
                           N_("This interpreter does not interpret {language} here."),
                           language=wanted_language or "")
        windows = interpreter_windows(db, [interpreter], appointment.visit_mode,
                                      appointment.start_at, appointment.end_at,
                                      excluding=appointment.id)
        if _first_free_interpreter(windows, appointment.visit_interval) is None:
            raise scheduling_problem(SchedulingError(
                ErrorCode.INTERPRETER_UNAVAILABLE, N_("No interpreter is free at this time."),
                field="interpreter_id"), lang)
        appointment.interpreter_language = wanted_language
    db.flush()
    try:
        with db.begin_nested():
            release_occupancy(db, appointment.id)
            appointment.interpreter_id = interpreter_id
            appointment.sequence += 1
            appointment.updated_at = now
            db.flush()
            if not claim_occupancy(db, appointment):
                raise _Clash()
    except _Clash:
        raise scheduling_problem(SchedulingError(
            ErrorCode.INTERPRETER_UNAVAILABLE, N_("No interpreter is free at this time."),
            field="interpreter_id"), lang) from None
    notifications.queue_for_change(db, appointment, notifications.Change.INTERPRETER_CHANGED,
                                   settings=settings, now=now, former_interpreter_id=former)
    audit(db, principal, AuditEvent(
        "update", "appointment", str(appointment.id), appointment.patient_id,
        appointment.institution_id,
        detail={"change": "interpreter", "from": former, "to": interpreter_id}))
    return appointment
