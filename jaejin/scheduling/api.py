"""Scheduling API: availability, slot search, booking, reschedule, cancel, calendar files.

    PUT    /api/v1/practitioners/{id}/availability   weekly rules and exceptions (AvailabilityIn)
    GET    /api/v1/practitioners/{id}/slots?start=YYYY-MM-DD&end=YYYY-MM-DD&tz=IANA
           &visit_type=...&mode=video|in_person      [{start, start_local, end, end_local,
                                                       interpreter_available}]
    POST   /api/v1/appointments                      201, 409 SLOT_TAKEN (+ next_free_slots),
                                                     422 POLICY_DENIED (+ reasons, alternatives)
    GET    /api/v1/appointments/{id}                 the appointment
    PATCH  /api/v1/appointments/{id}                 {"start"} reschedule, {"status": "no_show"}
                                                     or {"interpreter_id"} (coordinators)
    DELETE /api/v1/appointments/{id}?reason=...      cancel (the institution's cut-off applies
                                                     to patients)
    GET    /api/v1/appointments/{id}.ics             the invitation for the caller's calendar

Who: patients for themselves; clinicians and coordinators for their institution's patients;
system clients with `scheduling.read` / `scheduling.write`; interpreters see the appointments
they interpret. Another institution's records answer 404. Every read or change of an
appointment is audit-logged in its transaction.
"""

from __future__ import annotations

import asyncio
import gzip
import weakref
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEvent
from jaejin.core.authn import (
    AppSettings,
    DbSession,
    Principal,
    audit,
    get_app_settings,
    known_principal,
    require_principal,
    requires,
    resolve_principal,
)
from jaejin.core.database import get_engine, session_factory, utcnow
from jaejin.core.errors import Problem, not_found, validation_problem
from jaejin.core.i18n import LANGUAGE_TAG_LENGTH, N_
from jaejin.core.lean import lean_routes
from jaejin.core.openapi import inline_schema
from jaejin.core.sqlite_engine import AUTOCOMMIT_READ, begin_write
from jaejin.core.threads import run_blocking
from jaejin.directory.model import AwareDatetime, ConditionCode, LanguageTag
from jaejin.directory.store import Institution, Interpreter, Patient, Practitioner
from jaejin.scheduling import notifications, search, service, wire
from jaejin.scheduling.appointments import AppointmentStatus
from jaejin.scheduling.calendar_files import InvitationMethod
from jaejin.scheduling.errors import SchedulingError
from jaejin.scheduling.model import VisitMode
from jaejin.scheduling.schemas import AvailabilityIn
from jaejin.scheduling.store import (
    Appointment,
    OwnerKind,
    appointments_between,
    get_availability_row,
)
from jaejin.scheduling.zones import canonical_zone_name, resolve_zone

#: The JSON routes (`router`, at the end).
api_router = APIRouter(prefix="/api/v1", tags=["scheduling"])

STAFF = service.VIEWING_STAFF
SEARCHERS = (Role.PATIENT, *STAFF, Role.SYSTEM_CLIENT)
BOOKERS = (Role.PATIENT, *service.BOOKING_STAFF, Role.SYSTEM_CLIENT)
VIEWERS = (Role.PATIENT, *STAFF, Role.INTERPRETER, Role.SYSTEM_CLIENT)
CHANGERS = (Role.PATIENT, *STAFF, Role.SYSTEM_CLIENT)
HOURS_KEEPERS = (*STAFF, Role.SYSTEM_CLIENT)
INTERPRETER_HOURS_KEEPERS = (Role.INTERPRETER, *service.COORDINATING_STAFF, Role.SYSTEM_CLIENT)


def access(*roles: Role, scope: str) -> Any:
    """Who may call a route (`requires`), with the look-up's transaction ended at once."""
    return Depends(service.released(requires(*roles, scope=scope)))


Booker = Annotated[Principal, access(*BOOKERS, scope="scheduling.write")]
Viewer = Annotated[Principal, access(*VIEWERS, scope="scheduling.read")]
Changer = Annotated[Principal, access(*CHANGERS, scope="scheduling.write")]
HoursReader = Annotated[Principal, access(*HOURS_KEEPERS, scope="scheduling.read")]
HoursKeeper = Annotated[Principal, access(*HOURS_KEEPERS, scope="scheduling.write")]
InterpreterHoursReader = Annotated[Principal, access(*INTERPRETER_HOURS_KEEPERS,
                                                     scope="scheduling.read")]
InterpreterHoursKeeper = Annotated[Principal, access(*INTERPRETER_HOURS_KEEPERS,
                                                     scope="scheduling.write")]

JSON = "application/json"


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON)


#: Answers at least this long are gzipped here, quickly (level 1): a 60-day search is hundreds
#: of kilobytes, which the application's GZip middleware would compress at its slowest level
#: (it leaves answers that already carry a Content-Encoding alone).
COMPRESS_FROM_BYTES = 4096


def compressed_json(request: Request, body: bytes) -> Response:
    if len(body) < COMPRESS_FROM_BYTES or "gzip" not in request.headers.get(
            "accept-encoding", ""):
        return Response(body, media_type=JSON)
    return Response(gzip.compress(body, compresslevel=1), media_type=JSON,
                    headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})


def pieces_json(request: Request, pieces: list[wire.Piece]) -> Response:
    """`compressed_json` of an answer made of pieces: gzipped from the pieces' kept
    compressed forms (`jaejin.scheduling.wire`) rather than compressed again."""
    if wire.size(pieces) < COMPRESS_FROM_BYTES or "gzip" not in request.headers.get(
            "accept-encoding", ""):
        return Response(wire.joined(pieces), media_type=JSON)
    return Response(wire.gzipped(pieces), media_type=JSON,
                    headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})


def scheduling_call(principal: Principal, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a pure rule, answering its SchedulingError as a problem in the caller's language."""
    try:
        return call(*args, **kwargs)
    except SchedulingError as error:
        raise service.scheduling_problem(error, principal.language) from None


# --------------------------------------------------------------------------- wire models


class AppointmentCreate(BaseModel):
    """Body of POST /api/v1/appointments."""

    model_config = ConfigDict(extra="forbid")

    patient_id: int
    practitioner_id: int
    start: AwareDatetime = Field(description="A slot's `start`, with any offset.")
    visit_type: str = Field(max_length=40)
    mode: VisitMode
    interpreter_language: LanguageTag | None = Field(
        default=None, description="Ask for an interpreter in this language; without it, one "
        "is booked when the practitioner does not speak the patient's preferred language.")
    interpreter_id: int | None = Field(
        default=None, description="Staff only: this interpreter rather than the first free one.")
    condition: ConditionCode | None = Field(
        default=None, description="KCD code the visit follows up; default: the latest one "
        "recorded at the institution.")
    tri_party: bool = False


class AppointmentPatch(BaseModel):
    """Body of PATCH /api/v1/appointments/{id}: exactly one change."""

    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime | None = None
    status: Literal["no_show", "completed"] | None = None
    interpreter_id: int | None = None
    interpreter_language: LanguageTag | None = None


def appointment_json(db: Session, appointment: Appointment, *, with_outbox: bool,
                     institution: Institution | None = None, patient: Patient | None = None
                     ) -> dict[str, Any]:
    """The wire form; `institution` and `patient` when already at hand (else read)."""
    institution = institution or db.get(Institution, appointment.institution_id)
    patient = patient or db.get(Patient, appointment.patient_id)
    assert institution is not None and patient is not None
    institution_zone = resolve_zone(institution.time_zone)
    patient_zone = resolve_zone(patient.time_zone)
    decision = appointment.policy_decision or {}
    body: dict[str, Any] = {
        "id": appointment.id,
        "institution_id": appointment.institution_id,
        "patient_id": appointment.patient_id,
        "practitioner_id": appointment.practitioner_id,
        "interpreter_id": appointment.interpreter_id,
        "interpreter_language": appointment.interpreter_language,
        "visit_type": appointment.visit_type,
        "mode": appointment.mode,
        "status": appointment.status,
        "sequence": appointment.sequence,
        "start": appointment.start_at.astimezone(institution_zone).isoformat(),
        "end": appointment.end_at.astimezone(institution_zone).isoformat(),
        "start_local": appointment.start_at.astimezone(patient_zone).isoformat(),
        "end_local": appointment.end_at.astimezone(patient_zone).isoformat(),
        "institution_time_zone": institution.time_zone,
        "patient_time_zone": patient.time_zone,
        "condition": appointment.condition_code,
        "tri_party": appointment.tri_party,
        "policy": {"decision": decision.get("decision"), "pack": appointment.policy_pack}
        if appointment.policy_decision else None,
        "created_at": appointment.created_at.isoformat(),
        "cancelled_at": appointment.cancelled_at.isoformat() if appointment.cancelled_at
        else None,
        "cancel_reason": appointment.cancel_reason,
        "ics_url": f"/api/v1/appointments/{appointment.id}.ics",
    }
    if with_outbox:
        body["notifications"] = notifications.outbox_status(db, appointment.id)
    return body


def _read_event(appointment: Appointment, action: str = "read") -> AuditEvent:
    return AuditEvent(action, "appointment", str(appointment.id), appointment.patient_id,
                      appointment.institution_id)


# --------------------------------------------------------------------------- availability


def _practitioner_and_institution(db: Session, principal: Principal, practitioner_id: int,
                                  institution_id: int | None) -> tuple[Practitioner, Institution]:
    institution = service.choose_institution(db, principal, practitioner_id, institution_id)
    return service.practitioner_at(db, practitioner_id, institution.id), institution


@api_router.get("/practitioners/{practitioner_id}/availability", response_model=AvailabilityIn,
            summary="A practitioner's weekly hours and exceptions at an institution")
@service.ends_transaction
def get_practitioner_availability(practitioner_id: int, principal: HoursReader, db: DbSession,
                                  institution_id: int | None = None) -> Response:
    _practitioner, institution = _practitioner_and_institution(db, principal, practitioner_id,
                                                               institution_id)
    row = get_availability_row(db, OwnerKind.PRACTITIONER, practitioner_id, institution.id)
    rules = row.rules if row else AvailabilityIn().model_dump(mode="json")
    return json_response({**rules, "institution_id": institution.id,
                          "time_zone": institution.time_zone})


@api_router.put("/practitioners/{practitioner_id}/availability",
            summary="Replace a practitioner's weekly hours and exceptions (institution's zone)")
@service.ends_transaction
def put_practitioner_availability(practitioner_id: int, body: AvailabilityIn,
                                  principal: HoursKeeper, db: DbSession,
                                  institution_id: int | None = None) -> Response:
    practitioner, institution = _practitioner_and_institution(db, principal, practitioner_id,
                                                              institution_id)
    service.set_practitioner_availability(db, principal, practitioner, institution, body)
    db.commit()
    return json_response({**body.model_dump(mode="json"), "institution_id": institution.id,
                          "time_zone": institution.time_zone})


def _interpreter(db: Session, principal: Principal, interpreter_id: int) -> Interpreter:
    interpreter = db.get(Interpreter, interpreter_id)
    if interpreter is None:
        raise not_found("interpreter")
    own = principal.user_id is not None and interpreter.user_id == principal.user_id
    if not (own or service.is_staff_of(principal, interpreter.institution_id,
                                       *service.COORDINATING_STAFF)):
        raise not_found("interpreter")
    return interpreter


@api_router.get("/interpreters/{interpreter_id}/availability", response_model=AvailabilityIn,
            summary="An interpreter's weekly hours and exceptions (in their own zone)")
@service.ends_transaction
def get_interpreter_availability(interpreter_id: int, principal: InterpreterHoursReader,
                                 db: DbSession) -> Response:
    interpreter = _interpreter(db, principal, interpreter_id)
    row = get_availability_row(db, OwnerKind.INTERPRETER, interpreter.id,
                               interpreter.institution_id)
    rules = row.rules if row else AvailabilityIn().model_dump(mode="json")
    return json_response({**rules, "time_zone": interpreter.time_zone})


@api_router.put("/interpreters/{interpreter_id}/availability",
            summary="Replace an interpreter's weekly hours and exceptions (their own zone)")
@service.ends_transaction
def put_interpreter_availability(interpreter_id: int, body: AvailabilityIn,
                                 principal: InterpreterHoursKeeper, db: DbSession) -> Response:
    interpreter = _interpreter(db, principal, interpreter_id)
    service.set_interpreter_availability(db, principal, interpreter, body)
    db.commit()
    return json_response({**body.model_dump(mode="json"), "time_zone": interpreter.time_zone})


# --------------------------------------------------------------------------- slots


def _patient_for_search(db: Session, principal: Principal, institution: Institution,
                        patient_id: int | None) -> Patient | None:
    if patient_id is not None:
        patient = db.get(Patient, patient_id)
        visible = patient is not None and patient.institution_id == institution.id and (
            (patient.user_id == principal.user_id and principal.user_id is not None)
            or service.is_staff_of(principal, institution.id, *STAFF))
        if not visible or patient is None:
            raise not_found("patient")
        return patient
    for own in service.own_patient_rows(db, principal):
        if own.institution_id == institution.id:
            return own
    return None


def _engine(request: Request) -> Engine:
    engine: Engine = getattr(request.app.state, "engine", None) or get_engine()
    return engine


def _searches_as_patient(principal: Principal) -> bool:
    """Whether the search may be about the caller's own patient record (then read, and the
    search audited: the uncached path)."""
    return principal.user_id is not None and Role.PATIENT in principal.roles


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison of an If-None-Match list against `etag`."""
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == bare
               for candidate in if_none_match.split(","))


def answer_response(request: Request, answer: search.Answer) -> Response:
    """A cached search answer: 304 when the client has it, else its kept gzip form or its
    text. `no-cache`: a client may keep it but must ask again (bookings change it)."""
    headers = {"ETag": answer.etag, "Vary": "Accept-Encoding",
               "Cache-Control": "private, no-cache"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, answer.etag):
        return Response(status_code=304, headers=headers)
    if answer.size >= COMPRESS_FROM_BYTES and "gzip" in request.headers.get(
            "accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(answer.gzipped, media_type=JSON, headers=headers)
    return Response(answer.body, media_type=JSON, headers=headers)


class SlotQuery(BaseModel):
    """The query of GET /api/v1/practitioners/{id}/slots."""

    start: date = Field(description="The first date, meant in `tz`.")
    end: date = Field(description="The last date (inclusive), meant in `tz`.")
    tz: str = Field(max_length=64, description="IANA zone the dates are meant in")
    visit_type: str = Field(max_length=40)
    mode: VisitMode = VisitMode.VIDEO
    patient_id: int | None = None
    interpreter_language: str | None = Field(default=None, max_length=LANGUAGE_TAG_LENGTH)
    institution_id: int | None = None


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters of a model's fields, for a route that parses its query itself."""
    schema = inline_schema(model)
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema["properties"].items():
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                     "schema": {key: value for key, value in field_schema.items()
                                                if key != "description"}}
        if "description" in field_schema:
            parameter["description"] = field_schema["description"]
        parameters.append(parameter)
    return parameters


async def _caller(request: Request, roles: tuple[Role, ...], scope: str) -> Principal:
    """`requires(*roles, scope=scope)` without dependencies: a known caller (a client token
    verified a moment ago) costs no database; another is looked up in a worker thread by a
    short read of its own."""
    if known_principal(request) is None:
        await run_blocking(resolve_principal, request)
    principal = await require_principal(request)
    if not principal.roles & set(roles):
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    if not principal.has_scope(scope):
        raise Problem(403, "INSUFFICIENT_SCOPE", N_("This client lacks the scope {scope}."),
                      params={"scope": scope})
    return principal


@api_router.get(
    "/practitioners/{practitioner_id}/slots",
    summary="Free slots of a practitioner, with the institution's and your zone's times",
    description="""Slots starting on the dates `start`..`end` (inclusive) in `tz`.

`interpreter_available` says whether an interpreter of the needed language is free for the
whole visit. The language is `interpreter_language`, or the patient's (`patient_id`, or the
caller's own record) when the practitioner does not speak it; then only slots with a free
interpreter are listed. Without a needed language it is false.

The answer carries an ETag: send it back in If-None-Match to be told 304 Not Modified.""",
    # The query is parsed here, not by FastAPI: see the route.
    openapi_extra={"parameters": _query_parameters(SlotQuery)},
)
async def search_slots(request: Request, practitioner_id: int) -> Response:
    # No dependencies and one model for the query (FastAPI's per-parameter work and its
    # dependency solving cost more than answering a cached search): the caller first, as a
    # dependency would have it, then the query, then the search in one worker thread.
    principal = await _caller(request, SEARCHERS, "scheduling.read")
    try:
        query = SlotQuery.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise validation_problem([{**item, "loc": ("query", *item["loc"])}
                                  for item in error.errors()]) from None
    if _cacheable(principal, query):
        # Kept in memory (places and answer): answered on the event loop, nothing read.
        answer = scheduling_call(
            principal, search.answer_from_memory, _engine(request),
            institutions_seen=service.institutions_seen_by(principal),
            practitioner_id=practitioner_id, requested_institution=query.institution_id,
            visit_type_code=query.visit_type, mode=query.mode, start_date=query.start,
            end_date=query.end, requested_zone=scheduling_call(principal, resolve_zone, query.tz),
            now=utcnow())
        if answer is not None:
            return answer_response(request, answer)
    return await run_blocking(_search_slots, request, principal, practitioner_id, query)


def _cacheable(principal: Principal, query: SlotQuery) -> bool:
    """Whether the answer reads nobody's record (then it is kept: `jaejin.scheduling.search`)."""
    return (query.patient_id is None and query.interpreter_language is None
            and not _searches_as_patient(principal))


def _search_slots(request: Request, principal: Principal, practitioner_id: int,
                  query: SlotQuery) -> Response:
    requested_zone: ZoneInfo = scheduling_call(principal, resolve_zone, query.tz)
    if _cacheable(principal, query):
        # Nobody's record is read: answered from the cache, through reads that take no lock.
        answer: search.Answer = scheduling_call(
            principal, search.free_slots_answer, _engine(request),
            institutions_seen=service.institutions_seen_by(principal),
            practitioner_id=practitioner_id, requested_institution=query.institution_id,
            visit_type_code=query.visit_type, mode=query.mode, start_date=query.start,
            end_date=query.end, requested_zone=requested_zone, now=utcnow())
        return answer_response(request, answer)
    with session_factory(_engine(request))() as db:
        try:
            return _search_with_records(
                request, db, principal, practitioner_id, query.start, query.end,
                requested_zone, query.visit_type, query.mode, query.patient_id,
                query.interpreter_language, query.institution_id)
        finally:
            db.rollback()


def _search_with_records(
    request: Request, db: Session, principal: Principal, practitioner_id: int, start: date,
    end: date, requested_zone: ZoneInfo, visit_type: str, mode: VisitMode,
    patient_id: int | None, interpreter_language: str | None, institution_id: int | None,
) -> Response:
    """A search about a patient (theirs to see, audited) or needing an interpreter."""
    schedule: service.Schedule = scheduling_call(
        principal, service.search_schedule, db, principal, practitioner_id, institution_id,
        visit_type, mode)
    institution, practitioner = schedule.institution, schedule.practitioner
    patient = _patient_for_search(db, principal, institution, patient_id)
    language = service.interpreter_language_needed(practitioner, patient, interpreter_language)
    if language is not None:
        scheduling_call(principal, service.require_interpreter_language, db, institution.id,
                        language)
    if language is None and patient is None:
        pieces: list[wire.Piece] = scheduling_call(
            principal, service.free_slots_wire, db, schedule, start, end, requested_zone,
            now=utcnow())
        return pieces_json(request, pieces)
    slots = scheduling_call(principal, service.find_slots, db, schedule, start, end,
                            requested_zone, now=utcnow(), interpreter_language=language,
                            patient=patient)
    if patient is not None:
        audit(db, principal, AuditEvent("search", "slot", None, patient.id, institution.id,
                                        detail={"practitioner_id": practitioner_id,
                                                "found": len(slots)}))
        db.commit()
    return compressed_json(request, service.slots_wire(slots, schedule.zone, requested_zone))


# --------------------------------------------------------------------------- appointments


async def _booker(request: Request) -> Principal:
    """`Booker` without dependencies: a known caller (a client token verified a moment ago)
    costs no database; another is looked up in a worker thread by a short read of its own."""
    if known_principal(request) is None:
        await run_blocking(resolve_principal, request)
    principal = await require_principal(request)
    if not principal.roles & set(BOOKERS):
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    if not principal.has_scope("scheduling.write"):
        raise Problem(403, "INSUFFICIENT_SCOPE", N_("This client lacks the scope {scope}."),
                      params={"scope": "scheduling.write"})
    return principal


@api_router.post(
    "/appointments", status_code=201, summary="Book an appointment",
    # The body is parsed here, not by FastAPI: see the route.
    openapi_extra={"requestBody": {"required": True, "content": {
        JSON: {"schema": inline_schema(AppointmentCreate)}}}},
)
async def create_appointment(request: Request) -> Response:
    # No dependencies (each costs the busiest write of all a few dozen microseconds of the event
    # loop): the caller is known first, as a dependency would have it, then the body is parsed
    # once, straight from its bytes.
    principal = await _booker(request)
    try:
        body = AppointmentCreate.model_validate_json(await request.body())
    except ValidationError as error:
        raise validation_problem(error.errors()) from None
    booking = service.BookingRequest(
        patient_id=body.patient_id, practitioner_id=body.practitioner_id,
        start=body.start.astimezone(UTC), visit_type=body.visit_type, mode=body.mode,
        interpreter_language=body.interpreter_language, interpreter_id=body.interpreter_id,
        condition=body.condition, tri_party=body.tri_party)
    settings = get_app_settings(request)
    engine = _engine(request)
    # SQLite lets one writer at a time in, and a transaction there holds the write turn from
    # its first statement (BEGIN IMMEDIATE): the booking reads and decides first, each
    # statement its own read taking no lock (as `read_connection` reads), then holds the turn
    # only for its writes and the commit. PostgreSQL reads in the transaction it writes in
    # (READ COMMITTED: the read waits for nobody; the appointment's id comes with it).
    reads_apart = engine.dialect.name == "sqlite"

    def book() -> Response:
        # The session is closed (anything uncommitted rolled back) before the answer leaves:
        # on SQLite an open transaction would keep the write lock (see `ends_transaction`).
        with session_factory(engine)() as db:
            if reads_apart:
                connection = db.connection(execution_options={AUTOCOMMIT_READ: True})
            planned = service.plan_booking(db, principal, booking, settings=settings)
            if reads_apart:
                # The same transaction of the session goes on: nothing it read is read again.
                begin_write(connection)
            appointment = service.write_planned_booking(db, planned)
            db.commit()
        # After the commit, out of the write turn: only the rows the booking read and the
        # appointment it wrote (every column set) are used, nothing is read.
        content = appointment_json(db, appointment, with_outbox=False,
                                   institution=planned.rows.institution,
                                   patient=planned.rows.patient)
        return Response(orjson.dumps(content), status_code=201, media_type=JSON,
                        headers={"Location": f"/api/v1/appointments/{appointment.id}"})

    if not reads_apart:
        return await run_blocking(book)
    async with _sqlite_booking_turns():
        return await run_blocking(book)


#: SQLite bookings one process runs at once. Their writes take turns anyway (one writer at a
#: time), and a thread holding the write turn shares the process's GIL with every other
#: booking's thread: with 8 reading beside it the turn was held 1.8 ms instead of 0.8, and the
#: other processes waited for it. `python -m benchmarks.bench_scheduling --database sqlite
#: --workloads bookings` (2 workers, 16 clients, quiet machine), video / in person: no limit
#: 504/s p99 60 ms / 531/s 59 ms; 3 at once 496/s 47 ms / 506/s 45 ms; 2 at once 498-535/s
#: 44-48 ms / 534-553/s 40-42 ms; 1 at once 598/s 41 ms / 650/s 39 ms.
SQLITE_BOOKINGS_AT_ONCE: Final = 1
_SQLITE_BOOKING_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary())


def _sqlite_booking_turns() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    turns = _SQLITE_BOOKING_TURNS.get(loop)
    if turns is None:
        turns = _SQLITE_BOOKING_TURNS[loop] = asyncio.Semaphore(SQLITE_BOOKINGS_AT_ONCE)
    return turns


@api_router.get("/appointments", summary="Appointments you may see, between two instants")
@service.ends_transaction
def list_appointments(
    principal: Viewer, db: DbSession,
    start: datetime | None = None, end: datetime | None = None,
    practitioner_id: int | None = None, interpreter_id: int | None = None,
    institution_id: int | None = None,
    include_cancelled: bool = False,
) -> Response:
    """Defaults: from now for 30 days. Staff and system clients see their institutions';
    patients their own; interpreters the ones they interpret."""
    begin = (start or utcnow())
    finish = end or begin + timedelta(days=30)
    if begin.tzinfo is None or finish.tzinfo is None:
        raise Problem(422, "NAIVE_DATETIME",
                      N_("Include a time-zone offset, e.g. 2026-11-20T09:30:00+09:00."))
    if finish <= begin or finish - begin > timedelta(days=93):
        raise Problem(422, "INVALID_RANGE",
                      N_("The end must be after the start, at most 93 days later."))
    found: list[Appointment] = []
    staff_institutions = {
        identifier for identifier in service.institutions_seen_by(principal)
        if service.is_staff_of(principal, identifier, *STAFF)}
    if institution_id is not None:
        staff_institutions &= {institution_id}
    for identifier in sorted(staff_institutions):
        found.extend(appointments_between(
            db, institution_id=identifier, start=begin, end=finish,
            practitioner_ids=[practitioner_id] if practitioner_id else None,
            interpreter_ids=[interpreter_id] if interpreter_id else None,
            include_cancelled=include_cancelled))
    seen = {item.id for item in found}
    own_patients = [row.id for row in service.own_patient_rows(db, principal)]
    own_interpreters = [row.id for row in service.own_interpreters(db, principal)]
    if own_patients or own_interpreters:
        query = select(Appointment).where(
            Appointment.start_at < finish, Appointment.end_at > begin,
            Appointment.patient_id.in_(own_patients)
            | Appointment.interpreter_id.in_(own_interpreters))
        if not include_cancelled:
            query = query.where(Appointment.status != AppointmentStatus.CANCELLED.value)
        found.extend(item for item in db.execute(query).scalars() if item.id not in seen)
    found.sort(key=lambda item: (item.start_at, item.id))
    for institution in sorted({item.institution_id for item in found}):
        audit(db, principal, AuditEvent("search", "appointment", None, None, institution,
                                        detail={"results": sum(
                                            1 for item in found
                                            if item.institution_id == institution)}))
    db.commit()
    return json_response([appointment_json(db, item, with_outbox=False) for item in found])


@api_router.get("/appointments/{appointment_id}.ics", summary="The appointment as a calendar file",
            response_class=Response,
            responses={200: {"content": {"text/calendar": {}}}})
@service.ends_transaction
def appointment_calendar_file(appointment_id: int, principal: Viewer, db: DbSession,
                              settings: AppSettings) -> Response:
    access = service.appointment_access(db, principal, appointment_id)
    appointment = access.appointment
    name = principal.label
    zone_name = principal.time_zone
    if access.as_patient:
        patient = db.get(Patient, appointment.patient_id)
        assert patient is not None
        zone_name = patient.time_zone
    who = notifications.Addressee(name, principal.language,
                                  resolve_zone(canonical_zone_name(zone_name)), None, None)
    method = (InvitationMethod.CANCEL if appointment.status == AppointmentStatus.CANCELLED
              else InvitationMethod.REQUEST)
    ics = notifications.invitation_ics(db, appointment, who, settings, method=method,
                                       sequence=appointment.sequence, now=utcnow())
    audit(db, principal, _read_event(appointment, "export"))
    db.commit()
    return Response(ics, media_type="text/calendar; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="appointment-{appointment.id}.ics"'})


@api_router.get("/appointments/{appointment_id}", summary="One appointment")
@service.ends_transaction
def get_appointment(appointment_id: int, principal: Viewer, db: DbSession) -> Response:
    access = service.appointment_access(db, principal, appointment_id)
    audit(db, principal, _read_event(access.appointment))
    db.commit()
    return json_response(appointment_json(db, access.appointment, with_outbox=access.as_staff))


@api_router.patch("/appointments/{appointment_id}",
              summary="Reschedule, record a no-show, or assign the interpreter")
@service.ends_transaction
def patch_appointment(appointment_id: int, body: AppointmentPatch, principal: Changer,
                      db: DbSession, settings: AppSettings) -> Response:
    changes = body.model_fields_set - {"interpreter_language"}
    if len(changes) != 1:
        raise Problem(422, "ONE_CHANGE_AT_A_TIME",
                      N_("Send exactly one of start, status or interpreter_id."))
    if "start" in changes:
        if body.start is None:
            raise Problem(422, "VALIDATION_FAILED", N_("Some fields are not valid."))
        appointment, by_staff = service.changeable_appointment(db, principal, appointment_id)
        service.reschedule(db, principal, appointment, body.start.astimezone(UTC),
                           by_staff=by_staff, settings=settings)
    elif "status" in changes:
        appointment = service.appointment_access(db, principal, appointment_id).appointment
        if body.status is None:
            raise Problem(422, "VALIDATION_FAILED", N_("Some fields are not valid."))
        service.record_outcome(db, principal, appointment, AppointmentStatus(body.status))
    else:
        appointment = service.appointment_access(db, principal, appointment_id).appointment
        service.assign_interpreter(db, principal, appointment, body.interpreter_id,
                                   settings=settings, language=body.interpreter_language)
    db.commit()
    return json_response(appointment_json(db, appointment, with_outbox=False))


@api_router.delete("/appointments/{appointment_id}", summary="Cancel an appointment")
@service.ends_transaction
def cancel_appointment(appointment_id: int, principal: Changer, db: DbSession,
                       settings: AppSettings,
                       reason: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    appointment, by_staff = service.changeable_appointment(db, principal, appointment_id)
    service.cancel(db, principal, appointment, by_staff=by_staff, reason=reason,
                   settings=settings)
    db.commit()
    return json_response(appointment_json(db, appointment, with_outbox=False))


#: The JSON routes only: the application mounts them early (matched before the other
#: modules' routes, for the booking and slot-search rates) and the pages
#: (`jaejin.scheduling.pages.router`) with the other pages.
router = api_router

#: Booking and slot search, the busiest routes, answered outside the FastAPI stack (same
#: answers: `jaejin.core.lean`).
LEAN_ROUTES = lean_routes(create_appointment, search_slots)
