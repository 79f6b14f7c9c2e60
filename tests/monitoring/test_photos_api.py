"""Wound photos through the API and the pages: who may send and see them, what is kept (no
metadata), the review item for the care team, and the audit trail of every view."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.core.database import session_factory
from jaejin.monitoring.alerts import AlertKind
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.photo_store import WoundPhotoRow
from jaejin.monitoring.photos import WOUND_PHOTO_MAX_BYTES
from jaejin.monitoring.store import AlertRow, ReadingRow
from tests.monitoring.photo_files import GPS_IFD, image_bytes, opened, phone_heic, phone_jpeg
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    add_plan,
    cheap_password_hashing,
)
from tests.support import bearer, client_token, make_patient, problem, sign_in

PHOTOS = "/api/v1/patients/{patient_id}/wound-photos"


def _rows(engine, model) -> list[Any]:
    with session_factory(engine)() as session:
        return list(session.execute(select(model).order_by(model.id)).scalars())


def _count(engine, model) -> int:
    with session_factory(engine)() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def _audit(engine, resource_type: str) -> list[AuditEntry]:
    with session_factory(engine)() as session:
        return list(session.execute(
            select(AuditEntry).where(AuditEntry.resource_type == resource_type)
            .order_by(AuditEntry.id)).scalars())


def send(client: TestClient, patient_id: int, data: bytes, headers: dict[str, str], *,
         name: str = "wound.jpg", kind: str = "image/jpeg", **fields: str):
    return client.post(PHOTOS.format(patient_id=patient_id),
                       files={"file": (name, data, kind)}, data=fields, headers=headers)


def as_patient(client: TestClient, actors) -> dict[str, str]:
    return {"X-CSRF-Token": sign_in(client, actors.person("a", Role.PATIENT))}


def nothing_stored(engine) -> None:
    assert _count(engine, WoundPhotoRow) == 0
    assert _count(engine, ReadingRow) == 0
    assert _count(engine, AlertRow) == 0


# ------------------------------------------------------------------------------ sending


def test_a_patient_sends_a_photo_and_the_copy_kept_has_no_location(client, actors, db):
    patient = actors.patients["a"]
    headers = as_patient(client, actors)
    sent = phone_jpeg(64, 48)
    response = send(client, patient.id, sent, headers, body_site="left knee",
                    note="a little red since yesterday")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["duplicate"] is False and response.headers["Location"] == body["url"]
    assert (body["width"], body["height"], body["content_type"]) == (48, 64, "image/jpeg")
    assert body["body_site"] == "left knee" and body["note"] == "a little red since yesterday"
    # The camera's time, with the offset it recorded.
    assert body["taken_at"] == "2026-11-20T09:15:00+09:00"
    assert body["uploaded_by"] == f"user:{actors.person('a', Role.PATIENT).user.id}"

    image = client.get(body["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.headers["cache-control"] == "private, no-store"
    assert image.headers["x-content-type-options"] == "nosniff"
    kept = opened(image.content)
    assert not kept.getexif().get_ifd(GPS_IFD) and len(kept.getexif()) == 0
    assert b"JaejinPhone" not in image.content

    row = _rows(db.get_bind(), WoundPhotoRow)[0]
    assert row.institution_id == patient.institution_id and row.taken_offset_minutes == 540
    with session_factory(db.get_bind())() as session:
        stored = session.execute(select(WoundPhotoRow.content)).scalar_one()
    assert bytes(stored) == image.content
    # The photo is a reading of the post-operative plan's "wound photo" too.
    reading = _rows(db.get_bind(), ReadingRow)[0]
    assert (reading.metric, reading.loinc, reading.attachment_ref) == (
        "wound_photo", "72170-4", f"wound_photo:{row.id}")
    assert row.reading_id == reading.id


def test_an_iphone_heic_is_accepted_and_kept_as_jpeg_without_its_location(client, actors, db):
    patient = actors.patients["a"]
    sent = phone_heic(64, 48)
    response = send(client, patient.id, sent, as_patient(client, actors), name="IMG_0412.HEIC",
                    kind="image/heic")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["width"], body["height"], body["content_type"]) == (48, 64, "image/jpeg")
    assert body["taken_at"] == "2026-11-20T09:15:00+09:00"

    image = client.get(body["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    kept = opened(image.content)
    assert not kept.getexif().get_ifd(GPS_IFD) and len(kept.getexif()) == 0
    assert b"JaejinPhone" not in image.content and b"37,33N" not in image.content
    [upload] = [entry for entry in _audit(db.get_bind(), "wound_photo")
                if entry.action == "create"]
    assert {"exif", "gps", "xmp"} <= set(upload.detail["metadata_removed"])
    assert upload.detail["format"] == "HEIF"


def test_each_photo_is_a_review_item_for_the_care_team_grouped_per_patient(client, actors, db):
    patient = actors.patients["a"]
    add_plan(db, patient, PlanTemplate.POST_OPERATIVE)
    headers = as_patient(client, actors)
    # The first photo is days old (sent late): it still needs a look.
    first = send(client, patient.id, phone_jpeg(), headers)
    second = send(client, patient.id, phone_jpeg(colour=(20, 200, 20), taken=None), headers)
    assert first.status_code == second.status_code == 201
    alerts = [row for row in _rows(db.get_bind(), AlertRow)
              if row.kind == AlertKind.WOUND_PHOTO_REVIEW.value]
    assert len(alerts) == 1 and alerts[0].status == "open" and alerts[0].signal_count == 2

    clinician = TestClient(client.app, base_url="http://testserver")
    sign_in(clinician, actors.person("a", Role.CLINICIAN))
    triage = clinician.get("/api/v1/monitoring/triage").json()
    item = next(entry for entry in triage if entry["patient_id"] == patient.id)
    assert item["alerts"][0]["kind"] == "WOUND_PHOTO_REVIEW"
    assert "wound photo" in item["explanation"].lower()


def test_the_same_file_sent_again_is_kept_once(client, actors, db):
    patient = actors.patients["a"]
    headers = as_patient(client, actors)
    sent = phone_jpeg()
    first = send(client, patient.id, sent, headers)
    again = send(client, patient.id, sent, headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["id"] == first.json()["id"]
    assert _count(db.get_bind(), WoundPhotoRow) == 1
    assert _rows(db.get_bind(), AlertRow)[0].signal_count == 1


def test_a_damaged_photo_is_refused_and_nothing_is_stored(client, actors, db):
    headers = as_patient(client, actors)
    whole = phone_jpeg(200, 150)
    response = send(client, actors.patients["a"].id, whole[: len(whole) // 2], headers)
    assert response.status_code == 422
    assert problem(response)["code"] == "PHOTO_CORRUPT"
    nothing_stored(db.get_bind())


def test_a_file_of_another_kind_is_refused(client, actors, db):
    headers = as_patient(client, actors)
    patient_id = actors.patients["a"].id
    pdf = send(client, patient_id, b"%PDF-1.7\n%\xe2\xe3\n", headers, name="scan.pdf",
               kind="application/pdf")
    gif = send(client, patient_id, image_bytes("GIF"), headers, name="wound.gif",
               kind="image/gif")
    missing = client.post(PHOTOS.format(patient_id=patient_id), data={"note": "no file"},
                          headers=headers)
    assert pdf.status_code == gif.status_code == 415
    assert problem(pdf)["code"] == "PHOTO_FORMAT_UNSUPPORTED"
    assert "JPEG, PNG, WebP, HEIC" in problem(gif)["detail"]
    assert missing.status_code == 422 and problem(missing)["code"] == "PHOTO_REQUIRED"
    nothing_stored(db.get_bind())


def test_a_photo_too_big_is_refused(client, actors, db):
    headers = as_patient(client, actors)
    patient_id = actors.patients["a"].id
    # Over the file limit but within the request limit: the route says so.
    just_over = send(client, patient_id, b"\xff\xd8" + bytes(WOUND_PHOTO_MAX_BYTES), headers)
    assert just_over.status_code == 413 and problem(just_over)["code"] == "PHOTO_TOO_LARGE"
    # Far over: refused as the body streams in, before the route reads it.
    far_over = send(client, patient_id, bytes(WOUND_PHOTO_MAX_BYTES + 2 * 1024 * 1024),
                    headers)
    assert far_over.status_code == 413 and problem(far_over)["code"] == "BODY_TOO_LARGE"
    nothing_stored(db.get_bind())


def test_a_time_in_the_future_is_refused(client, actors, db):
    headers = as_patient(client, actors)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    response = send(client, actors.patients["a"].id, phone_jpeg(), headers, taken_at=future)
    assert response.status_code == 422 and problem(response)["code"] == "PHOTO_TAKEN_IN_FUTURE"
    nothing_stored(db.get_bind())


# ------------------------------------------------------------------------------ who may


def test_a_patient_may_not_send_or_see_another_patients_photos(client, actors, db):
    other = make_patient(db, actors.a, "MRN-A-OTHER")
    db.commit()
    headers = as_patient(client, actors)
    for patient_id in (other.id, actors.patients["b"].id):
        response = send(client, patient_id, phone_jpeg(), headers)
        assert response.status_code == 404, response.text
        assert client.get(PHOTOS.format(patient_id=patient_id)).status_code == 404
    nothing_stored(db.get_bind())


def test_another_institutions_staff_and_clients_find_no_such_patient(client, actors, db):
    patient = actors.patients["a"]
    owner = TestClient(client.app, base_url="http://testserver")
    photo = send(owner, patient.id, phone_jpeg(), as_patient(owner, actors)).json()
    csrf = sign_in(client, actors.person("b", Role.CLINICIAN))
    assert send(client, patient.id, phone_jpeg(colour=(0, 0, 0)),
                {"X-CSRF-Token": csrf}).status_code == 404
    for url in (PHOTOS.format(patient_id=patient.id), photo["url"], photo["image_url"],
                photo["thumbnail_url"]):
        response = client.get(url)
        assert response.status_code == 404 and problem(response)["code"] == "NOT_FOUND"
    token = client_token(TestClient(client.app), actors.clients["b"])
    assert client.get(photo["image_url"], headers=bearer(token)).status_code == 404
    assert _count(db.get_bind(), WoundPhotoRow) == 1


def test_a_photo_is_found_only_under_its_own_patient(client, actors, db):
    patient = actors.patients["a"]
    other = make_patient(db, actors.a, "MRN-A-SECOND")
    db.commit()
    photo = send(client, patient.id, phone_jpeg(), as_patient(client, actors)).json()
    staff = TestClient(client.app, base_url="http://testserver")
    sign_in(staff, actors.person("a", Role.CLINICIAN))
    wrong = f"{PHOTOS.format(patient_id=other.id)}/{photo['id']}/image"
    assert staff.get(wrong).status_code == 404
    assert staff.get(photo["image_url"]).status_code == 200


def test_a_device_gateway_sends_with_monitoring_write(client, actors, db):
    token = client_token(client, actors.clients["a"])
    response = send(client, actors.patients["a"].id, phone_jpeg(), bearer(token),
                    taken_at="2026-11-21T08:00")
    assert response.status_code == 201, response.text
    assert response.json()["taken_at"].endswith("+09:00")
    listed = client.get(PHOTOS.format(patient_id=actors.patients["a"].id),
                        headers=bearer(token)).json()
    assert [item["id"] for item in listed["items"]] == [response.json()["id"]]


# ----------------------------------------------------------------- pages and audit trail


def test_the_clinician_sees_thumbnails_and_every_view_is_audited(client, actors, db):
    patient = actors.patients["a"]
    owner = TestClient(client.app, base_url="http://testserver")
    photo = send(owner, patient.id, phone_jpeg(), as_patient(owner, actors),
                 body_site="abdomen").json()
    sign_in(client, actors.person("a", Role.CLINICIAN))
    page = client.get(f"/monitoring/patients/{patient.id}")
    assert page.status_code == 200
    assert f'src="{photo["thumbnail_url"]}"' in page.text
    assert f'href="{photo["image_url"]}"' in page.text and "abdomen" in page.text
    thumbnail = client.get(photo["thumbnail_url"])
    full = client.get(photo["image_url"])
    assert thumbnail.status_code == full.status_code == 200
    assert thumbnail.headers["cache-control"] == "private, no-store"
    assert max(opened(thumbnail.content).size) <= 320
    details = client.get(photo["url"])
    assert details.json()["id"] == photo["id"]

    clinician_id = str(actors.person("a", Role.CLINICIAN).user.id)
    entries = [(entry.action, entry.resource_id, entry.detail.get("view"))
               for entry in _audit(db.get_bind(), "wound_photo")
               if entry.actor_id == clinician_id]
    photo_id = str(photo["id"])
    assert ("search", None, None) in entries
    assert ("read", photo_id, "thumbnail") in entries
    assert ("read", photo_id, "full") in entries
    assert ("read", photo_id, "details") in entries
    created = [entry for entry in _audit(db.get_bind(), "wound_photo")
               if entry.action == "create"]
    assert len(created) == 1 and created[0].patient_id == patient.id
    assert "gps" in created[0].detail["metadata_removed"]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_a_coordinator_sends_a_photo_on_the_patients_behalf_from_the_page(client, actors, db):
    patient = actors.patients["a"]
    sign_in(client, actors.person("a", Role.COORDINATOR))
    page = client.get(f"/monitoring/patients/{patient.id}")
    assert 'hx-encoding="multipart/form-data"' in page.text and "<progress" in page.text
    url = f"/monitoring/patients/{patient.id}/wound-photos"
    headers = {"X-CSRF-Token": _csrf(page.text), "HX-Request": "true"}
    answer = client.post(url, files={"file": ("w.jpg", phone_jpeg(), "image/jpeg")},
                         data={"note": "sent by the coordinator"}, headers=headers)
    assert answer.status_code == 201, answer.text
    assert 'id="wound-photos"' in answer.text and "/thumbnail" in answer.text
    assert "sent by the coordinator" in answer.text
    refused = client.post(url, files={"file": ("w.gif", image_bytes("GIF"), "image/gif")},
                          headers=headers)
    assert refused.status_code == 415 and 'role="alert"' in refused.text
    assert _rows(db.get_bind(), WoundPhotoRow)[0].uploaded_by.startswith("user:")
    # An institution admin sees the photos but is offered no form, and may not send.
    admin = TestClient(client.app, base_url="http://testserver")
    admin_csrf = sign_in(admin, actors.person("a", Role.INSTITUTION_ADMIN))
    admin_page = admin.get(f"/monitoring/patients/{patient.id}")
    assert "/thumbnail" in admin_page.text and 'data-photo-form' not in admin_page.text
    assert admin.post(url, files={"file": ("w.jpg", phone_jpeg(colour=(1, 2, 3)),
                                           "image/jpeg")},
                      headers={"X-CSRF-Token": admin_csrf}).status_code == 403


def test_a_patient_sends_a_photo_from_their_own_page(client, actors, db):
    csrf = sign_in(client, actors.person("a", Role.PATIENT))
    page = client.get("/monitoring/me")
    assert 'action="/monitoring/me/wound-photos"' in page.text
    [accept] = re.findall(r'id="photo-file"[^>]* accept="([^"]+)"', page.text)
    assert {"image/jpeg", "image/png", "image/webp", "image/heic", ".heic"} <= set(
        accept.split(","))
    # Without JavaScript: a normal form post, then the page again.
    plain = client.post("/monitoring/me/wound-photos",
                        files={"file": ("w.png", image_bytes("PNG"), "image/png")},
                        data={"csrf_token": csrf, "patient_id": str(actors.patients["a"].id)},
                        follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"].startswith("/monitoring/me")
    again = client.get(plain.headers["location"])
    photo = _rows(db.get_bind(), WoundPhotoRow)[0]
    assert f"/wound-photos/{photo.id}/thumbnail" in again.text
    assert photo.content_type == "image/png"
    # With htmx, the section comes back; a damaged file says why.
    damaged = client.post("/monitoring/me/wound-photos",
                          files={"file": ("w.jpg", phone_jpeg()[:300], "image/jpeg")},
                          headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert damaged.status_code == 422 and 'role="alert"' in damaged.text
    assert _count(db.get_bind(), WoundPhotoRow) == 1


def test_only_a_clinician_closes_a_wound_photo_review(client, actors, db):
    patient = actors.patients["a"]
    send(client, patient.id, phone_jpeg(), as_patient(client, actors))
    (review,) = [row for row in _rows(db.get_bind(), AlertRow)
                 if row.kind == AlertKind.WOUND_PHOTO_REVIEW.value]
    coordinator = TestClient(client.app, base_url="http://testserver")
    csrf = sign_in(coordinator, actors.person("a", Role.COORDINATOR))
    page = coordinator.get(f"/monitoring/patients/{patient.id}").text
    assert f"/monitoring/alerts/{review.id}/acknowledge" in page
    assert f"/monitoring/alerts/{review.id}/resolve" not in page
    url = f"/api/v1/monitoring/alerts/{review.id}"
    headers = {"X-CSRF-Token": csrf}
    assert coordinator.post(f"{url}/acknowledge", headers=headers).status_code == 200
    refused = coordinator.post(f"{url}/resolve", headers=headers)
    assert refused.status_code == 403
    assert problem(refused)["code"] == "CLINICIAN_REVIEW_REQUIRED"
    token = client_token(TestClient(client.app), actors.clients["a"])
    assert client.post(f"{url}/resolve", headers=bearer(token)).status_code == 403
    clinician = TestClient(client.app, base_url="http://testserver")
    clinician_csrf = sign_in(clinician, actors.person("a", Role.CLINICIAN))
    assert f"/monitoring/alerts/{review.id}/resolve" in clinician.get(
        f"/monitoring/patients/{patient.id}").text
    resolved = clinician.post(f"{url}/resolve", json={"note": "healing well"},
                              headers={"X-CSRF-Token": clinician_csrf})
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"


def test_the_patient_reads_that_the_care_team_has_the_photo(client, actors, db):
    send(client, actors.patients["a"].id, phone_jpeg(), as_patient(client, actors))
    page = client.get("/monitoring/me").text
    assert "Your care team has your wound photo and will look at it." in page
    assert "New wound photo to review" not in page
