"""The visit pages through the real app: the patient's way in (consent, the reasons a visit is
refused), the call page's data, the clinician's queue and record, shared files, the device
check's throughput routes, and the local physician's guest link."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import datetime, timedelta
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role, User
from jaejin.core.database import utcnow
from jaejin.core.i18n import translate
from jaejin.monitoring.store import ReadingRow
from jaejin.scheduling.store import Appointment
from jaejin.visits.lifecycle import VisitState
from jaejin.visits.store import VisitAttachment
from jaejin.visits.turn import turn_credential
from tests.support import problem

from .conftest import Cast, add_local_physician, audit_entries, make_visit, start_session
from .test_api_visits import fill_share_cap


def attributes_of(html: str, element_id: str) -> dict[str, str]:
    match = re.search(rf'<section id="{element_id}"([^>]*)>', html)
    assert match, f"no #{element_id} in the page"
    return {name: unescape(value) for name, value in re.findall(r'(data-[a-z-]+)="([^"]*)"',
                                                                 match.group(1))}


def as_(db: Session, cast: Cast, key: str, role: Role) -> dict[str, str]:
    return start_session(db, cast.actors.person(key, role).user.id)


def speaks_korean(db: Session, cast: Cast, key: str, role: Role) -> None:
    user = db.get(User, cast.actors.person(key, role).user.id)
    assert user is not None
    user.language = "ko"
    db.commit()


def visit_start(db: Session, visit: Any) -> datetime:
    appointment = db.get(Appointment, visit.appointment_id)
    assert appointment is not None
    db.commit()
    return appointment.start_at


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 120, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_patient_reads_the_limits_consents_in_korean_and_is_sent_to_the_call(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    speaks_korean(db, cast, "a", Role.PATIENT)
    patient = as_(db, cast, "a", Role.PATIENT)

    waiting = client.get(f"/visits/{visit.id}/waiting", headers=patient)
    assert waiting.status_code == 200
    assert "화상 진료는 의사를 직접 만나는 대면 진료와 같지 않습니다" in waiting.text
    assert 'name="agree"' in waiting.text
    arrived = client.post(f"/visits/{visit.id}/arrive", data={
        "agree": "on", "csrf_token": patient["X-CSRF-Token"]},
        headers={"cookie": patient["cookie"]}, follow_redirects=False)
    assert arrived.status_code == 303 and arrived.headers["location"] == f"/visits/{visit.id}/call"

    call = client.get(f"/visits/{visit.id}/call", headers=patient)
    assert call.status_code == 200
    data = attributes_of(call.text, "visit")
    patient_id = f"user-{cast.actors.person('a', Role.PATIENT).user.id}"
    assert data["data-ws-url"] == f"/visits/{visit.id}/ws"
    assert data["data-self-id"] == patient_id and data["data-role"] == "patient"
    assert data["data-upload-url"] == f"/visits/{visit.id}/files"
    assert data["data-csrf-token"] == patient["X-CSRF-Token"]
    assert json.loads(data["data-ice-servers"]) == []
    texts = json.loads(data["data-texts"])
    assert texts["leave"] == translate("ko", "Leave the visit") != "Leave the visit"
    names = json.loads(data["data-participants"])
    assert names[patient_id] == "홍길동"


def test_a_refused_check_in_shows_the_rules_reasons_on_the_waiting_room_page(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    fill_share_cap(db, cast)
    patient = as_(db, cast, "a", Role.PATIENT)

    response = client.post(f"/visits/{visit.id}/arrive", data={
        "agree": "on", "csrf_token": patient["X-CSRF-Token"]},
        headers={"cookie": patient["cookie"]}, follow_redirects=False)

    assert response.status_code == 422
    assert 'data-problem="POLICY_DENIED"' in response.text
    assert 'data-code="SHARE_CAP_EXCEEDED"' in response.text
    assert 'data-code="IN_PERSON_VISIT"' in response.text
    again = client.get(f"/visits/{visit.id}/waiting", headers=patient)
    assert 'data-code="SHARE_CAP_EXCEEDED"' in again.text


def test_a_patient_who_does_not_tick_the_box_sees_the_form_again_with_the_reason(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    patient = as_(db, cast, "a", Role.PATIENT)

    response = client.post(f"/visits/{visit.id}/arrive", data={
        "csrf_token": patient["X-CSRF-Token"]}, headers={"cookie": patient["cookie"]},
        follow_redirects=False)

    assert response.status_code == 422
    assert 'data-problem="CONSENT_NOT_GIVEN"' in response.text
    assert 'name="agree"' in response.text
    early = client.get(f"/visits/{visit.id}/call", headers=patient, follow_redirects=False)
    assert early.status_code == 303
    assert early.headers["location"] == f"/visits/{visit.id}/waiting"


def test_the_call_page_gives_time_limited_turn_credentials(
        app: Any, client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True)
    db.commit()
    saved = app.state.settings
    app.state.settings = saved.model_copy(update={
        "stun_urls": ["stun:turn.example.org:3478"],
        "turn_urls": ["turn:turn.example.org:3478?transport=udp"],
        "turn_secret": "shared-with-coturn", "turn_credential_ttl_seconds": 600})
    try:
        page = client.get(f"/visits/{visit.id}/call", headers=as_(db, cast, "a", Role.CLINICIAN))
    finally:
        app.state.settings = saved
    servers = json.loads(attributes_of(page.text, "visit")["data-ice-servers"])
    assert servers[0] == {"urls": ["stun:turn.example.org:3478"]}
    turn = servers[1]
    expiry, user = turn["username"].split(":")
    doctor_id = cast.actors.person("a", Role.CLINICIAN).user.id
    assert user == f"user-{doctor_id}"
    assert 0 < int(expiry) - utcnow().timestamp() <= 600
    assert turn["credential"] == turn_credential("shared-with-coturn", turn["username"])
    assert 'id="visit-panel"' in page.text


def test_the_clinicians_queue_shows_each_visit_with_its_decision_language_and_interpreter(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", interpreter=cast.interpreters["a"])
    db.commit()

    day = visit_start(db, visit).astimezone(ZoneInfo("Asia/Seoul")).date()  # the doctor's zone
    page = client.get("/visits/today", params={"day": day.isoformat()},
                      headers=as_(db, cast, "a", Role.CLINICIAN))

    assert page.status_code == 200
    row = page.text.split(f'data-visit-id="{visit.id}"', 1)[1].split("</tr>", 1)[0]
    assert "MRN-A-1" in row and "Interpreter a" in row
    assert 'data-decision="conditional"' in row
    assert 'data-code="IDENTITY_CHECK_REQUIRED"' in row
    assert f'href="/visits/{visit.id}"' in row
    assert "MRN-B-1" not in page.text


def test_the_clinicians_visit_page_summarises_history_and_recent_readings(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.IN_CALL, consent=True,
                       identity=True)
    now = utcnow()
    for hours, value in ((30, 142.0), (2, 131.0)):
        db.add(ReadingRow(patient_id=visit.patient_id, institution_id=visit.institution_id,
                          metric="systolic", loinc="8480-6", value=value, unit="mm[Hg]",
                          effective_at=now - timedelta(hours=hours), effective_offset_minutes=540,
                          received_at=now, channel="json",
                          fingerprint=hashlib.sha256(f"{hours}".encode()).digest()))
    db.commit()

    page = client.get(f"/visits/{visit.id}", headers=as_(db, cast, "a", Role.CLINICIAN))

    assert page.status_code == 200
    readings = page.text.split('class="visit-readings"', 1)[1].split("</table>", 1)[0]
    assert "131 mm[Hg]" in readings and "<td>2</td>" in readings
    assert "I10" in page.text and 'id="visit-note"' in page.text
    assert 'data-action="end-call"' in page.text
    reads = audit_entries(db, resource_type="patient", resource_id=str(visit.patient_id))
    assert reads and reads[-1].detail == {"encounters": 1, "readings": 1}


def test_shared_files_are_kept_with_the_visit_and_served_without_sniffing(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True)
    db.commit()
    patient = as_(db, cast, "a", Role.PATIENT)
    image = png()

    shared = client.post(f"/visits/{visit.id}/files", headers=patient,
                         files={"file": ("../../rash photo.png", image, "image/png")})
    disguised = client.post(f"/visits/{visit.id}/files", headers=patient,
                            files={"file": ("rash.png", b"MZ" + bytes(64), "image/png")})
    no_token = client.post(f"/visits/{visit.id}/files", headers={"cookie": patient["cookie"]},
                           files={"file": ("rash.png", image, "image/png")})

    assert shared.status_code == 201, shared.text
    assert shared.json()["filename"] == "rash photo.png"
    assert disguised.status_code == 415 and problem(disguised)["code"] == "FILE_CONTENT_MISMATCH"
    assert no_token.status_code == 403
    stored = db.execute(select(VisitAttachment)).scalars().all()
    db.commit()
    assert [item.content_type for item in stored] == ["image/png"]
    download = client.get(shared.json()["url"], headers=as_(db, cast, "a", Role.COORDINATOR))
    assert download.content == image
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in download.headers["content-security-policy"]
    refused = audit_entries(db, resource_type="visit_attachment", outcome="refused")
    assert [entry.detail["refused"] for entry in refused] == ["FILE_CONTENT_MISMATCH"]


def test_the_device_check_page_measures_against_this_visits_throughput_routes(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    patient = as_(db, cast, "a", Role.PATIENT)

    page = client.get(f"/visits/{visit.id}/device-check", headers=patient)
    data = attributes_of(page.text, "device-check")
    download = client.get(data["data-download-url"], headers=patient)
    upload = client.post(data["data-upload-url"], content=b"x" * 300_000,
                         headers={**patient, "content-type": "application/octet-stream"})

    assert data["data-required-mbps"] == "5"
    assert data["data-continue-url"] == f"/visits/{visit.id}/waiting"
    assert len(download.content) == 2_000_000
    assert download.headers["cache-control"] == "no-store"
    assert upload.json() == {"received_bytes": 300_000}
    staff = client.get(f"/visits/{visit.id}/device-check",
                       headers=as_(db, cast, "a", Role.COORDINATOR))
    assert staff.status_code == 403


def test_the_local_physician_enters_through_the_guest_link_as_the_local_physician(
        client: Any, db: Session, cast: Cast) -> None:
    add_local_physician(db, cast.actors, "a", languages=("en",))
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True,
                       tri_party=True)
    db.commit()
    link = client.post(f"/api/v1/visits/{visit.id}/guest-links",
                       headers=as_(db, cast, "a", Role.CLINICIAN)).json()
    guest_client = client  # the guest has no session: only the cookie the link sets
    guest_client.cookies.clear()

    entered = guest_client.get(link["url"].replace("http://testserver", ""),
                               follow_redirects=False)
    assert entered.status_code == 303
    cookie = entered.headers["set-cookie"]
    assert "HttpOnly" in cookie and f"Path=/visits/{visit.id}" in cookie
    token = link["url"].split("token=", 1)[1]
    guest = {"cookie": f"jaejin_guest={token}"}
    call = guest_client.get(f"/visits/{visit.id}/call", headers=guest)
    data = attributes_of(call.text, "visit")
    assert data["data-role"] == "local_physician"
    assert data["data-self-id"] == f"guest-{link['id']}"
    without_token = guest_client.post(f"/visits/{visit.id}/files", headers=guest,
                                      files={"file": ("letter.pdf", b"%PDF-1.4\n%%EOF\n")})
    assert without_token.status_code == 403
    shared = guest_client.post(f"/visits/{visit.id}/files",
                               headers={**guest, "X-CSRF-Token": data["data-csrf-token"]},
                               files={"file": ("letter.pdf", b"%PDF-1.4\n%%EOF\n")})
    assert shared.status_code == 201, shared.text
    other = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True)
    db.commit()
    assert guest_client.get(f"/visits/{other.id}/waiting", headers=guest,
                            follow_redirects=False).status_code == 403
