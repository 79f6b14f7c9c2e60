"""FHIR R4 endpoint for monitoring: Observations in (single, transaction and batch Bundles) and out.

* `POST /fhir/R4/Observation`: one Observation (vital-signs profile); `If-None-Exist` makes a
  retry return the Observation already created (200) instead of a second one (201);
* `POST /fhir/R4`: a `transaction` Bundle (every entry stored, or none) or a `batch` Bundle
  (each entry on its own), entries being `POST Observation`, optionally with `ifNoneExist`;
  entries may be for several patients, each of whom the caller must be allowed to write for;
* `GET /fhir/R4/Observation?subject=Patient/1&code=http://loinc.org|8480-6&date=ge2024-05-01`:
  a searchset Bundle, newest first; `GET /fhir/R4/Observation/{id}`; `GET /fhir/R4/metadata`;
* `GET /fhir/R4/Media?subject=Patient/1` and `GET /fhir/R4/Media/{id}`: wound photos (read
  only; `fhir.media`), authorised and audited as the photo API does (`monitoring.photo_api`).

Every error is an OperationOutcome. A blood-pressure panel is stored as two readings (systolic
and diastolic) and served back as one 85354-9 Observation whose id is its systolic reading's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import ColumnElement, and_, false, not_, or_, select
from sqlalchemy.orm import Session

from jaejin.core.audit import AuditEvent
from jaejin.core.authn import DbSession, Principal, audit
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem, not_found, register_problem_renderer, request_language
from jaejin.core.i18n import N_, translate
from jaejin.directory.store import Patient
from jaejin.fhir.media import wound_photo_media
from jaejin.monitoring.api import (
    Access,
    CallingPrincipal,
    RawBody,
    audit_ingest,
    authorised_patient,
)
from jaejin.monitoring.ingest import IngestPatient, ItemResult, ItemStatus, ingest_items
from jaejin.monitoring.parsers import (
    ImportContext,
    ImportProblem,
    OutcomeIssue,
    ParsedItem,
    UnreadableInputError,
    issues_from_problems,
    operation_outcome,
    panel_to_observation,
    parse_bundle,
    parse_observation,
    reading_to_observation,
)
from jaejin.monitoring.parsers.fhir import LOINC_SYSTEM, subject_patient_id
from jaejin.monitoring.photo_store import WoundPhotoRow
from jaejin.monitoring.readings import BLOOD_PRESSURE_PANEL_LOINC, Metric, Reading
from jaejin.monitoring.store import READING_COLUMNS, ReadingChannel, ReadingRow, reading_from_values

router = APIRouter(prefix="/fhir/R4", tags=["fhir"])

FHIR_MEDIA_TYPE: Final = "application/fhir+json"
FHIR_PREFIX: Final = "/fhir/"
SEARCH_COUNT_DEFAULT: Final = 100
SEARCH_COUNT_MAX: Final = 1000
KEY_PREFIX: Final = "fhir"
#: A stored resource's id: ASCII digits that fit a 64-bit id (anything else is simply unknown;
#: `str.isdigit` would pass "²", which `int` refuses; 19+ digits overflow the database's integer).
_RESOURCE_ID: Final = re.compile(r"[0-9]{1,18}")

#: FHIR IssueType for an HTTP status of a refused request.
_ISSUE_TYPE_BY_STATUS: Final = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
    409: "conflict", 413: "too-costly", 415: "not-supported", 422: "processable",
    429: "throttled",
}
_STATUS_TEXT: Final = {
    200: "200 OK", 201: "201 Created", 400: "400 Bad Request", 403: "403 Forbidden",
    404: "404 Not Found", 422: "422 Unprocessable Entity",
}


# --------------------------------------------------------------------------- outcomes


def fhir_response(resource: Mapping[str, Any], status_code: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(resource), status_code=status_code, media_type=FHIR_MEDIA_TYPE,
                    headers=headers)


def outcome_for_problem(problem: Problem, language: str) -> dict[str, Any]:
    body = problem.body(language)
    issue_type = _ISSUE_TYPE_BY_STATUS.get(problem.status, "exception")
    issues = [OutcomeIssue("error" if problem.status < 500 else "fatal", issue_type,
                           body["detail"])]
    issues.extend(
        OutcomeIssue("error", "invalid", error["message"], (error["field"],))
        for error in body.get("errors", [])
    )
    outcome = operation_outcome(issues)
    # The stable Jaejin code, so a client can act on it without parsing text.
    outcome["issue"][0]["details"] = {
        "coding": [{"system": "urn:jaejin:problem", "code": problem.code}],
    }
    return outcome


def _applies(request: Request) -> bool:
    # The path from the scope: building request.url costs every other API refusal microseconds.
    path: str = request.scope["path"]
    return path.startswith(FHIR_PREFIX)


def _render(request: Request, problem: Problem) -> Response:
    return fhir_response(outcome_for_problem(problem, request_language(request)),
                         problem.status, headers=problem.headers)


register_problem_renderer(_applies, _render)


class RefusedResource(Problem):
    """A resource refused for its content: answered with one issue per problem."""

    def __init__(self, status: int, outcome: dict[str, Any]) -> None:
        super().__init__(status, "FHIR_RESOURCE_REFUSED", N_("The resource was refused."))
        self.outcome = outcome


#: Problems with the request itself rather than with an Observation's content.
_REQUEST_PROBLEMS: Final = frozenset({
    "UNSUPPORTED_REQUEST", "MALFORMED_ITEM", "UNSUPPORTED_RESOURCE",
})


def _refusal_status(problems: Sequence[ImportProblem]) -> int:
    """400 for a request FHIR cannot take, 422 for an Observation whose content is refused."""
    return 400 if any(problem.code in _REQUEST_PROBLEMS for problem in problems) else 422


def _refused(status: int, problems: Sequence[ImportProblem], language: str) -> Problem:
    return RefusedResource(status, operation_outcome(issues_from_problems(problems, language)))


def _resource_body(request: Request, raw: bytes) -> Any:
    content_type = request.headers.get("content-type", "")
    if "xml" in content_type:
        raise Problem(415, "UNSUPPORTED_MEDIA_TYPE",
                      N_("Send FHIR resources as JSON (application/fhir+json)."))
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Problem(400, "INVALID_JSON", N_("The body is not valid JSON.")) from None


# ---------------------------------------------------------------------- resources out


@dataclass(frozen=True, slots=True)
class _Stored:
    """A stored Observation: one reading, or a panel's systolic and diastolic readings."""

    observation_id: int
    readings: tuple[Reading, ...]

    def resource(self) -> dict[str, Any]:
        patient_id = self.readings[0].patient_ref
        if len(self.readings) == 2:
            systolic, diastolic = self.readings
            resource = panel_to_observation(systolic, diastolic, patient_id,
                                            str(self.observation_id))
        else:
            resource = reading_to_observation(self.readings[0], patient_id,
                                              str(self.observation_id))
        resource.setdefault("meta", {})["versionId"] = "1"
        return resource


def _is_panel_diastolic() -> ColumnElement[bool]:
    return and_(ReadingRow.metric == Metric.DIASTOLIC.value, ReadingRow.panel_id.is_not(None))


def _observations(db: Session, rows: Sequence[Any]) -> list[_Stored]:
    """Rows (id + `READING_COLUMNS`) as Observations, panels joined with their diastolic half."""
    readings = [(row[0], reading_from_values(row[1:])) for row in rows]
    panels = {
        (reading.patient_ref, reading.panel_id) for _, reading in readings
        if reading.metric is Metric.SYSTOLIC and reading.panel_id is not None
    }
    halves: dict[tuple[str, str | None], Reading] = {}
    if panels:
        patient_ids = {int(patient) for patient, _ in panels}
        for row in db.execute(
            select(ReadingRow.id, *READING_COLUMNS).where(
                ReadingRow.patient_id.in_(patient_ids),
                ReadingRow.panel_id.in_([panel for _, panel in panels]),
                ReadingRow.metric == Metric.DIASTOLIC.value,
            )
        ):
            half = reading_from_values(row[1:])
            halves[(half.patient_ref, half.panel_id)] = half
    stored: list[_Stored] = []
    for reading_id, reading in readings:
        partner = halves.get((reading.patient_ref, reading.panel_id))
        if reading.metric is Metric.SYSTOLIC and partner is not None:
            stored.append(_Stored(reading_id, (reading, partner)))
        else:
            stored.append(_Stored(reading_id, (reading,)))
    return stored


def _load(db: Session, reading_ids: Sequence[int]) -> dict[int, _Stored]:
    rows = db.execute(
        select(ReadingRow.id, *READING_COLUMNS).where(
            ReadingRow.id.in_(reading_ids), not_(_is_panel_diastolic())
        )
    ).all()
    return {one.observation_id: one for one in _observations(db, rows)}


def _location(observation_id: int) -> str:
    return f"Observation/{observation_id}/_history/1"


# ------------------------------------------------------------------------ single create


def _fhir_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its FHIR JSON itself (RawBody): documented
    for clients, and generated by the API sweep (tests/test_api_fuzz.py)."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {FHIR_MEDIA_TYPE: {"schema": schema}}}}


_CODEABLE_CONCEPT: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"coding": {"type": "array", "items": {
        "type": "object",
        "properties": {"system": {"type": "string"}, "code": {"type": "string"}},
    }}},
}
_QUANTITY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"value": {"type": "number"}, "unit": {"type": "string"},
                   "system": {"type": "string"}, "code": {"type": "string"}},
}
#: The parts of an Observation this endpoint reads (vital-signs profile); others are ignored.
_OBSERVATION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["resourceType", "status", "code", "subject"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Observation"]},
        "status": {"type": "string", "enum": ["final", "amended", "corrected", "preliminary"]},
        "code": _CODEABLE_CONCEPT,
        "subject": {"type": "object", "properties": {
            "reference": {"type": "string", "pattern": "Patient/[0-9]+$"}}},
        "effectiveDateTime": {"type": "string", "format": "date-time"},
        "valueQuantity": _QUANTITY,
        "component": {"type": "array", "items": {
            "type": "object",
            "properties": {"code": _CODEABLE_CONCEPT, "valueQuantity": _QUANTITY},
        }},
        "device": {"type": "object", "properties": {"display": {"type": "string"}}},
    },
}
_BUNDLE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["resourceType", "type", "entry"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["transaction", "batch"]},
        "entry": {"type": "array", "items": {
            "type": "object",
            "properties": {
                "fullUrl": {"type": "string"},
                "resource": _OBSERVATION_SCHEMA,
                "request": {"type": "object", "properties": {
                    "method": {"type": "string", "enum": ["POST"]},
                    "url": {"type": "string", "enum": ["Observation"]},
                    "ifNoneExist": {"type": "string"},
                }},
            },
        }},
    },
}


def _subject_id(resource: object) -> str | None:
    return subject_patient_id(resource) if isinstance(resource, Mapping) else None


def _writable_patient(db: Session, principal: Principal, subject: str | None) -> Patient | None:
    """The subject's patient, if the caller may write for them; None for a missing subject."""
    if subject is None:
        return None
    if not _RESOURCE_ID.fullmatch(subject):
        raise not_found("patient")
    return authorised_patient(db, principal, int(subject), Access.WRITE)


@router.post("/Observation", summary="Create an Observation (conditional with If-None-Exist)",
             openapi_extra=_fhir_body(_OBSERVATION_SCHEMA, "An Observation (vital signs)."))
async def create_observation(
    request: Request,
    raw: RawBody,
    principal: CallingPrincipal,
    db: DbSession,
    if_none_exist: Annotated[str | None, Header(alias="If-None-Exist")] = None,
) -> Response:
    resource = _resource_body(request, raw)
    language = principal.language

    def work() -> Response:
        if not isinstance(resource, Mapping):
            raise Problem(400, "NOT_A_RESOURCE",
                          N_("The request body is not a FHIR resource (a JSON object)"))
        patient_row = _writable_patient(db, principal, _subject_id(resource))
        received_at = utcnow()
        patient_ref = str(patient_row.id) if patient_row is not None else ""
        item = parse_observation(
            resource, ImportContext(patient_ref, received_at), 0,
            key=if_none_exist.strip() if if_none_exist and if_none_exist.strip() else None,
        )
        if item.problems or patient_row is None:
            raise _refused(422 if patient_row is not None else 400, item.problems, language)
        patient = IngestPatient.of(patient_row)
        result = ingest_items(db, patient, [item], ReadingChannel.FHIR, key_prefix=KEY_PREFIX,
                              received_at=received_at)
        audit_ingest(db, principal.audit_actor, patient, ReadingChannel.FHIR, result)
        db.commit()
        [outcome] = result.items
        stored = _load(db, outcome.reading_ids)
        observation = stored[min(stored)]
        status = 201 if outcome.status is ItemStatus.CREATED else 200
        location = _location(observation.observation_id)
        return fhir_response(observation.resource(), status, headers={
            "Location": f"/fhir/R4/{location}", "ETag": 'W/"1"',
        })

    try:
        return await run_in_threadpool(work)
    except RefusedResource as refused:
        return fhir_response(refused.outcome, refused.status)


# ------------------------------------------------------------------------------ bundles


@dataclass(slots=True)
class _Entry:
    index: int
    subject: str | None
    item: ParsedItem
    full_url: str | None
    patient: Patient | None = None
    denied: Problem | None = None
    result: ItemResult | None = None


_ENTRY_POINTER = re.compile(r"^Bundle\.entry\[(\d+)\]")


def _renumber(item: ParsedItem, index: int) -> ParsedItem:
    """An item parsed from a sub-bundle, given back its index in the whole bundle."""
    problems = tuple(
        replace(problem, pointer=_ENTRY_POINTER.sub(f"Bundle.entry[{index}]", problem.pointer))
        for problem in item.problems
    )
    if problems:
        return ParsedItem(index, problems=problems, key=item.key)
    if item.readings:
        return ParsedItem(index, readings=item.readings, key=item.key)
    return ParsedItem(index, key=item.key, skipped=item.skipped)


def _parse_entries(bundle: Mapping[str, Any], received_at: datetime) -> tuple[str, list[_Entry]]:
    """Every entry parsed against its own subject (a gateway's bundle spans patients)."""
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raw_entries = []
    by_subject: dict[str | None, list[int]] = {}
    for index, entry in enumerate(raw_entries):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        by_subject.setdefault(_subject_id(resource), []).append(index)
    bundle_type = str(bundle.get("type"))
    entries: list[_Entry | None] = [None] * len(raw_entries)
    for subject, indexes in by_subject.items():
        part = {**bundle, "entry": [raw_entries[index] for index in indexes]}
        parsed = parse_bundle(part, ImportContext(subject or "", received_at))
        bundle_type = parsed.bundle_type
        for index, parsed_entry in zip(indexes, parsed.entries, strict=True):
            entries[index] = _Entry(index, subject, _renumber(parsed_entry.item, index),
                                    parsed_entry.request.full_url)
    if not raw_entries:
        parse_bundle(bundle, ImportContext("", received_at))
    return bundle_type, [entry for entry in entries if entry is not None]


def _entry_response(entry: _Entry, stored: Mapping[int, _Stored],
                    language: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if entry.full_url:
        out["fullUrl"] = entry.full_url
    if entry.denied is not None:
        outcome = outcome_for_problem(entry.denied, language)
        out["response"] = {"status": _STATUS_TEXT.get(entry.denied.status,
                                                      str(entry.denied.status)),
                           "outcome": outcome}
        return out
    result = entry.result
    if result is None or result.status is ItemStatus.REFUSED:
        problems = result.problems if result is not None else entry.item.problems
        out["response"] = {
            "status": _STATUS_TEXT[_refusal_status(problems)],
            "outcome": operation_outcome(issues_from_problems(problems, language)),
        }
        return out
    observation_id = min(result.reading_ids)
    observation = stored.get(observation_id)
    status = 201 if result.status is ItemStatus.CREATED else 200
    out["response"] = {"status": _STATUS_TEXT[status], "location": _location(observation_id),
                       "etag": 'W/"1"'}
    if observation is not None:
        out["resource"] = observation.resource()
    return out


@router.post("", summary="Process a transaction or batch Bundle of Observation creates",
             openapi_extra=_fhir_body(_BUNDLE_SCHEMA,
                                      "A transaction or batch Bundle of POST Observation entries."))
async def process_bundle(request: Request, raw: RawBody, principal: CallingPrincipal,
                         db: DbSession) -> Response:
    bundle = _resource_body(request, raw)
    language = principal.language

    def work() -> Response:
        if not isinstance(bundle, Mapping):
            raise Problem(400, "NOT_A_RESOURCE",
                          N_("The request body is not a FHIR resource (a JSON object)"))
        received_at = utcnow()
        try:
            bundle_type, entries = _parse_entries(bundle, received_at)
        except UnreadableInputError as error:
            raise Problem(400, error.code, error.template, params=dict(error.params)) from error
        transaction = bundle_type == "transaction"
        patients: dict[str, Patient | Problem] = {}
        for entry in entries:
            if entry.subject is None or entry.item.problems:
                continue
            if entry.subject not in patients:
                try:
                    allowed = _writable_patient(db, principal, entry.subject)
                    assert allowed is not None
                    patients[entry.subject] = allowed
                except Problem as problem:
                    if transaction:
                        raise
                    patients[entry.subject] = problem
            found = patients[entry.subject]
            if isinstance(found, Problem):
                entry.denied = found
            else:
                entry.patient = found
        refused = [entry for entry in entries if entry.item.problems]
        if transaction and refused:
            problems = [problem for entry in refused for problem in entry.item.problems]
            raise _refused(400, problems, language)
        by_patient: dict[int, list[_Entry]] = {}
        for entry in entries:
            if entry.patient is not None and entry.denied is None:
                by_patient.setdefault(entry.patient.id, []).append(entry)
        for group in by_patient.values():
            patient_row = group[0].patient
            assert patient_row is not None
            patient = IngestPatient.of(patient_row)
            result = ingest_items(db, patient, [entry.item for entry in group],
                                  ReadingChannel.FHIR, key_prefix=KEY_PREFIX,
                                  received_at=received_at)
            for entry, item_result in zip(group, result.items, strict=True):
                entry.result = item_result
            audit_ingest(db, principal.audit_actor, patient, ReadingChannel.FHIR, result)
        db.commit()
        stored = _load(db, [min(entry.result.reading_ids) for entry in entries
                            if entry.result is not None and entry.result.reading_ids])
        return fhir_response({
            "resourceType": "Bundle",
            "type": f"{bundle_type}-response",
            "entry": [_entry_response(entry, stored, language) for entry in entries],
        })

    try:
        return await run_in_threadpool(work)
    except RefusedResource as refused:
        return fhir_response(refused.outcome, refused.status)


# ------------------------------------------------------------------------------ reading


_OBSERVATION_SUBJECT_REQUIRED: Final = N_(
    "Say whose observations to search: subject=Patient/<id>.")


def _readable_patient(db: Session, principal: Principal, reference: str | None,
                      subject_required: str = _OBSERVATION_SUBJECT_REQUIRED) -> Patient:
    """The patient a search is about: `subject`/`patient`, or the caller's own record."""
    if reference is None:
        if principal.user_id is not None:
            own = list(db.execute(
                select(Patient).where(Patient.user_id == principal.user_id)
            ).scalars())
            if len(own) == 1:
                return own[0]
        raise Problem(400, "SUBJECT_REQUIRED", subject_required)
    identifier = reference.rstrip("/").rsplit("/", 1)[-1]
    if not _RESOURCE_ID.fullmatch(identifier):
        raise not_found("patient")
    return authorised_patient(db, principal, int(identifier), Access.READ)


def _code_condition(tokens: str) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    panel_systolic = and_(ReadingRow.metric == Metric.SYSTOLIC.value,
                          ReadingRow.panel_id.is_not(None))
    for token in tokens.split(","):
        system, _, code = token.strip().rpartition("|")
        if system and system != LOINC_SYSTEM:
            continue
        if code == BLOOD_PRESSURE_PANEL_LOINC:
            conditions.append(panel_systolic)
        elif code:
            conditions.append(and_(ReadingRow.loinc == code, not_(panel_systolic)))
    return or_(*conditions) if conditions else false()


_DATE_PREFIXES: Final = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def _date_bounds(text: str) -> tuple[datetime, datetime]:
    """The instant range a FHIR date search value stands for (a date: that whole UTC day)."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = date.fromisoformat(text)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(text)
    return moment, moment + timedelta(microseconds=1)


def _date_condition(value: str) -> ColumnElement[bool]:
    prefix, text = ("eq", value)
    if value[:2] in _DATE_PREFIXES and not value[:2].isdigit():
        prefix, text = value[:2], value[2:]
    try:
        start, end = _date_bounds(text)
    except ValueError:
        raise Problem(400, "INVALID_DATE_PARAMETER",
                      N_("“{value}” is not a date or a date-time with an offset."),
                      params={"value": value[:60]}) from None
    column = ReadingRow.effective_at
    conditions: dict[str, ColumnElement[bool]] = {
        "eq": and_(column >= start, column < end),
        "ne": or_(column < start, column >= end),
        "gt": column >= end,
        "sa": column >= end,
        "lt": column < start,
        "eb": column < start,
        "ge": column >= start,
        "le": column < end,
    }
    if prefix not in conditions:
        raise Problem(400, "INVALID_DATE_PARAMETER",
                      N_("“{value}” is not a date or a date-time with an offset."),
                      params={"value": value[:60]})
    return conditions[prefix]


@router.get("/Observation", summary="Search Observations (subject, code, date)")
def search_observations(
    request: Request,
    principal: CallingPrincipal,
    db: DbSession,
    subject: str | None = None,
    patient: str | None = None,
    code: Annotated[str | None, Query(max_length=500)] = None,
    date_parameter: Annotated[list[str] | None, Query(alias="date")] = None,
    count: Annotated[int, Query(alias="_count", ge=0, le=SEARCH_COUNT_MAX)] =
        SEARCH_COUNT_DEFAULT,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=1_000_000)] = 0,
    sort: Annotated[str, Query(alias="_sort", pattern="^-?date$")] = "-date",
) -> Response:
    owner = _readable_patient(db, principal, subject or patient)
    query = select(ReadingRow.id, *READING_COLUMNS).where(
        ReadingRow.patient_id == owner.id, not_(_is_panel_diastolic())
    )
    if code:
        query = query.where(_code_condition(code))
    for value in date_parameter or []:
        query = query.where(_date_condition(value.strip()))
    order = (ReadingRow.effective_at.desc(), ReadingRow.id.desc()) if sort == "-date" else (
        ReadingRow.effective_at, ReadingRow.id)
    rows = db.execute(query.order_by(*order).offset(offset).limit(count + 1)).all()
    more = len(rows) > count
    found = _observations(db, rows[:count])
    audit(db, principal, AuditEvent(
        "search", "Observation", None, owner.id, owner.institution_id,
        detail={"returned": len(found), "code": code or "", "date": date_parameter or []},
    ))
    db.commit()
    self_url = str(request.url)
    links = [{"relation": "self", "url": self_url}]
    if more:
        links.append({"relation": "next",
                      "url": str(request.url.include_query_params(_offset=offset + count))})
    return fhir_response({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {"fullUrl": f"{request.base_url}fhir/R4/Observation/{one.observation_id}",
             "resource": one.resource(), "search": {"mode": "match"}}
            for one in found
        ],
    })


@router.get("/Observation/{observation_id}", summary="Read one Observation")
def read_observation(observation_id: str, principal: CallingPrincipal,
                     db: DbSession) -> Response:
    if not _RESOURCE_ID.fullmatch(observation_id):
        raise not_found("Observation")
    stored = _load(db, [int(observation_id)]).get(int(observation_id))
    if stored is None:
        raise not_found("Observation")
    patient_id = int(stored.readings[0].patient_ref)
    try:
        owner = authorised_patient(db, principal, patient_id, Access.READ)
    except Problem as problem:
        if problem.status == 404:
            raise not_found("Observation") from None
        raise
    audit(db, principal, AuditEvent("read", "Observation", observation_id, owner.id,
                                    owner.institution_id))
    db.commit()
    return fhir_response(stored.resource(), headers={"ETag": 'W/"1"'})


# -------------------------------------------------------------------------- wound photos


def _searchset(request: Request, resource_type: str, resources: Sequence[dict[str, Any]],
               offset: int, count: int, more: bool) -> dict[str, Any]:
    links = [{"relation": "self", "url": str(request.url)}]
    if more:
        links.append({"relation": "next",
                      "url": str(request.url.include_query_params(_offset=offset + count))})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {"fullUrl": f"{request.base_url}fhir/R4/{resource_type}/{resource['id']}",
             "resource": resource, "search": {"mode": "match"}}
            for resource in resources
        ],
    }


@router.get("/Media", summary="Search a patient's wound photos as Media (subject)")
def search_media(
    request: Request,
    principal: CallingPrincipal,
    db: DbSession,
    subject: str | None = None,
    patient: str | None = None,
    count: Annotated[int, Query(alias="_count", ge=0, le=SEARCH_COUNT_MAX)] =
        SEARCH_COUNT_DEFAULT,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=1_000_000)] = 0,
) -> Response:
    owner = _readable_patient(
        db, principal, subject or patient,
        N_("Say whose photos to search: subject=Patient/<id>."))
    rows = list(db.execute(
        select(WoundPhotoRow).where(WoundPhotoRow.patient_id == owner.id)
        .order_by(WoundPhotoRow.taken_at.desc(), WoundPhotoRow.id.desc())
        .offset(offset).limit(count + 1)
    ).scalars())
    found = rows[:count]
    # As the photo API's list: who looked at which patient's photos, and how many.
    audit(db, principal, AuditEvent(
        "search", "wound_photo", None, owner.id, owner.institution_id,
        detail={"returned": len(found), "via": "fhir"},
    ))
    db.commit()
    base_url = str(request.base_url)
    return fhir_response(_searchset(
        request, "Media", [wound_photo_media(row, base_url) for row in found], offset, count,
        more=len(rows) > count))


@router.get("/Media/{media_id}", summary="Read one wound photo as Media")
def read_media(media_id: str, request: Request, principal: CallingPrincipal,
               db: DbSession) -> Response:
    row = db.get(WoundPhotoRow, int(media_id)) if _RESOURCE_ID.fullmatch(media_id) else None
    if row is None:
        raise not_found("Media")
    try:
        owner = authorised_patient(db, principal, row.patient_id, Access.READ)
    except Problem as problem:
        if problem.status == 404:
            raise not_found("Media") from None
        raise
    audit(db, principal, AuditEvent("read", "wound_photo", str(row.id), owner.id,
                                    owner.institution_id, detail={"view": "fhir"}))
    db.commit()
    return fhir_response(wound_photo_media(row, str(request.base_url)),
                         headers={"ETag": 'W/"1"'})


@router.get("/metadata", summary="CapabilityStatement of this FHIR endpoint")
def capability_statement(request: Request) -> Response:
    language = request_language(request)
    return fhir_response({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "software": {"name": "Jaejin"},
        "implementation": {
            "description": translate(language, "Jaejin remote monitoring readings"),
            "url": f"{request.base_url}fhir/R4",
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {"service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "OAuth",
            }]}]},
            "resource": [{
                "type": "Observation",
                "profile": "http://hl7.org/fhir/StructureDefinition/vitalsigns",
                "interaction": [{"code": "create"}, {"code": "read"},
                                {"code": "search-type"}],
                "conditionalCreate": True,
                "searchParam": [
                    {"name": "subject", "type": "reference"},
                    {"name": "patient", "type": "reference"},
                    {"name": "code", "type": "token"},
                    {"name": "date", "type": "date"},
                ],
            }, {
                "type": "Media",
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [
                    {"name": "subject", "type": "reference"},
                    {"name": "patient", "type": "reference"},
                ],
            }],
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    })


__all__ = ["FHIR_MEDIA_TYPE", "outcome_for_problem", "router"]
