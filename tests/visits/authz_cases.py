"""Authorisation cases of video visits: the pages, the JSON API and the room's WebSocket.
Format: tests/authz.py and tests/test_authorization_matrix.py.

Who takes part in a visit: its patient, its practitioner (institution A's clinician) and its
interpreter (A's interpreter); the institution's care team (clinician, coordinator, admin) may
see the record. Actions that move a visit get a fresh visit in the right state for every call
(`_fresh`), so each allowed caller's call can succeed on its own.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.core.database import utcnow
from jaejin.core.security import new_token, token_digest
from jaejin.directory.store import Interpreter
from jaejin.policy.korean_time import KST
from jaejin.scheduling.public_holidays import KOREAN_PUBLIC_HOLIDAYS
from jaejin.scheduling.schemas import AvailabilityIn
from jaejin.scheduling.store import OwnerKind, get_availability_row, save_availability
from jaejin.visits.lifecycle import VisitState
from jaejin.visits.store import GuestLink, VisitAttachment, VisitNote, VisitPrescription
from tests.authz import EVERYONE, Caller, RouteCase, WebSocketCase, World
from tests.visits.conftest import add_interpreter, add_local_physician, make_visit

PARTICIPANTS = frozenset({Role.PATIENT, Role.CLINICIAN, Role.INTERPRETER})
CARE_TEAM = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN})
EVERYONE_INVOLVED = PARTICIPANTS | CARE_TEAM
CLINICIAN = frozenset({Role.CLINICIAN})
OUTCOME_STAFF = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN})
PATIENT_A_MRN = "MRN-A-1"
SEOUL = ZoneInfo("Asia/Seoul")


def _ids(world: World) -> dict[str, Any]:
    found: dict[str, Any] = world.extra["visits"]
    return found


def setup(world: World) -> None:
    """A visit of A in its waiting room (with A's interpreter, a shared file and the patient's
    consent), a visit with a live guest link, and the practitioner's hours for booking."""
    actors = world.actors
    with world.session() as db:
        interpreters = {key: _interpreter_of(db, world, key) for key in ("a", "b")}
        main = make_visit(db, actors, "a", state=VisitState.WAITING_ROOM, consent=True,
                          interpreter=interpreters["a"])
        attachment = VisitAttachment(
            visit_id=main.id, institution_id=main.institution_id, uploaded_by="user:0",
            uploader_role="patient", filename="readings.txt",
            content_type="text/plain; charset=utf-8", size_bytes=5, sha256="0" * 64,
            content=b"hello")
        db.add(attachment)
        guest_visit = make_visit(db, actors, "a", state=VisitState.WAITING_ROOM, consent=True,
                                 tri_party=True,
                                 start=utcnow() + timedelta(hours=2))
        physician = add_local_physician(db, actors, "a")
        guest_visit.local_physician_id = physician.id
        token = new_token()
        db.add(GuestLink(visit_id=guest_visit.id, local_physician_id=physician.id,
                         token_hash=token_digest(token), language="ja",
                         expires_at=utcnow() + timedelta(days=1)))
        if get_availability_row(db, OwnerKind.PRACTITIONER, actors.practitioners["a"].id,
                                actors.a.id) is None:
            open_hours = AvailabilityIn.model_validate({"weekly": [
                {"weekday": day, "start": "08:00", "end": "20:00"} for day in range(1, 8)]})
            save_availability(db, OwnerKind.PRACTITIONER, actors.practitioners["a"].id,
                              actors.a.id, open_hours, updated_by="matrix")
        prescribing = _visit_with_prescription(db, world)
        db.flush()
        world.extra["visits"] = {
            "main": main.id, "appointment": main.appointment_id, "attachment": attachment.id,
            "guest_visit": guest_visit.id, "guest_token": token,
            "interpreter_a": interpreters["a"].id, "prescribing": prescribing.visit_id,
        }


RX_MARKER = "amlodipine"


def _visit_with_prescription(db: Any, world: World) -> VisitPrescription:
    """A visit of A in its call, with one prescription on the note (as the service stores it)."""
    visit = make_visit(db, world.actors, "a", state=VisitState.IN_CALL, consent=True,
                       identity=True)
    start = utcnow()
    row = VisitPrescription(
        visit_id=visit.id, institution_id=visit.institution_id, patient_id=visit.patient_id,
        ingredient=RX_MARKER, atc="C08CA01", strength="5 mg", frequency="once a day",
        days_supply=30, instructions="", policy_code="PRESCRIPTION_OK",
        policy_pack="kr-pilot-2025-10", policy_day=start.astimezone(KST).date())
    db.add(row)
    db.flush()
    return row


def _prescribing(world: World) -> dict[str, Any]:
    return {"visit_id": _ids(world)["prescribing"]}


def _prescription_to_remove(world: World) -> dict[str, Any]:
    with world.session() as db:
        row = _visit_with_prescription(db, world)
        return {"visit_id": row.visit_id, "prescription_id": row.id}


RX_BODY = {"ingredient": "cetirizine", "atc": "R06AE07", "days_supply": 7,
           "strength": "10 mg", "frequency": "once a day"}


def _interpreter_of(db: Any, world: World, key: str) -> Interpreter:
    """The matrix's interpreter person's Interpreter row (another set-up may have made it)."""
    user_id = world.actors.person(key, Role.INTERPRETER).user.id
    existing = db.execute(select(Interpreter).where(Interpreter.user_id == user_id)
                          ).scalars().first()
    return existing or add_interpreter(db, world.actors, key)


def _fresh(state: VisitState, *, with_interpreter: bool = True, **options: Any) -> Any:
    """Path parameters naming a new visit of A in `state`, made for this one call."""

    def build(world: World) -> dict[str, Any]:
        with world.session() as db:
            interpreter = (db.get(Interpreter, _ids(world)["interpreter_a"])
                           if with_interpreter else None)
            visit = make_visit(db, world.actors, "a", state=state, interpreter=interpreter,
                               **options)
            if state is VisitState.WRAP_UP:
                db.add(VisitNote(visit_id=visit.id, assessment="Stable on treatment.",
                                 condition_codes=["I10"], signed_at=utcnow()))
            if options.get("tri_party"):
                visit.local_physician_id = add_local_physician(db, world.actors, "a").id
            db.flush()
            return {"visit_id": visit.id}

    return build


def _note_to_sign(world: World) -> dict[str, Any]:
    with world.session() as db:
        visit = make_visit(db, world.actors, "a", state=VisitState.IN_CALL, consent=True,
                           identity=True)
        db.add(VisitNote(visit_id=visit.id, assessment="Blood pressure at target.",
                         condition_codes=["I10"]))
        db.flush()
        return {"visit_id": visit.id}


def _main(world: World) -> dict[str, Any]:
    return {"visit_id": _ids(world)["main"]}


def _attachment(world: World) -> dict[str, Any]:
    return {"visit_id": _ids(world)["main"], "attachment_id": _ids(world)["attachment"]}


def _guest(world: World) -> dict[str, Any]:
    return {"visit_id": _ids(world)["guest_visit"]}


def _markers(world: World) -> list[str]:
    return [PATIENT_A_MRN]


def _free_follow_up_slot() -> str:
    """A quarter-hour two days ahead, late in the afternoon: inside the practitioner's hours
    (ours, or the scheduling set-up's 09:00-18:00) and before any slot that set-up books."""
    day = utcnow().astimezone(SEOUL).date() + timedelta(days=2)
    while day in KOREAN_PUBLIC_HOLIDAYS:
        day += timedelta(days=1)
    return datetime.combine(day, time(17, 30), SEOUL).isoformat()


def _upload(world: World, caller: Caller, case: RouteCase) -> Any:
    url = case.path.format(**_main(world))
    return caller.client.post(url, files={"file": ("readings.txt", b"date,value\n", "text/csv")},
                              headers=caller.auth_headers(), follow_redirects=False)


def _body(value: dict[str, Any]) -> Any:
    return lambda world, caller: value


CASES: list[RouteCase | WebSocketCase] = [
    # Lists.
    RouteCase("GET", "/visits/mine", frozenset({Role.PATIENT, Role.INTERPRETER})),
    RouteCase("GET", "/visits/today", CLINICIAN, markers=_markers),
    # The visit and its parts, for participants and the care team.
    RouteCase("GET", "/visits/{visit_id}", EVERYONE_INVOLVED, path_params=_main,
              own_institution_check=True, markers=_markers),
    RouteCase("GET", "/visits/{visit_id}/panel", CARE_TEAM, path_params=_main,
              own_institution_check=True, markers=_markers),
    RouteCase("GET", "/visits/{visit_id}/status", EVERYONE_INVOLVED, path_params=_main,
              own_institution_check=True),
    RouteCase("GET", "/visits/{visit_id}/files/{attachment_id}", EVERYONE_INVOLVED,
              path_params=_attachment, own_institution_check=True),
    # Before and in the call: participants only.
    RouteCase("GET", "/visits/{visit_id}/device-check", PARTICIPANTS, path_params=_main,
              own_institution_check=True),
    RouteCase("GET", "/visits/{visit_id}/throughput/download", PARTICIPANTS,
              path_params=_main, query=lambda world: {"bytes": 1000},
              own_institution_check=True),
    RouteCase("POST", "/visits/{visit_id}/throughput/upload", PARTICIPANTS, path_params=_main,
              json=_body({"padding": "x" * 100}), own_institution_check=True),
    RouteCase("GET", "/visits/{visit_id}/waiting", PARTICIPANTS, path_params=_main,
              own_institution_check=True),
    RouteCase("POST", "/visits/{visit_id}/arrive", frozenset({Role.PATIENT}),
              path_params=_fresh(VisitState.SCHEDULED), form=_body({"agree": "on"}),
              own_institution_check=True),
    RouteCase("GET", "/visits/{visit_id}/call", PARTICIPANTS, path_params=_main,
              own_institution_check=True),
    RouteCase("POST", "/visits/{visit_id}/files", PARTICIPANTS, path_params=_main,
              call=_upload, own_institution_check=True),
    # The local physician's link: anyone holding a valid token is let in as the guest.
    RouteCase("GET", "/visits/{visit_id}/guest", EVERYONE, path_params=_guest,
              query=lambda world: {"token": _ids(world)["guest_token"]}, public=True,
              markers=_markers),
    WebSocketCase("/visits/{visit_id}/ws", PARTICIPANTS, path_params=_main,
                  own_institution_check=True),
    # The JSON API.
    RouteCase("POST", "/api/v1/visits", EVERYONE_INVOLVED,
              json=lambda world, caller: {"appointment_id": _ids(world)["appointment"]},
              own_institution_check=True),
    RouteCase("GET", "/api/v1/visits/conditions", CLINICIAN, query=lambda world: {"q": "I10"}),
    RouteCase("GET", "/api/v1/visits/{visit_id}", EVERYONE_INVOLVED, path_params=_main,
              own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/check-in",
              frozenset({Role.PATIENT, Role.CLINICIAN, Role.COORDINATOR}),
              path_params=_fresh(VisitState.SCHEDULED), own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/consent",
              frozenset({Role.PATIENT, Role.CLINICIAN}),
              path_params=_fresh(VisitState.CHECKED_IN), json=_body({"agree": True}),
              own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/arrive", frozenset({Role.PATIENT}),
              path_params=_fresh(VisitState.SCHEDULED), json=_body({"agree": True}),
              own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/identity", CLINICIAN,
              path_params=_fresh(VisitState.WAITING_ROOM, consent=True),
              json=_body({"method": "id_document_on_video"}), own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/call/start", CLINICIAN,
              path_params=_fresh(VisitState.WAITING_ROOM, consent=True, identity=True),
              own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/call/pause", CLINICIAN,
              path_params=_fresh(VisitState.IN_CALL, consent=True, identity=True),
              own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/call/end", CLINICIAN,
              path_params=_fresh(VisitState.IN_CALL, consent=True, identity=True),
              own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/close", CLINICIAN,
              path_params=_fresh(VisitState.WRAP_UP, consent=True, identity=True),
              json=_body({"mode": "video"}), own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/no-show", OUTCOME_STAFF,
              path_params=_fresh(VisitState.CHECKED_IN,
                                 start=utcnow() - timedelta(minutes=5)),
              own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/cancel", OUTCOME_STAFF,
              path_params=_fresh(VisitState.SCHEDULED, start=utcnow() + timedelta(days=2)),
              json=_body({"reason": "The patient asked to move it."}),
              own_institution_check=True),
    RouteCase("PUT", "/api/v1/visits/{visit_id}/note", CLINICIAN,
              path_params=_fresh(VisitState.IN_CALL, consent=True, identity=True),
              json=_body({"subjective": "Feels well.", "assessment": "Controlled.",
                          "condition_codes": ["I10"], "follow_up_interval_days": 28}),
              own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/note/sign", CLINICIAN,
              path_params=_note_to_sign, own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/next-appointment", CLINICIAN,
              path_params=_fresh(VisitState.WRAP_UP, with_interpreter=False, consent=True,
                                 identity=True),
              json=lambda world, caller: {"start": _free_follow_up_slot(), "mode": "video"},
              own_institution_check=True),
    # Prescriptions on the note: the visit's clinician writes them; the care team reads them.
    RouteCase("GET", "/api/v1/visits/{visit_id}/prescriptions", CARE_TEAM,
              path_params=_prescribing, own_institution_check=True,
              markers=lambda world: [RX_MARKER]),
    RouteCase("POST", "/api/v1/visits/{visit_id}/prescriptions/check", CLINICIAN,
              path_params=_prescribing, json=_body(RX_BODY), own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/prescriptions", CLINICIAN,
              path_params=_prescribing, json=_body(RX_BODY), own_institution_check=True),
    RouteCase("DELETE", "/api/v1/visits/{visit_id}/prescriptions/{prescription_id}", CLINICIAN,
              path_params=_prescription_to_remove, own_institution_check=True),
    RouteCase("GET", "/visits/{visit_id}/prescriptions", CARE_TEAM, path_params=_prescribing,
              own_institution_check=True, markers=lambda world: [RX_MARKER]),
    RouteCase("POST", "/visits/{visit_id}/prescriptions/check", CLINICIAN,
              path_params=_prescribing, form=_body({**RX_BODY, "days_supply": "7"}),
              own_institution_check=True),
    RouteCase("POST", "/visits/{visit_id}/prescriptions", CLINICIAN,
              path_params=_prescribing, form=_body({**RX_BODY, "days_supply": "7"}),
              own_institution_check=True),
    RouteCase("POST", "/visits/{visit_id}/prescriptions/{prescription_id}/remove", CLINICIAN,
              path_params=_prescription_to_remove, own_institution_check=True),
    RouteCase("POST", "/api/v1/visits/{visit_id}/guest-links",
              frozenset({Role.CLINICIAN, Role.COORDINATOR}),
              path_params=_fresh(VisitState.WAITING_ROOM, consent=True, tri_party=True),
              own_institution_check=True),
]
