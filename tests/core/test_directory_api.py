"""The integration API hospital systems use: practitioners, patients, local physicians,
encounters and consents; scoped to the caller's institution, audited, and strict about input."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import ApiClient, Membership, Role
from jaejin.core.audit import AuditEntry
from jaejin.directory.model import EncounterCreate, PatientUpdate
from jaejin.directory.store import (
    Consent,
    Encounter,
    LocalPhysician,
    Patient,
    Practitioner,
    PractitionerRole,
)
from tests.core.helpers import (
    HANGUL,
    KOREAN_CORE_CATALOGUE,
    alternate_app,
    audit_entries,
    client_for,
    count_rows,
    empty_database,
    fresh,
)
from tests.support import Actors, bearer, client_token, problem, sign_in

DIRECTORY_TABLES = (Patient, Practitioner, PractitionerRole, LocalPhysician, Encounter, Consent,
                    AuditEntry)


def new_patient(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mrn": "HUH-300122", "family_name_native": "Miller", "given_name_native": "John",
        "family_name_latin": "Miller", "given_name_latin": "John", "birth_date": "1961-03-27",
        "sex": "male", "nationality": "US", "residence_country": "US", "current_country": "US",
        "languages": ["en"], "preferred_language": "en", "time_zone": "America/Los_Angeles",
        "email": "john.miller@example.com", "phone": "+14155550123",
    }
    return body | overrides


def an_hour_ago() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat()


class Api:
    """A hospital system of one institution calling the API with its bearer token."""

    def __init__(self, client, token: str, client_row_id: int) -> None:
        self.client, self.token, self.actor_id = client, token, str(client_row_id)

    def __call__(self, method: str, path: str, **kwargs: Any):
        headers = bearer(self.token) | kwargs.pop("headers", {})
        return self.client.request(method, path, headers=headers, **kwargs)


def api_for(client, db, actors, institution: str) -> Api:
    client_id = actors.clients[institution][0]
    with fresh(client.app.state.engine) as session:
        row_id = session.execute(select(ApiClient.id).where(ApiClient.client_id == client_id)
                                 ).scalar_one()
    return Api(client, client_token(client, actors.clients[institution]), row_id)


@pytest.fixture
def api(client, db, actors) -> Api:
    return api_for(client, db, actors, "a")


@pytest.fixture
def other_api(client, db, actors) -> Api:
    return api_for(client, db, actors, "b")


def newest_audit(engine) -> AuditEntry:
    return audit_entries(engine)[-1]


# ------------------------------------------------------------------------------------ patients


def test_a_hospital_registers_reads_updates_and_finds_a_patient_by_mrn(api, actors):
    created = api("POST", "/api/v1/patients", json=new_patient())
    assert created.status_code == 201, created.text
    patient = created.json()
    assert created.headers["location"] == f"/api/v1/patients/{patient['id']}"
    assert (patient["institution_id"], patient["mrn"], patient["birth_date"]) == (
        actors.a.id, "HUH-300122", "1961-03-27")
    assert patient["has_account"] is False

    read = api("GET", f"/api/v1/patients/{patient['id']}")
    assert read.json() == patient

    updated = api("PATCH", f"/api/v1/patients/{patient['id']}",
                  json={"current_country": "kr", "time_zone": "Asia/Seoul",
                        "flags": ["rare_disease"]})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["current_country"], updated.json()["time_zone"],
            updated.json()["flags"]) == ("KR", "Asia/Seoul", ["rare_disease"])
    assert updated.json()["residence_country"] == "US"  # untouched fields stay

    found = api("GET", "/api/v1/patients", params={"mrn": "HUH-300122"})
    assert [p["id"] for p in found.json()] == [patient["id"]]
    assert api("GET", "/api/v1/patients", params={"mrn": "NOPE"}).json() == []
    by_name = api("GET", "/api/v1/patients", params={"name": "miller"})
    assert [p["id"] for p in by_name.json()] == [patient["id"]]


def test_a_patient_whose_language_needs_a_long_tag_keeps_it_whole(api):
    created = api("POST", "/api/v1/patients", json=new_patient(
        mrn="HK-1", nationality="HK", residence_country="HK", current_country="HK",
        languages=["yue-Hant-HK", "en"], preferred_language="yue-Hant-HK",
        time_zone="Asia/Hong_Kong"))
    assert created.status_code == 201, created.text
    read = api("GET", f"/api/v1/patients/{created.json()['id']}").json()
    assert (read["preferred_language"], read["languages"]) == ("yue-Hant-HK",
                                                               ["yue-Hant-HK", "en"])


def test_a_korean_resident_is_registered_with_region_and_district(api):
    created = api("POST", "/api/v1/patients", json=new_patient(
        mrn="BIM-1", nationality="KR", residence_country="KR", residence_region="kr-26",
        residence_district="해운대구", current_country="KR", nhi_covered=True,
        flags=["long_term_care"], long_term_care_grade=4))
    assert created.status_code == 201, created.text
    assert created.json()["residence_region"] == "KR-26"


def test_a_duplicate_mrn_at_the_same_institution_is_refused_with_409(api, client):
    assert api("POST", "/api/v1/patients", json=new_patient()).status_code == 201
    before = count_rows(client.app.state.engine, *DIRECTORY_TABLES)
    again = api("POST", "/api/v1/patients", json=new_patient(given_name_latin="Jon"))
    assert again.status_code == 409
    assert problem(again)["code"] == "MRN_TAKEN"
    assert count_rows(client.app.state.engine, *DIRECTORY_TABLES) == before


def test_the_same_mrn_may_exist_at_another_institution(api, other_api):
    assert api("POST", "/api/v1/patients", json=new_patient()).status_code == 201
    assert other_api("POST", "/api/v1/patients", json=new_patient()).status_code == 201


def test_another_institutions_patient_is_reported_as_absent(api, actors, client):
    other = actors.patients["b"]
    before = count_rows(client.app.state.engine, *DIRECTORY_TABLES[:-1])
    for method, path, body in [
        ("GET", f"/api/v1/patients/{other.id}", None),
        ("PATCH", f"/api/v1/patients/{other.id}", {"time_zone": "UTC"}),
        ("GET", f"/api/v1/patients/{other.id}/local-physicians", None),
        ("POST", f"/api/v1/patients/{other.id}/local-physicians",
         {"name": "Dr X", "clinic": "X", "country": "US"}),
        ("GET", f"/api/v1/patients/{other.id}/consents", None),
        ("POST", f"/api/v1/patients/{other.id}/consents",
         {"kind": "pipa_sensitive", "text_version": "1", "language": "ko"}),
        ("GET", "/api/v1/encounters?patient_id=" + str(other.id), None),
        ("POST", "/api/v1/encounters", {"patient_id": other.id, "mode": "video",
                                        "started_at": an_hour_ago()}),
    ]:
        response = api(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert problem(response)["code"] == "NOT_FOUND"
        assert "MRN-B-1" not in response.text and "Hong" not in response.text
    missing = api("GET", "/api/v1/patients/987654")
    assert problem(missing)["detail"] == \
        problem(api("GET", f"/api/v1/patients/{other.id}"))["detail"]
    assert count_rows(client.app.state.engine, *DIRECTORY_TABLES[:-1]) == before


def test_searching_never_returns_another_institutions_patients(api, actors):
    assert api("GET", "/api/v1/patients", params={"mrn": "MRN-B-1"}).json() == []
    assert api("GET", "/api/v1/patients", params={"institution_id": actors.b.id}).json() == []
    assert [p["mrn"] for p in api("GET", "/api/v1/patients").json()] == ["MRN-A-1"]
    assert api("GET", "/api/v1/patients", params={"name": "Hong"}).json()[0]["mrn"] == "MRN-A-1"


def test_a_staff_member_of_two_institutions_names_the_one_a_new_patient_belongs_to(
        client, db, actors):
    coordinator = actors.person("a", Role.COORDINATOR)
    db.add(Membership(user_id=coordinator.user.id, institution_id=actors.b.id,
                      role="coordinator"))
    db.commit()
    csrf = sign_in(client, coordinator)
    headers = {"X-CSRF-Token": csrf}
    unclear = client.post("/api/v1/patients", json=new_patient(), headers=headers)
    assert unclear.status_code == 422
    assert problem(unclear)["code"] == "INSTITUTION_REQUIRED"
    created = client.post("/api/v1/patients", json=new_patient(institution_id=actors.b.id),
                          headers=headers)
    assert created.status_code == 201
    assert created.json()["institution_id"] == actors.b.id
    both = client.get("/api/v1/patients").json()
    assert {p["mrn"] for p in both} == {"MRN-A-1", "MRN-B-1", "HUH-300122"}


def test_nobody_registers_a_patient_at_an_institution_they_do_not_belong_to(api, actors,
                                                                           client):
    before = count_rows(client.app.state.engine, Patient)
    response = api("POST", "/api/v1/patients", json=new_patient(institution_id=actors.b.id))
    assert response.status_code == 404
    assert count_rows(client.app.state.engine, Patient) == before


# ------------------------------------------------------------------------------- practitioners


def test_a_hospital_registers_reads_updates_and_finds_a_practitioner(api, actors):
    created = api("POST", "/api/v1/practitioners", json={
        "licence_number": "MD-104233", "specialty": "dermatology", "name_native": "김서연",
        "name_latin": "Kim Seo-yeon", "languages": ["ko", "en", "ja"], "department": "피부과"})
    assert created.status_code == 201, created.text
    practitioner = created.json()
    assert practitioner["institution_ids"] == [actors.a.id]
    assert api("GET", f"/api/v1/practitioners/{practitioner['id']}").json() == practitioner
    updated = api("PATCH", f"/api/v1/practitioners/{practitioner['id']}",
                  json={"languages": ["ko", "en"], "department": "피부미용"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["languages"] == ["ko", "en"]
    found = api("GET", "/api/v1/practitioners", params={"licence_number": "MD-104233"})
    assert [p["id"] for p in found.json()] == [practitioner["id"]]
    everyone = api("GET", "/api/v1/practitioners").json()
    assert {p["licence_number"] for p in everyone} == {"LIC-A-1", "MD-104233"}


def test_a_practitioner_working_at_two_institutions_is_one_record(api, other_api, actors):
    body = {"licence_number": "MD-555", "name_native": "이민지", "name_latin": "Lee Min-ji"}
    first = api("POST", "/api/v1/practitioners", json=body).json()
    second = other_api("POST", "/api/v1/practitioners", json=body)
    assert second.status_code == 201
    assert second.json()["id"] == first["id"]
    assert second.json()["institution_ids"] == sorted([actors.a.id, actors.b.id])
    again = api("POST", "/api/v1/practitioners", json=body)
    assert again.status_code == 409
    assert problem(again)["code"] == "PRACTITIONER_EXISTS"


def test_another_institutions_practitioner_is_reported_as_absent(api, actors):
    other = actors.practitioners["b"]
    assert api("GET", f"/api/v1/practitioners/{other.id}").status_code == 404
    assert api("PATCH", f"/api/v1/practitioners/{other.id}",
               json={"name_latin": "Changed"}).status_code == 404
    assert api("GET", "/api/v1/practitioners",
               params={"licence_number": "LIC-B-1"}).json() == []


# ---------------------------------------------------------------------------- local physicians


def test_a_patients_local_physician_is_added_listed_and_updated(api, actors):
    patient = actors.patients["a"]
    created = api("POST", f"/api/v1/patients/{patient.id}/local-physicians", json={
        "name": "Dr. Sarah Goldberg", "clinic": "Midtown Dermatology", "country": "us",
        "email": "s.goldberg@example.com", "languages": ["en"]})
    assert created.status_code == 201, created.text
    physician = created.json()
    assert (physician["country"], physician["patient_id"]) == ("US", patient.id)
    listed = api("GET", f"/api/v1/patients/{patient.id}/local-physicians").json()
    assert listed == [physician]
    updated = api("PATCH", f"/api/v1/local-physicians/{physician['id']}",
                  json={"phone": "+12125550100"})
    assert updated.json()["phone"] == "+12125550100"


def test_another_institutions_local_physician_cannot_be_changed(api, other_api, actors):
    physician = api("POST", f"/api/v1/patients/{actors.patients['a'].id}/local-physicians",
                    json={"name": "Dr X", "clinic": "X", "country": "US"}).json()
    response = other_api("PATCH", f"/api/v1/local-physicians/{physician['id']}",
                         json={"name": "Dr Y"})
    assert response.status_code == 404
    assert api("GET", f"/api/v1/patients/{actors.patients['a'].id}/local-physicians"
               ).json()[0]["name"] == "Dr X"


# ---------------------------------------------------------------------------------- encounters


def test_a_hospital_records_reads_updates_and_lists_encounters(api, actors):
    patient, practitioner = actors.patients["a"], actors.practitioners["a"]
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    created = api("POST", "/api/v1/encounters", json={
        "patient_id": patient.id, "practitioner_id": practitioner.id, "mode": "in_person",
        "kind": "surgery", "started_at": started.astimezone(ZoneInfo("Asia/Seoul")).isoformat(),
        "conditions": ["c73", "E11.9"], "external_id": "HIS-1"})
    assert created.status_code == 201, created.text
    encounter = created.json()
    assert datetime.fromisoformat(encounter["started_at"]) == started
    assert encounter["conditions"] == ["C73", "E11.9"]
    assert api("GET", f"/api/v1/encounters/{encounter['id']}").json() == encounter
    ended = started + timedelta(minutes=45)
    updated = api("PATCH", f"/api/v1/encounters/{encounter['id']}",
                  json={"ended_at": ended.isoformat(), "summary": "Thyroidectomy."})
    assert updated.status_code == 200, updated.text
    assert datetime.fromisoformat(updated.json()["ended_at"]) == ended
    listed = api("GET", "/api/v1/encounters", params={"patient_id": patient.id}).json()
    assert [e["id"] for e in listed] == [encounter["id"], listed[1]["id"]]  # newest first
    assert listed[1]["conditions"] == ["I10"]  # the visit from the fixtures


def test_recording_an_encounter_again_with_its_external_id_returns_the_first(api, actors,
                                                                            client):
    body = {"patient_id": actors.patients["a"].id, "mode": "video",
            "started_at": an_hour_ago(), "external_id": "HIS-42"}
    first = api("POST", "/api/v1/encounters", json=body)
    assert first.status_code == 201
    before = count_rows(client.app.state.engine, Encounter)
    retry = api("POST", "/api/v1/encounters", json=body)
    assert retry.status_code == 200
    assert retry.json() == first.json()
    assert count_rows(client.app.state.engine, Encounter) == before


def test_an_external_id_already_used_for_another_patient_is_a_conflict(api, db, actors,
                                                                      client):
    from tests.support import make_patient

    second = make_patient(db, actors.a, "MRN-A-2")
    db.commit()
    body = {"patient_id": actors.patients["a"].id, "mode": "video",
            "started_at": an_hour_ago(), "external_id": "HIS-43"}
    assert api("POST", "/api/v1/encounters", json=body).status_code == 201
    before = count_rows(client.app.state.engine, Encounter)
    clash = api("POST", "/api/v1/encounters", json=body | {"patient_id": second.id})
    assert clash.status_code == 409
    assert problem(clash)["code"] == "ENCOUNTER_EXISTS"
    assert str(actors.patients["a"].id) not in problem(clash)["detail"]
    assert count_rows(client.app.state.engine, Encounter) == before


def test_an_encounter_with_another_institutions_practitioner_is_refused(api, actors, client):
    before = count_rows(client.app.state.engine, Encounter)
    response = api("POST", "/api/v1/encounters", json={
        "patient_id": actors.patients["a"].id, "practitioner_id": actors.practitioners["b"].id,
        "mode": "video", "started_at": an_hour_ago()})
    assert response.status_code == 404
    assert count_rows(client.app.state.engine, Encounter) == before


def test_another_institutions_encounter_is_reported_as_absent(api, other_api, actors):
    encounter = api("POST", "/api/v1/encounters", json={
        "patient_id": actors.patients["a"].id, "mode": "video",
        "started_at": an_hour_ago()}).json()
    assert other_api("GET", f"/api/v1/encounters/{encounter['id']}").status_code == 404
    assert other_api("PATCH", f"/api/v1/encounters/{encounter['id']}",
                     json={"summary": "x"}).status_code == 404


# ------------------------------------------------------------------------------------ consents


def test_a_consent_is_recorded_listed_and_withdrawn(api, actors):
    patient = actors.patients["a"]
    recorded = api("POST", f"/api/v1/patients/{patient.id}/consents", json={
        "kind": "cross_border_transfer", "text_version": "2026-01", "language": "en",
        "granted_at": "2026-01-05T09:00:00+09:00"})
    assert recorded.status_code == 201, recorded.text
    consent = recorded.json()
    assert consent["granted_at"].startswith("2026-01-05T00:00:00")
    assert consent["withdrawn_at"] is None
    assert api("GET", f"/api/v1/patients/{patient.id}/consents").json() == [consent]
    withdrawn = api("POST", f"/api/v1/consents/{consent['id']}/withdraw")
    assert withdrawn.status_code == 200
    assert withdrawn.json()["withdrawn_at"] is not None
    again = api("POST", f"/api/v1/consents/{consent['id']}/withdraw")
    assert again.json()["withdrawn_at"] == withdrawn.json()["withdrawn_at"]


def test_another_institution_cannot_withdraw_a_consent(api, other_api, actors):
    consent = api("POST", f"/api/v1/patients/{actors.patients['a'].id}/consents", json={
        "kind": "pipa_sensitive", "text_version": "1", "language": "ko"}).json()
    assert other_api("POST", f"/api/v1/consents/{consent['id']}/withdraw").status_code == 404
    assert api("GET", f"/api/v1/patients/{actors.patients['a'].id}/consents"
               ).json()[0]["withdrawn_at"] is None


# --------------------------------------------------------------------------------------- audit


def _audited_calls(actors) -> list[tuple[str, str, Any, str, str]]:
    patient = actors.patients["a"]
    return [
        ("GET", f"/api/v1/patients/{patient.id}", None, "read", "patient"),
        ("PATCH", f"/api/v1/patients/{patient.id}", {"time_zone": "Asia/Tokyo"}, "update",
         "patient"),
        ("GET", f"/api/v1/patients?mrn={patient.mrn}", None, "search", "patient"),
        ("POST", "/api/v1/patients", new_patient(), "create", "patient"),
        ("GET", f"/api/v1/patients/{patient.id}/local-physicians", None, "read",
         "local_physician"),
        ("POST", f"/api/v1/patients/{patient.id}/local-physicians",
         {"name": "Dr X", "clinic": "X", "country": "US"}, "create", "local_physician"),
        ("GET", f"/api/v1/encounters?patient_id={patient.id}", None, "search", "encounter"),
        ("POST", "/api/v1/encounters", {"patient_id": patient.id, "mode": "chat",
                                        "started_at": an_hour_ago()}, "create", "encounter"),
        ("GET", f"/api/v1/patients/{patient.id}/consents", None, "read", "consent"),
        ("POST", f"/api/v1/patients/{patient.id}/consents",
         {"kind": "pipa_sensitive", "text_version": "1", "language": "ko"}, "create",
         "consent"),
        ("POST", f"/api/v1/patients/{patient.id}/invitations", None, "create", "invitation"),
    ]


def test_every_read_and_change_of_patient_data_is_audited_with_who_whose_why_and_where(
        api, db, actors, client):
    db.get(Patient, actors.patients["a"].id).user_id = None  # so it can be invited
    db.commit()
    engine = client.app.state.engine
    for method, path, body, action, resource_type in _audited_calls(actors):
        before = len(audit_entries(engine))
        response = api(method, path, json=body, headers={"User-Agent": "his-gateway/2.1"})
        assert response.status_code < 300, (path, response.text)
        entries = audit_entries(engine)
        assert len(entries) == before + 1, path
        entry = entries[-1]
        created_id = response.json().get("id") if method == "POST" and isinstance(
            response.json(), dict) else None
        assert (entry.action, entry.resource_type) == (action, resource_type), path
        assert (entry.actor_type, entry.actor_id) == ("client", api.actor_id)
        assert entry.actor_label == "client:his-a"
        expected_patient = created_id if path == "/api/v1/patients" else actors.patients["a"].id
        assert entry.patient_id == expected_patient, path
        assert entry.institution_id == actors.a.id, path
        assert entry.purpose in {"treatment", "registration"}
        assert (entry.ip_address, entry.user_agent) == ("testclient", "his-gateway/2.1")
        assert entry.outcome == "success"


def test_a_refused_change_leaves_no_audit_entry_of_a_change(api, client):
    before = len(audit_entries(client.app.state.engine))
    assert api("POST", "/api/v1/patients", json=new_patient(birth_date="2999-01-01")
               ).status_code == 422
    assert len(audit_entries(client.app.state.engine)) == before


def test_a_session_users_reads_are_audited_as_that_user(client, actors):
    person = actors.person("a", Role.CLINICIAN)
    sign_in(client, person)
    client.get(f"/api/v1/patients/{actors.patients['a'].id}")
    entry = newest_audit(client.app.state.engine)
    assert (entry.actor_type, entry.actor_id, entry.actor_label) == (
        "user", str(person.user.id), "clinician a")
    assert (entry.action, entry.patient_id) == ("read", actors.patients["a"].id)


# ------------------------------------------------------------------------------------ bad input


PATIENT = "{patient}"  # placeholders filled in when the test runs
YESTERDAY = datetime.now(UTC) - timedelta(days=1)
ENCOUNTER = {"patient_id": PATIENT, "mode": "in_person", "started_at": an_hour_ago()}

#: (what is wrong, method, path, body, expected code, field named in the errors)
BAD_REQUESTS: list[tuple[str, str, str, Any, str, str | None]] = [
    ("malformed JSON", "POST", "/api/v1/patients", b'{"mrn": "X",', "VALIDATION_FAILED", None),
    ("a list instead of an object", "POST", "/api/v1/patients", [new_patient()],
     "VALIDATION_FAILED", None),
    ("text instead of a list", "POST", "/api/v1/patients", new_patient(languages="en"),
     "VALIDATION_FAILED", "languages"),
    ("text instead of true or false", "POST", "/api/v1/patients",
     new_patient(nhi_covered="maybe"), "VALIDATION_FAILED", "nhi_covered"),
    ("text instead of a number", "POST", "/api/v1/encounters",
     ENCOUNTER | {"patient_id": "seven"}, "VALIDATION_FAILED", "patient_id"),
    ("an unknown field", "POST", "/api/v1/patients", new_patient(blood_type="O+"),
     "VALIDATION_FAILED", "blood_type"),
    ("an unknown field in an update", "PATCH", "/api/v1/patients/{patient}",
     {"mrn": "CHANGED"}, "VALIDATION_FAILED", "mrn"),
    ("30 February", "POST", "/api/v1/patients", new_patient(birth_date="2026-02-30"),
     "VALIDATION_FAILED", "birth_date"),
    ("a birth date in the future", "POST", "/api/v1/patients",
     new_patient(birth_date=(datetime.now(UTC).date() + timedelta(days=2)).isoformat()),
     "VALIDATION_FAILED", "birth_date"),
    ("a birth date before 1900", "POST", "/api/v1/patients",
     new_patient(birth_date="1899-12-31"), "VALIDATION_FAILED", "birth_date"),
    ("a datetime without offset", "POST", "/api/v1/encounters",
     ENCOUNTER | {"started_at": "2026-01-05T09:00:00"}, "VALIDATION_FAILED", "started_at"),
    ("an impossible datetime", "POST", "/api/v1/encounters",
     ENCOUNTER | {"started_at": "2026-02-30T09:00:00+09:00"}, "VALIDATION_FAILED",
     "started_at"),
    ("an encounter in the future", "POST", "/api/v1/encounters",
     ENCOUNTER | {"started_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
     "VALIDATION_FAILED", "started_at"),
    ("ended before it started", "POST", "/api/v1/encounters",
     ENCOUNTER | {"started_at": YESTERDAY.isoformat(),
                  "ended_at": (YESTERDAY - timedelta(minutes=1)).isoformat()},
     "VALIDATION_FAILED", "ended_at"),
    ("an unknown time zone", "POST", "/api/v1/patients",
     new_patient(time_zone="Asia/Atlantis"), "VALIDATION_FAILED", "time_zone"),
    ("a UTC offset instead of a zone", "PATCH", "/api/v1/patients/{patient}",
     {"time_zone": "+09:00"}, "VALIDATION_FAILED", "time_zone"),
    ("an unknown Korean region", "POST", "/api/v1/patients",
     new_patient(residence_country="KR", residence_region="KR-99"), "VALIDATION_FAILED",
     "residence_region"),
    ("a region that is not Korean", "POST", "/api/v1/patients",
     new_patient(residence_country="KR", residence_region="JP-13"), "VALIDATION_FAILED",
     "residence_region"),
    ("a Korean region for a non-resident", "POST", "/api/v1/patients",
     new_patient(residence_region="KR-11"), "VALIDATION_FAILED", "residence_region"),
    ("a Korean region added to a non-resident", "PATCH", "/api/v1/patients/{patient}",
     {"residence_country": "JP", "residence_region": "KR-11"}, "VALIDATION_FAILED",
     "residence_region"),
    ("a move abroad keeping the Korean region", "PATCH", "/api/v1/patients/{patient}",
     {"residence_country": "JP"}, "VALIDATION_FAILED", "residence_region"),
    ("an unknown country", "POST", "/api/v1/patients", new_patient(nationality="XX"),
     "VALIDATION_FAILED", "nationality"),
    ("a country quoting a brace (the message repeats it)", "POST", "/api/v1/patients",
     new_patient(nationality="{", residence_country="}", languages=["{0}"]),
     "VALIDATION_FAILED", "nationality"),
    ("a time zone with an open brace", "PATCH", "/api/v1/patients/{patient}",
     {"time_zone": "Asia/{"}, "VALIDATION_FAILED", "time_zone"),
    ("an unknown language", "POST", "/api/v1/patients", new_patient(languages=["xx"]),
     "VALIDATION_FAILED", "languages.0"),
    ("no language at all", "POST", "/api/v1/patients", new_patient(languages=[]),
     "VALIDATION_FAILED", "languages"),
    ("an unknown flag", "POST", "/api/v1/patients", new_patient(flags=["vip"]),
     "VALIDATION_FAILED", "flags.0"),
    ("a care grade out of range", "POST", "/api/v1/patients",
     new_patient(long_term_care_grade=9), "VALIDATION_FAILED", "long_term_care_grade"),
    ("a phone number without country code", "POST", "/api/v1/patients",
     new_patient(phone="010-1234-5678"), "VALIDATION_FAILED", "phone"),
    ("an e-mail without a domain", "POST", "/api/v1/patients", new_patient(email="john@"),
     "VALIDATION_FAILED", "email"),
    ("an MRN with spaces", "POST", "/api/v1/patients", new_patient(mrn="A B"),
     "VALIDATION_FAILED", "mrn"),
    ("an MRN too long", "POST", "/api/v1/patients", new_patient(mrn="A" * 41),
     "VALIDATION_FAILED", "mrn"),
    ("a missing required field", "POST", "/api/v1/patients",
     {k: v for k, v in new_patient().items() if k != "birth_date"}, "VALIDATION_FAILED",
     "birth_date"),
    ("a required name set to null", "PATCH", "/api/v1/patients/{patient}",
     {"given_name_latin": None}, "VALIDATION_FAILED", "given_name_latin"),
    ("languages set to null", "PATCH", "/api/v1/patients/{patient}", {"languages": None},
     "VALIDATION_FAILED", "languages"),
    ("insurance set to null", "PATCH", "/api/v1/patients/{patient}", {"nhi_covered": None},
     "VALIDATION_FAILED", "nhi_covered"),
    ("a condition that is no KCD code", "POST", "/api/v1/encounters",
     ENCOUNTER | {"conditions": ["hypertension"]}, "VALIDATION_FAILED", "conditions.0"),
    ("an unknown encounter mode", "POST", "/api/v1/encounters",
     ENCOUNTER | {"mode": "telepathy"}, "VALIDATION_FAILED", "mode"),
    ("an unknown consent kind", "POST", "/api/v1/patients/{patient}/consents",
     {"kind": "everything", "text_version": "1", "language": "ko"}, "VALIDATION_FAILED",
     "kind"),
    ("a consent granted without offset", "POST", "/api/v1/patients/{patient}/consents",
     {"kind": "pipa_sensitive", "text_version": "1", "language": "ko",
      "granted_at": "2026-01-05T09:00:00"}, "VALIDATION_FAILED", "granted_at"),
    ("a local physician in no country", "POST", "/api/v1/patients/{patient}/local-physicians",
     {"name": "Dr X", "clinic": "X", "country": "ZZ"}, "VALIDATION_FAILED", "country"),
    ("a local physician's name set to null", "PATCH", "/api/v1/local-physicians/{physician}",
     {"name": None}, "VALIDATION_FAILED", "name"),
    ("a practitioner without a name", "POST", "/api/v1/practitioners",
     {"licence_number": "MD-1", "name_native": "", "name_latin": "X"}, "VALIDATION_FAILED",
     "name_native"),
    ("a practitioner's name set to null", "PATCH", "/api/v1/practitioners/{practitioner}",
     {"name_latin": None}, "VALIDATION_FAILED", "name_latin"),
    ("a practitioner's activity set to null", "PATCH", "/api/v1/practitioners/{practitioner}",
     {"active": None}, "VALIDATION_FAILED", "active"),
    ("an encounter's conditions set to null", "PATCH", "/api/v1/encounters/{encounter}",
     {"conditions": None}, "VALIDATION_FAILED", "conditions"),
    ("an encounter ending before it started", "PATCH", "/api/v1/encounters/{encounter}",
     {"ended_at": "2000-01-01T00:00:00+00:00"}, "VALIDATION_FAILED", "ended_at"),
    ("a path id that is not a number", "GET", "/api/v1/patients/abc", None,
     "VALIDATION_FAILED", "path.patient_id"),
    ("a limit out of range", "GET", "/api/v1/patients?limit=0", None, "VALIDATION_FAILED",
     "query.limit"),
    ("an encounter search without a patient", "GET", "/api/v1/encounters", None,
     "VALIDATION_FAILED", "query.patient_id"),
    ("a path id beyond any record", "GET", "/api/v1/patients/99999999999999999999", None,
     "VALIDATION_FAILED", "path.patient_id"),
    ("a path id beyond 32 bits", "PATCH", "/api/v1/encounters/2147483648", {"summary": "x"},
     "VALIDATION_FAILED", "path.encounter_id"),
    ("a query id beyond any record", "GET", "/api/v1/encounters?patient_id=10000000000000000000",
     None, "VALIDATION_FAILED", "query.patient_id"),
    ("a body id beyond any record", "POST", "/api/v1/encounters",
     ENCOUNTER | {"practitioner_id": 10**30}, "VALIDATION_FAILED", "practitioner_id"),
    ("an institution id beyond any record", "POST", "/api/v1/patients",
     new_patient(institution_id=2**40), "VALIDATION_FAILED", "institution_id"),
    ("a NUL character in a name", "POST", "/api/v1/patients",
     new_patient(family_name_native="Mil\x00ler"), "VALIDATION_FAILED", "family_name_native"),
    ("a control character in a note", "POST", "/api/v1/encounters",
     ENCOUNTER | {"summary": "ok\x1bnot"}, "VALIDATION_FAILED", "summary"),
    ("a name longer than the record keeps", "POST", "/api/v1/patients",
     new_patient(family_name_native="가" * 101), "VALIDATION_FAILED", "family_name_native"),
    ("a language tag longer than the record keeps", "POST", "/api/v1/patients",
     new_patient(preferred_language="yue-Hant-HK-x-" + "cantonese" * 3), "VALIDATION_FAILED",
     "preferred_language"),
]


@dataclass
class ReadOnlyWorld:
    """Actors, a hospital system's API and the ids of A's records, shared by the bad-input
    cases: each of them proves it changed nothing, so one world serves them all."""

    actors: Actors
    api: Api
    ids: dict[str, int]


def _build_read_only_world(caller: TestClient, engine, settings) -> ReadOnlyWorld:
    empty_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        actors = Actors.create(db, settings)
        client_row = db.execute(select(ApiClient.id).where(
            ApiClient.client_id == actors.clients["a"][0])).scalar_one()
    api = Api(caller, client_token(caller, actors.clients["a"]), client_row)
    patient = actors.patients["a"].id
    physician = api("POST", f"/api/v1/patients/{patient}/local-physicians",
                    json={"name": "Dr X", "clinic": "X", "country": "US"}).json()
    encounter = api("GET", "/api/v1/encounters", params={"patient_id": patient}).json()[0]
    return ReadOnlyWorld(actors, api, {
        "patient": patient, "practitioner": actors.practitioners["a"].id,
        "physician": physician["id"], "encounter": encounter["id"]})


@dataclass
class ReadOnlyWorlds:
    caller: TestClient
    current: ReadOnlyWorld | None = None


@pytest.fixture(scope="module")
def read_only_worlds(app) -> Iterator[ReadOnlyWorlds]:
    with TestClient(app) as caller:
        yield ReadOnlyWorlds(caller)


@pytest.fixture
def unchanged_world(read_only_worlds, engine, settings) -> ReadOnlyWorld:
    """The shared world, rebuilt only if another test of this module emptied the database
    in between (xdist may run one between two bad-input cases)."""
    current = read_only_worlds.current
    if current is not None:
        with fresh(engine) as session:
            if session.get(Patient, current.ids["patient"]) is not None:
                return current
    read_only_worlds.current = _build_read_only_world(read_only_worlds.caller, engine,
                                                      settings)
    return read_only_worlds.current


def _filled(value: Any, ids: dict[str, int]) -> Any:
    if value == PATIENT:
        return ids["patient"]
    if isinstance(value, dict):
        return {key: _filled(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, ids) for item in value]
    return value


@pytest.mark.parametrize(("name", "method", "path", "body", "code", "field"), BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_problem_with_a_stable_code_and_changes_nothing(
        unchanged_world, engine, name, method, path, body, code, field):
    api, ids = unchanged_world.api, unchanged_world.ids
    before = count_rows(engine, *DIRECTORY_TABLES)
    with fresh(engine) as session:
        patient_before = _snapshot(session.get(Patient, ids["patient"]))
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"Content-Type": "application/json"}}
    elif body is not None:
        kwargs = {"json": _filled(body, ids)}
    response = api(method, path.format(**ids), **kwargs)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    details = problem(response)
    assert details["code"] == code
    assert details["status"] == response.status_code
    assert details["detail"]
    if field is not None:
        assert field in [error["field"] for error in details.get("errors", [])], details
        assert all(error["message"] and error["code"] for error in details["errors"])
    assert count_rows(engine, *DIRECTORY_TABLES) == before
    with fresh(engine) as session:
        assert _snapshot(session.get(Patient, ids["patient"])) == patient_before


def _snapshot(patient: Patient) -> dict[str, Any]:
    return {column.name: getattr(patient, column.key)
            for column in Patient.__table__.columns if column.name != "updated_at"}


def test_an_oversized_body_is_refused_with_413_before_anything_is_read(app, engine, actors):
    with alternate_app(app, engine, max_request_body_bytes=2048) as small, \
            client_for(small) as other:
        token = client_token(other, actors.clients["a"])
        before = count_rows(engine, *DIRECTORY_TABLES)
        big = new_patient(residence_district="x" * 50) | {"padding": "y" * 4000}
        response = other.post("/api/v1/patients", json=big, headers=bearer(token))
        assert response.status_code == 413
        assert problem(response)["code"] == "BODY_TOO_LARGE"
        chunked = other.post("/api/v1/patients", headers=bearer(token) | {
            "Content-Type": "application/json"},
            content=iter([json.dumps(big).encode()[i:i + 500] for i in range(0, 4600, 500)]))
        assert chunked.status_code == 413
        assert count_rows(engine, *DIRECTORY_TABLES) == before
        small_enough = other.post("/api/v1/patients", json=new_patient(), headers=bearer(token))
        assert small_enough.status_code == 201


def test_problems_are_answered_in_the_callers_language(api):
    response = api("POST", "/api/v1/patients", json=new_patient(birth_date="2026-02-30"),
                   headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.5"})
    details = problem(response)
    assert details["code"] == "VALIDATION_FAILED"
    assert details["detail"] and details["errors"][0]["message"]
    english = problem(api("POST", "/api/v1/patients", json=new_patient(birth_date="2026-02-30"),
                          headers={"Accept-Language": "en"}))
    assert english["detail"] == "Some fields are not valid."
    if KOREAN_CORE_CATALOGUE.exists():
        assert HANGUL.search(details["detail"]), details
        assert HANGUL.search(details["errors"][0]["message"]), details
    else:
        assert details["detail"] == english["detail"]


# ------------------------------------------------------------------------------------- OpenAPI


def test_the_openapi_document_lists_the_directory_routes_and_no_pages(client):
    document = client.get("/api/v1/openapi.json")
    assert document.status_code == 200
    paths = document.json()["paths"]
    expected = {
        "/api/v1/institutions": {"get"},
        "/api/v1/practitioners": {"get", "post"},
        "/api/v1/practitioners/{practitioner_id}": {"get", "patch"},
        "/api/v1/patients": {"get", "post"},
        "/api/v1/patients/{patient_id}": {"get", "patch"},
        "/api/v1/patients/{patient_id}/invitations": {"post"},
        "/api/v1/patients/{patient_id}/local-physicians": {"get", "post"},
        "/api/v1/local-physicians/{physician_id}": {"patch"},
        "/api/v1/encounters": {"get", "post"},
        "/api/v1/encounters/{encounter_id}": {"get", "patch"},
        "/api/v1/patients/{patient_id}/consents": {"get", "post"},
        "/api/v1/consents/{consent_id}/withdraw": {"post"},
        "/oauth2/token": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    assert not any(path in paths for path in ("/", "/login", "/patients", "/audit"))
    create = paths["/api/v1/patients"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"]["$ref"].endswith("/PatientCreate")


def test_the_api_names_the_stored_time_in_utc_whatever_offset_was_sent(api, actors):
    created = api("POST", "/api/v1/encounters", json={
        "patient_id": actors.patients["a"].id, "mode": "audio",
        "started_at": "2026-01-05T09:00:00+09:00"}).json()
    assert datetime.fromisoformat(created["started_at"]) == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    with fresh(api.client.app.state.engine) as session:
        stored = session.execute(select(Encounter).where(Encounter.id == created["id"])
                                 ).scalar_one()
        assert stored.started_at.tzinfo is not None


def test_line_breaks_and_tabs_in_notes_are_kept(api, actors):
    created = api("POST", "/api/v1/encounters", json=ENCOUNTER | {
        "patient_id": actors.patients["a"].id, "summary": "Line one.\n\tLine two.\r\n"})
    assert created.status_code == 201, created.text
    assert created.json()["summary"] == "Line one.\n\tLine two."


def test_a_value_the_database_refuses_is_a_422_problem_not_a_500(engine):
    """The safety net under every capability's validation: the database's own refusal."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from jaejin.core.errors import install_error_handlers

    toy = FastAPI()
    install_error_handlers(toy)

    @toy.get("/api/v1/lookup/{number}")
    def lookup(number: int) -> dict[str, int | None]:
        with fresh(engine) as session:
            found = session.get(Patient, number)
        return {"found": found.id if found else None}

    client = TestClient(toy)
    assert client.get("/api/v1/lookup/5").json() == {"found": None}
    refused = client.get(f"/api/v1/lookup/{10**30}")
    assert refused.status_code == 422
    assert problem(refused)["code"] == "VALUE_NOT_STORABLE"


# Hypothesis takes naive bounds and attaches the drawn zone itself.
EARLIEST, LATEST = datetime(1990, 1, 1), datetime(2025, 12, 31)  # noqa: DTZ001


@given(instant=st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.timezones()))
@settings(max_examples=200, deadline=None)
def test_a_time_sent_in_any_zone_is_kept_as_the_same_instant_in_utc(instant):
    encounter = EncounterCreate(patient_id=1, mode="video", started_at=instant.isoformat())
    # Compared in UTC: Python never calls an ambiguous local time (DST fold) equal across zones.
    assert encounter.started_at == instant.astimezone(UTC)
    assert encounter.started_at.utcoffset() == timedelta(0)


IANA_ZONES = sorted(available_timezones())


@given(name=st.one_of(st.sampled_from(IANA_ZONES),
                      st.text(st.characters(exclude_categories=("Z", "C")), max_size=30),
                      st.sampled_from(["posix/UTC", "KST", "UTC+9", "+09:00", "Asia/seoul",
                                       "Asia/Seoul ", "Mars/Olympus_Mons", ""])))
@settings(max_examples=300, deadline=None)
def test_a_time_zone_is_accepted_exactly_when_it_is_an_iana_name(name):
    if name.strip() in IANA_ZONES:
        assert PatientUpdate(time_zone=name).time_zone == name.strip()
    else:
        with pytest.raises(ValidationError):
            PatientUpdate(time_zone=name)


@pytest.mark.parametrize("institutions", [("a", "a", "a", "a"), ("a", "b", "a", "b")])
def test_one_licence_registered_at_once_from_several_systems_is_one_practitioner(
        app, client, db, actors, institutions):
    apis = {key: api_for(client, db, actors, key) for key in set(institutions)}
    body = {"licence_number": "MD-RACE-1", "name_native": "박준호", "name_latin": "Park Jun-ho"}
    start = threading.Barrier(len(institutions))
    answers: list[tuple[str, int, int | None]] = []

    def register(key: str) -> None:
        caller = TestClient(app)
        start.wait(timeout=30)
        response = caller.post("/api/v1/practitioners", json=body,
                               headers=bearer(apis[key].token))
        answers.append((key, response.status_code, response.json().get("id")
                        if response.status_code == 201 else None))

    threads = [threading.Thread(target=register, args=(key,)) for key in institutions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == len(institutions), "a request failed without answering"
    created = [answer for answer in answers if answer[1] == 201]
    assert sorted(answer[0] for answer in created) == sorted(set(institutions)), answers
    assert all(status in (201, 409) for _key, status, _id in answers), answers
    assert len({practitioner_id for _key, _status, practitioner_id in created}) == 1
    with fresh(client.app.state.engine) as session:
        stored = session.execute(select(Practitioner).where(
            Practitioner.licence_number == "MD-RACE-1")).scalar_one()
        assert sorted(role.institution_id for role in stored.roles) == sorted(
            {actors.a.id if key == "a" else actors.b.id for key in institutions})


def test_a_hospital_retrying_an_encounter_in_parallel_records_it_once(app, api, actors, client):
    body = {"patient_id": actors.patients["a"].id, "mode": "in_person",
            "started_at": an_hour_ago(), "external_id": "HIS-RETRY-1"}
    start = threading.Barrier(4)
    answers: list[tuple[int, int]] = []

    def send() -> None:
        caller = TestClient(app)
        start.wait(timeout=30)
        response = caller.post("/api/v1/encounters", json=body, headers=bearer(api.token))
        answers.append((response.status_code, response.json()["id"]))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 4, "a request failed without answering"
    assert sorted(status for status, _id in answers) == [200, 200, 200, 201], answers
    assert len({encounter_id for _status, encounter_id in answers}) == 1
    with fresh(client.app.state.engine) as session:
        stored = session.execute(select(Encounter).where(
            Encounter.external_id == "HIS-RETRY-1")).scalars().all()
    assert len(stored) == 1
