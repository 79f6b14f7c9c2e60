"""Readings in and out over JSON: Jaejin's batch API, file uploads, and Nightscout uploaders.

Routes (all answers JSON; errors are problem details with a stable `code`):

* `POST /api/v1/monitoring/patients/{patient_id}/readings`: a JSON batch (`parsers.json_batch`),
  answered item by item, with alerts, guidance and the emergency number for critical readings;
  small batches (a device's one reading) are written by the process's group commit
  (`group_commit`), together with the others arriving meanwhile, and answered after its commit;
* `GET  /api/v1/monitoring/patients/{patient_id}/readings`: the patient's readings, paged;
* `POST /api/v1/monitoring/patients/{patient_id}/uploads`: a CSV file or an Apple Health export
  (multipart field `file`), imported in the background; `GET /api/v1/monitoring/uploads/{id}`
  reports its progress, `GET .../patients/{patient_id}/uploads` lists the recent ones;
* `POST|GET|DELETE /api/v1/monitoring/patients/{patient_id}/nightscout`: the patient's
  Nightscout API secret and uploader URL;
* `POST /api/v1/entries` (and `/nightscout/{url_token}/api/v1/entries`): Nightscout uploaders,
  who prove themselves with the patient's API secret in the `api-secret` header (which also
  names the patient at the bare `/api/v1/entries`); `GET .../api/v1/status.json` for uploaders
  checking the connection.

Files above the application's body limit (10 MB by default) need `BODY_LIMIT_OVERRIDES` given
to `core.errors.BodySizeLimit(overrides=...)` where the application is built.

Who may: the patient themself, clinicians and coordinators of the patient's institution, and
system clients of that institution with `monitoring.write` (writes) or `monitoring.read` (reads,
where institution admins may read too). Another institution's patient is "not found".
"""

from __future__ import annotations

import base64
import binascii
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Protocol, TypeVar

import orjson
from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime
from sqlalchemy import (
    Engine,
    Integer,
    and_,
    any_,
    bindparam,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditActor, AuditEvent, record, record_entries
from jaejin.core.authn import (
    AppSettings,
    DbSession,
    Principal,
    audit,
    known_principal,
    require_principal,
    resolve_principal,
)
from jaejin.core.authn import client_address as request_address
from jaejin.core.database import get_engine, session_factory, utcnow
from jaejin.core.errors import Problem, forbidden, not_found, request_language
from jaejin.core.i18n import N_, translate
from jaejin.core.lean import lean_routes
from jaejin.core.openapi import inline_schema
from jaejin.directory.store import Patient
from jaejin.monitoring import group_commit
from jaejin.monitoring.alerts import AlertKind
from jaejin.monitoring.careplans import CarePlan
from jaejin.monitoring.group_commit import Refused
from jaejin.monitoring.ingest import (
    IngestPatient,
    IngestRequest,
    IngestResult,
    ItemResult,
    ItemStatus,
    UploadKind,
    ingest_items,
    ingest_many,
    issue_nightscout_secret,
    nightscout_secret_for,
    process_upload,
    save_upload_stream,
)
from jaejin.monitoring.parsers import (
    ImportContext,
    ParsedItem,
    ReadingBatchIn,
    UnreadableInputError,
    parse_batch,
    parse_entries,
)
from jaejin.monitoring.readings import Metric
from jaejin.monitoring.store import (
    AlertRow,
    AlertStatus,
    CarePlanRow,
    NightscoutSecretRow,
    ReadingChannel,
    ReadingRow,
    UploadRow,
    UploadStatus,
    actor_ref,
    local_time,
    plan_of,
)

router = APIRouter(tags=["monitoring"])

#: Largest file accepted by the upload route (an Apple Health export of years of data).
UPLOAD_MAX_BYTES: Final = 200 * 1024 * 1024
UPLOAD_PATH_PREFIX: Final = "/api/v1/monitoring/patients/"
#: Body-size limits this module needs above the application default, by path prefix, for
#: `core.errors.BodySizeLimit(overrides=...)`.
BODY_LIMIT_OVERRIDES: Final = {UPLOAD_PATH_PREFIX: UPLOAD_MAX_BYTES}

#: Staff roles by access (system clients additionally need the matching scope).
WRITER_ROLES: Final = (Role.CLINICIAN, Role.COORDINATOR, Role.SYSTEM_CLIENT)
READER_ROLES: Final = (
    Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN, Role.SYSTEM_CLIENT,
)
READINGS_PAGE_MAX: Final = 5000
JSON_MEDIA_TYPE: Final = "application/json"


class Access(StrEnum):
    READ = "read"
    WRITE = "write"


_SCOPES: Final = {Access.READ: "monitoring.read", Access.WRITE: "monitoring.write"}


class _Owned(Protocol):
    """What deciding who may touch a patient's data needs to know of the patient."""

    @property
    def user_id(self) -> int | None: ...

    @property
    def institution_id(self) -> int: ...


_PatientT = TypeVar("_PatientT", bound=_Owned)


def _permitted(principal: Principal, patient: _PatientT | None, access: Access) -> _PatientT:
    if principal.kind == "client" and not principal.has_scope(_SCOPES[access]):
        raise Problem(403, "INSUFFICIENT_SCOPE", N_("This client lacks the scope {scope}."),
                      params={"scope": _SCOPES[access]})
    roles = WRITER_ROLES if access is Access.WRITE else READER_ROLES
    if patient is not None:
        if principal.user_id is not None and patient.user_id == principal.user_id:
            return patient
        if principal.can_act_for(patient.institution_id, *roles):
            return patient
    if not principal.roles & {Role.PATIENT, *roles}:
        raise forbidden()
    raise not_found("patient")


def authorised_patient(
    db: Session, principal: Principal, patient_id: int, access: Access
) -> Patient:
    """The patient `principal` may read or write monitoring data of, else a problem.

    The patient themself always may; staff by role at the patient's institution; a system
    client also needs the scope. A role that may never do this is refused (403); anyone else
    learns only that there is no such patient (404), whoever's patient it is.
    """
    return _permitted(principal, db.get(Patient, patient_id), access)


#: What storing readings needs of the patient and their care plan: one row, no ORM objects
#: (loading the full patient and plan rows cost more than the rest of a one-reading request).
_WRITE_CONTEXT: Final = (
    select(Patient.id.label("patient_id"), Patient.institution_id, Patient.user_id,
           Patient.preferred_language, Patient.current_country, Patient.time_zone,
           CarePlanRow.template, CarePlanRow.overrides)
    .outerjoin(CarePlanRow, and_(CarePlanRow.patient_id == Patient.id, CarePlanRow.active))
    .where(Patient.id == bindparam("patient_id"))
)


def writable_patient_and_plan(
    db: Session, principal: Principal, patient_id: int
) -> tuple[IngestPatient, CarePlan]:
    """`authorised_patient(..., Access.WRITE)` and the patient's care plan, in one query."""
    found = _permitted(
        principal, db.execute(_WRITE_CONTEXT, {"patient_id": patient_id}).first(), Access.WRITE
    )
    patient = IngestPatient(found.patient_id, found.institution_id, found.preferred_language,
                            found.current_country, found.time_zone)
    return patient, plan_of(found.template, found.overrides)


def engine_of(request: Request) -> Engine:
    """The application's engine (as `core.authn.get_db` finds it)."""
    engine: Engine = getattr(request.app.state, "engine", None) or get_engine()
    return engine


def json_response(payload: Any, status_code: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type=JSON_MEDIA_TYPE,
                    headers=headers)


#: Answers at least this long are gzipped in the route, quickly (level 1), for callers that
#: accept it: a batch's answer is some 80 kB, which the application's GZip middleware would
#: compress at its slowest level (it leaves answers carrying a Content-Encoding alone).
COMPRESS_FROM_BYTES: Final = 4096


def compressed_json_response(request: Request, payload: Any) -> Response:
    return compressed_json_body(request, orjson.dumps(payload))


def compressed_json_body(request: Request, body: bytes) -> Response:
    if len(body) < COMPRESS_FROM_BYTES or "gzip" not in request.headers.get(
            "accept-encoding", ""):
        return Response(body, media_type=JSON_MEDIA_TYPE)
    return Response(gzip.compress(body, compresslevel=1), media_type=JSON_MEDIA_TYPE,
                    headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})


async def _whole_body(request: Request) -> bytes:
    return await request.body()


#: The request body, read in full before anything asks the database who is calling. Declared
#: before the principal in a route's signature (FastAPI resolves dependencies in order): on
#: SQLite the principal's query takes the write lock, which must never wait on a slow client.
RawBody = Annotated[bytes, Depends(_whole_body)]


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Problem(400, "INVALID_JSON", N_("The body is not valid JSON.")) from None


async def _principal_off_the_event_loop(request: Request, db: DbSession) -> Principal:
    """`CurrentPrincipal`, with its database query run (and its transaction ended) in a worker
    thread.

    Resolved on the event loop, the query would start a SQLite write transaction (BEGIN
    IMMEDIATE) there: a second request's query then blocks the whole loop waiting for the
    first, which cannot reach its worker thread to finish. Ending the transaction here also
    spares the event loop the platform dependency's COMMIT, which then finds the principal
    already resolved, nothing to commit, and only checks CSRF and the second factor.
    """

    if known_principal(request) is not None:
        return await require_principal(request, db)

    def resolve() -> None:
        try:
            resolve_principal(request, db)
        finally:
            db.rollback()

    await run_in_threadpool(resolve)
    return await require_principal(request, db)


#: Who is calling (as `core.authn.CurrentPrincipal`); every monitoring and FHIR route uses it.
CallingPrincipal = Annotated[Principal, Depends(_principal_off_the_event_loop)]


async def writing_principal(request: Request) -> Principal:
    """`CallingPrincipal` without dependencies, for the readings route: a known caller (a
    client token verified a moment ago) costs no database, another is looked up in a worker
    thread by a short read of its own (no transaction: SQLite's write lock is not taken)."""
    if known_principal(request) is None:
        await run_in_threadpool(resolve_principal, request)
    return await require_principal(request)




def unreadable(error: UnreadableInputError) -> Problem:
    return Problem(400, error.code, error.template, params=dict(error.params))


# ------------------------------------------------------------------------- serialising


def item_json(item: ItemResult, language: str) -> dict[str, Any]:
    out: dict[str, Any] = {"index": item.index, "status": item.status.value}
    if item.key is not None:
        out["idempotency_key"] = item.key
    if item.reading_ids:
        out["reading_ids"] = list(item.reading_ids)
    if item.problems:
        out["problems"] = [
            {"code": problem.code, "pointer": problem.pointer,
             "message": problem.message(language)}
            for problem in item.problems
        ]
    if item.skipped is not None:
        out["skipped"] = item.skipped
    return out


def result_json(patient: IngestPatient, result: IngestResult, language: str,
                received_at: datetime) -> dict[str, Any]:
    """The answer to an ingest request: counts, every item, alerts and patient guidance."""
    return {
        "patient_id": patient.patient_id,
        "received_at": received_at.isoformat(),
        "counts": result.counts(),
        "items": [item_json(item, language) for item in result.items],
        "alerts": [
            {"alert_id": alert.alert_id, "kind": alert.kind, "severity": alert.severity,
             "status": alert.status, "signal_count": alert.signal_count,
             "opened": alert.opened}
            for alert in result.alerts
        ],
        "guidance": [
            {"kind": one.kind, "severity": one.severity, "language": patient.language,
             "message": one.text}
            for one in result.guidance
        ],
        "emergency": (
            {"country": result.emergency.country, "medical": result.emergency.medical}
            if result.emergency is not None else None
        ),
    }


def audit_ingest(db: Session, actor: AuditActor, patient: IngestPatient, channel: str,
                 result: IngestResult) -> None:
    """One audit entry per request and patient (`ingest_audit_event`)."""
    record(db, actor, ingest_audit_event(patient, channel, result))


def ingest_audit_event(patient: IngestPatient, channel: str, result: IngestResult) -> AuditEvent:
    """What a request's audit entry says: counts and the range of the new readings' ids
    (never one entry per reading)."""
    detail: dict[str, Any] = {"channel": channel, **result.counts()}
    created = [
        reading_id for item in result.items if item.status is ItemStatus.CREATED
        for reading_id in item.reading_ids
    ]
    if created:
        detail["reading_ids"] = {"first": min(created), "last": max(created)}
    return AuditEvent("create", "monitoring_reading", None, patient.patient_id,
                      patient.institution_id, detail=detail)


# ------------------------------------------------------------------------- JSON batch


@router.post(
    "/api/v1/monitoring/patients/{patient_id}/readings",
    summary="Store a batch of readings (idempotency key per reading)",
    # The body is parsed by `parsers.parse_batch` item by item, not by FastAPI as a whole:
    # one bad item must not refuse the others.
    openapi_extra={"requestBody": {"required": True, "content": {
        JSON_MEDIA_TYPE: {"schema": inline_schema(ReadingBatchIn)}}}},
)
async def post_readings(patient_id: int, request: Request) -> Response:
    # No dependencies (each costs the busiest route of all a few dozen microseconds): the body
    # is read in full first (a slow client holds nothing), then the caller is known.
    raw = await request.body()
    principal = await writing_principal(request)
    if len(raw) <= GROUP_COMMIT_MAX_BYTES:
        return await _post_small_batch(patient_id, raw, principal, request)
    language = principal.language
    engine = engine_of(request)

    # Reading the JSON and writing the answer happen in the worker thread too: for a batch of
    # 1,000 readings each takes the better part of a millisecond the event loop keeps free.
    def work() -> Response:
        body = parse_json(raw)
        with session_factory(engine)() as db:
            patient, plan = writable_patient_and_plan(db, principal, patient_id)
            received_at = utcnow()
            try:
                items = parse_batch(body, patient.context(received_at))
            except UnreadableInputError as error:
                raise unreadable(error) from error
            result = ingest_items(db, patient, items, ReadingChannel.JSON, plan=plan,
                                  received_at=received_at)
            audit_ingest(db, principal.audit_actor, patient, ReadingChannel.JSON, result)
            db.commit()
        return compressed_json_response(
            request, result_json(patient, result, language, received_at))

    return await run_in_threadpool(work)


#: The readings POST, the busiest route of all (one reading per request from every device),
#: answered by `core.lean`'s lane without the FastAPI stack's per-request layers; the FastAPI
#: declaration above stays (OpenAPI, and the same answer either way in).
LEAN_ROUTES = lean_routes(post_readings)


# ------------------------------------------------------------------ small batches, grouped

#: Bodies up to this size (a few dozen readings) are written by the process's group commit
#: (`group_commit`) together with the other small batches arriving meanwhile; larger ones go
#: in a transaction of their own, where the per-transaction costs are already shared by their
#: many readings.
GROUP_COMMIT_MAX_BYTES: Final = 8192


@dataclass(frozen=True, slots=True)
class SmallBatch:
    """A small batch waiting for the group commit, read and parsed on the event loop."""

    patient_id: int
    principal: Principal
    items: list[ParsedItem]
    #: The body's problem, answered once the caller proves they may write for the patient
    #: (whoever may not learns nothing else, as with a large batch).
    unreadable: Problem | None
    received_at: datetime


#: Whether the patient has an open missing-data alert, which a new reading may end: nearly
#: never, and read with the patient it costs no statement of its own. The conditions literal, so
#: that PostgreSQL uses the partial index of open episodes.
_MISSING_DATA_OPEN: Final = (
    select(AlertRow.id).where(
        AlertRow.patient_id == Patient.id,
        AlertRow.status != literal_column(f"'{AlertStatus.RESOLVED}'"),
        AlertRow.kind == literal_column(f"'{AlertKind.MISSING_DATA.value}'"),
    ).exists().label("missing_data_open")
)
#: `_WRITE_CONTEXT` of every patient of a group, in one query, per dialect: on PostgreSQL
#: `= ANY(array)`, one statement text whatever the number of patients (psycopg prepares it
#: once, PostgreSQL plans it once), where `IN (...)` would be a new statement per count.
_WRITE_CONTEXTS: Final = {
    dialect: select(Patient.id.label("patient_id"), Patient.institution_id, Patient.user_id,
                    Patient.preferred_language, Patient.current_country, Patient.time_zone,
                    CarePlanRow.template, CarePlanRow.overrides, _MISSING_DATA_OPEN)
    .outerjoin(CarePlanRow, and_(CarePlanRow.patient_id == Patient.id, CarePlanRow.active))
    .where(condition)
    for dialect, condition in (
        ("postgresql", Patient.id == any_(bindparam("patient_ids", type_=ARRAY(Integer)))),
        ("sqlite", Patient.id.in_(bindparam("patient_ids", expanding=True))),
    )
}


def write_small_batches(db: Session, batches: Sequence[SmallBatch]) -> list[bytes | Refused]:
    """`group_commit.WriteJobs` of the readings route: per batch its JSON answer, or its
    refusal; the readings of all batches in one insert, their audit entries (one per batch)
    in another."""
    # Core, not the session's ORM execution: a plain row per patient.
    connection = db.connection()
    found = {row.patient_id: row for row in connection.execute(
        _WRITE_CONTEXTS[connection.dialect.name],
        {"patient_ids": sorted({one.patient_id for one in batches})})}
    outcomes: list[bytes | Refused | None] = []
    accepted: list[tuple[int, SmallBatch, IngestPatient]] = []
    requests: list[IngestRequest] = []
    for batch in batches:
        try:
            row = _permitted(batch.principal, found.get(batch.patient_id), Access.WRITE)
        except Problem as problem:
            outcomes.append(Refused(problem))
            continue
        if batch.unreadable is not None:
            outcomes.append(Refused(batch.unreadable))
            continue
        patient = IngestPatient(row.patient_id, row.institution_id, row.preferred_language,
                                row.current_country, row.time_zone)
        accepted.append((len(outcomes), batch, patient))
        outcomes.append(None)
        requests.append(IngestRequest(patient, batch.items, ReadingChannel.JSON,
                                      plan=plan_of(row.template, row.overrides),
                                      received_at=batch.received_at,
                                      missing_data_open=bool(row.missing_data_open)))
    results = ingest_many(db, requests) if requests else []
    # One entry per request, as when written alone, but all in one statement.
    record_entries(db, [
        (batch.principal.audit_actor, ingest_audit_event(patient, ReadingChannel.JSON, result))
        for (_, batch, patient), result in zip(accepted, results, strict=True)])
    for (position, batch, patient), result in zip(accepted, results, strict=True):
        outcomes[position] = orjson.dumps(result_json(
            patient, result, batch.principal.language, batch.received_at))
    return [outcome for outcome in outcomes if outcome is not None]


_GROUP_COMMIT_NAME: Final = "monitoring.readings"


async def _post_small_batch(patient_id: int, raw: bytes, principal: Principal,
                            request: Request) -> Response:
    """A small batch, written by the group commit: answered once its transaction committed."""
    body = parse_json(raw)
    received_at = utcnow()
    items: list[ParsedItem] = []
    problem: Problem | None = None
    try:
        items = parse_batch(body, ImportContext(patient_ref=str(patient_id),
                                                received_at=received_at))
    except UnreadableInputError as error:
        problem = unreadable(error)
    committer = group_commit.for_app(request.app.state, _GROUP_COMMIT_NAME,
                                     engine_of(request), write_small_batches)
    answer = await committer.submit(SmallBatch(patient_id, principal, items, problem,
                                               received_at))
    return compressed_json_body(request, answer)


def reading_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "metric": row.metric,
        "loinc": row.loinc,
        "value": row.value,
        "unit": row.unit,
        "effective_at": local_time(row.effective_at, row.effective_offset_minutes).isoformat(),
        "source_device": row.source_device,
        "received_at": row.received_at.isoformat(),
        "channel": row.channel,
        "panel_id": row.panel_id,
    }


def _cursor(moment: datetime, reading_id: int) -> str:
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|{reading_id}".encode()).decode()


def _read_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        moment, reading_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None:
            raise ValueError(moment)
        return parsed, int(reading_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Problem(400, "INVALID_CURSOR",
                      N_("The cursor is not one this API returned.")) from None


@router.get(
    "/api/v1/monitoring/patients/{patient_id}/readings",
    summary="A patient's readings, oldest first, in pages",
)
def list_readings(
    patient_id: int,
    principal: CallingPrincipal,
    db: DbSession,
    metric: Annotated[list[Metric] | None, Query()] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=READINGS_PAGE_MAX)] = 500,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    patient = authorised_patient(db, principal, patient_id, Access.READ)
    query = select(ReadingRow).where(ReadingRow.patient_id == patient.id)
    if metric:
        query = query.where(ReadingRow.metric.in_([one.value for one in metric]))
    if since is not None:
        query = query.where(ReadingRow.effective_at >= since)
    if until is not None:
        query = query.where(ReadingRow.effective_at < until)
    if cursor is not None:
        after, after_id = _read_cursor(cursor)
        query = query.where(or_(
            ReadingRow.effective_at > after,
            and_(ReadingRow.effective_at == after, ReadingRow.id > after_id),
        ))
    rows = list(db.execute(
        query.order_by(ReadingRow.effective_at, ReadingRow.id).limit(limit + 1)
    ).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    audit(db, principal, AuditEvent(
        "search", "monitoring_reading", None, patient.id, patient.institution_id,
        detail={"returned": len(rows), "metrics": [one.value for one in metric or []]},
    ))
    db.commit()
    return json_response({
        "patient_id": patient.id,
        "items": [reading_json(row) for row in rows],
        "next_cursor": _cursor(rows[-1].effective_at, rows[-1].id) if more and rows else None,
    })


# ---------------------------------------------------------------------------- uploads


def upload_json(upload: UploadRow, language: str) -> dict[str, Any]:
    total = upload.bytes_total or 0
    progress = 1.0 if upload.status == UploadStatus.DONE else (
        min(upload.bytes_read / total, 1.0) if total else 0.0
    )
    return {
        "id": upload.id,
        "patient_id": upload.patient_id,
        "kind": upload.kind,
        "filename": upload.filename,
        "status": upload.status,
        "bytes_total": total,
        "bytes_read": upload.bytes_read,
        "progress": round(progress, 4),
        "counts": {
            "items": upload.items_seen,
            "created": upload.items_created,
            "duplicate": upload.items_duplicate,
            "refused": upload.items_refused,
            "skipped": upload.items_skipped,
            "readings_created": upload.readings_created,
            "alerts": upload.alerts_raised,
        },
        "problems": upload.problems,
        "error": (
            {"code": upload.error_code,
             "message": translate(language, upload.error_message or "",
                                  **(upload.error_params or {}))}
            if upload.error_code else None
        ),
        "created_at": upload.created_at.isoformat(),
        "started_at": upload.started_at.isoformat() if upload.started_at else None,
        "finished_at": upload.finished_at.isoformat() if upload.finished_at else None,
        "status_url": f"/api/v1/monitoring/uploads/{upload.id}",
    }


def _upload_kind(requested: str | None, filename: str, head: bytes) -> str:
    if requested:
        if requested not in (UploadKind.CSV, UploadKind.APPLE_HEALTH):
            raise Problem(422, "UNKNOWN_UPLOAD_KIND",
                          N_("“{kind}” is not a kind of upload; use csv or apple_health"),
                          params={"kind": requested[:40]})
        return requested
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        return UploadKind.CSV
    if lowered.endswith((".zip", ".xml")) or head.startswith((b"PK", b"<?xml")):
        return UploadKind.APPLE_HEALTH
    return UploadKind.CSV


@router.post(
    "/api/v1/monitoring/patients/{patient_id}/uploads",
    status_code=202,
    summary="Upload a CSV file or an Apple Health export (multipart field `file`)",
)
async def upload_readings_file(
    patient_id: int,
    request: Request,
    principal: CallingPrincipal,
    db: DbSession,
    background: BackgroundTasks,
) -> Response:
    language = principal.language
    # Who may upload is settled before the file is received; receiving and copying a large
    # file takes a while, so no transaction (no SQLite lock, no pooled connection) meanwhile.
    await run_in_threadpool(authorised_patient, db, principal, patient_id, Access.WRITE)
    await run_in_threadpool(db.rollback)
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise Problem(422, "FILE_REQUIRED",
                      N_("Choose a file to upload (form field “file”)."))
    requested = form.get("kind")
    filename = (upload.filename or "upload")[:255]
    path, size = await run_in_threadpool(save_upload_stream, upload.file)
    if size > UPLOAD_MAX_BYTES:
        path.unlink(missing_ok=True)
        raise Problem(413, "BODY_TOO_LARGE", N_("The request body is too large."))
    if size == 0:
        path.unlink(missing_ok=True)
        raise Problem(422, "EMPTY_FILE", N_("The file is empty."))
    with path.open("rb") as stream:
        head = stream.read(8)
    kind = _upload_kind(requested if isinstance(requested, str) else None, filename, head)

    def work() -> dict[str, Any]:
        patient = authorised_patient(db, principal, patient_id, Access.WRITE)
        row = UploadRow(
            patient_id=patient.id, institution_id=patient.institution_id, kind=kind,
            filename=filename, status=UploadStatus.QUEUED, bytes_total=size, bytes_read=0,
            problems=[], error_params={}, language=language,
            created_by=actor_ref(principal.kind, principal.subject_id), created_at=utcnow(),
        )
        db.add(row)
        db.flush()
        audit(db, principal, AuditEvent(
            "create", "monitoring_upload", str(row.id), patient.id, patient.institution_id,
            detail={"kind": kind, "bytes": size},
        ))
        db.commit()
        return upload_json(row, language)

    try:
        payload = await run_in_threadpool(work)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    background.add_task(process_upload, request.app.state.engine, payload["id"], path)
    return json_response(payload, 202, headers={"Location": payload["status_url"]})


@router.get("/api/v1/monitoring/uploads/{upload_id}", summary="Progress of a file upload")
def read_upload(upload_id: int, principal: CallingPrincipal, db: DbSession,
                request: Request) -> Response:
    upload = db.get(UploadRow, upload_id)
    if upload is None:
        raise not_found("upload")
    try:
        authorised_patient(db, principal, upload.patient_id, Access.READ)
    except Problem as problem:
        if problem.status == 404:
            raise not_found("upload") from None
        raise
    audit(db, principal, AuditEvent(
        "read", "monitoring_upload", str(upload.id), upload.patient_id, upload.institution_id,
    ))
    db.commit()
    return json_response(upload_json(upload, request_language(request)))


@router.get("/api/v1/monitoring/patients/{patient_id}/uploads",
            summary="A patient's recent file uploads, newest first")
def list_uploads(patient_id: int, principal: CallingPrincipal, db: DbSession,
                 request: Request,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Response:
    patient = authorised_patient(db, principal, patient_id, Access.READ)
    uploads = list(db.execute(
        select(UploadRow).where(UploadRow.patient_id == patient.id)
        .order_by(UploadRow.id.desc()).limit(limit)
    ).scalars())
    audit(db, principal, AuditEvent(
        "search", "monitoring_upload", None, patient.id, patient.institution_id,
        detail={"returned": len(uploads)},
    ))
    db.commit()
    language = request_language(request)
    return json_response({"items": [upload_json(upload, language) for upload in uploads]})


# ------------------------------------------------------------------------- Nightscout

NIGHTSCOUT_PATH: Final = "/nightscout/{url_token}"


def nightscout_json(row: NightscoutSecretRow, settings_base_url: str) -> dict[str, Any]:
    base = settings_base_url.rstrip("/")
    scheme, _, host = base.partition("://")
    per_patient = f"{base}/nightscout/{row.url_token}"
    return {
        "patient_id": row.patient_id,
        "api_secret": row.secret,
        "api_secret_sha1": row.secret_sha1,
        "url_token": row.url_token,
        "site_url": base,
        "patient_url": per_patient,
        # The form uploaders such as xDrip+ take: the secret as the user part of the URL.
        "uploader_url": f"{scheme}://{row.secret}@{host}/nightscout/{row.url_token}/api/v1/",
        "entries_url": f"{per_patient}/api/v1/entries",
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }


def _secret_row(db: Session, patient_id: int) -> NightscoutSecretRow | None:
    return db.execute(
        select(NightscoutSecretRow).where(NightscoutSecretRow.patient_id == patient_id)
    ).scalar_one_or_none()


@router.post("/api/v1/monitoring/patients/{patient_id}/nightscout", status_code=201,
             summary="Issue (or replace) the patient's Nightscout API secret")
def issue_nightscout(patient_id: int, principal: CallingPrincipal, db: DbSession,
                     settings: AppSettings) -> Response:
    patient = authorised_patient(db, principal, patient_id, Access.WRITE)
    row = issue_nightscout_secret(db, patient, actor_ref(principal.kind, principal.subject_id))
    audit(db, principal, AuditEvent(
        "create", "monitoring_nightscout_secret", str(row.id), patient.id,
        patient.institution_id,
    ))
    db.commit()
    return json_response(nightscout_json(row, settings.public_base_url), 201)


@router.get("/api/v1/monitoring/patients/{patient_id}/nightscout",
            summary="The patient's Nightscout API secret and uploader URL")
def read_nightscout(patient_id: int, principal: CallingPrincipal, db: DbSession,
                    settings: AppSettings) -> Response:
    patient = authorised_patient(db, principal, patient_id, Access.WRITE)
    row = _secret_row(db, patient.id)
    if row is None:
        raise not_found("Nightscout secret")
    audit(db, principal, AuditEvent(
        "read", "monitoring_nightscout_secret", str(row.id), patient.id, patient.institution_id,
    ))
    db.commit()
    return json_response(nightscout_json(row, settings.public_base_url))


@router.delete("/api/v1/monitoring/patients/{patient_id}/nightscout", status_code=204,
               summary="Revoke the patient's Nightscout API secret")
def revoke_nightscout(patient_id: int, principal: CallingPrincipal, db: DbSession) -> Response:
    patient = authorised_patient(db, principal, patient_id, Access.WRITE)
    row = _secret_row(db, patient.id)
    if row is None:
        raise not_found("Nightscout secret")
    audit(db, principal, AuditEvent(
        "delete", "monitoring_nightscout_secret", str(row.id), patient.id,
        patient.institution_id,
    ))
    db.delete(row)
    db.commit()
    return Response(status_code=204)


def _nightscout_unauthorised() -> Problem:
    return Problem(
        401, "NIGHTSCOUT_SECRET_INVALID",
        N_("The api-secret header does not match the API secret of any patient; copy the "
           "secret from the patient's page into the uploader again."),
    )


def _entry_echo(raw: Any, item: ItemResult, language: str) -> dict[str, Any]:
    echoed: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {"entry": raw}
    if item.reading_ids:
        echoed["_id"] = str(item.reading_ids[0])
    echoed["jaejin"] = {key: value for key, value in item_json(item, language).items()
                        if key != "index"}
    return echoed


async def _nightscout_entries(request: Request, raw: bytes, db: Session,
                              api_secret: str | None, url_token: str | None) -> Response:
    body = parse_json(raw)
    language = request_language(request)
    address = request_address(request)
    user_agent = request.headers.get("user-agent")

    def work() -> list[dict[str, Any]]:
        secret = nightscout_secret_for(db, api_secret, url_token)
        if secret is None:
            raise _nightscout_unauthorised()
        patient_row = db.get(Patient, secret.patient_id)
        if patient_row is None:
            raise _nightscout_unauthorised()
        patient = IngestPatient.of(patient_row)
        received_at = utcnow()
        try:
            items = parse_entries(body, patient.context(received_at))
        except UnreadableInputError as error:
            raise unreadable(error) from error
        result = ingest_items(db, patient, items, ReadingChannel.NIGHTSCOUT, key_prefix="ns",
                              received_at=received_at)
        db.execute(update(NightscoutSecretRow).where(NightscoutSecretRow.id == secret.id)
                   .values(last_used_at=received_at))
        actor = AuditActor("device", f"nightscout:{secret.id}", "Nightscout uploader",
                           address, user_agent)
        audit_ingest(db, actor, patient, ReadingChannel.NIGHTSCOUT, result)
        db.commit()
        raw_entries = body if isinstance(body, list) else [body]
        return [
            _entry_echo(raw, item, language)
            for raw, item in zip(raw_entries, result.items, strict=True)
        ]

    return json_response(await run_in_threadpool(work))


ApiSecretHeader = Annotated[str | None, Header(alias="api-secret")]


@router.post("/api/v1/entries", summary="Nightscout uploaders: CGM entries (api-secret header)")
@router.post("/api/v1/entries.json", include_in_schema=False)
async def nightscout_entries(request: Request, raw: RawBody, db: DbSession,
                             api_secret: ApiSecretHeader = None) -> Response:
    return await _nightscout_entries(request, raw, db, api_secret, None)


@router.post(NIGHTSCOUT_PATH + "/api/v1/entries",
             summary="Nightscout uploaders: CGM entries at the patient's own base URL")
@router.post(NIGHTSCOUT_PATH + "/api/v1/entries.json", include_in_schema=False)
async def nightscout_patient_entries(url_token: str, request: Request, raw: RawBody,
                                     db: DbSession,
                                     api_secret: ApiSecretHeader = None) -> Response:
    return await _nightscout_entries(request, raw, db, api_secret, url_token)


def _nightscout_status() -> Response:
    """What Nightscout's `status.json` tells an uploader checking its connection: no data of
    any patient, only that the API is there and speaks mg/dL."""
    return json_response({
        "status": "ok",
        "name": "Jaejin",
        # Uploaders pick the API they speak by the server's version: this is the Nightscout
        # release whose v1 `entries` and `status` behaviour these routes follow.
        "version": "14.2.6",
        "serverTime": utcnow().isoformat(),
        "serverTimeEpoch": int(utcnow().timestamp() * 1000),
        "apiEnabled": True,
        "careportalEnabled": False,
        "settings": {"units": "mg/dl", "enable": []},
    })


@router.get("/api/v1/status.json", summary="Nightscout uploaders: is the API there")
def nightscout_status() -> Response:
    return _nightscout_status()


@router.get(NIGHTSCOUT_PATH + "/api/v1/status.json", include_in_schema=False)
def nightscout_patient_status(url_token: str) -> Response:
    return _nightscout_status()
