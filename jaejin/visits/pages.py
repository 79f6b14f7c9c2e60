"""Visit pages: the patient's way in (device check, pre-call consent, waiting room), the call
itself, and the clinician's day (today's queue, the visit with the patient summary and note).

Who may open a visit page: its participants (the patient, the practitioner, the assigned
interpreter, and the local physician through the cookie their guest link sets) and, for the
record pages, the institution's care team. The clinician's buttons call the JSON API
(`jaejin.visits.api`) from `static/visit-panel.js` and then reload the panel fragment, so the
call on the same page is never interrupted by a form submission.

Shared files are posted to `/visits/{id}/files` and announced in the room through the hub; the
device check measures throughput against `/visits/{id}/throughput/*`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditActor
from jaejin.core.authn import (
    AppSettings,
    DbSession,
    MaybePrincipal,
    Principal,
    client_address,
    requires,
)
from jaejin.core.config import Settings
from jaejin.core.database import utcnow
from jaejin.core.errors import (
    Problem,
    field_errors_from_pydantic,
    request_language,
    validation_problem,
)
from jaejin.core.i18n import N_, translate
from jaejin.policy.decision import Decision
from jaejin.scheduling.display import dual_zone_label, zone_label
from jaejin.visits import api, prescribing, service, store, ws
from jaejin.visits.api import VisitId
from jaejin.visits.lifecycle import IdentityVerificationMethod, VisitState, is_terminal
from jaejin.visits.service import Actor, Refusal, VisitContext
from jaejin.visits.signalling import ParticipantRole, SharedFile
from jaejin.visits.turn import IceConfigurationError, ice_servers
from jaejin.visits.ws import GUEST_COOKIE, hub_for
from jaejin.web import navigation
from jaejin.web.templating import render

log = logging.getLogger(__name__)
page_router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static"
THROUGHPUT_TEST_BYTES = 2_000_000
THROUGHPUT_MAX_BYTES = 20_000_000
THROUGHPUT_CHUNK = 256 * 1024
#: Below this measured throughput the call starts audio-only (visit.js).
AUDIO_ONLY_BELOW_MBPS = 1.0

STATE_LABELS: dict[str, str] = {
    VisitState.SCHEDULED: N_("Scheduled"),
    VisitState.CHECKED_IN: N_("Checked in"),
    VisitState.WAITING_ROOM: N_("In the waiting room"),
    VisitState.IN_CALL: N_("In the call"),
    VisitState.WRAP_UP: N_("Wrap-up"),
    VisitState.CLOSED: N_("Closed"),
    VisitState.NO_SHOW: N_("No-show"),
    VisitState.CANCELLED: N_("Cancelled"),
}
DECISION_LABELS: dict[str, str] = {
    "allowed": N_("Allowed"), "conditional": N_("Conditional"), "denied": N_("Denied"),
}
IDENTITY_LABELS: dict[str, str] = {
    IdentityVerificationMethod.ID_DOCUMENT_ON_VIDEO: N_("ID document shown on video"),
    IdentityVerificationMethod.FACE_MATCHES_PHOTO_ON_FILE: N_(
        "Face compared with the photo on file"),
}
ROLE_LABELS: dict[str, str] = {
    ParticipantRole.CLINICIAN: N_("Clinician"),
    ParticipantRole.PATIENT: N_("Patient"),
    ParticipantRole.INTERPRETER: N_("Interpreter"),
    ParticipantRole.LOCAL_PHYSICIAN: N_("Local physician"),
}
MODE_LABELS: dict[str, str] = {
    "in_person": N_("In person"), "video": N_("Video"), "audio": N_("Audio only"),
    "chat": N_("Chat"),
}
#: What the patient, interpreter or local physician is told while waiting, by visit state.
WAITING_MESSAGES: dict[str, str] = {
    VisitState.SCHEDULED: N_("Your visit has not started. Check in when you are ready."),
    VisitState.CHECKED_IN: N_("You are checked in."),
    VisitState.WAITING_ROOM: N_("You are in the waiting room. The clinician will start the "
                                "visit shortly."),
    VisitState.IN_CALL: N_("The visit is in progress."),
    VisitState.WRAP_UP: N_("The call has ended. The clinician is finishing the visit note."),
    VisitState.CLOSED: N_("This visit is over."),
    VisitState.NO_SHOW: N_("This visit was marked as missed."),
    VisitState.CANCELLED: N_("This visit was cancelled."),
}
#: What the clinician is told instead, where it differs.
CLINICIAN_MESSAGES: dict[str, str] = {
    VisitState.SCHEDULED: N_("Waiting for the patient to check in and consent."),
    VisitState.CHECKED_IN: N_("Waiting for the patient to check in and consent."),
    VisitState.WAITING_ROOM: N_("The patient has checked in and consented: verify their "
                                "identity on video, then start the visit."),
}

navigation.register("/visits/today", N_("Video visits"),
                    N_("Today's video visits: each one's telemedicine decision, language and "
                       "interpreter, the patient summary and the note."),
                    {Role.CLINICIAN}, order=25)
navigation.register("/visits/mine", N_("My video visits"),
                    N_("Check your camera, microphone and connection, then join your video "
                       "visit."), {Role.PATIENT, Role.INTERPRETER}, order=25)

Clinician = Annotated[Principal, Depends(requires(Role.CLINICIAN))]
PatientOrInterpreter = Annotated[Principal, Depends(requires(Role.PATIENT, Role.INTERPRETER))]


@lru_cache(maxsize=1)
def page_texts() -> dict[str, dict[str, str]]:
    texts: dict[str, dict[str, str]] = json.loads((STATIC / "texts.json").read_text("utf-8"))
    return texts


def texts_for(page: str, language: str) -> str:
    """The scripts' texts (`static/texts.json`, English msgids) in `language`, as JSON."""
    return json.dumps({key: translate(language, msgid)
                       for key, msgid in page_texts()[page].items()}, ensure_ascii=False)


# --------------------------------------------------------------------------- who is looking


@dataclass(slots=True)
class Viewer:
    context: VisitContext
    actor: Actor
    principal: Principal | None
    csrf_token: str
    guest_link: store.GuestLink | None = None


def _viewer(request: Request, db: Session, principal: Principal | None, visit_id: int,
            settings: Settings, *, for_update: bool = False) -> Viewer:
    """The visit and who is looking at it: a signed-in user, or a guest by their link cookie.

    A guest's unsafe requests must carry their CSRF token (the session's are checked by the
    platform's dependency already)."""
    if principal is not None:
        if principal.needs_two_factor and not principal.two_factor_passed:
            raise Problem(401, "TWO_FACTOR_REQUIRED",
                          N_("Finish signing in with your two-factor code."))
        context, actor = service.committed(db, lambda: service.visit_for_principal(
            db, principal, visit_id, for_update=for_update))
        return Viewer(context, actor, principal, principal.csrf_token or "")
    token = request.cookies.get(GUEST_COOKIE)
    if not token:
        raise Problem(401, "UNAUTHENTICATED", N_("Please sign in."))
    anonymous = AuditActor("anonymous", "-", "anonymous", client_address(request),
                           request.headers.get("user-agent"))
    context, actor, link = service.committed(db, lambda: service.guest_for_token(
        db, visit_id, token, audit_actor=anonymous))
    if request.method not in ("GET", "HEAD"):
        service.check_guest_csrf(settings, link, request.headers.get("x-csrf-token"))
    request.state.language = link.language
    return Viewer(context, actor, None, service.guest_csrf_token(settings, link), link)


def _participant(viewer: Viewer) -> ParticipantRole:
    if viewer.actor.role is None:
        raise Problem(403, "NOT_A_PARTICIPANT",
                      N_("Only the visit's participants join its call."))
    return viewer.actor.role


def _decision(raw: dict[str, Any] | None) -> Decision | None:
    return Decision.model_validate(raw) if raw else None


def _when(context: VisitContext, language: str, zone: str) -> str:
    return dual_zone_label(context.appointment.start_at, context.zone, ZoneInfo(zone), language)


def _common(viewer: Viewer, language: str) -> dict[str, Any]:
    context = viewer.context
    return {
        "context": context, "visit": context.visit, "viewer": viewer,
        "role": viewer.actor.role.value if viewer.actor.role else None,
        "state": context.state.value, "state_label": STATE_LABELS[context.state],
        "when": _when(context, language, viewer.actor.time_zone),
        "csrf_token": viewer.csrf_token, "role_labels": ROLE_LABELS,
        "state_labels": STATE_LABELS, "decision_labels": DECISION_LABELS,
        "identity_labels": IDENTITY_LABELS, "mode_labels": MODE_LABELS,
        "waiting_message": CLINICIAN_MESSAGES.get(context.state, WAITING_MESSAGES[context.state])
        if viewer.actor.role is ParticipantRole.CLINICIAN else WAITING_MESSAGES[context.state],
    }


# --------------------------------------------------------------------------- lists


@page_router.get("/visits/mine", response_class=HTMLResponse)
def my_visits(request: Request, principal: PatientOrInterpreter, db: DbSession) -> Response:
    """The patient's (or interpreter's) video visits, with the way in to each."""
    contexts = service.visits_of_user(db, principal)
    zone = ZoneInfo(principal.time_zone)
    rows = [{"context": context, "when": dual_zone_label(
        context.appointment.start_at, context.zone, zone, principal.language),
        "state_label": STATE_LABELS[context.state], "over": is_terminal(context.state)}
        for context in contexts]
    db.commit()
    return render(request, "visits/mine.html", principal, rows=rows)


@page_router.get("/visits/today", response_class=HTMLResponse)
def today(request: Request, principal: Clinician, db: DbSession,
          day: Annotated[date | None, Query()] = None) -> Response:
    """The clinician's queue: today's video visits in the clinician's own time zone."""
    zone = ZoneInfo(principal.time_zone)
    chosen = day or utcnow().astimezone(zone).date()
    entries = service.todays_queue(db, principal, chosen, zone)
    db.commit()
    return render(request, "visits/today.html", principal, entries=entries, day=chosen,
                  zone=zone, state_labels=STATE_LABELS, decision_labels=DECISION_LABELS,
                  role_labels=ROLE_LABELS, language_name=_language_name,
                  start_label=lambda entry: zone_label(entry.context.appointment.start_at,
                                                       zone, principal.language,
                                                       date_style="none"))


# --------------------------------------------------------------------------- the visit record


@page_router.get("/visits/{visit_id}", response_class=HTMLResponse)
def visit_page(visit_id: VisitId, request: Request, principal: MaybePrincipal, db: DbSession,
               settings: AppSettings) -> Response:
    """The clinician's visit: patient summary, the telemedicine decision, identity check and
    call controls, and the note. Other participants go to their waiting room."""
    viewer = _viewer(request, db, principal, visit_id, settings)
    if viewer.actor.role is not ParticipantRole.CLINICIAN and not viewer.actor.is_staff():
        return RedirectResponse(f"/visits/{visit_id}/waiting", status_code=303)
    language = request_language(request)
    summary = service.patient_summary(db, viewer.context, viewer.actor)
    note = store.note_of(db, visit_id)
    prescriptions = _prescriptions_context(db, viewer)
    db.commit()
    return render(request, "visits/visit.html", principal, **_common(viewer, language),
                  **_panel_context(db, viewer), **prescriptions, summary=summary, note=note,
                  patient_zone=ZoneInfo(viewer.context.patient.time_zone),
                  language_name=_language_name)


def _language_name(code: str, language: str) -> str:
    from babel import Locale, UnknownLocaleError

    try:
        return str(Locale.parse(code.replace("-", "_")).get_display_name(
            language.replace("-", "_")) or code)
    except (ValueError, UnknownLocaleError):
        return code


def _panel_context(db: Session, viewer: Viewer) -> dict[str, Any]:
    context = viewer.context
    now = utcnow()
    return {
        "decision_at_check_in": _decision(context.visit.decision_at_check_in),
        "decision_at_start": _decision(context.visit.decision_at_start),
        "minutes": service.minutes_so_far(db, context.visit, now),
        "verified_by": service.user_display(db, context.visit.identity_verified_by_user_id),
        "guest_links": store.live_guest_links(db, context.visit.id, now),
        "is_clinician": viewer.actor.role is ParticipantRole.CLINICIAN,
        "identity_methods": list(IdentityVerificationMethod),
        "zone_label": zone_label,
        "viewer_zone": ZoneInfo(viewer.actor.time_zone),
    }


@page_router.get("/visits/{visit_id}/panel", response_class=HTMLResponse)
def panel(visit_id: VisitId, request: Request, principal: MaybePrincipal, db: DbSession,
          settings: AppSettings) -> Response:
    """The clinician's controls, reloaded after each action."""
    viewer = _viewer(request, db, principal, visit_id, settings)
    if viewer.actor.role is not ParticipantRole.CLINICIAN and not viewer.actor.is_staff():
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    language = request_language(request)
    return render(request, "visits/_panel.html", principal, **_common(viewer, language),
                  **_panel_context(db, viewer))


@page_router.get("/visits/{visit_id}/status", response_class=HTMLResponse)
def status(visit_id: VisitId, request: Request, principal: MaybePrincipal, db: DbSession,
           settings: AppSettings) -> Response:
    """Where the visit stands, for the waiting room and the call page (polled)."""
    viewer = _viewer(request, db, principal, visit_id, settings)
    db.commit()
    language = request_language(request)
    return render(request, "visits/_status.html", principal, **_common(viewer, language))


# --------------------------------------------------------------------------- prescriptions
#
# The note's prescription section is swapped whole by htmx: each route answers the fragment,
# with the rules' verdict or the refusal (422, which visit-panel.js lets htmx swap in).

PRESCRIPTION_FIELDS = ("ingredient", "atc", "strength", "frequency", "days_supply", "quantity",
                       "instructions", "controlled")
_OPTIONAL_FIELDS = ("atc", "quantity")


def _prescriptions_context(db: Session, viewer: Viewer, **shown: Any) -> dict[str, Any]:
    """What `_prescriptions.html` needs; lists (and audits reading) the note's prescriptions."""
    context, actor = viewer.context, viewer.actor
    rows = prescribing.list_prescriptions(db, context, actor)
    is_clinician = actor.role is ParticipantRole.CLINICIAN
    values: dict[str, Any] = {}
    return {
        "prescriptions": rows, "rx_is_clinician": is_clinician,
        "rx_can_write": is_clinician and prescribing.is_open(db, context),
        "rx_check": None, "rx_problem": None, "rx_values": values, "rx_errors": {},
        **shown,
    }


def _prescription_form(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in PRESCRIPTION_FIELDS:
        raw = form.get(name)
        if not isinstance(raw, str):
            continue
        if name == "controlled":
            values[name] = raw in ("on", "true", "1")
        elif raw.strip() or name not in _OPTIONAL_FIELDS:
            values[name] = raw
    return values


def _render_prescriptions(request: Request, db: Session, viewer: Viewer,
                          principal: Principal | None, *, status_code: int = 200,
                          **shown: Any) -> Response:
    language = request_language(request)
    prescriptions = service.committed(db, lambda: _prescriptions_context(db, viewer, **shown))
    db.commit()
    return render(request, "visits/_prescriptions.html", principal, status_code=status_code,
                  **_common(viewer, language), **prescriptions)


async def _prescription_action(request: Request, db: Session, principal: Principal | None,
                               visit_id: int, settings: Settings, *, dry_run: bool) -> Response:
    """Check or add the posted prescription; answer the section with the verdict or refusal."""
    await run_in_threadpool(db.commit)
    form = await request.form(max_files=0, max_fields=20)
    values = _prescription_form(form)

    def act() -> Response:
        viewer = _viewer(request, db, principal, visit_id, settings, for_update=not dry_run)
        shown: dict[str, Any] = {"rx_values": values}
        try:
            body = api.PrescriptionCreate.model_validate(values)
        except ValidationError as error:
            language = request_language(request)
            shown["rx_errors"] = {
                item.field: item.rendered(language)["message"]
                for item in field_errors_from_pydantic(error.errors(include_url=False))}
            shown["rx_problem"] = validation_problem(error.errors()).body(language)
            return _render_prescriptions(request, db, viewer, principal, status_code=422,
                                         **shown)
        try:
            if dry_run:
                shown["rx_check"] = prescribing.check_prescription(
                    db, viewer.context, viewer.actor, body.as_input())
            else:
                _row, shown["rx_check"] = prescribing.add_prescription(
                    db, viewer.context, viewer.actor, body.as_input())
                shown["rx_values"] = {}
        except Refusal as refusal:
            db.commit()
            shown["rx_problem"] = refusal.problem.body(request_language(request))
            return _render_prescriptions(request, db, viewer, principal,
                                         status_code=refusal.problem.status, **shown)
        db.commit()
        return _render_prescriptions(request, db, viewer, principal,
                                     status_code=200 if dry_run else 201, **shown)

    result: Response = await run_in_threadpool(act)
    return result


@page_router.get("/visits/{visit_id}/prescriptions", response_class=HTMLResponse)
def prescriptions_section(visit_id: VisitId, request: Request, principal: MaybePrincipal,
                          db: DbSession, settings: AppSettings) -> Response:
    """The note's prescriptions (and the form, for the clinician while the note is open)."""
    viewer = _viewer(request, db, principal, visit_id, settings)
    return _render_prescriptions(request, db, viewer, principal)


@page_router.post("/visits/{visit_id}/prescriptions/check", response_class=HTMLResponse)
async def check_prescription(visit_id: VisitId, request: Request, principal: MaybePrincipal,
                             db: DbSession, settings: AppSettings) -> Response:
    """What the rules say about the form's prescription, before anything is saved."""
    return await _prescription_action(request, db, principal, visit_id, settings, dry_run=True)


@page_router.post("/visits/{visit_id}/prescriptions", response_class=HTMLResponse)
async def add_prescription(visit_id: VisitId, request: Request, principal: MaybePrincipal,
                           db: DbSession, settings: AppSettings) -> Response:
    """Add the form's prescription if the rules allow it; else show why not (422)."""
    return await _prescription_action(request, db, principal, visit_id, settings, dry_run=False)


@page_router.post("/visits/{visit_id}/prescriptions/{prescription_id}/remove",
                  response_class=HTMLResponse)
def remove_prescription(visit_id: VisitId, prescription_id: VisitId, request: Request,
                        principal: MaybePrincipal, db: DbSession,
                        settings: AppSettings) -> Response:
    """Withdraw a prescription from the open note."""
    viewer = _viewer(request, db, principal, visit_id, settings, for_update=True)
    service.committed(db, lambda: prescribing.remove_prescription(
        db, viewer.context, viewer.actor, prescription_id))
    return _render_prescriptions(request, db, viewer, principal)


# --------------------------------------------------------------------------- before the call


@page_router.get("/visits/{visit_id}/guest", response_class=HTMLResponse)
def guest_entry(visit_id: VisitId, request: Request, db: DbSession, settings: AppSettings,
                token: Annotated[str, Query(max_length=200)] = "") -> Response:
    """The local physician's link: keeps the token in a cookie for this visit's pages only,
    then opens the waiting room (so the token leaves the address bar)."""
    anonymous = AuditActor("anonymous", "-", "anonymous", client_address(request),
                           request.headers.get("user-agent"))
    _context, _actor, link = service.committed(db, lambda: service.guest_for_token(
        db, visit_id, token, audit_actor=anonymous))
    db.commit()
    response = RedirectResponse(f"/visits/{visit_id}/waiting", status_code=303)
    lifetime = int((link.expires_at - utcnow()).total_seconds())
    response.set_cookie(GUEST_COOKIE, token, max_age=max(lifetime, 0), path=f"/visits/{visit_id}",
                        httponly=True, samesite="lax", secure=settings.secure_cookies)
    return response


@page_router.get("/visits/{visit_id}/device-check", response_class=HTMLResponse)
def device_check(visit_id: VisitId, request: Request, principal: MaybePrincipal, db: DbSession,
                 settings: AppSettings) -> Response:
    """Camera, microphone, speaker and the connection, with what to fix in plain words."""
    viewer = _viewer(request, db, principal, visit_id, settings)
    _participant(viewer)
    db.commit()
    language = request_language(request)
    attributes = {
        "data-download-url": f"/visits/{visit_id}/throughput/download?bytes="
                             f"{THROUGHPUT_TEST_BYTES}",
        "data-upload-url": f"/visits/{visit_id}/throughput/upload",
        "data-upload-bytes": str(THROUGHPUT_TEST_BYTES),
        "data-required-mbps": f"{service.REQUIRED_MBPS:g}",
        "data-continue-url": f"/visits/{visit_id}/waiting",
        "data-csrf-token": viewer.csrf_token,
        "data-texts": texts_for("device_check", language),
    }
    return render(request, "visits/device_check.html", principal,
                  **_common(viewer, language), attributes=attributes)


@page_router.get("/visits/{visit_id}/throughput/download")
def throughput_download(visit_id: VisitId, request: Request, principal: MaybePrincipal,
                        db: DbSession, settings: AppSettings,
                        size: Annotated[int, Query(alias="bytes", ge=1,
                                                   le=THROUGHPUT_MAX_BYTES)] = (
                            THROUGHPUT_TEST_BYTES)) -> Response:
    """Random bytes to time (random, so no compression on the way flatters the figure)."""
    _participant(_viewer(request, db, principal, visit_id, settings))
    db.commit()
    return Response(os.urandom(size), media_type="application/octet-stream",
                    headers={"Cache-Control": "no-store", "Content-Encoding": "identity"})


@page_router.post("/visits/{visit_id}/throughput/upload")
async def throughput_upload(visit_id: VisitId, request: Request, principal: MaybePrincipal,
                            db: DbSession, settings: AppSettings) -> JSONResponse:
    """Receives and discards the device check's upload; says how much arrived."""
    viewer = await run_in_threadpool(_viewer, request, db, principal, visit_id, settings)
    _participant(viewer)
    await run_in_threadpool(db.commit)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
    return JSONResponse({"received_bytes": received},
                        headers={"Cache-Control": "no-store"})


CONSENT_FIELD = "agree"


@page_router.get("/visits/{visit_id}/waiting", response_class=HTMLResponse)
def waiting(visit_id: VisitId, request: Request, principal: MaybePrincipal, db: DbSession,
            settings: AppSettings) -> Response:
    """Pre-call and waiting room: the limits of telemedicine and the consent (patient), then
    the way into the call once the room is open."""
    viewer = _viewer(request, db, principal, visit_id, settings)
    _participant(viewer)
    db.commit()
    return _waiting_page(request, viewer, principal)


def _waiting_page(request: Request, viewer: Viewer, principal: Principal | None, *,
                  problem: Problem | None = None, status_code: int = 200) -> Response:
    language = request_language(request)
    role = _participant(viewer)
    context = viewer.context
    # Why the visit cannot go ahead: the decision of a refused attempt, else the one stored at
    # check-in while the patient has not got past it.
    shown_decision = None
    if problem is not None and problem.extra.get("decision"):
        shown_decision = _decision(problem.extra["decision"])
    elif context.state in (VisitState.SCHEDULED, VisitState.CHECKED_IN):
        shown_decision = _decision(context.visit.decision_at_check_in)
    return render(
        request, "visits/waiting.html", principal, status_code=status_code,
        **_common(viewer, language),
        needs_consent=role is ParticipantRole.PATIENT and context.visit.consent_id is None,
        room_open=service.room_is_open_for(context, role),
        problem=problem.body(language) if problem else None,
        shown_decision=shown_decision,
        consent_version=service.CONSENT_TEXT_VERSION,
    )


@page_router.post("/visits/{visit_id}/arrive", response_class=HTMLResponse)
def arrive(visit_id: VisitId, request: Request, principal: MaybePrincipal, db: DbSession,
           settings: AppSettings,
           agree: Annotated[str | None, Form(alias=CONSENT_FIELD)] = None) -> Response:
    """The patient checks in, consents and enters the waiting room; a refusal says why."""
    viewer = _viewer(request, db, principal, visit_id, settings, for_update=True)
    try:
        service.arrive(db, viewer.context, viewer.actor, agreed=agree in ("on", "true", "1"))
    except Refusal as refusal:
        db.commit()
        return _waiting_page(request, viewer, principal, problem=refusal.problem,
                             status_code=refusal.problem.status)
    db.commit()
    return RedirectResponse(f"/visits/{visit_id}/call", status_code=303)


# --------------------------------------------------------------------------- the call


@page_router.get("/visits/{visit_id}/call", response_class=HTMLResponse)
def call(visit_id: VisitId, request: Request, principal: MaybePrincipal, db: DbSession,
         settings: AppSettings) -> Response:
    """The video call: visit.js reads everything it needs from the data attributes."""
    viewer = _viewer(request, db, principal, visit_id, settings)
    role = _participant(viewer)
    context = viewer.context
    if not service.room_is_open_for(context, role):
        db.commit()
        return RedirectResponse(f"/visits/{visit_id}/waiting", status_code=303)
    language = request_language(request)
    participant_id = viewer.actor.participant_id
    assert participant_id is not None
    try:
        servers = ice_servers(settings, participant_id, utcnow())
    except IceConfigurationError as error:
        log.error("visits: STUN/TURN settings unusable: %s", error)
        raise Problem(503, "VIDEO_UNAVAILABLE",
                      N_("Video visits are not configured correctly on this server. Please "
                         "tell the clinic.")) from None
    names = service.participant_names(
        context, language, store.live_guest_links(db, visit_id, utcnow()))
    db.commit()
    attributes = {
        "data-ws-url": f"/visits/{visit_id}/ws",
        "data-ice-servers": json.dumps(servers),
        "data-self-id": participant_id,
        "data-role": role.value,
        "data-upload-url": f"/visits/{visit_id}/files",
        "data-csrf-token": viewer.csrf_token,
        "data-participants": json.dumps(names, ensure_ascii=False),
        "data-audio-only-below-mbps": f"{AUDIO_ONLY_BELOW_MBPS:g}",
        "data-texts": texts_for("visit", language),
    }
    extra = _panel_context(db, viewer) if role is ParticipantRole.CLINICIAN else {}
    return render(request, "visits/call.html", principal, **_common(viewer, language),
                  attributes=attributes, **extra)


@page_router.post("/visits/{visit_id}/files")
async def share_file(visit_id: VisitId, request: Request, principal: MaybePrincipal,
                     db: DbSession, settings: AppSettings) -> JSONResponse:
    """A file shared in the call: checked by its bytes, kept with the visit, announced."""
    # End the caller look-up's transaction before reading the upload (SQLite's write lock).
    await run_in_threadpool(db.commit)
    form = await request.form(max_files=1, max_fields=2)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise Problem(422, "FILE_REQUIRED", N_("Choose a file to share."))
    content = await upload.read(service.ATTACHMENT_MAX_BYTES + 1)
    filename = upload.filename or "file"

    def keep() -> tuple[Viewer, store.VisitAttachment]:
        viewer = _viewer(request, db, principal, visit_id, settings)
        attachment = service.committed(db, lambda: service.store_attachment(
            db, viewer.context, viewer.actor, filename=filename, content=content))
        return viewer, attachment

    viewer, attachment = await run_in_threadpool(keep)
    url = f"/visits/{visit_id}/files/{attachment.id}"
    sender = viewer.actor.participant_id
    assert sender is not None
    await hub_for(request.app).announce_file(str(visit_id), sender, SharedFile(
        str(attachment.id), attachment.filename, attachment.size_bytes, attachment.content_type,
        url))
    return JSONResponse({"attachment_id": attachment.id, "filename": attachment.filename,
                         "content_type": attachment.content_type,
                         "size_bytes": attachment.size_bytes, "url": url}, status_code=201)


INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


@page_router.get("/visits/{visit_id}/files/{attachment_id}")
def download_file(visit_id: VisitId, attachment_id: VisitId, request: Request,
                  principal: MaybePrincipal, db: DbSession, settings: AppSettings) -> Response:
    viewer = _viewer(request, db, principal, visit_id, settings)
    attachment = service.attachment_for(db, viewer.context, viewer.actor, attachment_id)
    content = attachment.content
    db.commit()
    disposition = "inline" if attachment.content_type in INLINE_TYPES else "attachment"
    return Response(content, media_type=attachment.content_type, headers={
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(attachment.filename)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    })


#: Everything the visits capability serves, mounted by the app with one entry: these pages,
#: the JSON API and the room's WebSocket.
router = APIRouter()
router.include_router(page_router)
router.include_router(api.router)
router.include_router(ws.router)
