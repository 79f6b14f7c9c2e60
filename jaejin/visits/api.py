"""JSON API of video visits (`/api/v1/visits`): open, follow and run a visit, write its note.

Routes are thin: each one finds who is asking and in which visit (`service.visit_for_principal`:
a participant, or the institution's care team), calls one function of `jaejin.visits.service`,
and commits. A refused action's audit entry is committed too (`service.committed`) before the
problem is answered. The clinician's page drives its buttons through these same routes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from jaejin.core.accounts import CARE_TEAM, Role
from jaejin.core.authn import AppSettings, CurrentPrincipal, DbSession, Principal
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem, not_found
from jaejin.core.i18n import N_
from jaejin.directory.model import AwareDatetime, ConditionCode
from jaejin.directory.store import Interpreter, Patient, Practitioner
from jaejin.policy.units import ATC_CODE
from jaejin.scheduling.store import Appointment
from jaejin.visits import prescribing, service, store
from jaejin.visits.lifecycle import IdentityVerificationMethod
from jaejin.visits.prescribing import Judgement, PrescriptionInput
from jaejin.visits.service import Actor, VisitContext
from jaejin.visits.signalling import ParticipantRole
from jaejin.visits.store import VisitPrescription
from jaejin.visits.ws import local_physician_connected

router = APIRouter(prefix="/api/v1/visits", tags=["visits"])

MAX_ID = 2**31 - 1
VisitId = Annotated[int, Path(ge=1, le=MAX_ID)]


# --------------------------------------------------------------------------- wire schemas


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenVisitIn(_Strict):
    appointment_id: int = Field(ge=1, le=MAX_ID)


class ConsentIn(_Strict):
    #: The patient agrees to the telemedicine limits explained on the pre-call page.
    agree: bool


class IdentityIn(_Strict):
    method: IdentityVerificationMethod


class CloseIn(_Strict):
    mode: Literal["video", "audio"] = "video"


class CancelIn(_Strict):
    reason: Annotated[str, Field(max_length=500)] | None = None


NoteText = Annotated[str, Field(max_length=service.MAX_NOTE_CHARACTERS)]


class NoteIn(_Strict):
    subjective: NoteText = ""
    objective: NoteText = ""
    assessment: NoteText = ""
    plan: NoteText = ""
    condition_codes: Annotated[list[ConditionCode], Field(max_length=20)] = []
    follow_up_interval_days: Annotated[int, Field(ge=1, le=service.MAX_FOLLOW_UP_DAYS)] | None = (
        None)


class NextAppointmentIn(_Strict):
    start: AwareDatetime
    visit_type: Annotated[str, Field(min_length=1, max_length=40)] = "follow_up"
    mode: Literal["video", "in_person"] = "video"


def _atc_code(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    code = value.strip().upper()
    if not ATC_CODE.match(code):
        raise ValueError(N_("Not an ATC code: a letter, then digits and letters as in C08CA01."))
    return code


def _trimmed(value: object) -> object:
    # Anything but text goes on to pydantic, which says it must be text (422), not a 500.
    return value.strip() if isinstance(value, str) else value


Trimmed = BeforeValidator(_trimmed)


class PrescriptionCreate(_Strict):
    """A prescription proposed for the visit's note (judged by the telemedicine rules)."""

    ingredient: Annotated[str, Trimmed, Field(min_length=1, max_length=200)]
    #: ATC code of the ingredient (e.g. C08CA01); optional, but lets the rules match it surely.
    atc: Annotated[str | None, AfterValidator(_atc_code)] = None
    strength: Annotated[str, Trimmed, Field(max_length=100)] = ""
    frequency: Annotated[str, Trimmed, Field(max_length=100)] = ""
    days_supply: Annotated[int, Field(ge=1, le=365)]
    quantity: Annotated[int, Field(ge=1, le=10_000)] | None = None
    instructions: Annotated[str, Trimmed, Field(max_length=1000)] = ""
    #: Narcotic or psychotropic by the regulator's product classification.
    controlled: bool = False
    #: What it is prescribed for, when not the visit's condition (a KCD code).
    indication: ConditionCode | None = None

    def as_input(self) -> PrescriptionInput:
        return PrescriptionInput(
            ingredient=self.ingredient, days_supply=self.days_supply, atc=self.atc,
            strength=self.strength, frequency=self.frequency, quantity=self.quantity,
            instructions=self.instructions, controlled=self.controlled,
            indication=self.indication)


class PolicyReasonOut(BaseModel):
    code: str
    source: str
    message: str
    ingredient: str | None = None


class PrescriptionPublic(BaseModel):
    id: int
    visit_id: int
    ingredient: str
    atc: str | None
    strength: str
    frequency: str
    days_supply: int
    quantity: int | None
    instructions: str
    controlled: bool
    indication: str | None
    #: The rules' code that allowed it (PRESCRIPTION_OK, PRESCRIPTION_RECOMMENDATION_ONLY).
    policy_code: str
    #: The pack in force on `policy_day` (the visit's Korean day) that judged it.
    policy_pack: str | None
    policy_day: date
    created_by: str | None
    created_at: datetime


class PrescriptionCheckPublic(BaseModel):
    """What the rules say about a proposed prescription; nothing is stored."""

    allowed: bool
    ingredient: str
    #: The item's verdict code: PRESCRIPTION_OK, PRESCRIPTION_PROHIBITED, DAYS_SUPPLY_LIMIT...
    code: str
    message: str
    pack: str | None
    decided_on: date
    max_days: int | None
    #: Why not (empty when allowed): each with the rule's source, in the caller's language.
    reasons: list[PolicyReasonOut]
    alternatives: list[dict[str, str]]


class IdentityOut(BaseModel):
    method: str
    verified_at: datetime
    verified_by: str | None


class NoteOut(BaseModel):
    subjective: str
    objective: str
    assessment: str
    plan: str
    condition_codes: list[str]
    follow_up_interval_days: int | None
    next_appointment_id: int | None
    signed_at: datetime | None


class VisitOut(BaseModel):
    id: int
    appointment_id: int
    state: str
    mode: str
    condition_code: str | None
    tri_party: bool
    local_physician_required: bool
    scheduled_start: datetime
    scheduled_end: datetime
    checked_in_at: datetime | None
    consent_recorded: bool
    identity: IdentityOut | None
    decision_at_check_in: dict[str, Any] | None
    decision_at_start: dict[str, Any] | None
    clinician_minutes: int
    encounter_id: int | None
    your_role: str | None
    #: The note, for the clinician and the institution's care team only.
    note: NoteOut | None = None


class GuestLinkOut(BaseModel):
    id: int
    url: str
    expires_at: datetime
    language: str


class AppointmentOut(BaseModel):
    id: int
    start: datetime
    end: datetime
    mode: str
    status: str


class ConditionOut(BaseModel):
    code: str
    name: str
    specialty: str


# --------------------------------------------------------------------------- helpers


def visit_out(db: Session, context: VisitContext, actor: Actor) -> VisitOut:
    visit = context.visit
    identity = None
    if visit.identity_method and visit.identity_verified_at:
        identity = IdentityOut(method=visit.identity_method,
                               verified_at=visit.identity_verified_at,
                               verified_by=service.user_display(
                                   db, visit.identity_verified_by_user_id))
    note_out = None
    note = store.note_of(db, visit.id)
    if note is not None and (actor.role is ParticipantRole.CLINICIAN
                             or actor.is_staff()):
        note_out = NoteOut(
            subjective=note.subjective, objective=note.objective, assessment=note.assessment,
            plan=note.plan, condition_codes=list(note.condition_codes),
            follow_up_interval_days=note.follow_up_interval_days,
            next_appointment_id=note.next_appointment_id, signed_at=note.signed_at)
    return VisitOut(
        id=visit.id, appointment_id=visit.appointment_id, state=visit.state, mode=visit.mode,
        condition_code=visit.condition_code, tri_party=visit.tri_party,
        local_physician_required=visit.local_physician_required,
        scheduled_start=context.appointment.start_at, scheduled_end=context.appointment.end_at,
        checked_in_at=visit.checked_in_at, consent_recorded=visit.consent_id is not None,
        identity=identity, decision_at_check_in=visit.decision_at_check_in,
        decision_at_start=visit.decision_at_start,
        clinician_minutes=service.minutes_so_far(db, visit),
        encounter_id=visit.encounter_id,
        your_role=actor.role.value if actor.role else None, note=note_out)


def _load(db: Session, principal: Principal, visit_id: int,
          *, for_update: bool = False) -> tuple[VisitContext, Actor]:
    return service.committed(
        db, lambda: service.visit_for_principal(db, principal, visit_id, for_update=for_update))


def _act(db: Session, principal: Principal, visit_id: int, action: Any) -> VisitOut:
    """Run `action(context, actor)` on the locked visit, commit, answer the visit."""
    context, actor = _load(db, principal, visit_id, for_update=True)
    service.committed(db, lambda: action(context, actor))
    return visit_out(db, context, actor)


def prescription_out(db: Session, row: VisitPrescription) -> PrescriptionPublic:
    return PrescriptionPublic(
        id=row.id, visit_id=row.visit_id, ingredient=row.ingredient, atc=row.atc,
        strength=row.strength, frequency=row.frequency, days_supply=row.days_supply,
        quantity=row.quantity, instructions=row.instructions, controlled=row.controlled,
        indication=row.indication, policy_code=row.policy_code, policy_pack=row.policy_pack,
        policy_day=row.policy_day, created_by=service.user_display(db, row.created_by_user_id),
        created_at=row.created_at)


def check_out(judgement: Judgement) -> PrescriptionCheckPublic:
    verdict, decision = judgement.verdict, judgement.decision
    return PrescriptionCheckPublic(
        allowed=judgement.allowed, ingredient=verdict.ingredient, code=str(verdict.code),
        message=verdict.message, pack=decision.pack, decided_on=decision.decided_on,
        max_days=verdict.max_days,
        reasons=[PolicyReasonOut(**reason) for reason in judgement.reasons()],
        alternatives=[] if judgement.allowed else [
            {"code": str(item.code), "message": item.message} for item in decision.alternatives])


# --------------------------------------------------------------------------- routes


@router.post("", status_code=201, response_model=VisitOut)
def open_visit(body: OpenVisitIn, principal: CurrentPrincipal, db: DbSession) -> VisitOut:
    """The visit of a video appointment (created on first call; the same one afterwards)."""
    if principal.kind != "user":
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    appointment = db.get(Appointment, body.appointment_id)
    if appointment is None:
        raise not_found("appointment")
    if not principal.can_act_for(appointment.institution_id, *CARE_TEAM) and (
            not _takes_part(db, appointment, principal)):
        if appointment.institution_id in principal.institutions_where():
            raise Problem(403, "NOT_A_PARTICIPANT",
                          N_("Only the visit's participants and care team may open it."))
        raise not_found("appointment")
    visit = service.open_visit(db, appointment, principal.audit_actor, lang=principal.language)
    db.commit()
    context, actor = _load(db, principal, visit.id)
    return visit_out(db, context, actor)


def _takes_part(db: Session, appointment: Appointment, principal: Principal) -> bool:
    visit = store.visit_of_appointment(db, appointment.id)
    if visit is not None:
        return service.role_of_user(service.load_context(db, visit), principal.user_id) is not None
    patient = db.get(Patient, appointment.patient_id)
    practitioner = db.get(Practitioner, appointment.practitioner_id)
    interpreter = (db.get(Interpreter, appointment.interpreter_id)
                   if appointment.interpreter_id is not None else None)
    users = {patient.user_id if patient else None, practitioner.user_id if practitioner else None,
             interpreter.user_id if interpreter else None}
    return principal.user_id is not None and principal.user_id in users


@router.get("/conditions", response_model=list[ConditionOut])
def search_conditions(
    principal: CurrentPrincipal,
    q: Annotated[str, Query(min_length=1, max_length=60)],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> list[ConditionOut]:
    """KCD/ICD-10 codes by code or name (Korean or English), from the bundled subset."""
    if principal.kind != "user" or Role.CLINICIAN not in principal.roles:
        raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
    language = principal.language
    return [ConditionOut(code=entry.code, name=entry.name(language), specialty=entry.specialty)
            for entry in service.search_conditions(q, limit=limit)]


@router.get("/{visit_id}", response_model=VisitOut)
def read_visit(visit_id: VisitId, principal: CurrentPrincipal, db: DbSession) -> VisitOut:
    context, actor = _load(db, principal, visit_id)
    service._audit(db, actor.audit_actor, context, "read")
    out = visit_out(db, context, actor)
    db.commit()
    return out


@router.post("/{visit_id}/check-in", response_model=VisitOut)
def check_in(visit_id: VisitId, principal: CurrentPrincipal, db: DbSession) -> VisitOut:
    """Scheduled -> checked in, judged by the telemedicine rules for the visit's time."""
    return _act(db, principal, visit_id,
                lambda context, actor: service.check_in(db, context, actor))


@router.post("/{visit_id}/consent", response_model=VisitOut)
def consent(visit_id: VisitId, body: ConsentIn, principal: CurrentPrincipal,
            db: DbSession) -> VisitOut:
    """The patient agrees to the limits of telemedicine (the clinician may record an oral one)."""
    return _act(db, principal, visit_id, lambda context, actor: service.record_consent(
        db, context, actor, agreed=body.agree))


@router.post("/{visit_id}/arrive", response_model=VisitOut)
def arrive(visit_id: VisitId, body: ConsentIn, principal: CurrentPrincipal,
           db: DbSession) -> VisitOut:
    """The patient's way in: check in, consent, enter the waiting room."""
    return _act(db, principal, visit_id, lambda context, actor: service.arrive(
        db, context, actor, agreed=body.agree))


@router.post("/{visit_id}/identity", response_model=VisitOut)
def verify_identity(visit_id: VisitId, body: IdentityIn, principal: CurrentPrincipal,
                    db: DbSession) -> VisitOut:
    """The clinician verified the patient on video (ID document, or face against the photo)."""
    return _act(db, principal, visit_id, lambda context, actor: service.verify_identity(
        db, context, actor, body.method))


@router.post("/{visit_id}/call/start", response_model=VisitOut)
async def start_call(visit_id: VisitId, request: Request, principal: CurrentPrincipal,
                     db: DbSession) -> VisitOut:
    """Start (or resume) the call: the rules for the visit's time, consent, identity, and the
    local physician connected when the visit needs them."""
    # Finish the transaction the caller's look-up opened before waiting on anything: on SQLite
    # it holds the write lock, which other requests would otherwise queue behind.
    await run_in_threadpool(db.commit)
    connected = await local_physician_connected(request.app, visit_id)
    result: VisitOut = await run_in_threadpool(
        _act, db, principal, visit_id, lambda context, actor: service.start_call(
            db, context, actor, local_physician_connected=connected))
    return result


@router.post("/{visit_id}/call/pause", response_model=VisitOut)
def pause_call(visit_id: VisitId, principal: CurrentPrincipal, db: DbSession) -> VisitOut:
    return _act(db, principal, visit_id,
                lambda context, actor: service.pause_call(db, context, actor))


@router.post("/{visit_id}/call/end", response_model=VisitOut)
def end_call(visit_id: VisitId, principal: CurrentPrincipal, db: DbSession) -> VisitOut:
    return _act(db, principal, visit_id,
                lambda context, actor: service.end_call(db, context, actor))


@router.post("/{visit_id}/close", response_model=VisitOut)
def close_visit(visit_id: VisitId, body: CloseIn, principal: CurrentPrincipal,
                db: DbSession) -> VisitOut:
    """Close after the note is signed: the visit becomes an encounter (video or audio)."""
    return _act(db, principal, visit_id, lambda context, actor: service.close_visit(
        db, context, actor, mode=body.mode))


@router.post("/{visit_id}/no-show", response_model=VisitOut)
def no_show(visit_id: VisitId, principal: CurrentPrincipal, db: DbSession,
            settings: AppSettings) -> VisitOut:
    return _act(db, principal, visit_id, lambda context, actor: service.mark_no_show(
        db, context, actor, settings))


@router.post("/{visit_id}/cancel", response_model=VisitOut)
def cancel(visit_id: VisitId, body: CancelIn, principal: CurrentPrincipal, db: DbSession,
           settings: AppSettings) -> VisitOut:
    return _act(db, principal, visit_id, lambda context, actor: service.cancel_visit(
        db, context, actor, settings, reason=body.reason))


@router.put("/{visit_id}/note", response_model=VisitOut)
def save_note(visit_id: VisitId, body: NoteIn, principal: CurrentPrincipal,
              db: DbSession) -> VisitOut:
    """The SOAP note, condition codes, plan and follow-up interval (until signed)."""
    values = service.NoteInput(
        subjective=body.subjective, objective=body.objective, assessment=body.assessment,
        plan=body.plan, condition_codes=tuple(body.condition_codes),
        follow_up_interval_days=body.follow_up_interval_days)
    return _act(db, principal, visit_id, lambda context, actor: service.save_note(
        db, context, actor, values))


@router.post("/{visit_id}/note/sign", response_model=VisitOut)
def sign_note(visit_id: VisitId, principal: CurrentPrincipal, db: DbSession) -> VisitOut:
    return _act(db, principal, visit_id,
                lambda context, actor: service.sign_note(db, context, actor))


@router.post("/{visit_id}/next-appointment", status_code=201, response_model=AppointmentOut)
def book_next(visit_id: VisitId, body: NextAppointmentIn, principal: CurrentPrincipal,
              db: DbSession, settings: AppSettings) -> AppointmentOut:
    """Book the follow-up from the note (the scheduling rules and the policy apply)."""
    context, actor = _load(db, principal, visit_id, for_update=True)
    appointment = service.committed(db, lambda: service.book_next_appointment(
        db, context, actor, start=body.start, visit_type=body.visit_type, mode=body.mode,
        settings=settings))
    return AppointmentOut(id=appointment.id, start=appointment.start_at,
                          end=appointment.end_at, mode=appointment.mode,
                          status=appointment.status)


@router.post("/{visit_id}/guest-links", status_code=201, response_model=GuestLinkOut)
def guest_link(visit_id: VisitId, principal: CurrentPrincipal, db: DbSession,
               settings: AppSettings) -> GuestLinkOut:
    """A new time-limited link for the patient's local physician, e-mailed in their language
    (earlier links of the visit stop working)."""
    context, actor = _load(db, principal, visit_id, for_update=True)
    link, url = service.committed(db, lambda: service.issue_guest_link(
        db, context, actor, base_url=settings.public_base_url, now=utcnow()))
    return GuestLinkOut(id=link.id, url=url, expires_at=link.expires_at, language=link.language)


# --------------------------------------------------------------------------- prescriptions


@router.get("/{visit_id}/prescriptions", response_model=list[PrescriptionPublic])
def list_prescriptions(visit_id: VisitId, principal: CurrentPrincipal,
                       db: DbSession) -> list[PrescriptionPublic]:
    """The prescriptions on the visit's note, each with the rule and pack that allowed it."""
    context, actor = _load(db, principal, visit_id)
    rows = service.committed(db, lambda: prescribing.list_prescriptions(db, context, actor))
    return [prescription_out(db, row) for row in rows]


@router.post("/{visit_id}/prescriptions/check", response_model=PrescriptionCheckPublic)
def check_prescription(visit_id: VisitId, body: PrescriptionCreate, principal: CurrentPrincipal,
                       db: DbSession) -> PrescriptionCheckPublic:
    """Would the rules allow this prescription on this visit, and why not? Stores nothing."""
    context, actor = _load(db, principal, visit_id)
    judgement = service.committed(db, lambda: prescribing.check_prescription(
        db, context, actor, body.as_input()))
    return check_out(judgement)


@router.post("/{visit_id}/prescriptions", status_code=201, response_model=PrescriptionPublic)
def add_prescription(visit_id: VisitId, body: PrescriptionCreate, principal: CurrentPrincipal,
                     db: DbSession) -> PrescriptionPublic:
    """Add a prescription to the note if the telemedicine rules of the visit's day allow it;
    otherwise 422 POLICY_DENIED with the reasons (code, source, message) and nothing stored."""
    context, actor = _load(db, principal, visit_id, for_update=True)
    row, _judgement = service.committed(db, lambda: prescribing.add_prescription(
        db, context, actor, body.as_input()))
    return prescription_out(db, row)


@router.delete("/{visit_id}/prescriptions/{prescription_id}", status_code=204)
def remove_prescription(visit_id: VisitId, prescription_id: VisitId,
                        principal: CurrentPrincipal, db: DbSession) -> Response:
    """Withdraw a prescription while the note is open (kept in the record as removed)."""
    context, actor = _load(db, principal, visit_id, for_update=True)
    service.committed(db, lambda: prescribing.remove_prescription(
        db, context, actor, prescription_id))
    return Response(status_code=204)
