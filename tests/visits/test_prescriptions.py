"""Prescribing in a video visit, against the real app and database: every prescription is judged
by the telemedicine rules of the visit's day (with the prescriptions already on the note), a
refused one is a 422 POLICY_DENIED naming the rule and nothing is stored, an allowed one is kept
with the code and pack that allowed it, so an auditor can replay it."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role, User
from jaejin.core.database import utcnow
from jaejin.directory.store import Encounter, Patient
from jaejin.policy import evaluate
from jaejin.policy.korean_time import KST
from jaejin.policy.records import policy_registry, request_for_visit
from jaejin.scheduling.store import Appointment
from jaejin.visits import prescribing
from jaejin.visits.lifecycle import VisitState, prescribing_open
from jaejin.visits.store import Visit, VisitNote, VisitPrescription
from tests.support import make_patient, problem

from .conftest import Cast, audit_entries, make_visit, start_session

# Wednesday 13 January 2027, 10:00 in Seoul: kr-msa-2026 (7 days' supply without an in-person
# record).
MSA_2027 = datetime(2027, 1, 13, 10, 0, tzinfo=KST)
# Wednesday 12 June 2024, 10:00: kr-pilot-2024-02 (obesity drugs not yet banned).
PILOT_2024 = datetime(2024, 6, 12, 10, 0, tzinfo=KST)
# Wednesday 13 September 2023, 20:00 (night): kr-pilot-2023-06 (a child's night first visit is
# advice only).
PILOT_2023_NIGHT = datetime(2023, 9, 13, 20, 0, tzinfo=KST)

AMLODIPINE = {"ingredient": "amlodipine", "atc": "C08CA01", "strength": "5 mg tablet",
              "frequency": "once a day", "days_supply": 30, "quantity": 30,
              "instructions": "Take in the morning."}


def as_(db: Session, cast: Cast, key: str, role: Role) -> dict[str, str]:
    return start_session(db, cast.actors.person(key, role).user.id)


def clinician(db: Session, cast: Cast, language: str = "en") -> dict[str, str]:
    user = db.get(User, cast.actors.person("a", Role.CLINICIAN).user.id)
    assert user is not None
    user.language = language
    db.commit()
    return as_(db, cast, "a", Role.CLINICIAN)


def in_call(db: Session, cast: Cast, **options: Any) -> Visit:
    visit = make_visit(db, cast.actors, "a", state=VisitState.IN_CALL, consent=True,
                       identity=True, **options)
    db.commit()
    return visit


def stored(db: Session, visit_id: int) -> list[VisitPrescription]:
    rows = list(db.execute(select(VisitPrescription).where(
        VisitPrescription.visit_id == visit_id).order_by(VisitPrescription.id)).scalars())
    db.commit()
    return rows


def new_patient(db: Session, cast: Cast, mrn: str, **overrides: Any) -> Patient:
    """A patient of A with no encounter on record (a first visit)."""
    patient = make_patient(db, cast.actors.a, mrn, **overrides)
    db.commit()
    return patient


def prescribe(client: Any, visit: Visit, headers: dict[str, str], **body: Any) -> Any:
    return client.post(f"/api/v1/visits/{visit.id}/prescriptions",
                       json={**AMLODIPINE, **body}, headers=headers)


# --------------------------------------------------------------------------- allowed


def test_an_allowed_prescription_is_stored_with_the_rule_and_pack_of_the_visits_day(
        client: Any, db: Session, cast: Cast) -> None:
    visit = in_call(db, cast)
    headers = clinician(db, cast)

    response = prescribe(client, visit, headers)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["ingredient"] == "amlodipine" and body["atc"] == "C08CA01"
    assert body["policy_code"] == "PRESCRIPTION_OK"
    appointment = db.get(Appointment, visit.appointment_id)
    assert appointment is not None
    day = appointment.start_at.astimezone(KST).date()
    in_force = policy_registry().korean_rules_on(day)
    assert in_force is not None
    assert body["policy_pack"] == in_force.pack.id
    assert body["policy_day"] == day.isoformat()
    [row] = stored(db, visit.id)
    assert (row.days_supply, row.quantity, row.strength, row.frequency, row.instructions) == (
        30, 30, "5 mg tablet", "once a day", "Take in the morning.")
    assert row.institution_id == cast.actors.a.id and row.created_by_user_id is not None
    listed = client.get(f"/api/v1/visits/{visit.id}/prescriptions", headers=headers)
    assert [item["id"] for item in listed.json()] == [row.id]
    created = audit_entries(db, resource_type="visit_prescription", action="create")
    assert [(entry.resource_id, entry.outcome, entry.patient_id) for entry in created] == [
        (str(row.id), "success", visit.patient_id)]
    assert created[0].detail["pack"] == in_force.pack.id
    reads = audit_entries(db, resource_type="visit_prescription", action="read")
    assert reads and reads[-1].detail == {"prescriptions": 1}


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize(("item", "group"), [
    ({"ingredient": "zolpidem", "atc": "N05CF02"}, "narcotic_psychotropic"),
    ({"ingredient": "sleeping product X", "controlled": True}, "narcotic_psychotropic"),
    ({"ingredient": "tadalafil"}, "misuse_potential"),
    ({"ingredient": "levonorgestrel", "atc": "G03AD01"}, "emergency_contraception"),
    ({"ingredient": "orlistat"}, "obesity"),
])
def test_each_prohibited_class_is_refused_with_its_rule_and_nothing_is_stored(
        client: Any, db: Session, cast: Cast, item: dict[str, Any], group: str) -> None:
    visit = in_call(db, cast)
    headers = clinician(db, cast)

    response = prescribe(client, visit, headers, **{"atc": None, **item})

    assert response.status_code == 422, response.text
    refused = problem(response)
    assert refused["code"] == "POLICY_DENIED"
    [reason] = refused["reasons"]
    assert reason["code"] == "PRESCRIPTION_PROHIBITED"
    assert reason["ingredient"] == item["ingredient"]
    pack = policy_registry().korean_rules_on(date.fromisoformat(refused["decision"]["decided_on"]))
    assert pack is not None and group in pack.pack.parameters.prohibited_drug_groups.value
    assert reason["source"] == pack.pack.parameters.prohibited_drug_groups.source
    assert item["ingredient"] in refused["detail"]
    assert stored(db, visit.id) == []
    [entry] = audit_entries(db, resource_type="visit_prescription", outcome="refused")
    assert entry.detail["refused"] == "POLICY_DENIED"
    assert entry.detail["code"] == "PRESCRIPTION_PROHIBITED"


def test_a_dry_run_says_allowed_or_not_and_why_and_stores_nothing(
        client: Any, db: Session, cast: Cast) -> None:
    visit = in_call(db, cast)
    headers = clinician(db, cast)
    url = f"/api/v1/visits/{visit.id}/prescriptions/check"

    allowed = client.post(url, json=AMLODIPINE, headers=headers)
    refused = client.post(url, json={**AMLODIPINE, "ingredient": "alprazolam", "atc": None},
                          headers=headers)

    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["allowed"] is True and allowed.json()["reasons"] == []
    assert allowed.json()["code"] == "PRESCRIPTION_OK"
    assert refused.status_code == 200, refused.text
    verdict = refused.json()
    assert verdict["allowed"] is False and verdict["code"] == "PRESCRIPTION_PROHIBITED"
    assert [reason["code"] for reason in verdict["reasons"]] == ["PRESCRIPTION_PROHIBITED"]
    assert verdict["reasons"][0]["source"]
    assert stored(db, visit.id) == []
    checks = audit_entries(db, resource_type="visit_prescription", action="read")
    assert [entry.detail.get("allowed") for entry in checks] == [True, False]


def test_bad_input_names_the_field_and_stores_nothing(client: Any, db: Session,
                                                      cast: Cast) -> None:
    visit = in_call(db, cast)
    headers = clinician(db, cast)

    response = prescribe(client, visit, headers, atc="not-an-atc", days_supply=0,
                         ingredient="  ")

    assert response.status_code == 422
    fields = {error["field"] for error in problem(response)["errors"]}
    assert fields == {"atc", "days_supply", "ingredient"}
    assert stored(db, visit.id) == []


@pytest.mark.parametrize("not_text", [{"name": "amlodipine"}, ["amlodipine"], 5, True])
def test_a_text_field_sent_as_something_else_is_refused_and_nothing_is_stored(
        client: Any, db: Session, cast: Cast, not_text: Any) -> None:
    visit = in_call(db, cast)
    headers = clinician(db, cast)

    response = prescribe(client, visit, headers, ingredient=not_text, strength=not_text,
                         days_supply=7)

    assert response.status_code == 422
    errors = problem(response)["errors"]
    assert {error["field"] for error in errors} == {"ingredient", "strength"}
    assert {error["code"] for error in errors} == {"STRING_TYPE"}
    assert stored(db, visit.id) == []


# --------------------------------------------------------------------------- days and minors


def test_days_supply_over_the_limit_is_refused_without_an_in_person_record(
        client: Any, db: Session, cast: Cast) -> None:
    first_timer = new_patient(db, cast, "MRN-FIRST")
    visit = in_call(db, cast, start=MSA_2027, patient_id=first_timer.id)
    headers = clinician(db, cast)

    over = prescribe(client, visit, headers, days_supply=8)
    within = prescribe(client, visit, headers, days_supply=7)

    assert over.status_code == 422, over.text
    [reason] = problem(over)["reasons"]
    assert reason["code"] == "DAYS_SUPPLY_LIMIT" and "7" in reason["message"]
    pack = policy_registry().korean_rules_on(MSA_2027.date())
    assert pack is not None and pack.pack.id == "kr-msa-2026"
    assert reason["source"] == pack.pack.parameters.days_supply_limit_without_in_person.source
    assert within.status_code == 201, within.text
    assert within.json()["policy_pack"] == "kr-msa-2026"
    assert [row.days_supply for row in stored(db, visit.id)] == [7]


def test_with_an_in_person_record_the_days_limit_does_not_apply(
        client: Any, db: Session, cast: Cast) -> None:
    # Patient A was seen in person 20 days ago (tests.support): a follow-up under kr-msa-2026.
    visit = in_call(db, cast, start=MSA_2027)

    response = prescribe(client, visit, clinician(db, cast), days_supply=90)

    assert response.status_code == 201, response.text
    assert response.json()["policy_pack"] == "kr-msa-2026"


def test_the_prescriptions_already_on_the_note_are_judged_with_the_new_one(
        client: Any, db: Session, cast: Cast) -> None:
    first_timer = new_patient(db, cast, "MRN-NOTE")
    visit = in_call(db, cast, start=MSA_2027, patient_id=first_timer.id)
    headers = clinician(db, cast)
    assert prescribe(client, visit, headers, days_supply=5).status_code == 201

    second = prescribe(client, visit, headers, ingredient="cetirizine", atc="R06AE07",
                       days_supply=7)

    assert second.status_code == 201, second.text
    items = [row.ingredient for row in stored(db, visit.id)]
    assert items == ["amlodipine", "cetirizine"]
    asked = [entry.detail for entry in audit_entries(
        db, resource_type="visit_prescription", action="create")]
    assert [detail["code"] for detail in asked] == ["PRESCRIPTION_OK", "PRESCRIPTION_OK"]


def test_a_child_at_a_night_first_visit_gets_advice_only_under_the_2023_pilot(
        client: Any, db: Session, cast: Cast) -> None:
    child = new_patient(db, cast, "MRN-CHILD", birth_date=date(2015, 4, 1))
    visit = in_call(db, cast, start=PILOT_2023_NIGHT, patient_id=child.id)

    response = prescribe(client, visit, clinician(db, cast), ingredient="acetaminophen",
                         atc="N02BE01", days_supply=3)

    assert response.status_code == 422, response.text
    refused = problem(response)
    assert [reason["code"] for reason in refused["reasons"]] == ["MINOR_NO_PRESCRIPTION"]
    assert refused["decision"]["pack"] == "kr-pilot-2023-06"
    assert refused["reasons"][0]["source"]
    assert stored(db, visit.id) == []


# --------------------------------------------------------------------------- languages


def test_the_refusal_speaks_the_clinicians_language(client: Any, db: Session,
                                                    cast: Cast) -> None:
    visit = in_call(db, cast)

    korean = problem(prescribe(client, visit, clinician(db, cast, "ko"),
                               ingredient="zolpidem", atc=None))
    english = problem(prescribe(client, visit, clinician(db, cast, "en"),
                                ingredient="zolpidem", atc=None))

    assert korean["code"] == english["code"] == "POLICY_DENIED"
    assert "처방" in korean["detail"] and "prescription" in english["detail"]
    assert any("가" <= char <= "힣" for char in korean["reasons"][0]["message"])
    assert english["reasons"][0]["message"].isascii()
    assert korean["reasons"][0]["source"] == english["reasons"][0]["source"]


# --------------------------------------------------------------------------- replay


def test_an_old_visit_is_judged_and_replayable_under_the_pack_of_its_own_day(
        client: Any, db: Session, cast: Cast) -> None:
    old_patient = new_patient(db, cast, "MRN-2024")
    old = in_call(db, cast, start=PILOT_2024, patient_id=old_patient.id)
    today = in_call(db, cast)
    headers = clinician(db, cast)
    orlistat = {"ingredient": "orlistat", "atc": "A08AB01", "days_supply": 30}

    then = prescribe(client, old, headers, **orlistat)
    now = prescribe(client, today, headers, **orlistat)

    # Obesity drugs were banned from 2024-12-02: allowed on the old visit's day, not today.
    assert then.status_code == 201, then.text
    assert now.status_code == 422 and problem(now)["reasons"][0]["code"] == (
        "PRESCRIPTION_PROHIBITED")
    [row] = stored(db, old.id)
    in_force = policy_registry().korean_rules_on(PILOT_2024.date())
    assert in_force is not None
    assert row.policy_pack == in_force.pack.id == "kr-pilot-2024-02"
    assert row.policy_day == PILOT_2024.date()
    # The auditor's replay: the stored inputs, asked again for the visit's time, give the same.
    patient = db.get(Patient, old_patient.id)
    assert patient is not None
    request = request_for_visit(
        db, patient=patient, institution=cast.actors.a, at=PILOT_2024, mode="video",
        condition="I10", identity_verified=True, lang="en",
        prescriptions=[prescribing.stored_item(row)])
    replayed = evaluate(request, policy_registry())
    assert replayed.pack == row.policy_pack
    assert [str(item.code) for item in replayed.prescriptions] == [row.policy_code]
    db.commit()


# --------------------------------------------------------------------------- who and when


def test_another_institutions_clinician_is_told_the_visit_does_not_exist(
        client: Any, db: Session, cast: Cast) -> None:
    visit = in_call(db, cast)
    other = as_(db, cast, "b", Role.CLINICIAN)

    added = prescribe(client, visit, other)
    listed = client.get(f"/api/v1/visits/{visit.id}/prescriptions", headers=other)

    assert added.status_code == 404 and listed.status_code == 404
    assert problem(added)["code"] == "NOT_FOUND"
    assert stored(db, visit.id) == []


@pytest.mark.parametrize("role", [Role.PATIENT, Role.COORDINATOR])
def test_only_the_visits_clinician_prescribes(client: Any, db: Session, cast: Cast,
                                              role: Role) -> None:
    visit = in_call(db, cast)

    response = prescribe(client, visit, as_(db, cast, "a", role))

    assert response.status_code == 403
    assert problem(response)["code"] == "FORBIDDEN"
    assert stored(db, visit.id) == []
    [entry] = audit_entries(db, resource_type="visit", outcome="refused", action="create")
    assert entry.detail == {"refused": "role"}


def test_a_visit_moved_to_in_person_is_no_longer_prescribed_for_by_telemedicine(
        client: Any, db: Session, cast: Cast) -> None:
    visit = in_call(db, cast)
    appointment = db.get(Appointment, visit.appointment_id)
    assert appointment is not None
    appointment.mode = "in_person"
    db.commit()

    response = prescribe(client, visit, clinician(db, cast))

    assert response.status_code == 409
    assert problem(response)["code"] == "NOT_A_TELEMEDICINE_VISIT"
    assert stored(db, visit.id) == []


@pytest.mark.parametrize("state", [VisitState.SCHEDULED, VisitState.WAITING_ROOM,
                                   VisitState.CLOSED, VisitState.CANCELLED])
def test_no_prescription_before_the_call_or_after_the_visit(
        client: Any, db: Session, cast: Cast, state: VisitState) -> None:
    visit = make_visit(db, cast.actors, "a", state=state, consent=True, identity=True)
    db.commit()

    response = prescribe(client, visit, clinician(db, cast))

    assert response.status_code == 409
    body = problem(response)
    assert body["code"] == "PRESCRIBING_NOT_OPEN" and body["state"] == state.value
    assert stored(db, visit.id) == []


def test_a_signed_note_freezes_its_prescriptions(client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WRAP_UP, consent=True,
                       identity=True)
    db.commit()
    headers = clinician(db, cast)
    added = prescribe(client, visit, headers)
    assert added.status_code == 201, added.text
    db.add(VisitNote(visit_id=visit.id, assessment="Controlled.", condition_codes=["I10"],
                     signed_at=utcnow()))
    db.commit()

    again = prescribe(client, visit, headers, ingredient="cetirizine", atc=None)
    removed = client.delete(f"/api/v1/visits/{visit.id}/prescriptions/{added.json()['id']}",
                            headers=headers)

    assert again.status_code == removed.status_code == 409
    assert problem(removed)["code"] == "PRESCRIBING_NOT_OPEN"
    assert [row.removed_at for row in stored(db, visit.id)] == [None]


def test_a_prescription_withdrawn_from_the_open_note_stays_in_the_record_as_removed(
        client: Any, db: Session, cast: Cast) -> None:
    visit = in_call(db, cast)
    headers = clinician(db, cast)
    added = prescribe(client, visit, headers).json()
    url = f"/api/v1/visits/{visit.id}/prescriptions/{added['id']}"

    assert client.delete(url, headers=headers).status_code == 204
    assert client.delete(url, headers=headers).status_code == 404

    assert client.get(f"/api/v1/visits/{visit.id}/prescriptions", headers=headers).json() == []
    [row] = stored(db, visit.id)
    assert row.removed_at is not None and row.removed_by_user_id is not None
    [entry] = audit_entries(db, resource_type="visit_prescription", action="delete")
    assert entry.resource_id == str(row.id)


def test_the_encounter_summary_lists_the_notes_prescriptions_in_the_patients_language(
        client: Any, db: Session, cast: Cast) -> None:
    patient = db.get(Patient, cast.actors.patients["a"].id)
    assert patient is not None
    patient.preferred_language = "ja"
    db.commit()
    visit = in_call(db, cast)
    headers = clinician(db, cast)
    base = f"/api/v1/visits/{visit.id}"
    assert prescribe(client, visit, headers).status_code == 201
    withdrawn = prescribe(client, visit, headers, ingredient="cetirizine", atc=None,
                          strength="10 mg", days_supply=5, quantity=None, instructions="")
    assert withdrawn.status_code == 201, withdrawn.text
    assert client.delete(f"{base}/prescriptions/{withdrawn.json()['id']}",
                         headers=headers).status_code == 204
    assert client.post(f"{base}/call/end", headers=headers).status_code == 200
    assert client.put(f"{base}/note", json={"assessment": "Hypertension, controlled.",
                                            "plan": "Continue.", "condition_codes": ["I10"]},
                      headers=headers).status_code == 200
    assert client.post(f"{base}/note/sign", headers=headers).status_code == 200

    closed = client.post(f"{base}/close", json={"mode": "video"}, headers=headers)

    assert closed.status_code == 200, closed.text
    encounter = db.get(Encounter, closed.json()["encounter_id"])
    assert encounter is not None
    assert encounter.summary == (
        "Hypertension, controlled.\nContinue.\n\n"
        "処方\n"
        "- amlodipine (C08CA01): 5 mg tablet · once a day · Take in the morning.; "
        "日数: 30; 数量: 30")
    db.commit()
    # What hospital systems read of the encounter carries it too.
    integration = client.get("/api/v1/encounters", params={"patient_id": patient.id},
                             headers=headers)
    assert integration.status_code == 200, integration.text
    [listed] = [item for item in integration.json() if item["id"] == encounter.id]
    assert "amlodipine" in listed["summary"] and "cetirizine" not in listed["summary"]


def test_prescribing_is_open_from_the_call_until_the_note_is_signed() -> None:
    open_states = {(state, started) for state in VisitState for started in (False, True)
                   if prescribing_open(state, call_started=started, note_signed=False)}
    assert open_states == {(VisitState.IN_CALL, False), (VisitState.IN_CALL, True),
                           (VisitState.WRAP_UP, False), (VisitState.WRAP_UP, True),
                           (VisitState.WAITING_ROOM, True)}
    assert not any(prescribing_open(state, call_started=True, note_signed=True)
                   for state in VisitState)


# --------------------------------------------------------------------------- the page


def test_the_visit_page_checks_and_adds_through_its_prescription_section(
        client: Any, db: Session, cast: Cast) -> None:
    visit = in_call(db, cast)
    headers = clinician(db, cast, "ko")
    form = {"ingredient": "zolpidem", "days_supply": "7", "strength": "10 mg",
            "csrf_token": headers["X-CSRF-Token"]}

    page = client.get(f"/visits/{visit.id}", headers=headers)
    refused = client.post(f"/visits/{visit.id}/prescriptions", data=form, headers=headers)
    checked = client.post(f"/visits/{visit.id}/prescriptions/check",
                          data={**form, "ingredient": "amlodipine"}, headers=headers)
    added = client.post(f"/visits/{visit.id}/prescriptions",
                        data={**form, "ingredient": "amlodipine", "atc": "C08CA01"},
                        headers=headers)

    assert page.status_code == 200
    assert 'id="visit-prescriptions"' in page.text and 'id="prescription-form"' in page.text
    assert refused.status_code == 422
    assert 'data-problem="POLICY_DENIED"' in refused.text
    assert 'data-code="PRESCRIPTION_PROHIBITED"' in refused.text
    assert "근거:" in refused.text and 'value="zolpidem"' in refused.text
    assert checked.status_code == 200 and 'data-verdict="allowed"' in checked.text
    assert stored(db, visit.id)[0].ingredient == "amlodipine"
    assert added.status_code == 201 and 'data-policy-code="PRESCRIPTION_OK"' in added.text


def test_the_page_form_names_a_bad_field(client: Any, db: Session, cast: Cast) -> None:
    visit = in_call(db, cast)
    headers = clinician(db, cast)

    response = client.post(f"/visits/{visit.id}/prescriptions", data={
        "ingredient": "amlodipine", "days_supply": "0", "atc": "12",
        "csrf_token": headers["X-CSRF-Token"]}, headers=headers)

    assert response.status_code == 422
    assert 'id="rx-days_supply-error"' in response.text and 'id="rx-atc-error"' in response.text
    assert stored(db, visit.id) == []



def test_nothing_is_prescribed_on_a_visit_the_rules_deny(client: Any, db: Session,
                                                         cast: Cast) -> None:
    visit = in_call(db, cast)
    # Institution A now does almost all its work by video: over the 30 % share cap.
    for days in range(1, 11):
        db.add(Encounter(institution_id=cast.actors.a.id, patient_id=visit.patient_id,
                         mode="video", kind="visit", started_at=utcnow() - timedelta(days=days),
                         conditions=["I10"]))
    db.commit()

    response = prescribe(client, visit, clinician(db, cast))

    assert response.status_code == 422, response.text
    refused = problem(response)
    assert refused["code"] == "POLICY_DENIED" and refused["decision"]["decision"] == "denied"
    assert [reason["code"] for reason in refused["reasons"]] == ["SHARE_CAP_EXCEEDED"]
    assert stored(db, visit.id) == []
