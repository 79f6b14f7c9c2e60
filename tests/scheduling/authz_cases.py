"""Authorisation cases of scheduling: availability, slots, appointments (API and pages), the
coordinator's calendar and the own-schedule page. Format: tests/authz.py and
tests/test_authorization_matrix.py.

Calls that change an appointment get a fresh one of institution A each time (a cancelled
appointment cannot be cancelled again), and bookings take a fresh time each, so every allowed
caller is served and nothing depends on the order the matrix calls in.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from jaejin.core.accounts import Role
from jaejin.directory.store import Interpreter
from jaejin.scheduling.store import Appointment, OwnerKind, claim_occupancy, save_availability
from tests.authz import ANONYMOUS, Caller, Case, RouteCase, World, make_request
from tests.scheduling.test_booking_fixtures import every_day, seoul, working_day

STAFF = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN})
HOURS_KEEPERS = STAFF | {Role.SYSTEM_CLIENT}
INTERPRETER_HOURS = frozenset({Role.INTERPRETER, Role.COORDINATOR, Role.INSTITUTION_ADMIN,
                               Role.SYSTEM_CLIENT})
SEARCHERS = STAFF | {Role.PATIENT, Role.SYSTEM_CLIENT}
BOOKERS = frozenset({Role.PATIENT, Role.CLINICIAN, Role.COORDINATOR, Role.SYSTEM_CLIENT})
VIEWERS = STAFF | {Role.PATIENT, Role.INTERPRETER, Role.SYSTEM_CLIENT}
CHANGERS = STAFF | {Role.PATIENT, Role.SYSTEM_CLIENT}
PAGE_VIEWERS = STAFF | {Role.PATIENT, Role.INTERPRETER}
PAGE_BOOKERS = frozenset({Role.PATIENT, Role.CLINICIAN, Role.COORDINATOR})
PAGE_CHANGERS = STAFF | {Role.PATIENT}
COORDINATORS = frozenset({Role.COORDINATOR, Role.INSTITUTION_ADMIN})
OWN_SCHEDULE = frozenset({Role.CLINICIAN, Role.INTERPRETER})

#: Fresh slot numbers: each booking or move takes its own quarter-hour.
_slots = itertools.count()


def setup(world: World) -> None:
    """Hours for both practitioners, an interpreter at each institution (A's is the matrix's
    interpreter person), and one upcoming appointment of A that A's interpreter interprets."""
    actors = world.actors
    day = working_day(3)
    with world.session() as db:
        for key, institution in (("a", actors.a), ("b", actors.b)):
            save_availability(db, OwnerKind.PRACTITIONER, actors.practitioners[key].id,
                              institution.id, every_day("09:00", "18:00"), updated_by="matrix")
            interpreter = Interpreter(institution_id=institution.id,
                                      user_id=actors.person(key, Role.INTERPRETER).user.id,
                                      name=f"Interpreter {key}", languages=["en", "ko"],
                                      time_zone="Asia/Seoul")
            db.add(interpreter)
            db.flush()
            save_availability(db, OwnerKind.INTERPRETER, interpreter.id, institution.id,
                              every_day("08:00", "20:00"), updated_by="matrix")
            world.extra.setdefault("scheduling", {})[f"interpreter_{key}"] = interpreter.id
        world.extra["scheduling"]["day"] = day
    world.extra["scheduling"]["appointment"] = new_appointment(world)


def _ids(world: World) -> dict[str, Any]:
    found: dict[str, Any] = world.extra["scheduling"]
    return found


def next_start(world: World) -> datetime:
    """A quarter-hour nobody has taken yet, from the day after the set-up appointment on."""
    number = next(_slots)
    day = _ids(world)["day"] + timedelta(days=1 + number // 36)
    minutes = 9 * 60 + (number % 36) * 15
    return seoul(day, f"{minutes // 60:02d}:{minutes % 60:02d}")


def new_appointment(world: World) -> int:
    """An upcoming video follow-up of A's patient, interpreted by A's interpreter."""
    start = next_start(world)
    with world.session() as db:
        appointment = Appointment(
            institution_id=world.actors.a.id, patient_id=world.actors.patients["a"].id,
            practitioner_id=world.actors.practitioners["a"].id,
            interpreter_id=_ids(world)["interpreter_a"], interpreter_language="en",
            visit_type="follow_up", mode="video", start_at=start,
            end_at=start + timedelta(minutes=15), occupied_until=start + timedelta(minutes=15),
            booked_by="matrix")
        db.add(appointment)
        db.flush()
        claim_occupancy(db, appointment)
        return appointment.id


# ------------------------------------------------------------------------------ parameters


def practitioner_a(world: World) -> dict[str, Any]:
    return {"practitioner_id": world.actors.practitioners["a"].id}


def interpreter_a(world: World) -> dict[str, Any]:
    return {"interpreter_id": _ids(world)["interpreter_a"]}


def appointment_a(world: World) -> dict[str, Any]:
    return {"appointment_id": _ids(world)["appointment"]}


def slot_query(world: World) -> dict[str, Any]:
    day = _ids(world)["day"].isoformat()
    return {"start": day, "end": day, "tz": "America/New_York", "visit_type": "follow_up",
            "mode": "video"}


def booking_query(world: World) -> dict[str, Any]:
    return {"patient_id": world.actors.patients["a"].id,
            "practitioner_id": world.actors.practitioners["a"].id,
            "start": _ids(world)["day"].isoformat(), "tz": "Asia/Seoul"}


def confirm_query(world: World) -> dict[str, Any]:
    return booking_query(world) | {"start": next_start(world).isoformat(),
                                   "visit": "follow_up:video"}


def hours(world: World, caller: Caller) -> dict[str, Any]:
    return every_day("09:00", "18:00").model_dump(mode="json")


def interpreter_hours(world: World, caller: Caller) -> dict[str, Any]:
    return every_day("08:00", "20:00").model_dump(mode="json")


def new_booking(world: World, caller: Caller) -> dict[str, Any]:
    return {"patient_id": world.actors.patients["a"].id,
            "practitioner_id": world.actors.practitioners["a"].id,
            "start": next_start(world).isoformat(), "visit_type": "follow_up", "mode": "video"}


def booking_form(world: World, caller: Caller) -> dict[str, Any]:
    return {"patient_id": str(world.actors.patients["a"].id),
            "practitioner_id": str(world.actors.practitioners["a"].id),
            "start": next_start(world).isoformat(), "visit": "follow_up:video",
            "tz": "Asia/Seoul"}


def move(world: World, caller: Caller) -> dict[str, Any]:
    return {"start": next_start(world).isoformat()}


def move_form(world: World, caller: Caller) -> dict[str, Any]:
    return {"start": next_start(world).isoformat(), "tz": "Asia/Seoul"}


def same_interpreter_form(world: World, caller: Caller) -> dict[str, Any]:
    return {"interpreter_id": str(_ids(world)["interpreter_a"])}


def on_a_fresh_appointment(world: World, caller: Caller, case: RouteCase) -> Any:
    """Make the case's request about an appointment created just for it."""
    appointment_id = new_appointment(world)
    fresh = RouteCase(case.method, case.path, case.allowed,
                      path_params=lambda _world: {"appointment_id": appointment_id},
                      json=case.json, form=case.form, form_csrf=case.form_csrf)
    return make_request(world, fresh, caller)


# ------------------------------------------------------------------------------------- cases

CASES: list[Case] = [
    RouteCase("GET", "/api/v1/practitioners/{practitioner_id}/availability", HOURS_KEEPERS,
              path_params=practitioner_a, own_institution_check=True),
    RouteCase("PUT", "/api/v1/practitioners/{practitioner_id}/availability", HOURS_KEEPERS,
              path_params=practitioner_a, json=hours, own_institution_check=True),
    RouteCase("GET", "/api/v1/interpreters/{interpreter_id}/availability", INTERPRETER_HOURS,
              path_params=interpreter_a, own_institution_check=True),
    RouteCase("PUT", "/api/v1/interpreters/{interpreter_id}/availability", INTERPRETER_HOURS,
              path_params=interpreter_a, json=interpreter_hours, own_institution_check=True),
    RouteCase("GET", "/api/v1/practitioners/{practitioner_id}/slots", SEARCHERS,
              path_params=practitioner_a, query=slot_query, own_institution_check=True),
    RouteCase("POST", "/api/v1/appointments", BOOKERS, json=new_booking,
              own_institution_check=True),
    RouteCase("GET", "/api/v1/appointments", VIEWERS),
    RouteCase("GET", "/api/v1/appointments/{appointment_id}", VIEWERS,
              path_params=appointment_a, own_institution_check=True),
    RouteCase("GET", "/api/v1/appointments/{appointment_id}.ics", VIEWERS,
              path_params=appointment_a, own_institution_check=True),
    RouteCase("PATCH", "/api/v1/appointments/{appointment_id}", CHANGERS,
              path_params=appointment_a, json=move, own_institution_check=True,
              call=on_a_fresh_appointment),
    RouteCase("DELETE", "/api/v1/appointments/{appointment_id}", CHANGERS,
              path_params=appointment_a, own_institution_check=True,
              call=on_a_fresh_appointment),
    # Pages.
    RouteCase("GET", "/appointments", PAGE_VIEWERS),
    RouteCase("GET", "/appointments/book", PAGE_BOOKERS, query=booking_query,
              own_institution_check=True),
    RouteCase("GET", "/appointments/book/slots", PAGE_BOOKERS, query=booking_query,
              own_institution_check=True),
    RouteCase("GET", "/appointments/book/confirm", PAGE_BOOKERS, query=confirm_query,
              own_institution_check=True),
    RouteCase("POST", "/appointments/book", PAGE_BOOKERS, form=booking_form,
              own_institution_check=True),
    RouteCase("GET", "/appointments/{appointment_id}", PAGE_VIEWERS,
              path_params=appointment_a, own_institution_check=True),
    RouteCase("POST", "/appointments/{appointment_id}/cancel", PAGE_CHANGERS,
              path_params=appointment_a, form=lambda world, caller: {"reason": "matrix"},
              own_institution_check=True, call=on_a_fresh_appointment),
    RouteCase("GET", "/appointments/{appointment_id}/reschedule", PAGE_CHANGERS,
              path_params=appointment_a, own_institution_check=True),
    RouteCase("POST", "/appointments/{appointment_id}/reschedule", PAGE_CHANGERS,
              path_params=appointment_a, form=move_form, own_institution_check=True,
              call=on_a_fresh_appointment),
    RouteCase("GET", "/scheduling/calendar", COORDINATORS),
    RouteCase("POST", "/scheduling/appointments/{appointment_id}/interpreter", COORDINATORS,
              path_params=appointment_a, form=same_interpreter_form,
              own_institution_check=True),
    RouteCase("GET", "/scheduling/my", OWN_SCHEDULE),
]

assert all(ANONYMOUS not in case.allowed for case in CASES if isinstance(case, RouteCase))
