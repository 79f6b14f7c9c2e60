"""The care team's workflow API: care plans, alerts and their steps, escalation policy, triage."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.core.database import session_factory
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.store import CarePlanRow
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    add_plan,
    alerts_of,
    blood_pressure,
    cheap_password_hashing,
    now_utc,
    raise_alert,
    store_readings,
)
from tests.support import bearer, client_token, make_patient, problem, sign_in


def staff(client, actors, role: Role = Role.CLINICIAN, key: str = "a") -> dict[str, str]:
    return {"X-CSRF-Token": sign_in(client, actors.person(key, role))}


def plan_url(patient_id: int) -> str:
    return f"/api/v1/monitoring/patients/{patient_id}/care-plan"


def audit_actions(engine, resource_type: str) -> list[tuple[str, int | None, dict]]:
    with session_factory(engine)() as session:
        return [(entry.action, entry.patient_id, entry.detail) for entry in session.execute(
            select(AuditEntry).where(AuditEntry.resource_type == resource_type)
            .order_by(AuditEntry.id)).scalars()]


def crisis_alert(db, patient):
    return raise_alert(db, patient, blood_pressure(patient, 186, 112, now_utc()))


# ------------------------------------------------------------------------------ care plans


def test_an_unenrolled_patient_reads_as_not_enrolled(client, actors):
    headers = staff(client, actors)
    response = client.get(plan_url(actors.patients["a"].id), headers=headers)
    assert response.status_code == 200
    assert response.json() == {"patient_id": actors.patients["a"].id, "enrolled": False,
                               "id": None, "template": None, "overrides": {},
                               "created_by": None, "created_at": None, "plan": None}


def test_a_clinician_sets_a_plan_from_a_template_with_overrides(client, actors, engine):
    headers = staff(client, actors)
    patient = actors.patients["a"]
    response = client.put(plan_url(patient.id), headers=headers, json={
        "template": "hypertension", "overrides": {"high_risk": True, "bp_crisis_systolic": 175}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["enrolled"] is True and body["template"] == "hypertension"
    assert body["overrides"] == {"high_risk": True, "bp_crisis_systolic": 175.0}
    # Marking the patient high-risk moves the target to 130/80 (DOMAIN.md section 4).
    assert body["plan"]["thresholds"]["bp_target_systolic"] == 130
    assert body["plan"]["thresholds"]["bp_target_diastolic"] == 80
    assert body["plan"]["thresholds"]["bp_crisis_systolic"] == 175
    assert body["plan"]["expected_every_hours"]["systolic"] == 24
    assert body["plan"]["missing_after_days"] == {"systolic": 3}
    assert client.get(plan_url(patient.id), headers=headers).json() == body
    actions = audit_actions(engine, "monitoring_care_plan")
    assert ("update", patient.id) in [(action, who) for action, who, _ in actions]
    assert ("read", patient.id) in [(action, who) for action, who, _ in actions]


def test_a_new_plan_replaces_the_old_one(client, actors, engine):
    headers = staff(client, actors)
    patient = actors.patients["a"]
    client.put(plan_url(patient.id), headers=headers, json={"template": "hypertension"})
    second = client.put(plan_url(patient.id), headers=headers,
                        json={"template": "heart_failure", "overrides": {"weight_gain_kg": 1.5}})
    assert second.status_code == 200
    with session_factory(engine)() as session:
        rows = list(session.execute(select(CarePlanRow).where(
            CarePlanRow.patient_id == patient.id).order_by(CarePlanRow.id)).scalars())
    assert [(row.template, row.active) for row in rows] == [
        ("hypertension", False), ("heart_failure", True)]
    assert rows[0].deactivated_at is not None
    assert second.json()["plan"]["thresholds"]["weight_gain_kg"] == 1.5


def test_it_refuses_a_plan_whose_thresholds_contradict_each_other(client, actors, engine):
    headers = staff(client, actors)
    response = client.put(plan_url(actors.patients["a"].id), headers=headers, json={
        "template": "hypertension", "overrides": {"bp_crisis_systolic": 130}})
    assert response.status_code == 422
    body = problem(response)
    assert body["code"] == "CARE_PLAN_INCONSISTENT"
    assert any("crisis systolic threshold" in error["message"] for error in body["errors"])
    with session_factory(engine)() as session:
        assert session.execute(select(CarePlanRow)).first() is None


def test_it_explains_a_contradiction_in_the_readers_language(client, actors, db):
    actors.person("a", Role.CLINICIAN).user.language = "ko"
    db.commit()
    headers = staff(client, actors)
    response = client.put(plan_url(actors.patients["a"].id), headers=headers, json={
        "template": "type2_diabetes",
        "overrides": {"glucose_level2_low": 80, "glucose_level1_low": 70}})
    assert response.status_code == 422
    messages = " ".join(error["message"] for error in problem(response)["errors"])
    assert "저혈당" in messages


def test_it_refuses_unknown_fields_and_templates(client, actors):
    headers = staff(client, actors)
    url = plan_url(actors.patients["a"].id)
    unknown_field = client.put(url, headers=headers,
                               json={"template": "hypertension", "overrides": {"colour": "red"}})
    assert unknown_field.status_code == 422
    assert problem(unknown_field)["code"] == "VALIDATION_FAILED"
    unknown_template = client.put(url, headers=headers, json={"template": "astrology"})
    assert unknown_template.status_code == 422
    out_of_range = client.put(url, headers=headers, json={
        "template": "hypertension", "overrides": {"spo2_low": 120}})
    assert out_of_range.status_code == 422


def test_another_institutions_patient_is_not_found(client, actors):
    headers = staff(client, actors, key="b")
    patient = actors.patients["a"]
    assert client.get(plan_url(patient.id), headers=headers).status_code == 404
    response = client.put(plan_url(patient.id), headers=headers, json={"template": "hypertension"})
    assert response.status_code == 404
    assert problem(response)["code"] == "NOT_FOUND"


def test_only_clinicians_set_plans_and_patients_read_none(client, actors):
    patient = actors.patients["a"]
    coordinator = staff(client, actors, Role.COORDINATOR)
    refused = client.put(plan_url(patient.id), headers=coordinator,
                         json={"template": "hypertension"})
    assert refused.status_code == 403
    assert client.get(plan_url(patient.id), headers=coordinator).status_code == 200
    own = {"X-CSRF-Token": sign_in(client, actors.person("a", Role.PATIENT))}
    assert client.get(plan_url(patient.id), headers=own).status_code == 403


def test_a_hospital_system_sets_plans_with_the_write_scope_only(client, actors):
    patient = actors.patients["a"]
    writer = bearer(client_token(client, actors.clients["a"], "monitoring.read monitoring.write"))
    assert client.put(plan_url(patient.id), headers=writer,
                      json={"template": "post_operative"}).status_code == 200
    reader = bearer(client_token(client, actors.clients["a"], "monitoring.read"))
    refused = client.put(plan_url(patient.id), headers=reader, json={"template": "hypertension"})
    assert refused.status_code == 403
    assert problem(refused)["code"] == "INSUFFICIENT_SCOPE"
    other = bearer(client_token(client, actors.clients["b"], "monitoring.write"))
    assert client.put(plan_url(patient.id), headers=other,
                      json={"template": "hypertension"}).status_code == 404


# ---------------------------------------------------------------------------------- alerts


def test_alerts_are_listed_for_the_callers_institutions_only(client, actors, db):
    mine = crisis_alert(db, actors.patients["a"])
    theirs = crisis_alert(db, actors.patients["b"])
    headers = staff(client, actors)
    listed = client.get("/api/v1/monitoring/alerts", headers=headers).json()
    assert [item["id"] for item in listed] == [mine.id]
    assert listed[0]["severity"] == "critical" and listed[0]["status"] == "open"
    assert listed[0]["explanation"].startswith("Blood pressure 186/112 mmHg")
    assert client.get(f"/api/v1/monitoring/alerts/{theirs.id}", headers=headers).status_code == 404
    step = client.post(f"/api/v1/monitoring/alerts/{theirs.id}/acknowledge", headers=headers)
    assert step.status_code == 404


def test_acknowledge_then_resolve_and_a_stale_second_step_is_a_conflict(client, actors, db,
                                                                        engine):
    row = crisis_alert(db, actors.patients["a"])
    headers = staff(client, actors)
    url = f"/api/v1/monitoring/alerts/{row.id}"
    acknowledged = client.post(f"{url}/acknowledge", headers=headers)
    assert acknowledged.status_code == 200
    assert acknowledged.json()["status"] == "acknowledged"
    clinician = actors.person("a", Role.CLINICIAN).user
    assert acknowledged.json()["acknowledged_by"] == f"user:{clinician.id}"
    again = client.post(f"{url}/acknowledge", headers=headers)
    assert again.status_code == 409
    assert problem(again)["code"] == "ALERT_STATE_CONFLICT"
    resolved = client.post(f"{url}/resolve", headers=headers,
                           json={"note": "Called; re-measured 138/84."})
    assert resolved.status_code == 200
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["resolution_note"] == "Called; re-measured 138/84."
    for step in ("resolve", "acknowledge"):
        stale = client.post(f"{url}/{step}", headers=headers)
        assert stale.status_code == 409
        assert problem(stale)["status"] == "resolved"
    steps = [detail["step"] for action, _, detail in audit_actions(engine, "monitoring_alert")
             if action == "update"]
    assert steps == ["acknowledge", "resolve"]


def test_a_step_on_an_alert_that_changed_since_the_caller_looked_is_a_conflict(client, actors, db):
    row = crisis_alert(db, actors.patients["a"])
    headers = staff(client, actors)
    url = f"/api/v1/monitoring/alerts/{row.id}"
    assert client.post(f"{url}/acknowledge", headers=headers).status_code == 200
    # A colleague's screen still shows the alert open: their resolve is refused, not applied.
    stale = client.post(f"{url}/resolve", headers=headers, json={"expected_status": "open"})
    assert stale.status_code == 409
    assert problem(stale)["status"] == "acknowledged"
    assert client.get(url, headers=headers).json()["status"] == "acknowledged"


def test_a_critical_alert_is_acknowledged_before_it_can_be_snoozed(client, actors, db):
    row = crisis_alert(db, actors.patients["a"])
    headers = staff(client, actors, Role.COORDINATOR)
    url = f"/api/v1/monitoring/alerts/{row.id}"
    refused = client.post(f"{url}/snooze", headers=headers, json={"minutes": 60})
    assert refused.status_code == 409
    assert problem(refused)["code"] == "ACKNOWLEDGE_FIRST"
    client.post(f"{url}/acknowledge", headers=headers)
    snoozed = client.post(f"{url}/snooze", headers=headers, json={"minutes": 120})
    assert snoozed.status_code == 200
    body = snoozed.json()
    assert body["status"] == "snoozed"
    assert body["snoozed_until"] is not None


def test_it_refuses_a_malformed_snooze(client, actors, db):
    row = crisis_alert(db, actors.patients["a"])
    headers = staff(client, actors)
    url = f"/api/v1/monitoring/alerts/{row.id}"
    client.post(f"{url}/acknowledge", headers=headers)
    both = client.post(f"{url}/snooze", headers=headers,
                       json={"minutes": 5, "until": (now_utc() + timedelta(hours=1)).isoformat()})
    assert both.status_code == 422
    neither = client.post(f"{url}/snooze", headers=headers, json={})
    assert neither.status_code == 422
    past = client.post(f"{url}/snooze", headers=headers,
                       json={"until": (now_utc() - timedelta(hours=1)).isoformat()})
    assert past.status_code == 422
    assert problem(past)["code"] == "SNOOZE_IN_THE_PAST"
    too_long = client.post(f"{url}/snooze", headers=headers, json={"minutes": 8 * 24 * 60})
    assert too_long.status_code == 422
    naive = client.post(f"{url}/snooze", headers=headers, json={"until": "2030-01-01T10:00:00"})
    assert naive.status_code == 422


def test_admins_read_alerts_but_take_no_steps(client, actors, db):
    row = crisis_alert(db, actors.patients["a"])
    headers = staff(client, actors, Role.INSTITUTION_ADMIN)
    assert client.get(f"/api/v1/monitoring/alerts/{row.id}", headers=headers).status_code == 200
    refused = client.post(f"/api/v1/monitoring/alerts/{row.id}/acknowledge", headers=headers)
    assert refused.status_code == 403


def test_resolved_alerts_are_listed_on_request(client, actors, db):
    row = crisis_alert(db, actors.patients["a"])
    headers = staff(client, actors)
    client.post(f"/api/v1/monitoring/alerts/{row.id}/acknowledge", headers=headers)
    client.post(f"/api/v1/monitoring/alerts/{row.id}/resolve", headers=headers)
    assert client.get("/api/v1/monitoring/alerts", headers=headers).json() == []
    history = client.get("/api/v1/monitoring/alerts?status=resolved", headers=headers).json()
    assert [item["id"] for item in history] == [row.id]
    bad = client.get("/api/v1/monitoring/alerts?status=forgotten", headers=headers)
    assert bad.status_code == 422


# ------------------------------------------------------------------------------- escalation


def test_an_admin_sets_the_escalation_delay_and_the_on_call_clinician(client, actors):
    institution = actors.a
    clinician = actors.person("a", Role.CLINICIAN).user
    headers = staff(client, actors, Role.INSTITUTION_ADMIN)
    url = f"/api/v1/monitoring/institutions/{institution.id}/escalation"
    assert client.get(url, headers=headers).json()["escalate_after_minutes"] == 15
    response = client.put(url, headers=headers, json={
        "escalate_after_minutes": 5, "on_call_user_id": clinician.id,
        "on_call_phone": "+821055501234"})
    assert response.status_code == 200, response.text
    assert response.json() == {"institution_id": institution.id, "escalate_after_minutes": 5,
                               "on_call_user_id": clinician.id,
                               "on_call_name": clinician.display_name,
                               "on_call_phone": "+821055501234"}
    cleared = client.put(url, headers=headers, json={"on_call_phone": None})
    assert cleared.json()["on_call_phone"] is None
    assert cleared.json()["on_call_user_id"] == clinician.id


def test_the_on_call_person_must_be_a_clinician_of_the_institution(client, actors):
    headers = staff(client, actors, Role.INSTITUTION_ADMIN)
    url = f"/api/v1/monitoring/institutions/{actors.a.id}/escalation"
    coordinator = actors.person("a", Role.COORDINATOR).user
    other_clinician = actors.person("b", Role.CLINICIAN).user
    for user in (coordinator, other_clinician):
        response = client.put(url, headers=headers, json={"on_call_user_id": user.id})
        assert response.status_code == 422
        assert problem(response)["code"] == "NOT_A_CLINICIAN"
    assert client.put(url, headers=headers, json={"escalate_after_minutes": 0}).status_code == 422
    other = f"/api/v1/monitoring/institutions/{actors.b.id}/escalation"
    assert client.put(other, headers=headers, json={"escalate_after_minutes": 5}).status_code == 404
    assert client.get(other, headers=headers).status_code == 404


# ---------------------------------------------------------------------------------- triage


def test_triage_ranks_the_critical_patient_first_and_explains_the_change(client, actors, db):
    first = actors.patients["a"]
    second = make_patient(db, actors.a, "MRN-A-2")
    db.commit()
    now = now_utc()
    for patient in (first, second):
        add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=40))
    history = []
    for day in range(35, 0, -1):
        at = now - timedelta(days=day, hours=2)
        systolic, diastolic = (150 + day % 3, 94) if day <= 7 else (136 + day % 3, 86)
        history.append(blood_pressure(second, systolic, diastolic, at))
    store_readings(db, second, history)
    crisis_alert(db, first)
    body = client.get("/api/v1/monitoring/triage", headers=staff(client, actors)).json()
    assert [item["patient_id"] for item in body] == [first.id, second.id]
    assert body[0]["severity"] == "critical"
    assert body[0]["alerts"][0]["kind"] == "BP_CRISIS"
    assert body[1]["severity"] is None
    assert "7-day mean 151/94, up 14/8 from the previous 4 weeks" in body[1]["explanation"]
    other = client.get("/api/v1/monitoring/triage", headers=staff(client, actors, key="b"))
    assert [item["patient_id"] for item in other.json()] == []


def test_alert_rows_stay_one_per_episode(client, actors, db, engine):
    patient = actors.patients["a"]
    now = now_utc()
    crisis_alert(db, patient)
    raise_alert(db, patient, blood_pressure(patient, 190, 118, now + timedelta(minutes=15)))
    rows = alerts_of(engine, patient)
    assert len(rows) == 1
    assert rows[0].signal_count == 2
