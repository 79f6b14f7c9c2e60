"""How a video visit is run: every change to a visit goes through one function here.

The JSON API, the pages and the WebSocket route only translate between the wire and these calls,
and commit. Each action, in the caller's transaction:
1. knows who is acting (`Actor`: a signed-in user with their place in this visit, or the
   patient's local physician through a guest link); another institution's visit is absent (404);
2. moves the visit through `jaejin.visits.lifecycle.transition`, with the policy engine's real
   decision (`jaejin.policy.records.decide_for_visit`) evaluated for the visit's own time at
   check-in and at start;
3. records what happened (consent, identity check, call intervals, the note, the encounter) and
   writes the audit entry, refusals included: a refused action raises `Refusal`, whose audit
   entry (and decision snapshot) the caller commits before answering with its problem.

The pure pieces (file signatures, the KCD code list) sit at the end of this module.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import CARE_TEAM, Role, User
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.authn import Principal
from jaejin.core.config import Settings
from jaejin.core.database import utcnow
from jaejin.core.errors import FieldError, Problem, not_found
from jaejin.core.events import publish_after_commit
from jaejin.core.i18n import N_, SUPPORTED_LANGUAGES, normalise_language, translate
from jaejin.core.security import constant_time_equals, new_token, token_digest
from jaejin.directory.store import (
    Consent,
    Encounter,
    Institution,
    Interpreter,
    LocalPhysician,
    Patient,
    Practitioner,
)
from jaejin.notify import OutgoingEmail, queue_email
from jaejin.policy.decision import Decision
from jaejin.policy.errors import RequestError
from jaejin.policy.records import decide_for_visit, policy_denied_problem
from jaejin.policy.vocabulary import Code, DecisionKind
from jaejin.scheduling import appointments as appointment_lifecycle
from jaejin.scheduling.appointments import AppointmentStatus
from jaejin.scheduling.display import zone_label
from jaejin.scheduling.errors import SchedulingError
from jaejin.scheduling.model import VisitMode
from jaejin.scheduling.service import BookingRequest, book, cancel, record_outcome
from jaejin.scheduling.store import Appointment
from jaejin.scheduling.zones import local_day_start
from jaejin.visits import store
from jaejin.visits.lifecycle import (
    IdentityVerificationMethod,
    TransitionContext,
    VisitEvent,
    VisitState,
    VisitTransitionError,
    clinician_minutes,
    is_terminal,
    transition,
)
from jaejin.visits.signalling import ParticipantRole
from jaejin.visits.store import (
    CallIntervalRow,
    GuestLink,
    Visit,
    VisitAttachment,
    VisitNote,
)
from jaejin.visits.summary import PrescribedItem, encounter_summary

log = logging.getLogger(__name__)

#: What a video visit needs both ways (DOMAIN.md: 5-10 Mbps); the device check compares to it.
REQUIRED_MBPS = 5.0
#: Largest file shared in a call; the whole request must also fit the app's body limit.
ATTACHMENT_MAX_BYTES = 10_000_000
#: Version of the telemedicine-limits explanation the consent refers to (the text is in
#: templates/visits/_consent_text.html; change both together).
CONSENT_TEXT_VERSION = "visits-2026-11"
#: The patient may check in from an hour before the appointment until half an hour after its
#: scheduled end (the policy is evaluated for the appointment's time in any case).
CHECK_IN_OPENS_BEFORE = timedelta(hours=1)
CHECK_IN_CLOSES_AFTER_END = timedelta(minutes=30)
#: A guest link works until two hours after the visit's scheduled end, at least 30 minutes.
GUEST_LINK_GRACE_AFTER_END = timedelta(hours=2)
GUEST_LINK_MIN_LIFETIME = timedelta(minutes=30)
#: Conditions a decision at check-in may still carry: the visit itself meets them before the call
#: starts (the patient consents on the pre-call page, the clinician verifies identity on video).
CONDITIONS_MET_DURING_THE_VISIT = frozenset({Code.IDENTITY_CHECK_REQUIRED, Code.CONSENT_REQUIRED})
#: Staff who may mark a visit missed or cancel it.
OUTCOME_STAFF = (Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN)
#: Who may send the local physician their guest link.
GUEST_LINK_STAFF = (Role.CLINICIAN, Role.COORDINATOR)
RECORD_MODES = ("video", "audio")
MAX_NOTE_CHARACTERS = 20_000
MAX_FOLLOW_UP_DAYS = 730

T = TypeVar("T")


class Refusal(Exception):
    """A refused action whose audit entry is already written: commit, then raise `problem`."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def committed(db: Session, action: Callable[[], T]) -> T:
    """Run `action`, commit; on a `Refusal`, commit its audit entry and raise its problem."""
    try:
        result = action()
    except Refusal as refusal:
        db.commit()
        raise refusal.problem from None
    db.commit()
    return result


# --------------------------------------------------------------------------- who is acting


def user_participant_id(user_id: int) -> str:
    return f"user-{user_id}"


def guest_participant_id(link_id: int) -> str:
    return f"guest-{link_id}"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on a visit, and as what.

    `role` is their place in the call (None for the institution's other staff, who may see the
    visit but not join it). `principal` is None for a guest (the local physician's link).
    """

    audit_actor: AuditActor
    language: str
    time_zone: str
    role: ParticipantRole | None
    participant_id: str | None
    principal: Principal | None = None
    guest_link_id: int | None = None
    staff_roles: frozenset[Role] = frozenset()

    @property
    def user_id(self) -> int | None:
        return self.principal.user_id if self.principal is not None else None

    @property
    def reference(self) -> str:
        if self.guest_link_id is not None:
            return f"guest:{self.guest_link_id}"
        return f"user:{self.user_id}"

    def is_staff(self, *roles: Role) -> bool:
        return bool(self.staff_roles & set(roles or CARE_TEAM))


@dataclass(slots=True)
class VisitContext:
    """A visit with the records it is about."""

    visit: Visit
    appointment: Appointment
    patient: Patient
    institution: Institution
    practitioner: Practitioner
    interpreter: Interpreter | None
    local_physician: LocalPhysician | None

    @property
    def state(self) -> VisitState:
        return self.visit.visit_state

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.institution.time_zone)


def load_context(db: Session, visit: Visit) -> VisitContext:
    appointment = store.appointment_of(db, visit)
    patient = db.get(Patient, visit.patient_id)
    institution = db.get(Institution, visit.institution_id)
    practitioner = db.get(Practitioner, appointment.practitioner_id)
    assert patient is not None and institution is not None and practitioner is not None
    interpreter = (db.get(Interpreter, appointment.interpreter_id)
                   if appointment.interpreter_id is not None else None)
    local_physician = (db.get(LocalPhysician, visit.local_physician_id)
                       if visit.local_physician_id is not None else None)
    return VisitContext(visit, appointment, patient, institution, practitioner, interpreter,
                        local_physician)


def role_of_user(context: VisitContext, user_id: int | None) -> ParticipantRole | None:
    if user_id is None:
        return None
    if context.patient.user_id == user_id:
        return ParticipantRole.PATIENT
    if context.practitioner.user_id == user_id:
        return ParticipantRole.CLINICIAN
    if context.interpreter is not None and context.interpreter.user_id == user_id:
        return ParticipantRole.INTERPRETER
    return None


def _audit(db: Session, actor: AuditActor, context: VisitContext, action: str,
           detail: dict[str, Any] | None = None, *, outcome: str = "success",
           resource_type: str = "visit", resource_id: str | None = None) -> None:
    record(db, actor, AuditEvent(
        action, resource_type, resource_id or str(context.visit.id), context.patient.id,
        context.institution.id, outcome=outcome, detail=detail or {}))


def visit_for_principal(db: Session, principal: Principal, visit_id: int,
                        *, for_update: bool = False) -> tuple[VisitContext, Actor]:
    """The visit as `principal` may see it: a participant, or staff of its institution.

    Anyone else is refused (403 within the institution, 404 from elsewhere), logged and audited.
    """
    if principal.kind != "user":
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    visit = store.get_visit(db, visit_id, for_update=for_update)
    if visit is None:
        raise not_found("visit")
    context = load_context(db, visit)
    role = role_of_user(context, principal.user_id)
    staff = frozenset(role for institution, role in principal.memberships
                      if institution == visit.institution_id and role in CARE_TEAM)
    if role is None and not staff:
        log.warning("visit %s: user %s is neither a participant nor its institution's staff",
                    visit_id, principal.user_id)
        member = visit.institution_id in principal.institutions_where()
        _audit(db, principal.audit_actor, context, "read",
               {"refused": "not_a_participant" if member else "other_institution"},
               outcome="refused")
        # Someone of the same institution (another patient, an auditor) may know the visit
        # exists; anyone else is told it does not.
        raise Refusal(Problem(403, "NOT_A_PARTICIPANT",
                              N_("Only the visit's participants and care team may open it."))
                      if member else not_found("visit"))
    actor = Actor(
        audit_actor=principal.audit_actor, language=principal.language,
        time_zone=principal.time_zone, role=role,
        participant_id=user_participant_id(principal.subject_id) if role else None,
        principal=principal, staff_roles=staff,
    )
    return context, actor


def _require_role(db: Session, context: VisitContext, actor: Actor, action: str,
                  *roles: ParticipantRole, staff: Sequence[Role] = ()) -> None:
    if actor.role in roles or (staff and actor.is_staff(*staff)):
        return
    _audit(db, actor.audit_actor, context, action, {"refused": "role"}, outcome="refused")
    raise Refusal(Problem(403, "FORBIDDEN", N_("Your role does not allow this.")))


# --------------------------------------------------------------------------- guests


def guest_csrf_token(settings: Settings, link: GuestLink) -> str:
    """The CSRF token of a guest's pages: bound to their link, derived from the app's secret."""
    digest = hmac.new(settings.secret_key.encode(), f"guest-csrf:{link.token_hash}".encode(),
                      hashlib.sha256)
    return digest.hexdigest()


def check_guest_csrf(settings: Settings, link: GuestLink, supplied: str | None) -> None:
    if not supplied or not constant_time_equals(supplied, guest_csrf_token(settings, link)):
        raise Problem(403, "CSRF_FAILED",
                      N_("This form has expired or did not come from Jaejin. Reload and retry."))


def guest_for_token(db: Session, visit_id: int, token: str | None, *,
                    audit_actor: AuditActor, now: datetime | None = None,
                    ) -> tuple[VisitContext, Actor, GuestLink]:
    """The local physician behind a guest-link token, for this visit only.

    A forged token, one for another visit, an expired or revoked link, or a link to a visit
    that is over: 403 GUEST_LINK_INVALID, logged (and audited when the link is real).
    """
    now = now or utcnow()
    invalid = Problem(403, "GUEST_LINK_INVALID",
                      N_("This visit link is not valid: it may have expired or been replaced. "
                         "Ask the clinic for a new link."))
    link = store.guest_link_by_hash(db, token_digest(token)) if token else None
    if link is None:
        log.warning("visit %s: refused a guest link that does not exist", visit_id)
        raise invalid
    visit = store.get_visit(db, link.visit_id)
    assert visit is not None
    context = load_context(db, visit)
    reason = None
    if link.visit_id != visit_id:
        reason = "other_visit"
    elif link.revoked_at is not None:
        reason = "revoked"
    elif link.expires_at <= now:
        reason = "expired"
    elif is_terminal(context.state):
        reason = "visit_over"
    if reason is not None:
        log.warning("visit %s: refused guest link %s (%s)", visit_id, link.id, reason)
        _audit(db, audit_actor, context, "read", {"refused": reason, "guest_link_id": link.id},
               outcome="refused")
        raise Refusal(invalid)
    if link.used_at is None:
        link.used_at = now
    physician = db.get(LocalPhysician, link.local_physician_id)
    assert physician is not None
    actor = Actor(
        audit_actor=AuditActor("guest", f"guest-link:{link.id}", physician.name,
                               audit_actor.ip_address, audit_actor.user_agent),
        language=link.language, time_zone=context.patient.time_zone,
        role=ParticipantRole.LOCAL_PHYSICIAN, participant_id=guest_participant_id(link.id),
        guest_link_id=link.id,
    )
    return context, actor, link


def guest_link_lifetime_end(appointment: Appointment, now: datetime) -> datetime:
    return max(appointment.end_at + GUEST_LINK_GRACE_AFTER_END, now + GUEST_LINK_MIN_LIFETIME)


def _language_for(languages: Iterable[str]) -> str:
    for language in languages:
        chosen = normalise_language(language)
        if chosen in SUPPORTED_LANGUAGES:
            return chosen
    return "en"


GUEST_EMAIL_SUBJECT = N_("Video consultation link: {patient}")
GUEST_EMAIL_BODY = N_(
    "Dear {physician},\n\n"
    "{clinician} of {institution} invites you to a video consultation about your patient "
    "{patient}, on {when}.\n\n"
    "Join with this personal link (no account needed):\n{url}\n\n"
    "The link works for this consultation only and expires on {expires}. Do not share it.\n\n"
    "Jaejin telemedicine"
)


def issue_guest_link(db: Session, context: VisitContext, actor: Actor, *, base_url: str,
                     now: datetime | None = None) -> tuple[GuestLink, str]:
    """A new guest link for the patient's local physician, e-mailed in their language.

    Earlier links of the visit are revoked, so only the newest one works.
    """
    now = now or utcnow()
    _require_role(db, context, actor, "share", ParticipantRole.CLINICIAN, staff=GUEST_LINK_STAFF)
    if is_terminal(context.state):
        raise _state_refusal(db, context, actor, "share", N_("This visit is over."))
    physician = context.local_physician or _patients_local_physician(db, context)
    if physician is None:
        _audit(db, actor.audit_actor, context, "share", {"refused": "no_local_physician"},
               outcome="refused")
        raise Refusal(Problem(409, "NO_LOCAL_PHYSICIAN",
                              N_("The patient has no local physician on file.")))
    if not physician.email:
        _audit(db, actor.audit_actor, context, "share", {"refused": "no_email"},
               outcome="refused")
        raise Refusal(Problem(409, "LOCAL_PHYSICIAN_HAS_NO_EMAIL",
                              N_("The local physician has no e-mail address on file.")))
    context.visit.local_physician_id = physician.id
    context.local_physician = physician
    for earlier in store.live_guest_links(db, context.visit.id, now):
        earlier.revoked_at = now
    token = new_token()
    language = _language_for(physician.languages)
    link = GuestLink(visit_id=context.visit.id, local_physician_id=physician.id,
                     token_hash=token_digest(token), language=language,
                     created_by_user_id=actor.user_id, created_at=now,
                     expires_at=guest_link_lifetime_end(context.appointment, now))
    db.add(link)
    db.flush()
    url = f"{base_url.rstrip('/')}/visits/{context.visit.id}/guest?token={token}"
    physician_zone = ZoneInfo(context.patient.time_zone)
    queue_email(db, OutgoingEmail(
        to=physician.email,
        subject=translate(language, GUEST_EMAIL_SUBJECT, patient=context.patient.latin_name),
        text=translate(
            language, GUEST_EMAIL_BODY, physician=physician.name,
            clinician=context.practitioner.name_latin,
            institution=context.institution.display_name(language),
            patient=context.patient.latin_name,
            when=zone_label(context.appointment.start_at, physician_zone, language),
            url=url, expires=zone_label(link.expires_at, physician_zone, language)),
        language=language,
    ), dedupe_key=f"visit-guest-link:{link.id}")
    _audit(db, actor.audit_actor, context, "share",
           {"guest_link_id": link.id, "local_physician_id": physician.id,
            "expires_at": link.expires_at.isoformat(), "language": language})
    return link, url


def _patients_local_physician(db: Session, context: VisitContext) -> LocalPhysician | None:
    return db.execute(
        select(LocalPhysician).where(
            LocalPhysician.patient_id == context.patient.id,
            LocalPhysician.institution_id == context.institution.id,
        ).order_by(LocalPhysician.id)
    ).scalars().first()


# --------------------------------------------------------------------------- who may join


def roster(db: Session, visit_id: int, now: datetime | None = None) -> dict[str, ParticipantRole]:
    """Everyone who may be in the visit's room: the signalling hub's permission list.

    Empty once the visit is over, so nobody can join a finished visit's room.
    """
    visit = store.get_visit(db, visit_id)
    if visit is None or is_terminal(visit.visit_state):
        return {}
    context = load_context(db, visit)
    members: dict[str, ParticipantRole] = {}
    if context.patient.user_id is not None:
        members[user_participant_id(context.patient.user_id)] = ParticipantRole.PATIENT
    if context.practitioner.user_id is not None:
        members[user_participant_id(context.practitioner.user_id)] = ParticipantRole.CLINICIAN
    if context.interpreter is not None and context.interpreter.user_id is not None:
        members[user_participant_id(context.interpreter.user_id)] = ParticipantRole.INTERPRETER
    for link in store.live_guest_links(db, visit.id, now or utcnow()):
        members[guest_participant_id(link.id)] = ParticipantRole.LOCAL_PHYSICIAN
    return members


def room_is_open_for(context: VisitContext, role: ParticipantRole) -> bool:
    """Whether `role` may be in the call now.

    The clinician may wait in the room from the start. The patient enters after checking in and
    consenting (the waiting room); the interpreter and the local physician may join early, so
    a tri-party visit can have the local physician connected before it starts.
    """
    state = context.state
    if is_terminal(state):
        return False
    if role is ParticipantRole.PATIENT:
        return state in (VisitState.WAITING_ROOM, VisitState.IN_CALL)
    if role is ParticipantRole.CLINICIAN:
        return True
    return state is not VisitState.WRAP_UP


def participant_names(context: VisitContext, language: str,
                      guest_links: Iterable[GuestLink] = ()) -> dict[str, str]:
    names: dict[str, str] = {}
    if context.patient.user_id is not None:
        names[user_participant_id(context.patient.user_id)] = context.patient.display_name
    if context.practitioner.user_id is not None:
        names[user_participant_id(context.practitioner.user_id)] = (
            context.practitioner.name_native if language == "ko"
            else context.practitioner.name_latin)
    if context.interpreter is not None and context.interpreter.user_id is not None:
        names[user_participant_id(context.interpreter.user_id)] = context.interpreter.name
    if context.local_physician is not None:
        for link in guest_links:
            names[guest_participant_id(link.id)] = context.local_physician.name
    return names


# --------------------------------------------------------------------------- creating visits


def condition_for(db: Session, appointment: Appointment) -> str | None:
    """The diagnosis the visit follows up: the appointment's, else the latest on record."""
    if appointment.condition_code:
        return appointment.condition_code
    rows = db.execute(
        select(Encounter.conditions).where(
            Encounter.patient_id == appointment.patient_id,
            Encounter.institution_id == appointment.institution_id,
        ).order_by(Encounter.started_at.desc()).limit(5)
    ).scalars()
    for conditions in rows:
        if conditions:
            return str(conditions[0])
    return None


def open_visit(db: Session, appointment: Appointment, actor: AuditActor, *,
               lang: str = "en") -> Visit:
    """The visit of a video appointment, created on first use (idempotent, race-safe).

    Whether the local physician is needed is decided here: the appointment is a tri-party
    consultation, or the policy engine says a patient abroad can only be seen that way.
    """
    existing = store.visit_of_appointment(db, appointment.id)
    if existing is not None:
        return existing
    if appointment.mode != "video":
        raise Problem(409, "NOT_A_VIDEO_APPOINTMENT",
                      N_("This appointment is not a video visit."))
    patient = db.get(Patient, appointment.patient_id)
    institution = db.get(Institution, appointment.institution_id)
    assert patient is not None and institution is not None
    condition = condition_for(db, appointment)
    tri_party = appointment.tri_party
    if not tri_party and patient.current_country != "KR" and condition is not None:
        decision = _decide(db, patient, institution, appointment, condition=condition,
                           tri_party=False, identity_verified=False, lang=lang)
        tri_party = any(item.code is Code.CROSS_BORDER_TRI_PARTY_REQUIRED
                        for item in decision.conditions)
    physician = None
    if tri_party:
        physician = db.execute(
            select(LocalPhysician).where(LocalPhysician.patient_id == patient.id,
                                         LocalPhysician.institution_id == institution.id)
            .order_by(LocalPhysician.id)
        ).scalars().first()
    visit = store.insert_visit(db, Visit(
        appointment_id=appointment.id, institution_id=institution.id, patient_id=patient.id,
        state=VisitState.SCHEDULED.value, mode="video", condition_code=condition,
        tri_party=tri_party, local_physician_required=tri_party,
        local_physician_id=physician.id if physician else None,
    ))
    record(db, actor, AuditEvent("create", "visit", str(visit.id), patient.id, institution.id,
                                 detail={"appointment_id": appointment.id,
                                         "tri_party": tri_party}))
    return visit


# --------------------------------------------------------------------------- the policy


def _decide(db: Session, patient: Patient, institution: Institution, appointment: Appointment,
            *, condition: str, tri_party: bool, identity_verified: bool, lang: str,
            prescriptions: Sequence[Mapping[str, Any]] = ()) -> Decision:
    try:
        return decide_for_visit(db, patient=patient, institution=institution,
                                at=appointment.start_at, mode="video", condition=condition,
                                tri_party=tri_party, identity_verified=identity_verified,
                                prescriptions=prescriptions, lang=lang)
    except ValidationError as error:
        fields = ", ".join(".".join(str(part) for part in item["loc"])
                           for item in error.errors())
        raise Problem(422, "POLICY_INPUT_INVALID",
                      N_("The telemedicine rules cannot judge this visit: {fields}"),
                      params={"fields": fields}) from None
    except RequestError as error:
        raise Problem(422, "POLICY_INPUT_INVALID",
                      N_("The telemedicine rules cannot judge this visit: {fields}"),
                      params={"fields": str(error)}) from None


def decision_for(db: Session, context: VisitContext, lang: str, *,
                 prescriptions: Sequence[Mapping[str, Any]] = ()) -> Decision:
    """The policy's decision for the visit's own time, with what the visit has done so far
    (and the proposed `prescriptions`, request items `{"ingredient", "days", ...}`)."""
    condition = context.visit.condition_code
    if condition is None:
        raise Problem(409, "CONDITION_REQUIRED",
                      N_("Say which condition this video visit follows up (a KCD code such as "
                         "I10): the patient has no diagnosis recorded here."))
    return _decide(db, context.patient, context.institution, context.appointment,
                   condition=condition, tri_party=context.visit.tri_party,
                   identity_verified=context.visit.identity_verified_at is not None, lang=lang,
                   prescriptions=prescriptions)


def _judged(db: Session, context: VisitContext, actor: Actor, event: VisitEvent) -> Decision:
    """`decision_for`, with a visit the rules cannot judge refused and audited."""
    try:
        return decision_for(db, context, actor.language)
    except Problem as problem:
        _audit(db, actor.audit_actor, context, "update",
               {"event": event.value, "refused": problem.code}, outcome="refused")
        raise Refusal(problem) from None


def _conditions_met_during_the_visit(decision: Decision) -> bool:
    return all(item.code in CONDITIONS_MET_DURING_THE_VISIT for item in decision.conditions)


# --------------------------------------------------------------------------- transitions


def _transition_problem(error: VisitTransitionError, decision: Decision | None) -> Problem:
    extra: dict[str, Any] = {"reasons": list(error.reasons)}
    if decision is not None:
        extra["decision"] = decision.model_dump(mode="json")
    return Problem(409, error.code.value, error.message,
                   params={"state": error.state.value, "event": error.event.value}, extra=extra)


def _move(db: Session, context: VisitContext, actor: Actor, event: VisitEvent,
          transition_context: TransitionContext | None = None,
          decision: Decision | None = None) -> VisitState:
    """Apply `event` or raise a Refusal saying why (audited with the decision's kind)."""
    before = context.state
    try:
        after = transition(before, event, transition_context or TransitionContext())
    except VisitTransitionError as error:
        log.info("visit %s: refused %s in %s (%s)", context.visit.id, event.value,
                 before.value, error.code.value)
        _audit(db, actor.audit_actor, context, "update",
               {"event": event.value, "state": before.value, "refused": error.code.value,
                "reasons": list(error.reasons),
                "decision": decision.decision.value if decision else None},
               outcome="refused")
        if decision is not None and decision.decision is DecisionKind.DENIED:
            # The rules themselves refuse: the same answer as a refused booking (422
            # POLICY_DENIED with the reasons, conditions and alternatives).
            raise Refusal(policy_denied_problem(decision)) from None
        raise Refusal(_transition_problem(error, decision)) from None
    context.visit.state = after.value
    _audit(db, actor.audit_actor, context, "update",
           {"event": event.value, "from": before.value, "to": after.value,
            "decision": decision.decision.value if decision else None})
    publish_after_commit(db, f"visit:{context.visit.id}",
                         {"type": "visit-state", "visit_id": context.visit.id,
                          "state": after.value})
    return after


def _state_refusal(db: Session, context: VisitContext, actor: Actor, action: str,
                   message: str) -> Refusal:
    _audit(db, actor.audit_actor, context, action,
           {"refused": "state", "state": context.state.value}, outcome="refused")
    return Refusal(Problem(409, "VISIT_STATE_CONFLICT", message))


def check_in(db: Session, context: VisitContext, actor: Actor,
             now: datetime | None = None) -> Decision:
    """Scheduled -> checked in, if the rules in force at the visit's time still allow it."""
    now = now or utcnow()
    _require_role(db, context, actor, "update", ParticipantRole.PATIENT,
                  staff=(Role.CLINICIAN, Role.COORDINATOR))
    opens = context.appointment.start_at - CHECK_IN_OPENS_BEFORE
    closes = context.appointment.end_at + CHECK_IN_CLOSES_AFTER_END
    if context.state is VisitState.SCHEDULED and not opens <= now <= closes:
        _audit(db, actor.audit_actor, context, "update",
               {"event": "check_in", "refused": "CHECK_IN_NOT_OPEN"}, outcome="refused")
        raise Refusal(Problem(409, "CHECK_IN_NOT_OPEN",
                              N_("Check-in is open from {opens} until {closes}."),
                              params={"opens": zone_label(opens, ZoneInfo(actor.time_zone),
                                                          actor.language),
                                      "closes": zone_label(closes, ZoneInfo(actor.time_zone),
                                                           actor.language)}))
    decision = _judged(db, context, actor, VisitEvent.CHECK_IN)
    context.visit.decision_at_check_in = decision.model_dump(mode="json")
    _move(db, context, actor, VisitEvent.CHECK_IN, TransitionContext(
        policy=decision, policy_conditions_met=_conditions_met_during_the_visit(decision)),
        decision)
    context.visit.checked_in_at = now
    return decision


def record_consent(db: Session, context: VisitContext, actor: Actor, *, agreed: bool,
                   now: datetime | None = None) -> Consent:
    """The patient's consent to the limits of telemedicine, for this visit.

    The patient gives it on the pre-call page; the clinician may record one the patient gave
    aloud on video (the Act has the doctor explain the limits and obtain consent).
    """
    now = now or utcnow()
    _require_role(db, context, actor, "consent", ParticipantRole.PATIENT,
                  ParticipantRole.CLINICIAN)
    if not agreed:
        _audit(db, actor.audit_actor, context, "consent", {"refused": "not_agreed"},
               outcome="refused")
        raise Refusal(Problem(422, "CONSENT_NOT_GIVEN",
                              N_("Tick the box to agree before joining the video visit."),
                              errors=[FieldError("agree", "consent_not_given",
                                                 N_("This field is required."))]))
    if is_terminal(context.state) or context.state is VisitState.WRAP_UP:
        raise _state_refusal(db, context, actor, "consent", N_("This visit is over."))
    if context.visit.consent_id is not None:
        existing = db.get(Consent, context.visit.consent_id)
        assert existing is not None
        return existing
    consent = Consent(
        institution_id=context.institution.id, patient_id=context.patient.id,
        kind="telemedicine_limits", text_version=CONSENT_TEXT_VERSION,
        # The explanation was given in the patient's language, whoever records the consent.
        language=(actor.language if actor.role is ParticipantRole.PATIENT
                  else context.patient.preferred_language),
        granted_at=now, recorded_by_user_id=actor.user_id,
        detail={"visit_id": context.visit.id,
                "given": "on_pre_call_page" if actor.role is ParticipantRole.PATIENT
                else "aloud_on_video"},
    )
    db.add(consent)
    db.flush()
    context.visit.consent_id = consent.id
    _audit(db, actor.audit_actor, context, "consent",
           {"consent_id": consent.id, "kind": consent.kind, "text_version": CONSENT_TEXT_VERSION,
            "language": consent.language})
    return consent


def arrive(db: Session, context: VisitContext, actor: Actor, *, agreed: bool,
           now: datetime | None = None) -> VisitState:
    """The patient's way in: check in, consent, and enter the waiting room, as far as needed."""
    now = now or utcnow()
    _require_role(db, context, actor, "update", ParticipantRole.PATIENT)
    if context.state is VisitState.SCHEDULED:
        check_in(db, context, actor, now)
    if context.visit.consent_id is None:
        record_consent(db, context, actor, agreed=agreed, now=now)
    if context.state is VisitState.CHECKED_IN:
        _move(db, context, actor, VisitEvent.ENTER_WAITING_ROOM)
        context.visit.waiting_since = now
    if context.state not in (VisitState.WAITING_ROOM, VisitState.IN_CALL):
        raise _state_refusal(db, context, actor, "update",
                             N_("This visit can no longer be joined."))
    return context.state


def verify_identity(db: Session, context: VisitContext, actor: Actor,
                    method: IdentityVerificationMethod, now: datetime | None = None) -> None:
    """The clinician confirmed on video who the patient is, and how."""
    now = now or utcnow()
    _require_role(db, context, actor, "verify", ParticipantRole.CLINICIAN)
    if context.state not in (VisitState.CHECKED_IN, VisitState.WAITING_ROOM,
                             VisitState.IN_CALL):
        raise _state_refusal(db, context, actor, "verify",
                             N_("Identity is verified once the patient has checked in."))
    if method is IdentityVerificationMethod.FACE_MATCHES_PHOTO_ON_FILE and (
            not context.patient.photo_on_file):
        _audit(db, actor.audit_actor, context, "verify", {"refused": "no_photo_on_file"},
               outcome="refused")
        raise Refusal(Problem(409, "NO_PHOTO_ON_FILE",
                              N_("There is no photo of this patient on file: check an identity "
                                 "document on video instead.")))
    context.visit.identity_method = method.value
    context.visit.identity_verified_by_user_id = actor.user_id
    context.visit.identity_verified_at = now
    _audit(db, actor.audit_actor, context, "verify", {"method": method.value})


def start_call(db: Session, context: VisitContext, actor: Actor, *,
               local_physician_connected: bool, now: datetime | None = None) -> Decision:
    """Waiting room -> in call (or resume after a pause): policy, consent, identity and, for a
    tri-party visit, the local physician connected. The clinician's time starts counting."""
    now = now or utcnow()
    _require_role(db, context, actor, "update", ParticipantRole.CLINICIAN)
    decision = _judged(db, context, actor, VisitEvent.START_CALL)
    context.visit.decision_at_start = decision.model_dump(mode="json")
    method = context.visit.identity_method
    # Identity is the one condition the lifecycle checks itself: left to it, the refusal names
    # it ("verify the patient's identity") instead of calling the visit not allowed.
    identity_only = method is None and all(
        item.code is Code.IDENTITY_CHECK_REQUIRED for item in decision.conditions)
    _move(db, context, actor, VisitEvent.START_CALL, TransitionContext(
        policy=decision, policy_conditions_met=identity_only,
        consent_recorded=context.visit.consent_id is not None,
        identity_verified_by=IdentityVerificationMethod(method) if method else None,
        local_physician_required=context.visit.local_physician_required,
        local_physician_connected=local_physician_connected,
    ), decision)
    if context.visit.first_call_started_at is None:
        context.visit.first_call_started_at = now
    db.add(CallIntervalRow(visit_id=context.visit.id, started_at=now,
                           started_by_user_id=actor.user_id))
    return decision


def _close_interval(db: Session, visit: Visit, now: datetime) -> None:
    interval = store.open_interval(db, visit.id)
    if interval is not None:
        interval.ended_at = max(now, interval.started_at)


def pause_call(db: Session, context: VisitContext, actor: Actor,
               now: datetime | None = None) -> None:
    """In call -> waiting room: a dropped call or a break; the clinician's time stops."""
    now = now or utcnow()
    _require_role(db, context, actor, "update", ParticipantRole.CLINICIAN)
    _move(db, context, actor, VisitEvent.INTERRUPT_CALL)
    _close_interval(db, context.visit, now)


def end_call(db: Session, context: VisitContext, actor: Actor,
             now: datetime | None = None) -> None:
    """In call -> wrap-up: the call is over; the clinician finishes the note."""
    now = now or utcnow()
    _require_role(db, context, actor, "update", ParticipantRole.CLINICIAN)
    _move(db, context, actor, VisitEvent.END_CALL)
    _close_interval(db, context.visit, now)
    context.visit.call_ended_at = now


def minutes_so_far(db: Session, visit: Visit, now: datetime | None = None) -> int:
    intervals = [row.interval() for row in store.call_intervals(db, visit.id)]
    return clinician_minutes(intervals, now or utcnow())


def close_visit(db: Session, context: VisitContext, actor: Actor, *, mode: str,
                now: datetime | None = None) -> Encounter:
    """Wrap-up -> closed. The visit becomes an encounter (video or audio), so it counts in the
    institution's 30-day telemedicine share and as the patient's history; the appointment is
    completed and the clinician's minutes are fixed."""
    now = now or utcnow()
    _require_role(db, context, actor, "update", ParticipantRole.CLINICIAN)
    if mode not in RECORD_MODES:
        raise Problem(422, "VALIDATION_FAILED", N_("Must be one of: {expected}."),
                      params={"expected": ", ".join(RECORD_MODES)},
                      errors=[FieldError("mode", "enum", N_("Must be one of: {expected}."),
                                         {"expected": ", ".join(RECORD_MODES)})])
    note = store.note_of(db, context.visit.id)
    if context.state is VisitState.WRAP_UP and (note is None or note.signed_at is None):
        _audit(db, actor.audit_actor, context, "update",
               {"event": "close", "refused": "NOTE_NOT_SIGNED"}, outcome="refused")
        raise Refusal(Problem(409, "NOTE_NOT_SIGNED",
                              N_("Sign the visit note before closing the visit.")))
    _move(db, context, actor, VisitEvent.CLOSE)
    assert note is not None
    intervals = store.call_intervals(db, context.visit.id)
    started = intervals[0].started_at if intervals else now
    ended = max((row.ended_at or now for row in intervals), default=now)
    minutes = clinician_minutes([row.interval() for row in intervals], now)
    encounter = Encounter(
        institution_id=context.institution.id, patient_id=context.patient.id,
        practitioner_id=context.practitioner.id, external_id=f"jaejin-visit-{context.visit.id}",
        mode=mode, kind="visit", started_at=started, ended_at=ended,
        conditions=list(note.condition_codes) or (
            [context.visit.condition_code] if context.visit.condition_code else []),
        summary=_summary(db, context, note),
    )
    db.add(encounter)
    db.flush()
    context.visit.mode = mode
    context.visit.encounter_id = encounter.id
    context.visit.clinician_minutes = minutes
    context.visit.closed_at = now
    _complete_appointment(db, context, actor, now)
    _audit(db, actor.audit_actor, context, "create",
           {"encounter_id": encounter.id, "mode": mode, "clinician_minutes": minutes},
           resource_type="encounter", resource_id=str(encounter.id))
    return encounter


def _summary(db: Session, context: VisitContext, note: VisitNote) -> str:
    """The encounter's summary: the note's assessment and plan and its prescriptions (those
    not withdrawn), labelled in the patient's language."""
    prescribed = [
        PrescribedItem(ingredient=row.ingredient, days_supply=row.days_supply, atc=row.atc,
                       strength=row.strength, frequency=row.frequency,
                       instructions=row.instructions, quantity=row.quantity)
        for row in store.prescriptions_of(db, context.visit.id)
    ]
    return encounter_summary(note.assessment, note.plan, prescribed,
                             _language_for((context.patient.preferred_language,)))


def _complete_appointment(db: Session, context: VisitContext, actor: Actor,
                          now: datetime) -> None:
    appointment = context.appointment
    if not appointment.is_active:
        return
    try:
        completed = appointment_lifecycle.complete(appointment.state(), now=now)
    except SchedulingError:
        # Closed before the booked start (a visit begun early): the appointment stays as it
        # was booked; the encounter is what records the contact.
        return
    appointment.status = completed.status.value
    appointment.updated_at = now


def mark_no_show(db: Session, context: VisitContext, actor: Actor, settings: Settings,
                 now: datetime | None = None) -> None:
    """The patient did not come: the visit and its appointment are marked missed."""
    now = now or utcnow()
    _require_role(db, context, actor, "update", staff=OUTCOME_STAFF)
    _move(db, context, actor, VisitEvent.MARK_NO_SHOW)
    context.visit.no_show_at = now
    assert actor.principal is not None
    if context.appointment.is_active:
        record_outcome(db, actor.principal, context.appointment, AppointmentStatus.NO_SHOW,
                       now=now)


def cancel_visit(db: Session, context: VisitContext, actor: Actor, settings: Settings, *,
                 reason: str | None, now: datetime | None = None) -> None:
    """Cancel the visit; its appointment is cancelled too (the time is freed, calendars told)."""
    now = now or utcnow()
    _require_role(db, context, actor, "update", staff=OUTCOME_STAFF)
    _move(db, context, actor, VisitEvent.CANCEL)
    context.visit.cancelled_at = now
    assert actor.principal is not None
    if context.appointment.is_active:
        cancel(db, actor.principal, context.appointment, by_staff=True, reason=reason,
               settings=settings, now=now)


# --------------------------------------------------------------------------- the note


@dataclass(frozen=True, slots=True)
class NoteInput:
    subjective: str = ""
    objective: str = ""
    assessment: str = ""
    plan: str = ""
    condition_codes: tuple[str, ...] = ()
    follow_up_interval_days: int | None = None


def _require_note_writer(db: Session, context: VisitContext, actor: Actor) -> None:
    _require_role(db, context, actor, "update", ParticipantRole.CLINICIAN)
    if context.state in (VisitState.NO_SHOW, VisitState.CANCELLED, VisitState.SCHEDULED):
        raise _state_refusal(db, context, actor, "update",
                             N_("A note is written for a visit that took place."))


def save_note(db: Session, context: VisitContext, actor: Actor, values: NoteInput,
              now: datetime | None = None) -> VisitNote:
    """Create or update the note. A signed note is final."""
    now = now or utcnow()
    _require_note_writer(db, context, actor)
    note = store.note_of(db, context.visit.id)
    if note is not None and note.signed_at is not None:
        _audit(db, actor.audit_actor, context, "update", {"refused": "NOTE_SIGNED"},
               outcome="refused", resource_type="visit_note", resource_id=str(note.id))
        raise Refusal(Problem(409, "NOTE_SIGNED", N_("This note is signed and can no longer "
                                                     "be changed.")))
    if note is None:
        note = VisitNote(visit_id=context.visit.id)
        db.add(note)
    note.subjective, note.objective = values.subjective, values.objective
    note.assessment, note.plan = values.assessment, values.plan
    note.condition_codes = list(dict.fromkeys(values.condition_codes))
    note.follow_up_interval_days = values.follow_up_interval_days
    note.updated_by_user_id = actor.user_id
    note.updated_at = now
    db.flush()
    _audit(db, actor.audit_actor, context, "update",
           {"condition_codes": note.condition_codes,
            "follow_up_interval_days": note.follow_up_interval_days},
           resource_type="visit_note", resource_id=str(note.id))
    return note


def sign_note(db: Session, context: VisitContext, actor: Actor,
              now: datetime | None = None) -> VisitNote:
    now = now or utcnow()
    _require_note_writer(db, context, actor)
    note = store.note_of(db, context.visit.id)
    if note is None or not note.assessment.strip() or not note.condition_codes:
        _audit(db, actor.audit_actor, context, "update", {"refused": "NOTE_INCOMPLETE"},
               outcome="refused", resource_type="visit_note")
        raise Refusal(Problem(409, "NOTE_INCOMPLETE",
                              N_("A note is signed with an assessment and at least one "
                                 "condition code.")))
    if note.signed_at is None:
        note.signed_by_user_id = actor.user_id
        note.signed_at = now
        _audit(db, actor.audit_actor, context, "sign", {}, resource_type="visit_note",
               resource_id=str(note.id))
    return note


def book_next_appointment(db: Session, context: VisitContext, actor: Actor, *,
                          start: datetime, visit_type: str, mode: str,
                          settings: Settings) -> Appointment:
    """Book the follow-up from the note, through the scheduling service (its rules, the policy
    for a video follow-up, the double-booking guard), and link it to the note."""
    _require_note_writer(db, context, actor)
    assert actor.principal is not None
    note = store.note_of(db, context.visit.id)
    if note is None:
        note = VisitNote(visit_id=context.visit.id, updated_by_user_id=actor.user_id)
        db.add(note)
        db.flush()
    condition = (note.condition_codes[0] if note.condition_codes
                 else context.visit.condition_code)
    appointment = book(db, actor.principal, BookingRequest(
        patient_id=context.patient.id, practitioner_id=context.practitioner.id, start=start,
        visit_type=visit_type, mode=VisitMode(mode),
        interpreter_language=context.appointment.interpreter_language,
        condition=condition, tri_party=context.visit.tri_party,
    ), settings=settings)
    note.next_appointment_id = appointment.id
    _audit(db, actor.audit_actor, context, "update",
           {"next_appointment_id": appointment.id, "start": start.isoformat()},
           resource_type="visit_note", resource_id=str(note.id))
    return appointment


# --------------------------------------------------------------------------- files in the call


def store_attachment(db: Session, context: VisitContext, actor: Actor, *, filename: str,
                     content: bytes) -> VisitAttachment:
    """Keep a file shared in the call with the visit, after checking what it really is."""
    if actor.role is None:
        _require_role(db, context, actor, "create", *ParticipantRole)
    assert actor.role is not None
    if not room_is_open_for(context, actor.role):
        raise _state_refusal(db, context, actor, "create",
                             N_("Files are shared during the visit."))
    clean_name = safe_filename(filename)
    try:
        content_type = check_file(clean_name, content)
    except FileRefused as refused:
        log.warning("visit %s: refused file %r from %s: %s", context.visit.id, clean_name,
                    actor.reference, refused.problem.code)
        _audit(db, actor.audit_actor, context, "create",
               {"refused": refused.problem.code, "filename": clean_name,
                "size_bytes": len(content)},
               outcome="refused", resource_type="visit_attachment", resource_id=None)
        raise Refusal(refused.problem) from None
    attachment = VisitAttachment(
        visit_id=context.visit.id, institution_id=context.institution.id,
        uploaded_by=actor.reference, uploader_role=actor.role.value, filename=clean_name,
        content_type=content_type, size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(), content=content,
    )
    db.add(attachment)
    db.flush()
    _audit(db, actor.audit_actor, context, "create",
           {"filename": clean_name, "content_type": content_type, "size_bytes": len(content)},
           resource_type="visit_attachment", resource_id=str(attachment.id))
    return attachment


def attachment_for(db: Session, context: VisitContext, actor: Actor,
                   attachment_id: int) -> VisitAttachment:
    attachment = db.get(VisitAttachment, attachment_id)
    if attachment is None or attachment.visit_id != context.visit.id:
        raise not_found("attachment")
    _audit(db, actor.audit_actor, context, "read",
           {"filename": attachment.filename}, resource_type="visit_attachment",
           resource_id=str(attachment.id))
    return attachment


# --------------------------------------------------------------------------- the clinician's day


@dataclass(slots=True)
class QueueEntry:
    context: VisitContext
    decision: Decision | None
    decision_problem: str | None
    minutes: int


def todays_queue(db: Session, principal: Principal, day: date, zone: ZoneInfo,
                 now: datetime | None = None) -> list[QueueEntry]:
    """The signed-in clinician's video visits on `day` (in their zone), each with the policy's
    decision for its time evaluated now, its language and interpreter."""
    now = now or utcnow()
    practitioner = db.execute(
        select(Practitioner).where(Practitioner.user_id == principal.user_id)
    ).scalar_one_or_none()
    if practitioner is None:
        return []
    start = local_day_start(day, zone)
    end = local_day_start(day + timedelta(days=1), zone)
    institutions = principal.institutions_where(Role.CLINICIAN)
    appointments = list(db.execute(
        select(Appointment).where(
            Appointment.practitioner_id == practitioner.id,
            Appointment.institution_id.in_(institutions),
            Appointment.mode == "video",
            Appointment.start_at >= start, Appointment.start_at < end,
            Appointment.status != "cancelled",
        ).order_by(Appointment.start_at, Appointment.id)
    ).scalars())
    entries: list[QueueEntry] = []
    for appointment in appointments:
        visit = open_visit(db, appointment, principal.audit_actor, lang=principal.language)
        context = load_context(db, visit)
        decision: Decision | None = None
        problem: str | None = None
        if not is_terminal(context.state):
            try:
                decision = decision_for(db, context, principal.language)
            except Problem as refused:
                problem = translate(principal.language, refused.message, **refused.params)
        entries.append(QueueEntry(context, decision, problem,
                                  minutes_so_far(db, visit, now)))
    if entries:
        record(db, principal.audit_actor, AuditEvent(
            "search", "visit", None, None, entries[0].context.institution.id,
            detail={"day": day.isoformat(), "visits": [entry.context.visit.id
                                                       for entry in entries]}))
    return entries


@dataclass(frozen=True, slots=True)
class ReadingSummary:
    metric: str
    label: str
    latest_value: float
    unit: str
    latest_at: datetime
    count: int


@dataclass(slots=True)
class PatientSummary:
    encounters: list[Encounter]
    readings: list[ReadingSummary] = field(default_factory=list)
    monitoring_available: bool = False


READINGS_WINDOW = timedelta(days=30)


def patient_summary(db: Session, context: VisitContext, actor: Actor,
                    now: datetime | None = None) -> PatientSummary:
    """History at this institution and, when remote monitoring is installed, the last 30 days
    of readings (latest value per metric)."""
    now = now or utcnow()
    encounters = list(db.execute(
        select(Encounter).where(Encounter.patient_id == context.patient.id,
                                Encounter.institution_id == context.institution.id)
        .order_by(Encounter.started_at.desc()).limit(10)
    ).scalars())
    summary = PatientSummary(encounters)
    try:
        from jaejin.monitoring.readings import metric_label
        from jaejin.monitoring.store import readings_between
    except ModuleNotFoundError:
        pass
    else:
        summary.monitoring_available = True
        latest: dict[str, ReadingSummary] = {}
        for reading in readings_between(db, context.patient.id, now - READINGS_WINDOW, now):
            key = reading.metric.value
            earlier = latest.get(key)
            count = earlier.count + 1 if earlier else 1
            latest[key] = ReadingSummary(key, metric_label(reading.metric, actor.language),
                                         reading.value, reading.unit, reading.effective_at,
                                         count)
        summary.readings = sorted(latest.values(), key=lambda item: item.metric)
    _audit(db, actor.audit_actor, context, "read",
           {"encounters": len(encounters), "readings": len(summary.readings)},
           resource_type="patient", resource_id=str(context.patient.id))
    return summary


def visits_of_user(db: Session, principal: Principal, now: datetime | None = None,
                   ) -> list[VisitContext]:
    """The signed-in patient's or interpreter's video visits from yesterday on."""
    now = now or utcnow()
    if principal.user_id is None:
        return []
    patient_ids = list(db.execute(
        select(Patient.id).where(Patient.user_id == principal.user_id)).scalars())
    interpreter_ids = list(db.execute(
        select(Interpreter.id).where(Interpreter.user_id == principal.user_id)).scalars())
    if not patient_ids and not interpreter_ids:
        return []
    appointments = list(db.execute(
        select(Appointment).where(
            (Appointment.patient_id.in_(patient_ids))
            | (Appointment.interpreter_id.in_(interpreter_ids)),
            Appointment.mode == "video", Appointment.status != "cancelled",
            Appointment.end_at >= now - timedelta(days=1),
        ).order_by(Appointment.start_at).limit(50)
    ).scalars())
    contexts = []
    for appointment in appointments:
        visit = open_visit(db, appointment, principal.audit_actor, lang=principal.language)
        contexts.append(load_context(db, visit))
    return contexts


def user_display(db: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = db.get(User, user_id)
    return user.display_name if user else None


# --------------------------------------------------------------------------- what a file is


class FileRefused(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.code)
        self.problem = problem


#: The kinds of file a participant may share, by extension.
ALLOWED_EXTENSIONS: dict[str, str] = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".pdf": "application/pdf", ".txt": "text/plain",
    ".csv": "text/csv",
}
_IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif",
                  "WEBP": "image/webp"}
#: Programs and archives that must never pass for a document, whatever their name says.
_EXECUTABLE_SIGNATURES: tuple[bytes, ...] = (
    b"MZ", b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"#!",
    b"PK\x03\x04", b"Rar!", b"7z\xbc\xaf",
)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def safe_filename(name: str) -> str:
    """The file's own name: no folders, no control characters, at most 200 characters."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    base = _CONTROL_CHARACTERS.sub("", base).strip().lstrip(".")
    if not base:
        return "file"
    if len(base) > 200:
        stem, dot, extension = base.rpartition(".")
        base = (stem[: 199 - len(extension)] + dot + extension) if dot and len(extension) <= 10 \
            else base[:200]
    return base


def sniff(content: bytes) -> str | None:
    """The content type the bytes themselves show, or None when they show nothing allowed."""
    if content.startswith(_EXECUTABLE_SIGNATURES):
        return "application/x-executable"
    if content.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")) or (
            content[:4] == b"RIFF" and content[8:12] == b"WEBP"):
        return _verified_image(content)
    if content.startswith(b"%PDF-"):
        return "application/pdf" if b"%%EOF" in content[-2048:] else None
    if b"\x00" not in content:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return "text/plain"
    return None


def _verified_image(content: bytes) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as image:
            kind = image.format
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError):
        return None
    return _IMAGE_FORMATS.get(kind or "")


def check_file(filename: str, content: bytes) -> str:
    """The stored content type of a shared file, or FileRefused saying what is wrong.

    The bytes decide, never the name or the browser's claim: a `.png` that is really a program
    is refused, as is a PDF named `.jpg`.
    """
    if not content:
        raise FileRefused(Problem(422, "FILE_EMPTY", N_("The file {filename} is empty."),
                                  params={"filename": filename}))
    if len(content) > ATTACHMENT_MAX_BYTES:
        raise FileRefused(Problem(413, "FILE_TOO_LARGE",
                                  N_("The file {filename} is larger than {limit} MB."),
                                  params={"filename": filename,
                                          "limit": ATTACHMENT_MAX_BYTES // 1_000_000}))
    extension = Path(filename).suffix.lower()
    expected = ALLOWED_EXTENSIONS.get(extension)
    if expected is None:
        raise FileRefused(Problem(
            415, "FILE_TYPE_NOT_ALLOWED",
            N_("Files of this kind cannot be shared in a visit: {filename}. Share images (PNG, "
               "JPEG, GIF, WebP), PDF documents or text files (TXT, CSV)."),
            params={"filename": filename}))
    found = sniff(content)
    if expected.startswith("text/") and found == "text/plain":
        return f"{expected}; charset=utf-8"
    if found == expected:
        return expected
    raise FileRefused(Problem(
        415, "FILE_CONTENT_MISMATCH",
        N_("The file {filename} is not what its name says, so it was not shared."),
        params={"filename": filename}, extra={"found": found or "unknown"}))


# --------------------------------------------------------------------------- condition codes

KCD_FILE = Path(__file__).resolve().parent / "data" / "kcd_common.csv"


@dataclass(frozen=True, slots=True)
class ConditionCode:
    code: str
    name_ko: str
    name_en: str
    specialty: str

    def name(self, language: str) -> str:
        return self.name_ko if language == "ko" else self.name_en


@lru_cache(maxsize=1)
def condition_codes() -> tuple[ConditionCode, ...]:
    """The bundled subset of KCD-8 (see the header of data/kcd_common.csv)."""
    with KCD_FILE.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return tuple(ConditionCode(row["code"], row["name_ko"], row["name_en"],
                                   row["specialty"]) for row in rows)


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().replace(".", "").replace(" ", "")


def search_conditions(query: str, *, specialty: str | None = None,
                      limit: int = 20) -> list[ConditionCode]:
    """Codes whose code starts with, or whose Korean or English name contains, `query`.

    Code matches come first, then the clinician's specialty, then the code order.
    """
    wanted = _folded(query)
    if not wanted:
        return []
    scored: list[tuple[int, int, str, ConditionCode]] = []
    for entry in condition_codes():
        if _folded(entry.code).startswith(wanted):
            rank = 0
        elif wanted in _folded(entry.name_ko) or wanted in _folded(entry.name_en):
            rank = 1
        else:
            continue
        scored.append((rank, 0 if entry.specialty == specialty else 1, entry.code, entry))
    scored.sort(key=lambda item: item[:3])
    return [entry for *_ignored, entry in scored[:limit]]
