"""Staff pages for the institution's patients: find a patient, see the record, invite them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from jaejin.accounts.service import issue_invitation
from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEvent
from jaejin.core.authn import AppSettings, DbSession, Principal, audit, requires
from jaejin.core.errors import Problem
from jaejin.core.i18n import N_, normalise_language
from jaejin.directory.api import PathId, audit_search, load_patient
from jaejin.directory.store import Consent, Encounter, Institution, Patient
from jaejin.web import navigation
from jaejin.web.templating import render

router = APIRouter(include_in_schema=False)

STAFF = (Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN)
Staff = Annotated[Principal, Depends(requires(*STAFF))]

navigation.register("/patients", N_("Patients"),
                    N_("Find a patient, see their history and invite them to Jaejin."),
                    set(STAFF), order=20)


@router.get("/patients", response_class=HTMLResponse)
def patient_list(request: Request, principal: Staff, db: DbSession,
                 q: Annotated[str, Query(max_length=100)] = "") -> Response:
    scope = principal.institutions_where(*STAFF)
    query = select(Patient).where(Patient.institution_id.in_(scope))
    if q:
        query = query.where(
            (Patient.mrn == q)
            | (Patient.family_name_latin + " " + Patient.given_name_latin).ilike(f"%{q}%")
            | (Patient.family_name_native + Patient.given_name_native).like(f"%{q}%")
        )
    patients = list(db.execute(query.order_by(Patient.family_name_latin).limit(200)).scalars())
    institutions = {i.id: i for i in db.execute(
        select(Institution).where(Institution.id.in_(scope))).scalars()}
    audit_search(db, principal, patients, scope,
                 {"query": bool(q), "results": len(patients)})
    db.commit()
    return render(request, "directory/patients.html", principal, patients=patients, q=q,
                  institutions=institutions)


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
def patient_detail(request: Request, patient_id: PathId, principal: Staff,
                   db: DbSession) -> Response:
    patient = load_patient(db, principal, patient_id, STAFF)
    encounters = list(db.execute(select(Encounter).where(Encounter.patient_id == patient.id)
                                 .order_by(Encounter.started_at.desc())).scalars())
    consents = list(db.execute(select(Consent).where(Consent.patient_id == patient.id)
                               .order_by(Consent.granted_at.desc())).scalars())
    audit(db, principal, AuditEvent("read", "patient", str(patient.id), patient.id,
                                    patient.institution_id))
    db.commit()
    return render(request, "directory/patient.html", principal, patient=patient,
                  encounters=encounters, consents=consents,
                  institution=db.get(Institution, patient.institution_id))


@router.post("/patients/{patient_id}/invitation", response_class=HTMLResponse)
def patient_invitation(request: Request, patient_id: PathId, settings: AppSettings,
                       principal: Annotated[Principal, Depends(requires(
                           Role.COORDINATOR, Role.INSTITUTION_ADMIN, Role.CLINICIAN))],
                       db: DbSession,
                       language: Annotated[str | None, Form(max_length=16)] = None) -> Response:
    patient = load_patient(db, principal, patient_id, STAFF)
    if patient.user_id is not None:
        raise Problem(409, "ALREADY_REGISTERED",
                      N_("This patient already has an account. Sign in instead."))
    chosen = normalise_language(language) if language else patient.preferred_language
    if chosen is None:
        raise Problem(422, "UNKNOWN_LANGUAGE", N_("Unknown language: {language}."),
                      params={"language": language})
    issued = issue_invitation(db, settings, patient, chosen, principal.audit_actor,
                              principal.user_id)
    db.commit()
    institution = db.get(Institution, patient.institution_id)
    return render(request, "directory/invitation_issued.html", principal, patient=patient,
                  link=f"{settings.public_base_url}/invitation?token={issued.token}",
                  code=issued.code, expires_at=issued.invitation.expires_at,
                  institution=institution)
