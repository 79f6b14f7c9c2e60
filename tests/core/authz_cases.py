"""Authorisation cases of the platform core: accounts pages, OAuth, the directory API and pages,
and the audit page. Format: tests/authz.py and tests/test_authorization_matrix.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp

from jaejin.accounts.service import issue_invitation
from jaejin.core.accounts import Role
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.directory.store import Consent, Encounter, LocalPhysician
from tests.authz import (
    ANONYMOUS,
    EVERYONE,
    SIGNED_IN,
    SIGNED_IN_PEOPLE,
    Caller,
    Case,
    RouteCase,
    World,
)
from tests.support import PASSWORD, make_patient

READERS = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN,
                     Role.SYSTEM_CLIENT})
REGISTRARS = frozenset({Role.COORDINATOR, Role.INSTITUTION_ADMIN, Role.SYSTEM_CLIENT})
RECORDERS = READERS
STAFF = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN})
AUDITORS = frozenset({Role.AUDITOR, Role.INSTITUTION_ADMIN})
AUDIT_MARKER = "matrix-audit-marker-of-a"


#: In-person visits each institution had in the last 30 days, like any working clinic: other
#: capabilities' cases book and hold video visits, and that must not push an institution over
#: the telemedicine share cap in whatever order the cases run (or are split between workers).
IN_PERSON_HISTORY = 40


def setup(world: World) -> None:
    """Records of institution A the cases point at, beyond those of tests.support.Actors, and a
    month of in-person visits at both institutions."""
    actors = world.actors
    now = datetime.now(UTC)
    with world.session() as db:
        for key, institution in (("a", actors.a), ("b", actors.b)):
            db.add_all(Encounter(institution_id=institution.id,
                                 patient_id=actors.patients[key].id, mode="in_person",
                                 kind="visit", started_at=now - timedelta(days=29, hours=-day * 17),
                                 conditions=["I10"]) for day in range(IN_PERSON_HISTORY))
        uninvited = make_patient(db, actors.a, "MRN-A-UNINVITED")
        physician = LocalPhysician(institution_id=actors.a.id,
                                   patient_id=actors.patients["a"].id, name="Dr Marker of A",
                                   clinic="Clinic of A", country="US", languages=["en"])
        consent = Consent(institution_id=actors.a.id, patient_id=actors.patients["a"].id,
                          kind="pipa_sensitive", text_version="1", language="ko",
                          granted_at=datetime.now(UTC))
        db.add_all([physician, consent])
        db.flush()
        encounter = db.query(Encounter).filter_by(patient_id=actors.patients["a"].id).order_by(
            Encounter.started_at).first()
        assert encounter is not None
        record(db, AuditActor("user", "0", AUDIT_MARKER),
               AuditEvent("read", "patient", str(actors.patients["a"].id),
                          actors.patients["a"].id, actors.a.id))
        world.extra["core"] = {"uninvited": uninvited.id, "physician": physician.id,
                               "consent": consent.id, "encounter": encounter.id}


def _ids(world: World) -> dict[str, int]:
    core: dict[str, int] = world.extra["core"]
    return core


def patient_a(world: World) -> dict[str, Any]:
    return {"patient_id": world.actors.patients["a"].id}


def a_markers(world: World) -> list[str]:
    return ["MRN-A-1", "MRN-A-UNINVITED", "LIC-A-1", "Dr Marker of A"]


def _an_hour_ago() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat()


# ------------------------------------------------------------------------------------ bodies


def new_patient(world: World, caller: Caller) -> dict[str, Any]:
    return {"mrn": world.unique("MRN-MATRIX"), "institution_id": world.actors.a.id,
            "family_name_native": "김", "given_name_native": "민수",
            "family_name_latin": "Kim", "given_name_latin": "Min-su",
            "birth_date": "1980-01-02", "sex": "male", "nationality": "KR",
            "residence_country": "KR", "current_country": "KR", "languages": ["ko"]}


def new_practitioner(world: World, caller: Caller) -> dict[str, Any]:
    return {"licence_number": world.unique("MD-MATRIX"), "name_native": "의사",
            "name_latin": "Doctor"}


def new_encounter(world: World, caller: Caller) -> dict[str, Any]:
    # In person: telemedicine encounters would count against A's telemedicine share, which
    # other capabilities' cases in the same world depend on.
    return {"patient_id": world.actors.patients["a"].id, "mode": "in_person",
            "started_at": _an_hour_ago()}


def new_consent(world: World, caller: Caller) -> dict[str, Any]:
    return {"kind": "telemedicine_limits", "text_version": "2026-01", "language": "ko"}


def sign_in_form(world: World, caller: Caller) -> dict[str, str]:
    """Whoever posts the form, it carries a patient's good credentials."""
    return {"email": world.actors.person("a", Role.PATIENT).email, "password": PASSWORD,
            "next": "/"}


def two_factor_form(world: World, caller: Caller) -> dict[str, str]:
    secret = caller.person.totp_secret if caller.person else None
    return {"code": pyotp.TOTP(secret).now() if secret else "000000", "next": "/"}


def setup_form(world: World, caller: Caller) -> dict[str, str]:
    """Read the key from the setup page as the person would, and answer with its code."""
    page = caller.client.get("/account/two-factor/setup", follow_redirects=False)
    found = re.search(r'<code id="totp-secret"[^>]*>([A-Z2-7]+)</code>', page.text)
    return {"code": pyotp.TOTP(found.group(1)).now() if found else "000000", "next": "/"}


def any_csrf_form(world: World, caller: Caller) -> dict[str, str]:
    return {"csrf_token": caller.session_csrf or caller.login_csrf or "none"}


def invitation_form(world: World, caller: Caller) -> dict[str, str]:
    """A new patient of A with a new invitation, accepted through the form."""
    with world.session() as db:
        patient = make_patient(db, world.actors.a, world.unique("MRN-INVITED"))
        issued = issue_invitation(db, world.settings, patient, "en", AuditActor.system("matrix"))
        token = issued.token
    return {"token": token, "email": f"{world.unique('invited')}@matrix.example",
            "password": PASSWORD, "language": "en", "time_zone": "Asia/Seoul"}


def basic_auth_of_a(world: World, caller: Caller) -> dict[str, str]:
    import base64

    client_id, secret = world.actors.clients["a"]
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


# ------------------------------------------------------------------------------------- cases

CASES: list[Case] = [
    # Pages everyone meets first: public by design, and showing no patient data.
    RouteCase("GET", "/", EVERYONE, public=True, markers=a_markers),
    RouteCase("GET", "/login", EVERYONE, public=True, markers=a_markers),
    RouteCase("POST", "/login", EVERYONE, form=sign_in_form, form_csrf="login",
              throwaway_caller=True, public=True, markers=a_markers),
    RouteCase("POST", "/logout", EVERYONE, form=any_csrf_form, throwaway_caller=True,
              public=True, markers=a_markers),
    RouteCase("POST", "/language", EVERYONE,
              form=lambda world, caller: {"language": "en", "next": "/"},
              throwaway_caller=True, public=True, markers=a_markers),
    RouteCase("GET", "/invitation", EVERYONE, public=True, markers=a_markers),
    RouteCase("POST", "/invitation", EVERYONE, form=invitation_form, form_csrf="login",
              throwaway_caller=True, public=True, markers=a_markers),
    RouteCase("POST", "/oauth2/token", EVERYONE,
              form=lambda world, caller: {"grant_type": "client_credentials"},
              form_csrf="none", headers=basic_auth_of_a, public=True, markers=a_markers),
    # Two-factor pages: for people signed in; only those with a second factor can pass it.
    RouteCase("GET", "/login/two-factor", SIGNED_IN_PEOPLE, markers=a_markers),
    RouteCase("POST", "/login/two-factor",
              frozenset({Role.CLINICIAN, Role.INSTITUTION_ADMIN}), form=two_factor_form,
              throwaway_caller=True, markers=a_markers),
    RouteCase("GET", "/account/two-factor/setup", SIGNED_IN_PEOPLE, markers=a_markers),
    RouteCase("POST", "/account/two-factor/setup", SIGNED_IN_PEOPLE, form=setup_form,
              throwaway_caller=True, markers=a_markers),
    # The directory API.
    RouteCase("GET", "/api/v1/institutions", SIGNED_IN,
              markers=lambda world: ["INST-A"]),
    RouteCase("GET", "/api/v1/practitioners", READERS, markers=lambda world: ["LIC-A-1"]),
    RouteCase("POST", "/api/v1/practitioners", REGISTRARS, json=new_practitioner,
              query=lambda world: {"institution_id": world.actors.a.id},
              own_institution_check=True),
    RouteCase("GET", "/api/v1/practitioners/{practitioner_id}", READERS,
              path_params=lambda world: {"practitioner_id": world.actors.practitioners["a"].id},
              own_institution_check=True, markers=lambda world: ["LIC-A-1"]),
    RouteCase("PATCH", "/api/v1/practitioners/{practitioner_id}", REGISTRARS,
              path_params=lambda world: {"practitioner_id": world.actors.practitioners["a"].id},
              json=lambda world, caller: {"specialty": "internal_medicine"},
              own_institution_check=True, markers=lambda world: ["LIC-A-1"]),
    RouteCase("GET", "/api/v1/patients", READERS,
              query=lambda world: {"mrn": "MRN-A-1", "institution_id": world.actors.a.id},
              markers=a_markers),
    RouteCase("POST", "/api/v1/patients", REGISTRARS, json=new_patient,
              own_institution_check=True),
    RouteCase("GET", "/api/v1/patients/{patient_id}", READERS, path_params=patient_a,
              own_institution_check=True, markers=a_markers),
    RouteCase("PATCH", "/api/v1/patients/{patient_id}", REGISTRARS, path_params=patient_a,
              json=lambda world, caller: {"time_zone": "Asia/Seoul"},
              own_institution_check=True, markers=a_markers),
    RouteCase("POST", "/api/v1/patients/{patient_id}/invitations", REGISTRARS,
              path_params=lambda world: {"patient_id": _ids(world)["uninvited"]},
              own_institution_check=True, markers=a_markers),
    RouteCase("GET", "/api/v1/patients/{patient_id}/local-physicians", READERS,
              path_params=patient_a, own_institution_check=True, markers=a_markers),
    RouteCase("POST", "/api/v1/patients/{patient_id}/local-physicians", REGISTRARS,
              path_params=patient_a,
              json=lambda world, caller: {"name": "Dr New", "clinic": "New", "country": "JP"},
              own_institution_check=True, markers=a_markers),
    RouteCase("PATCH", "/api/v1/local-physicians/{physician_id}", REGISTRARS,
              path_params=lambda world: {"physician_id": _ids(world)["physician"]},
              json=lambda world, caller: {"clinic": "Clinic of A"},
              own_institution_check=True, markers=a_markers),
    RouteCase("GET", "/api/v1/encounters", READERS, query=patient_a,
              own_institution_check=True, markers=a_markers),
    RouteCase("POST", "/api/v1/encounters", RECORDERS, json=new_encounter,
              own_institution_check=True, markers=a_markers),
    RouteCase("GET", "/api/v1/encounters/{encounter_id}", READERS,
              path_params=lambda world: {"encounter_id": _ids(world)["encounter"]},
              own_institution_check=True),
    RouteCase("PATCH", "/api/v1/encounters/{encounter_id}", RECORDERS,
              path_params=lambda world: {"encounter_id": _ids(world)["encounter"]},
              json=lambda world, caller: {"summary": "Reviewed."},
              own_institution_check=True),
    RouteCase("GET", "/api/v1/patients/{patient_id}/consents", READERS, path_params=patient_a,
              own_institution_check=True),
    RouteCase("POST", "/api/v1/patients/{patient_id}/consents", RECORDERS,
              path_params=patient_a, json=new_consent, own_institution_check=True),
    RouteCase("POST", "/api/v1/consents/{consent_id}/withdraw", RECORDERS,
              path_params=lambda world: {"consent_id": _ids(world)["consent"]},
              own_institution_check=True),
    # Staff pages of the directory.
    RouteCase("GET", "/patients", STAFF, query=lambda world: {"q": "Hong"},
              markers=a_markers),
    RouteCase("GET", "/patients/{patient_id}", STAFF, path_params=patient_a,
              own_institution_check=True, markers=a_markers),
    RouteCase("POST", "/patients/{patient_id}/invitation", STAFF,
              path_params=lambda world: {"patient_id": _ids(world)["uninvited"]},
              form=lambda world, caller: {}, own_institution_check=True, markers=a_markers),
    # The auditors' page.
    RouteCase("GET", "/audit", AUDITORS, markers=lambda world: [AUDIT_MARKER]),
]

assert ANONYMOUS not in READERS | REGISTRARS | STAFF | AUDITORS
