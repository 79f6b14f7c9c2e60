"""The visit's JSON API against the real app and database: the lifecycle judged by the policy for
the visit's own time, consent, identity, the timed call, the note, the encounter, guest links,
and every refusal answered clearly and audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.database import utcnow
from jaejin.core.events import OutboxMessage
from jaejin.directory.store import Consent, Encounter
from jaejin.policy.records import telemedicine_share
from jaejin.scheduling.schemas import AvailabilityIn
from jaejin.scheduling.store import Appointment, OwnerKind, save_availability
from jaejin.visits.lifecycle import VisitState
from jaejin.visits.store import CallIntervalRow, GuestLink, Visit, VisitNote
from tests.support import make_patient, problem

from .conftest import (
    Cast,
    add_local_physician,
    audit_entries,
    make_visit,
    start_session,
)


def as_(db: Session, cast: Cast, key: str, role: Role) -> dict[str, str]:
    return start_session(db, cast.actors.person(key, role).user.id)


def fresh(db: Session, visit_id: int) -> Visit:
    visit = db.get(Visit, visit_id, populate_existing=True)
    assert visit is not None
    db.commit()
    return visit


def fill_share_cap(db: Session, cast: Cast) -> None:
    """Institution A now does almost all its work by video: over the 30 % share cap."""
    patient = cast.actors.patients["a"]
    for days in range(1, 11):
        db.add(Encounter(institution_id=cast.actors.a.id, patient_id=patient.id, mode="video",
                         kind="visit", started_at=utcnow() - timedelta(days=days),
                         conditions=["I10"]))
    db.commit()


def test_a_patient_checks_in_consents_and_waits_judged_by_the_rules_for_the_visits_time(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    patient = as_(db, cast, "a", Role.PATIENT)

    response = client.post(f"/api/v1/visits/{visit.id}/arrive", json={"agree": True},
                           headers=patient)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "waiting_room" and body["consent_recorded"] is True
    decision = body["decision_at_check_in"]
    assert decision["decision"] == "conditional"
    assert [item["code"] for item in decision["conditions"]] == ["IDENTITY_CHECK_REQUIRED"]
    assert decision["decided_on"] == visit_day(db, visit)
    consent = db.execute(select(Consent).where(Consent.id == fresh(db, visit.id).consent_id)
                         ).scalar_one()
    assert consent.kind == "telemedicine_limits" and consent.detail["visit_id"] == visit.id
    events = [entry.detail.get("event") for entry in audit_entries(
        db, resource_type="visit", resource_id=str(visit.id), outcome="success")]
    assert "check_in" in events and "enter_waiting_room" in events


def visit_day(db: Session, visit: Visit) -> str:
    appointment = db.get(Appointment, visit.appointment_id)
    assert appointment is not None
    db.commit()
    from jaejin.policy.korean_time import KST

    return appointment.start_at.astimezone(KST).date().isoformat()


def test_a_patient_who_does_not_agree_is_checked_in_but_not_let_into_the_waiting_room(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()

    response = client.post(f"/api/v1/visits/{visit.id}/arrive", json={"agree": False},
                           headers=as_(db, cast, "a", Role.PATIENT))

    assert response.status_code == 422
    assert problem(response)["code"] == "CONSENT_NOT_GIVEN"
    assert fresh(db, visit.id).state == "checked_in"
    refused = audit_entries(db, resource_id=str(visit.id), outcome="refused")
    assert [entry.detail["refused"] for entry in refused] == ["not_agreed"]


def test_check_in_hours_before_the_visit_is_refused_with_the_opening_time(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", start=utcnow() + timedelta(hours=5))
    db.commit()

    response = client.post(f"/api/v1/visits/{visit.id}/check-in",
                           headers=as_(db, cast, "a", Role.PATIENT))

    assert response.status_code == 409
    assert problem(response)["code"] == "CHECK_IN_NOT_OPEN"
    assert "Seoul" in problem(response)["detail"]
    assert fresh(db, visit.id).state == "scheduled"


def test_a_visit_the_rules_no_longer_allow_cannot_check_in_and_the_answer_says_why(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    fill_share_cap(db, cast)

    response = client.post(f"/api/v1/visits/{visit.id}/arrive", json={"agree": True},
                           headers=as_(db, cast, "a", Role.PATIENT))

    # The same refusal as a booking the rules deny: 422 POLICY_DENIED, each reason with its rule.
    assert response.status_code == 422
    body = problem(response)
    assert body["code"] == "POLICY_DENIED"
    assert body["decision"]["decision"] == "denied"
    [reason] = [item for item in body["reasons"] if item["code"] == "SHARE_CAP_EXCEEDED"]
    assert reason["source"] and reason["message"] in body["detail"]
    assert "IN_PERSON_VISIT" in {item["code"] for item in body["alternatives"]}
    assert "conditions" in body
    stored = fresh(db, visit.id)
    assert stored.state == "scheduled"
    assert stored.decision_at_check_in is not None
    assert stored.decision_at_check_in["decision"] == "denied"


def test_a_visit_allowed_at_check_in_but_not_at_start_cannot_start(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True,
                       identity=True)
    db.commit()
    fill_share_cap(db, cast)

    response = client.post(f"/api/v1/visits/{visit.id}/call/start",
                           headers=as_(db, cast, "a", Role.CLINICIAN))

    assert response.status_code == 422
    assert problem(response)["code"] == "POLICY_DENIED"
    assert "SHARE_CAP_EXCEEDED" in {reason["code"] for reason in problem(response)["reasons"]}
    stored = fresh(db, visit.id)
    assert stored.state == "waiting_room"
    assert stored.decision_at_start is not None
    assert stored.decision_at_start["decision"] == "denied"
    assert db.execute(select(CallIntervalRow)).first() is None


def test_the_clinician_verifies_identity_runs_a_timed_call_and_closes_into_an_encounter(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True,
                       start=utcnow() - timedelta(minutes=2))
    db.commit()
    share_before = telemedicine_share(db, cast.actors.a.id, utcnow() + timedelta(hours=1))
    db.commit()
    doctor = as_(db, cast, "a", Role.CLINICIAN)
    base = f"/api/v1/visits/{visit.id}"

    refused = client.post(f"{base}/call/start", headers=doctor)
    assert refused.status_code == 409 and problem(refused)["code"] == "IDENTITY_NOT_VERIFIED"
    no_photo = client.post(f"{base}/identity", json={"method": "face_matches_photo_on_file"},
                           headers=doctor)
    assert no_photo.status_code == 409 and problem(no_photo)["code"] == "NO_PHOTO_ON_FILE"
    verified = client.post(f"{base}/identity", json={"method": "id_document_on_video"},
                           headers=doctor)
    assert verified.json()["identity"]["method"] == "id_document_on_video"

    started = client.post(f"{base}/call/start", headers=doctor)
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "in_call"
    assert started.json()["decision_at_start"]["decision"] == "allowed"
    assert client.post(f"{base}/call/pause", headers=doctor).json()["state"] == "waiting_room"
    assert client.post(f"{base}/call/start", headers=doctor).json()["state"] == "in_call"
    assert client.post(f"{base}/call/end", headers=doctor).json()["state"] == "wrap_up"

    unsigned = client.post(f"{base}/close", json={"mode": "audio"}, headers=doctor)
    assert unsigned.status_code == 409 and problem(unsigned)["code"] == "NOTE_NOT_SIGNED"
    note = client.put(f"{base}/note", headers=doctor, json={
        "subjective": "Headache gone.", "objective": "Home BP 128/82.",
        "assessment": "Hypertension, controlled.", "plan": "Continue amlodipine 5 mg.",
        "condition_codes": ["i10", "E78.5"], "follow_up_interval_days": 28})
    assert note.status_code == 200, note.text
    assert note.json()["note"]["condition_codes"] == ["I10", "E78.5"]
    assert client.post(f"{base}/note/sign", headers=doctor).json()["note"]["signed_at"]
    closed = client.post(f"{base}/close", json={"mode": "audio"}, headers=doctor)

    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert body["state"] == "closed" and body["mode"] == "audio"
    encounter = db.get(Encounter, body["encounter_id"])
    assert encounter is not None
    assert encounter.mode == "audio" and encounter.conditions == ["I10", "E78.5"]
    assert encounter.external_id == f"jaejin-visit-{visit.id}"
    assert encounter.summary == "Hypertension, controlled.\nContinue amlodipine 5 mg."
    intervals = db.execute(select(CallIntervalRow).where(CallIntervalRow.visit_id == visit.id)
                           ).scalars().all()
    assert len(intervals) == 2 and all(row.ended_at is not None for row in intervals)
    assert fresh(db, visit.id).clinician_minutes == body["clinician_minutes"] >= 1
    appointment = db.get(Appointment, visit.appointment_id, populate_existing=True)
    assert appointment is not None and appointment.status == "completed"
    assert telemedicine_share(db, cast.actors.a.id, utcnow() + timedelta(hours=1)) > share_before
    db.commit()


def test_only_the_visits_clinician_runs_the_call(client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True,
                       identity=True)
    db.commit()
    for role in (Role.PATIENT, Role.COORDINATOR, Role.INSTITUTION_ADMIN):
        response = client.post(f"/api/v1/visits/{visit.id}/call/start",
                               headers=as_(db, cast, "a", role))
        assert response.status_code == 403, (role, response.text)
    assert fresh(db, visit.id).state == "waiting_room"


def test_another_institutions_visit_is_absent_and_the_attempt_audited(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()

    response = client.get(f"/api/v1/visits/{visit.id}", headers=as_(db, cast, "b", Role.CLINICIAN))

    assert response.status_code == 404
    refused = audit_entries(db, resource_id=str(visit.id), outcome="refused")
    assert [entry.detail["refused"] for entry in refused] == ["other_institution"]


def test_another_patient_of_the_same_institution_is_refused(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    from jaejin.accounts.service import create_user

    other = make_patient(db, cast.actors.a, "MRN-A-OTHER")
    user = create_user(db, email="other.patient@test.example", password="x" * 12,
                       display_name="other", language="en",
                       memberships=[(cast.actors.a.id, Role.PATIENT)])
    other.user_id = user.id
    db.commit()

    response = client.get(f"/api/v1/visits/{visit.id}", headers=start_session(db, user.id))

    assert response.status_code == 403
    assert problem(response)["code"] == "NOT_A_PARTICIPANT"


def test_a_signed_note_is_final_and_bad_codes_are_named(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.IN_CALL, consent=True,
                       identity=True)
    db.commit()
    doctor = as_(db, cast, "a", Role.CLINICIAN)
    base = f"/api/v1/visits/{visit.id}"

    bad = client.put(f"{base}/note", json={"condition_codes": ["hypertension"]}, headers=doctor)
    assert bad.status_code == 422
    assert problem(bad)["errors"][0]["field"].startswith("condition_codes")
    incomplete = client.post(f"{base}/note/sign", headers=doctor)
    assert problem(incomplete)["code"] == "NOTE_INCOMPLETE"
    client.put(f"{base}/note", json={"assessment": "Stable.", "condition_codes": ["I10"]},
               headers=doctor)
    client.post(f"{base}/note/sign", headers=doctor)
    changed = client.put(f"{base}/note", json={"assessment": "Changed afterwards."},
                         headers=doctor)

    assert changed.status_code == 409 and problem(changed)["code"] == "NOTE_SIGNED"
    note = db.execute(select(VisitNote).where(VisitNote.visit_id == visit.id)).scalar_one()
    assert note.assessment == "Stable."
    db.commit()


def test_the_guest_link_is_mailed_in_the_local_physicians_language_and_replaces_the_last(
        client: Any, db: Session, cast: Cast) -> None:
    add_local_physician(db, cast.actors, "a", languages=("ko",))
    visit = make_visit(db, cast.actors, "a", tri_party=True)
    db.commit()
    assert visit.local_physician_required and visit.local_physician_id is not None
    doctor = as_(db, cast, "a", Role.CLINICIAN)

    first = client.post(f"/api/v1/visits/{visit.id}/guest-links", headers=doctor)
    second = client.post(f"/api/v1/visits/{visit.id}/guest-links", headers=doctor)

    assert first.status_code == 201 and second.status_code == 201
    mails = db.execute(select(OutboxMessage).where(OutboxMessage.topic == "notify.email")
                       .order_by(OutboxMessage.id)).scalars().all()
    db.commit()
    assert len(mails) == 2
    assert mails[-1].payload["to"] == "local.a@clinic.example"
    assert mails[-1].payload["language"] == "ko"
    assert second.json()["url"] in mails[-1].payload["text"]
    assert "화상 협진" in mails[-1].payload["subject"]
    old_token = first.json()["url"].split("token=", 1)[1]
    refused = client.get(f"/visits/{visit.id}/guest", params={"token": old_token},
                         follow_redirects=False)
    assert refused.status_code == 403
    new_token = second.json()["url"].split("token=", 1)[1]
    entered = client.get(f"/visits/{visit.id}/guest", params={"token": new_token},
                         follow_redirects=False)
    assert entered.status_code == 303
    assert entered.headers["location"] == f"/visits/{visit.id}/waiting"


def test_a_guest_link_keeps_a_long_language_tag_whole(
        client: Any, db: Session, cast: Cast) -> None:
    """BCP 47 tags up to 35 characters fit (PostgreSQL enforces the column length)."""
    physician = add_local_physician(db, cast.actors, "a", languages=("ko",))
    visit = make_visit(db, cast.actors, "a", tri_party=True)
    link = GuestLink(visit_id=visit.id, local_physician_id=physician.id, token_hash="f" * 64,
                     language="yue-Hant-HK", created_at=utcnow(),
                     expires_at=utcnow() + timedelta(hours=1))
    db.add(link)
    db.commit()

    stored = db.get(GuestLink, link.id, populate_existing=True)
    assert stored is not None and stored.language == "yue-Hant-HK"
    db.commit()


def test_forged_expired_and_other_visits_guest_links_are_refused_and_logged(
        client: Any, db: Session, cast: Cast) -> None:
    physician = add_local_physician(db, cast.actors, "a")
    visit = make_visit(db, cast.actors, "a", tri_party=True)
    other = make_visit(db, cast.actors, "a", tri_party=True,
                       start=utcnow() + timedelta(hours=3))
    from jaejin.core.security import token_digest

    db.add_all([
        GuestLink(visit_id=visit.id, local_physician_id=physician.id,
                  token_hash=token_digest("expired-token"), language="en",
                  expires_at=utcnow() - timedelta(minutes=1)),
        GuestLink(visit_id=other.id, local_physician_id=physician.id,
                  token_hash=token_digest("other-visit-token"), language="en",
                  expires_at=utcnow() + timedelta(hours=5)),
    ])
    db.commit()

    for token in ("forged-token", "expired-token", "other-visit-token", ""):
        response = client.get(f"/visits/{visit.id}/guest", params={"token": token},
                              headers={"accept": "application/json"}, follow_redirects=False)
        assert response.status_code == 403, (token, response.text)
        assert "set-cookie" not in response.headers
    reasons = {entry.detail["refused"] for entry in audit_entries(db, outcome="refused")}
    assert {"expired", "other_visit"} <= reasons


def test_no_show_and_cancel_reach_the_appointment(client: Any, db: Session, cast: Cast) -> None:
    missed = make_visit(db, cast.actors, "a", state=VisitState.CHECKED_IN,
                        start=utcnow() - timedelta(minutes=20))
    cancelled = make_visit(db, cast.actors, "a", start=utcnow() + timedelta(days=2))
    db.commit()
    coordinator = as_(db, cast, "a", Role.COORDINATOR)

    assert client.post(f"/api/v1/visits/{missed.id}/no-show",
                       headers=coordinator).json()["state"] == "no_show"
    response = client.post(f"/api/v1/visits/{cancelled.id}/cancel",
                           json={"reason": "Moving house."}, headers=coordinator)
    assert response.json()["state"] == "cancelled"

    statuses = {appointment.id: appointment.status for appointment in db.execute(
        select(Appointment).execution_options(populate_existing=True)).scalars()}
    db.commit()
    assert statuses[missed.appointment_id] == "no_show"
    assert statuses[cancelled.appointment_id] == "cancelled"
    again = client.post(f"/api/v1/visits/{cancelled.id}/check-in",
                        headers=as_(db, cast, "a", Role.PATIENT))
    assert again.status_code == 409 and problem(again)["code"] == "INVALID_TRANSITION"


def test_the_next_appointment_is_booked_from_the_note(
        client: Any, db: Session, cast: Cast) -> None:
    from tests.visits.authz_cases import _free_follow_up_slot

    save_availability(db, OwnerKind.PRACTITIONER, cast.actors.practitioners["a"].id,
                      cast.actors.a.id, AvailabilityIn.model_validate({"weekly": [
                          {"weekday": day, "start": "08:00", "end": "20:00"}
                          for day in range(1, 8)]}), updated_by="test")
    visit = make_visit(db, cast.actors, "a", state=VisitState.WRAP_UP, consent=True,
                       identity=True)
    db.commit()

    response = client.post(f"/api/v1/visits/{visit.id}/next-appointment",
                           json={"start": _free_follow_up_slot(), "mode": "video"},
                           headers=as_(db, cast, "a", Role.CLINICIAN))

    assert response.status_code == 201, response.text
    booked = response.json()
    assert booked["status"] == "booked" and booked["mode"] == "video"
    note = db.execute(select(VisitNote).where(VisitNote.visit_id == visit.id)).scalar_one()
    assert note.next_appointment_id == booked["id"]
    db.commit()


def test_the_code_search_finds_codes_by_code_and_by_korean_or_english_name(
        client: Any, db: Session, cast: Cast) -> None:
    doctor = as_(db, cast, "a", Role.CLINICIAN)

    by_code = client.get("/api/v1/visits/conditions", params={"q": "e11.9"}, headers=doctor)
    by_korean = client.get("/api/v1/visits/conditions", params={"q": "아토피"}, headers=doctor)
    patient = client.get("/api/v1/visits/conditions", params={"q": "I10"},
                         headers=as_(db, cast, "a", Role.PATIENT))

    assert by_code.json()[0]["code"] == "E11.9"
    assert {entry["code"] for entry in by_korean.json()} >= {"L20.9", "L20.8"}
    assert patient.status_code == 403
