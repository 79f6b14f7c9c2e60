"""Wound photos as FHIR R4 Media: the resource's shape, search and read, and the same rules as
the photo API (who may see, institutions kept apart, every view audited)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.media import Media
from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.core.database import session_factory
from tests.monitoring.photo_files import phone_jpeg
from tests.monitoring.test_photos_api import as_patient, send
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    cheap_password_hashing,
)
from tests.support import bearer, client_token, make_patient, sign_in

FHIR = "application/fhir+json"


def gateway(client: TestClient, actors, key: str = "a") -> dict[str, str]:
    return bearer(client_token(TestClient(client.app), actors.clients[key]))


def outcome(response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith(FHIR), response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def patients_photo(client: TestClient, actors, **fields: str) -> dict[str, Any]:
    """A photo the patient of institution A sent, through the photo API."""
    sender = TestClient(client.app, base_url="http://testserver")
    response = send(sender, actors.patients["a"].id, phone_jpeg(**fields.pop("jpeg", {})),
                    as_patient(sender, actors), **fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


def fhir_audit(engine, action: str) -> list[AuditEntry]:
    with session_factory(engine)() as session:
        return [entry for entry in session.execute(
            select(AuditEntry).where(AuditEntry.resource_type == "wound_photo",
                                     AuditEntry.action == action)
            .order_by(AuditEntry.id)).scalars()
            if entry.detail.get("via") == "fhir" or entry.detail.get("view") == "fhir"]


def test_a_wound_photo_is_a_media_resource_pointing_at_its_image(client, actors):
    patient_id = actors.patients["a"].id
    photo = patients_photo(client, actors, body_site="left knee", note="red since yesterday")
    headers = gateway(client, actors)

    response = client.get(f"/fhir/R4/Media/{photo['id']}", headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(FHIR)
    media = response.json()
    Media.model_validate(media)  # a valid R4 Media (R4B's is the same resource)
    assert media["id"] == str(photo["id"]) and media["status"] == "completed"
    assert media["type"]["coding"][0]["code"] == "image"
    assert media["subject"] == {"reference": f"Patient/{patient_id}"}
    assert media["createdDateTime"] == "2026-11-20T09:15:00+09:00"
    assert media["bodySite"] == {"text": "left knee"}
    assert media["note"] == [{"text": "red since yesterday"}]
    assert (media["width"], media["height"]) == (48, 64)
    content = media["content"]
    assert content["contentType"] == "image/jpeg" and content["size"] == photo["byte_size"]
    assert content["url"] == f"http://testserver{photo['image_url']}"
    # The URL is the photo API's image route: the same credentials fetch the image.
    image = client.get(content["url"], headers=headers)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.headers["cache-control"] == "private, no-store"


def test_a_search_by_subject_is_a_searchset_newest_first_with_paging(client, actors):
    patient_id = actors.patients["a"].id
    older = patients_photo(client, actors, taken_at="2026-11-19T08:00:00+09:00")
    newer = patients_photo(client, actors, taken_at="2026-11-21T08:00:00+09:00",
                           jpeg={"colour": (10, 200, 10)})
    headers = gateway(client, actors)

    response = client.get("/fhir/R4/Media", params={"subject": f"Patient/{patient_id}"},
                          headers=headers)

    assert response.status_code == 200, response.text
    bundle = response.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset"
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == [
        str(newer["id"]), str(older["id"])]
    assert bundle["entry"][0]["fullUrl"] == f"http://testserver/fhir/R4/Media/{newer['id']}"
    assert bundle["entry"][0]["search"] == {"mode": "match"}
    assert "bodySite" not in bundle["entry"][0]["resource"]
    assert "note" not in bundle["entry"][0]["resource"]
    first_page = client.get("/fhir/R4/Media",
                            params={"patient": f"Patient/{patient_id}", "_count": 1},
                            headers=headers).json()
    assert [entry["resource"]["id"] for entry in first_page["entry"]] == [str(newer["id"])]
    [next_link] = [link["url"] for link in first_page["link"] if link["relation"] == "next"]
    rest = client.get(next_link, headers=headers).json()
    assert [entry["resource"]["id"] for entry in rest["entry"]] == [str(older["id"])]


def test_another_institutions_photo_is_not_found(client, actors):
    photo = patients_photo(client, actors)
    foreign = gateway(client, actors, key="b")
    read = client.get(f"/fhir/R4/Media/{photo['id']}", headers=foreign)
    search = client.get("/fhir/R4/Media",
                        params={"subject": f"Patient/{actors.patients['a'].id}"},
                        headers=foreign)
    assert read.status_code == search.status_code == 404
    assert outcome(read)["issue"][0]["code"] == "not-found"
    assert outcome(search)["issue"][0]["details"]["coding"][0]["code"] == "NOT_FOUND"
    clinician_b = TestClient(client.app, base_url="http://testserver")
    sign_in(clinician_b, actors.person("b", Role.CLINICIAN))
    assert clinician_b.get(f"/fhir/R4/Media/{photo['id']}").status_code == 404


def test_a_patient_sees_only_their_own_photos(client, actors, db):
    own = patients_photo(client, actors)
    neighbour = make_patient(db, actors.a, "MRN-A-NEIGHBOUR")
    db.commit()
    staff = TestClient(client.app, base_url="http://testserver")
    csrf = sign_in(staff, actors.person("a", Role.COORDINATOR))
    theirs = send(staff, neighbour.id, phone_jpeg(colour=(0, 0, 200)),
                  {"X-CSRF-Token": csrf}).json()

    sign_in(client, actors.person("a", Role.PATIENT))
    mine = client.get("/fhir/R4/Media")
    assert mine.status_code == 200
    assert [entry["resource"]["id"] for entry in mine.json()["entry"]] == [str(own["id"])]
    assert client.get(f"/fhir/R4/Media/{own['id']}").status_code == 200
    assert client.get(f"/fhir/R4/Media/{theirs['id']}").status_code == 404
    other = client.get("/fhir/R4/Media", params={"subject": f"Patient/{neighbour.id}"})
    assert other.status_code == 404 and outcome(other)


def test_every_search_and_read_is_audited_with_who_looked(client, actors, db):
    photo = patients_photo(client, actors)
    patient = actors.patients["a"]
    sign_in(client, actors.person("a", Role.CLINICIAN))
    assert client.get("/fhir/R4/Media", params={"subject": f"Patient/{patient.id}"}
                      ).status_code == 200
    assert client.get(f"/fhir/R4/Media/{photo['id']}").status_code == 200

    clinician_id = str(actors.person("a", Role.CLINICIAN).user.id)
    [search] = fhir_audit(db.get_bind(), "search")
    [read] = fhir_audit(db.get_bind(), "read")
    assert (search.actor_id, search.patient_id, search.institution_id) == (
        clinician_id, patient.id, patient.institution_id)
    assert search.detail["returned"] == 1
    assert (read.actor_id, read.resource_id, read.patient_id) == (
        clinician_id, str(photo["id"]), patient.id)


def test_unknown_ids_and_a_search_without_subject_answer_operation_outcomes(client, actors):
    headers = gateway(client, actors)
    for media_id in ("999999", "x1", "99999999999999999999999", "²"):
        response = client.get(f"/fhir/R4/Media/{media_id}", headers=headers)
        assert response.status_code == 404 and outcome(response), media_id
    for reference in ("Patient/²", "Patient/99999999999999999999999", "Patient/x"):
        response = client.get("/fhir/R4/Media", params={"subject": reference}, headers=headers)
        assert response.status_code == 404 and outcome(response), reference
    missing = client.get("/fhir/R4/Media", params={"lang": "ko"}, headers=headers)
    assert missing.status_code == 400
    issue = outcome(missing)["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "SUBJECT_REQUIRED"
    assert issue["diagnostics"] == "누구의 사진을 검색할지 지정하세요: subject=Patient/<id>."
    assert client.get("/fhir/R4/Media").status_code == 401


def test_the_capability_statement_names_media(client):
    statement = client.get("/fhir/R4/metadata").json()
    media = [entry for entry in statement["rest"][0]["resource"] if entry["type"] == "Media"]
    assert media and {"code": "read"} in media[0]["interaction"]
