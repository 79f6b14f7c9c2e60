"""Integration API for hospital systems: practitioners, patients, local physicians, encounters.

A hospital records its in-person visits here, which is what later makes a patient eligible for
follow-up telemedicine. Every route is scoped to the caller's institutions, and every read or
change of patient data is audit-logged in the same transaction as the change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jaejin.accounts.service import issue_invitation
from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEvent
from jaejin.core.authn import AppSettings, DbSession, Principal, audit, requires
from jaejin.core.database import utcnow
from jaejin.core.errors import FieldError, Problem, not_found
from jaejin.core.i18n import N_
from jaejin.directory import model
from jaejin.directory.store import (
    Consent,
    Encounter,
    Institution,
    LocalPhysician,
    Patient,
    Practitioner,
    PractitionerRole,
)

router = APIRouter(prefix="/api/v1", tags=["directory"])

READERS = (Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN, Role.SYSTEM_CLIENT)
REGISTRARS = (Role.COORDINATOR, Role.INSTITUTION_ADMIN, Role.SYSTEM_CLIENT)
RECORDERS = (Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN, Role.SYSTEM_CLIENT)

PathId = Annotated[int, Path(ge=1, le=model.MAX_RECORD_ID)]
QueryId = Annotated[int, Query(ge=1, le=model.MAX_RECORD_ID)]

Reader = Annotated[Principal, Depends(requires(*READERS, scope="directory.read"))]
Registrar = Annotated[Principal, Depends(requires(*REGISTRARS, scope="directory.write"))]
Recorder = Annotated[Principal, Depends(requires(*RECORDERS, scope="directory.write"))]


def acting_institution(principal: Principal, requested: int | None, roles: tuple[Role, ...]) -> int:
    """The institution a change is made for: the requested one, or the caller's only one."""
    allowed = principal.institutions_where(*roles)
    if requested is not None:
        if requested not in allowed:
            raise not_found("institution")
        return requested
    if len(allowed) == 1:
        return next(iter(allowed))
    raise Problem(422, "INSTITUTION_REQUIRED",
                  N_("You work at several institutions: say which one (institution_id)."))


def load_patient(db: Session, principal: Principal, patient_id: int,
                 roles: tuple[Role, ...] = READERS) -> Patient:
    patient = db.get(Patient, patient_id)
    if patient is None or not principal.can_act_for(patient.institution_id, *roles):
        raise not_found("patient")
    return patient


def _patient_public(patient: Patient) -> model.PatientPublic:
    public = model.PatientPublic.model_validate(patient)
    public.has_account = patient.user_id is not None
    return public


def _apply(target: Any, changes: dict[str, Any]) -> list[str]:
    for name, value in changes.items():
        setattr(target, name, value)
    return sorted(changes)


# ------------------------------------------------------------------------------- institutions


@router.get("/institutions", response_model=list[model.InstitutionPublic],
            summary="The institutions you belong to")
def list_institutions(principal: Annotated[Principal, Depends(requires())],
                      db: DbSession) -> list[Institution]:
    ids = principal.institutions_where()
    return list(db.execute(select(Institution).where(Institution.id.in_(ids))
                           .order_by(Institution.id)).scalars())


# ------------------------------------------------------------------------------ practitioners


def _practitioner_public(practitioner: Practitioner) -> model.PractitionerPublic:
    return model.PractitionerPublic(
        id=practitioner.id, licence_number=practitioner.licence_number,
        profession=practitioner.profession, specialty=practitioner.specialty,
        name_native=practitioner.name_native, name_latin=practitioner.name_latin,
        languages=practitioner.languages, time_zone=practitioner.time_zone,
        institution_ids=sorted(role.institution_id for role in practitioner.roles if role.active),
    )


def load_practitioner(db: Session, principal: Principal, practitioner_id: int,
                      roles: tuple[Role, ...] = READERS) -> Practitioner:
    practitioner = db.get(Practitioner, practitioner_id)
    visible = principal.institutions_where(*roles)
    if practitioner is None or not {r.institution_id for r in practitioner.roles} & visible:
        raise not_found("practitioner")
    return practitioner


@router.get("/practitioners", response_model=list[model.PractitionerPublic])
def search_practitioners(
    principal: Reader, db: DbSession,
    licence_number: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[model.PractitionerPublic]:
    # A subquery rather than JOIN ... DISTINCT: PostgreSQL cannot compare json columns.
    working_here = select(PractitionerRole.practitioner_id).where(
        PractitionerRole.institution_id.in_(principal.institutions_where(*READERS)))
    query = (select(Practitioner).where(Practitioner.id.in_(working_here))
             .order_by(Practitioner.id).limit(limit))
    if licence_number:
        query = query.where(Practitioner.licence_number == licence_number)
    return [_practitioner_public(p) for p in db.execute(query).scalars()]


@router.post("/practitioners", status_code=201, response_model=model.PractitionerPublic)
def create_practitioner(body: model.PractitionerCreate, principal: Registrar, db: DbSession,
                        response: Response,
                        institution_id: QueryId | None = None) -> model.PractitionerPublic:
    institution = acting_institution(principal, institution_id, REGISTRARS)
    for attempt in range(1, 6):
        try:
            practitioner = _register_practitioner(db, body, institution)
            break
        except IntegrityError:
            # Another request registered this licence (or this role) at the same moment:
            # decide again on what it committed. Each failure means someone else succeeded.
            if attempt == 5:
                raise
    audit(db, principal, AuditEvent("create", "practitioner", str(practitioner.id),
                                    institution_id=institution, purpose="operations"))
    db.commit()
    response.headers["Location"] = f"/api/v1/practitioners/{practitioner.id}"
    return _practitioner_public(practitioner)


def _register_practitioner(db: Session, body: model.PractitionerCreate,
                           institution: int) -> Practitioner:
    """The practitioner with this licence (created if new), now working at `institution`."""
    with db.begin_nested():
        practitioner = db.execute(
            select(Practitioner).where(Practitioner.licence_number == body.licence_number)
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if practitioner is None:
            practitioner = Practitioner(**body.model_dump(exclude={"department"}))
            db.add(practitioner)
            db.flush()
        elif any(role.institution_id == institution for role in practitioner.roles):
            raise Problem(409, "PRACTITIONER_EXISTS",
                          N_("A practitioner with this licence number is already registered "
                             "here."), extra={"practitioner_id": practitioner.id})
        practitioner.roles.append(PractitionerRole(institution_id=institution,
                                                   department=body.department))
    return practitioner


@router.get("/practitioners/{practitioner_id}", response_model=model.PractitionerPublic)
def read_practitioner(practitioner_id: PathId, principal: Reader,
                      db: DbSession) -> model.PractitionerPublic:
    return _practitioner_public(load_practitioner(db, principal, practitioner_id))


@router.patch("/practitioners/{practitioner_id}", response_model=model.PractitionerPublic)
def update_practitioner(practitioner_id: PathId, body: model.PractitionerUpdate,
                        principal: Registrar, db: DbSession) -> model.PractitionerPublic:
    practitioner = load_practitioner(db, principal, practitioner_id, REGISTRARS)
    changes = body.model_dump(exclude_unset=True)
    role_changes: dict[str, Any] = {
        k: changes.pop(k) for k in ("department", "active") if k in changes
    }
    for role in practitioner.roles:
        if role.institution_id in principal.institutions_where(*REGISTRARS):
            _apply(role, role_changes)
    changed = _apply(practitioner, changes) + sorted(role_changes)
    for institution_id in sorted({role.institution_id for role in practitioner.roles}
                                 & principal.institutions_where(*REGISTRARS)):
        audit(db, principal, AuditEvent("update", "practitioner", str(practitioner.id),
                                        institution_id=institution_id, purpose="operations",
                                        detail={"fields": changed}))
    db.commit()
    return _practitioner_public(practitioner)


# ----------------------------------------------------------------------------------- patients


@router.get("/patients", response_model=list[model.PatientPublic])
def search_patients(
    principal: Reader, db: DbSession,
    mrn: Annotated[str | None, Query(max_length=40)] = None,
    name: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    institution_id: QueryId | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[model.PatientPublic]:
    scope = principal.institutions_where(*READERS)
    if institution_id is not None:
        scope &= {institution_id}
    query = select(Patient).where(Patient.institution_id.in_(scope))
    if mrn:
        query = query.where(Patient.mrn == mrn)
    if name:
        pattern = f"%{name.lower()}%"
        query = query.where(
            func.lower(Patient.family_name_latin + " " + Patient.given_name_latin).like(pattern)
            | (Patient.family_name_native + Patient.given_name_native).like(f"%{name}%")
        )
    patients = list(db.execute(query.order_by(Patient.id).limit(limit)).scalars())
    audit_search(db, principal, patients, scope,
                 {"mrn": mrn, "name": bool(name), "results": len(patients)})
    db.commit()
    return [_patient_public(p) for p in patients]


def audit_search(db: Session, principal: Principal, patients: list[Patient],
                 scope: set[int], detail: dict[str, Any]) -> None:
    """One entry per patient disclosed, so each shows up when an auditor looks that patient up;
    a search that found nobody is still recorded, under each institution searched."""
    for patient in patients:
        audit(db, principal, AuditEvent("search", "patient", str(patient.id), patient.id,
                                        patient.institution_id, detail=detail))
    if not patients:
        for institution_id in sorted(scope):
            audit(db, principal, AuditEvent("search", "patient", None,
                                            institution_id=institution_id, detail=detail))


@router.post("/patients", status_code=201, response_model=model.PatientPublic)
def create_patient(body: model.PatientCreate, principal: Registrar, db: DbSession,
                   response: Response) -> model.PatientPublic:
    institution = acting_institution(principal, body.institution_id, REGISTRARS)
    patient = Patient(institution_id=institution,
                      **body.model_dump(exclude={"institution_id"}, mode="json",
                                        exclude_none=False) | {"birth_date": body.birth_date})
    db.add(patient)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise Problem(409, "MRN_TAKEN",
                      N_("This MRN is already registered at your institution.")) from None
    audit(db, principal, AuditEvent("create", "patient", str(patient.id), patient.id,
                                    institution, purpose="registration"))
    db.commit()
    response.headers["Location"] = f"/api/v1/patients/{patient.id}"
    return _patient_public(patient)


@router.get("/patients/{patient_id}", response_model=model.PatientPublic)
def read_patient(patient_id: PathId, principal: Reader, db: DbSession) -> model.PatientPublic:
    patient = load_patient(db, principal, patient_id)
    audit(db, principal, AuditEvent("read", "patient", str(patient.id), patient.id,
                                    patient.institution_id))
    db.commit()
    return _patient_public(patient)


@router.patch("/patients/{patient_id}", response_model=model.PatientPublic)
def update_patient(patient_id: PathId, body: model.PatientUpdate, principal: Registrar,
                   db: DbSession) -> model.PatientPublic:
    patient = load_patient(db, principal, patient_id, REGISTRARS)
    changes = body.model_dump(exclude_unset=True, mode="json")
    region = changes.get("residence_region", patient.residence_region)
    if region and changes.get("residence_country", patient.residence_country) != "KR":
        # Also when only the country changes: a move abroad must clear the Korean region.
        raise Problem(422, "VALIDATION_FAILED", N_("Some fields are not valid."), errors=[
            FieldError("residence_region", "VALUE_ERROR",
                       N_("residence_region applies only to residents of Korea."))])
    changed = _apply(patient, changes)
    audit(db, principal, AuditEvent("update", "patient", str(patient.id), patient.id,
                                    patient.institution_id, detail={"fields": changed}))
    db.commit()
    return _patient_public(patient)


@router.post("/patients/{patient_id}/invitations", status_code=201,
             response_model=model.InvitationPublic,
             summary="Invite the patient to set up their account (after an in-person visit)")
def invite_patient(patient_id: PathId, request: Request, settings: AppSettings,
                   principal: Registrar, db: DbSession) -> model.InvitationPublic:
    patient = load_patient(db, principal, patient_id, REGISTRARS)
    if patient.user_id is not None:
        raise Problem(409, "ALREADY_REGISTERED",
                      N_("This patient already has an account. Sign in instead."))
    issued = issue_invitation(db, settings, patient, patient.preferred_language,
                              principal.audit_actor, principal.user_id)
    db.commit()
    return model.InvitationPublic(
        invitation_id=issued.invitation.id,
        link=f"{settings.public_base_url}/invitation?token={issued.token}",
        code=issued.code, expires_at=issued.invitation.expires_at,
    )


# --------------------------------------------------------------------------- local physicians


@router.get("/patients/{patient_id}/local-physicians",
            response_model=list[model.LocalPhysicianPublic])
def list_local_physicians(patient_id: PathId, principal: Reader,
                          db: DbSession) -> list[LocalPhysician]:
    patient = load_patient(db, principal, patient_id)
    audit(db, principal, AuditEvent("read", "local_physician", None, patient.id,
                                    patient.institution_id))
    db.commit()
    return list(patient.local_physicians)


@router.post("/patients/{patient_id}/local-physicians", status_code=201,
             response_model=model.LocalPhysicianPublic)
def add_local_physician(patient_id: PathId, body: model.LocalPhysicianCreate, principal: Registrar,
                        db: DbSession) -> LocalPhysician:
    patient = load_patient(db, principal, patient_id, REGISTRARS)
    physician = LocalPhysician(institution_id=patient.institution_id, patient_id=patient.id,
                               **body.model_dump())
    db.add(physician)
    db.flush()
    audit(db, principal, AuditEvent("create", "local_physician", str(physician.id), patient.id,
                                    patient.institution_id))
    db.commit()
    return physician


@router.patch("/local-physicians/{physician_id}", response_model=model.LocalPhysicianPublic)
def update_local_physician(physician_id: PathId, body: model.LocalPhysicianUpdate,
                           principal: Registrar, db: DbSession) -> LocalPhysician:
    physician = db.get(LocalPhysician, physician_id)
    if physician is None or not principal.can_act_for(physician.institution_id, *REGISTRARS):
        raise not_found("local physician")
    changed = _apply(physician, body.model_dump(exclude_unset=True))
    audit(db, principal, AuditEvent("update", "local_physician", str(physician.id),
                                    physician.patient_id, physician.institution_id,
                                    detail={"fields": changed}))
    db.commit()
    return physician


# --------------------------------------------------------------------------------- encounters


@router.get("/encounters", response_model=list[model.EncounterPublic])
def search_encounters(
    principal: Reader, db: DbSession, patient_id: QueryId,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[Encounter]:
    patient = load_patient(db, principal, patient_id)
    encounters = list(db.execute(
        select(Encounter).where(Encounter.patient_id == patient.id)
        .order_by(Encounter.started_at.desc()).limit(limit)
    ).scalars())
    audit(db, principal, AuditEvent("search", "encounter", None, patient.id,
                                    patient.institution_id, detail={"results": len(encounters)}))
    db.commit()
    return encounters


@router.post("/encounters", status_code=201, response_model=model.EncounterPublic)
def record_encounter(body: model.EncounterCreate, principal: Recorder, db: DbSession,
                     response: Response) -> Encounter:
    patient = load_patient(db, principal, body.patient_id, RECORDERS)
    if body.practitioner_id is not None:
        load_practitioner(db, principal, body.practitioner_id, RECORDERS)
    if body.external_id:
        existing = _encounter_by_external_id(db, patient.institution_id, body.external_id)
        if existing is not None:
            return _replayed_encounter(db, principal, existing, patient, response)
    encounter = Encounter(institution_id=patient.institution_id, **body.model_dump())
    db.add(encounter)
    try:
        db.flush()
    except IntegrityError:
        # Two retries of the same external_id raced; the first one's encounter stands.
        db.rollback()
        existing = _encounter_by_external_id(db, patient.institution_id, body.external_id)
        if existing is None:
            raise
        return _replayed_encounter(db, principal, existing, patient, response)
    audit(db, principal, AuditEvent("create", "encounter", str(encounter.id), patient.id,
                                    patient.institution_id))
    db.commit()
    response.headers["Location"] = f"/api/v1/encounters/{encounter.id}"
    return encounter


def _encounter_by_external_id(db: Session, institution_id: int,
                              external_id: str | None) -> Encounter | None:
    if not external_id:
        return None
    return db.execute(select(Encounter).where(
        Encounter.institution_id == institution_id,
        Encounter.external_id == external_id)).scalar_one_or_none()


def _replayed_encounter(db: Session, principal: Principal, existing: Encounter,
                        patient: Patient, response: Response) -> Encounter:
    """A hospital system retrying after a timeout gets the encounter it already made; the same
    external_id for another patient is a mistake on its side, not a retry."""
    if existing.patient_id != patient.id:
        raise Problem(409, "ENCOUNTER_EXISTS",
                      N_("This external_id is already used for another patient's encounter."),
                      extra={"external_id": existing.external_id})
    audit(db, principal, AuditEvent("read", "encounter", str(existing.id), patient.id,
                                    patient.institution_id, detail={"replay": True}))
    db.commit()
    response.status_code = 200
    response.headers["Location"] = f"/api/v1/encounters/{existing.id}"
    return existing


def _load_encounter(db: Session, principal: Principal, encounter_id: int,
                    roles: tuple[Role, ...]) -> Encounter:
    encounter = db.get(Encounter, encounter_id)
    if encounter is None or not principal.can_act_for(encounter.institution_id, *roles):
        raise not_found("encounter")
    return encounter


@router.get("/encounters/{encounter_id}", response_model=model.EncounterPublic)
def read_encounter(encounter_id: PathId, principal: Reader, db: DbSession) -> Encounter:
    encounter = _load_encounter(db, principal, encounter_id, READERS)
    audit(db, principal, AuditEvent("read", "encounter", str(encounter.id), encounter.patient_id,
                                    encounter.institution_id))
    db.commit()
    return encounter


@router.patch("/encounters/{encounter_id}", response_model=model.EncounterPublic)
def update_encounter(encounter_id: PathId, body: model.EncounterUpdate, principal: Recorder,
                     db: DbSession) -> Encounter:
    encounter = _load_encounter(db, principal, encounter_id, RECORDERS)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("ended_at") and changes["ended_at"] < encounter.started_at:
        raise Problem(422, "VALIDATION_FAILED", N_("Some fields are not valid."), errors=[
            FieldError("ended_at", "VALUE_ERROR", N_("ended_at is before started_at."))])
    changed = _apply(encounter, changes)
    audit(db, principal, AuditEvent("update", "encounter", str(encounter.id),
                                    encounter.patient_id, encounter.institution_id,
                                    detail={"fields": changed}))
    db.commit()
    return encounter


# ----------------------------------------------------------------------------------- consents


@router.get("/patients/{patient_id}/consents", response_model=list[model.ConsentPublic])
def list_consents(patient_id: PathId, principal: Reader, db: DbSession) -> list[Consent]:
    patient = load_patient(db, principal, patient_id)
    consents = list(db.execute(select(Consent).where(Consent.patient_id == patient.id)
                               .order_by(Consent.granted_at)).scalars())
    audit(db, principal, AuditEvent("read", "consent", None, patient.id, patient.institution_id))
    db.commit()
    return consents


@router.post("/patients/{patient_id}/consents", status_code=201,
             response_model=model.ConsentPublic)
def record_consent(patient_id: PathId, body: model.ConsentCreate, principal: Recorder,
                   db: DbSession) -> Consent:
    patient = load_patient(db, principal, patient_id, RECORDERS)
    consent = Consent(institution_id=patient.institution_id, patient_id=patient.id,
                      kind=body.kind, text_version=body.text_version, language=body.language,
                      granted_at=body.granted_at or utcnow(), detail=body.detail,
                      recorded_by_user_id=principal.user_id)
    db.add(consent)
    db.flush()
    audit(db, principal, AuditEvent("create", "consent", str(consent.id), patient.id,
                                    patient.institution_id, detail={"kind": body.kind}))
    db.commit()
    return consent


@router.post("/consents/{consent_id}/withdraw", response_model=model.ConsentPublic)
def withdraw_consent(consent_id: PathId, principal: Recorder, db: DbSession) -> Consent:
    consent = db.get(Consent, consent_id)
    if consent is None or not principal.can_act_for(consent.institution_id, *RECORDERS):
        raise not_found("consent")
    if consent.withdrawn_at is None:
        consent.withdrawn_at = utcnow()
        audit(db, principal, AuditEvent("withdraw", "consent", str(consent.id),
                                        consent.patient_id, consent.institution_id))
        db.commit()
    return consent
