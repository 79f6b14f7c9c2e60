"""Builders for tests: institutions, people in every role, and signing them in for real."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from jaejin.accounts.service import create_client, create_user
from jaejin.core.accounts import Role, User
from jaejin.core.config import Settings
from jaejin.core.security import new_totp_secret
from jaejin.directory.store import (
    Encounter,
    Institution,
    Patient,
    Practitioner,
    PractitionerRole,
)
from jaejin.scheduling import place_watch

PASSWORD = "correct-horse-battery"

STAFF_ROLES = (Role.CLINICIAN, Role.COORDINATOR, Role.INTERPRETER, Role.INSTITUTION_ADMIN,
               Role.AUDITOR)


def make_institution(db: Session, code: str, kind: str = "clinic",
                     region: str = "KR-11") -> Institution:
    institution = Institution(code=code, name_ko=f"{code} 의원", name_en=f"{code} Clinic",
                              kind=kind, region=region, designations=[])
    db.add(institution)
    db.flush()
    return institution


def make_patient(db: Session, institution: Institution, mrn: str, **overrides: Any) -> Patient:
    values: dict[str, Any] = {
        "family_name_native": "홍", "given_name_native": "길동", "family_name_latin": "Hong",
        "given_name_latin": "Gil-dong", "birth_date": date(1960, 5, 1), "sex": "male",
        "nationality": "KR", "residence_country": "KR", "residence_region": "KR-11",
        "current_country": "KR", "languages": ["ko"], "preferred_language": "ko",
        "time_zone": "Asia/Seoul", "nhi_covered": True, "flags": [],
    }
    values.update(overrides)
    patient = Patient(institution_id=institution.id, mrn=mrn, **values)
    db.add(patient)
    db.flush()
    return patient


@dataclass
class Person:
    user: User
    role: Role
    institution: Institution
    totp_secret: str | None = None

    @property
    def email(self) -> str:
        return self.user.email


@dataclass
class Actors:
    """Institution A and B, a person in each role at each, a patient at each."""

    a: Institution
    b: Institution
    people: dict[tuple[str, Role], Person] = field(default_factory=dict)
    patients: dict[str, Patient] = field(default_factory=dict)
    practitioners: dict[str, Practitioner] = field(default_factory=dict)
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)

    def person(self, institution: str, role: Role) -> Person:
        return self.people[(institution, role)]

    @classmethod
    def create(cls, db: Session, settings: Settings) -> Actors:
        a = make_institution(db, "INST-A")
        b = make_institution(db, "INST-B", kind="tertiary_hospital", region="KR-26")
        actors = cls(a=a, b=b)
        for key, institution in (("a", a), ("b", b)):
            for role in STAFF_ROLES:
                user = create_user(db, email=f"{role.value}.{key}@test.example",
                                   password=PASSWORD, display_name=f"{role.value} {key}",
                                   language="en", memberships=[(institution.id, role)])
                secret = None
                if user.needs_two_factor:
                    secret = new_totp_secret()
                    user.totp_secret, user.totp_enabled = secret, True
                actors.people[(key, role)] = Person(user, role, institution, secret)
                if role == Role.CLINICIAN:
                    practitioner = Practitioner(
                        user_id=user.id, licence_number=f"LIC-{key.upper()}-1",
                        profession="physician", specialty="internal_medicine",
                        name_native=f"의사 {key}", name_latin=f"Doctor {key}",
                        languages=["ko", "en"])
                    practitioner.roles.append(PractitionerRole(institution_id=institution.id))
                    db.add(practitioner)
                    actors.practitioners[key] = practitioner
            patient = make_patient(db, institution, f"MRN-{key.upper()}-1")
            patient_user = create_user(db, email=f"patient.{key}@test.example",
                                       password=PASSWORD, display_name=f"patient {key}",
                                       language="en",
                                       memberships=[(institution.id, Role.PATIENT)])
            patient.user_id = patient_user.id
            actors.people[(key, Role.PATIENT)] = Person(patient_user, Role.PATIENT, institution)
            actors.patients[key] = patient
            db.add(Encounter(institution_id=institution.id, patient_id=patient.id,
                             mode="in_person", kind="visit",
                             started_at=datetime.now(UTC) - timedelta(days=20),
                             conditions=["I10"]))
            client, secret = create_client(db, institution, f"his-{key}",
                                           ["directory.read", "directory.write",
                                            "policy.evaluate", "scheduling.read",
                                            "scheduling.write", "monitoring.read",
                                            "monitoring.write"])
            actors.clients[key] = (client.client_id, secret)
        db.commit()
        return actors


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in(client: TestClient, person: Person, password: str = PASSWORD) -> str:
    """Sign in through the real pages (and two-factor); returns the session's CSRF token."""
    client.cookies.clear()
    form = client.get("/login")
    response = client.post("/login", data={"email": person.email, "password": password,
                                           "csrf_token": csrf_from(form.text), "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    if person.totp_secret:
        page = client.get("/login/two-factor")
        code = pyotp.TOTP(person.totp_secret).now()
        response = client.post("/login/two-factor",
                               data={"code": code, "csrf_token": csrf_from(page.text)},
                               follow_redirects=False)
        assert response.status_code == 303, response.text
    home = client.get("/")
    return csrf_from(home.text)


def client_token(client: TestClient, credentials: tuple[str, str], scope: str | None = None) -> str:
    basic = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    data = {"grant_type": "client_credentials"}
    if scope:
        data["scope"] = scope
    response = client.post("/oauth2/token", data=data,
                           headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json"), (
        response.status_code, response.text[:500])
    body: dict[str, Any] = json.loads(response.text)
    return body


#: Statements that only delimit transactions (left out of statement counts).
TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|SAVEPOINT|RELEASE|ROLLBACK|COMMIT)\b", re.I)


@contextmanager
def statements_sent(engine: Engine, *, this_thread_only: bool = False,
                    transaction_control: bool = True) -> Iterator[list[str]]:
    """The SQL statements sent on `engine` while the block runs, whitespace collapsed.

    By this thread only, or by every thread (a request's worker threads) but the place
    watch's: it re-reads searched places on the shared engine whenever it wakes
    (`jaejin.scheduling.place_watch`), and counting its reads made counts fail now and then.
    """
    seen: list[str] = []
    counted_thread = threading.get_ident()

    def note(_connection, _cursor, statement, _parameters, _context, _many):  # type: ignore[no-untyped-def]
        if this_thread_only and threading.get_ident() != counted_thread:
            return
        if threading.current_thread().name == place_watch.THREAD_NAME:
            return
        if transaction_control or not TRANSACTION_CONTROL.match(statement):
            seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)
