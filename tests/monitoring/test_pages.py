"""Monitoring pages: the triage list for the care team, a patient's monitoring page with its
charts and care-plan form, the patient's own page with guidance, manual entry and upload, and
the live event stream the triage page listens to."""

from __future__ import annotations

import queue
import re
import threading
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.core.database import session_factory
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.readings import Metric
from jaejin.monitoring.store import CarePlanRow, EscalationPolicyRow, ReadingRow
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    add_plan,
    alerts_of,
    blood_pressure,
    cgm,
    cheap_password_hashing,
    now_utc,
    raise_alert,
    reading,
    store_readings,
)
from tests.support import make_patient, sign_in


def month_of_blood_pressure(patient, now):
    return [blood_pressure(patient, 134 + day % 4, 84, now - timedelta(days=day, hours=3))
            for day in range(30, 0, -1)]


def enrolled_with_history(db, patient, template=PlanTemplate.HYPERTENSION, **overrides):
    now = now_utc()
    add_plan(db, patient, template, overrides or None, created_at=now - timedelta(days=40))
    store_readings(db, patient, month_of_blood_pressure(patient, now))
    return now


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


# ---------------------------------------------------------------------------------- triage


def test_the_triage_page_ranks_patients_and_offers_the_steps(client, actors, db):
    patient = actors.patients["a"]
    enrolled_with_history(db, patient)
    calm = make_patient(db, actors.a, "MRN-A-CALM")
    db.commit()
    add_plan(db, calm, PlanTemplate.HYPERTENSION)
    raise_alert(db, patient, blood_pressure(patient, 188, 114, now_utc()))
    sign_in(client, actors.person("a", Role.CLINICIAN))
    page = client.get("/monitoring/triage")
    assert page.status_code == 200
    html = page.text
    assert 'id="triage-list"' in html and 'data-source="/monitoring/triage/events"' in html
    assert "/static/monitoring/triage.js" in html
    first, second = re.findall(r'data-patient-id="(\d+)" data-rank="(\d+)"', html)
    assert first == (str(patient.id), "1") and second == (str(calm.id), "2")
    assert "severity-critical" in html
    assert "Blood pressure 188/114 mmHg reached the crisis threshold" in html
    assert "7-day mean" in html and "from the previous 4 weeks" in html
    assert 'data-action="acknowledge"' in html and 'data-action="resolve"' in html
    # A critical alert is acknowledged before anyone may snooze it.
    assert 'data-action="snooze"' not in html
    assert "I am on call" in html


def test_the_triage_list_fragment_is_the_list_alone(client, actors, db):
    patient = actors.patients["a"]
    raise_alert(db, patient, blood_pressure(patient, 188, 114, now_utc()))
    sign_in(client, actors.person("a", Role.COORDINATOR))
    fragment = client.get("/monitoring/triage/list")
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and 'class="triage"' in fragment.text
    assert "MRN-A-1" in fragment.text
    # A coordinator takes steps but holds no on-call duty.
    assert 'data-action="acknowledge"' in fragment.text


def test_people_outside_the_care_team_get_no_triage(client, actors):
    for role in (Role.INTERPRETER, Role.AUDITOR, Role.PATIENT):
        sign_in(client, actors.person("a", role))
        assert client.get("/monitoring/triage").status_code == 403


def test_an_alert_step_from_the_list_answers_with_the_fresh_list(client, actors, db, engine):
    patient = actors.patients["a"]
    row = raise_alert(db, patient, blood_pressure(patient, 188, 114, now_utc()))
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    htmx = {"HX-Request": "true"}
    acknowledged = client.post(f"/monitoring/alerts/{row.id}/acknowledge", headers=htmx,
                               data={"csrf_token": csrf, "expected_status": "open",
                                     "next": "/monitoring/triage"})
    assert acknowledged.status_code == 200
    assert f'data-alert-id="{row.id}" data-state="acknowledged"' in acknowledged.text
    assert 'data-action="snooze"' in acknowledged.text
    # A second screen that still shows the alert open gets the list and why nothing happened.
    stale = client.post(f"/monitoring/alerts/{row.id}/resolve", headers=htmx,
                        data={"csrf_token": csrf, "expected_status": "open",
                              "next": "/monitoring/triage"})
    assert stale.status_code == 409
    assert "This alert is acknowledged now" in stale.text
    assert alerts_of(engine, patient)[0].status == "acknowledged"
    plain = client.post(f"/monitoring/alerts/{row.id}/snooze",
                        data={"csrf_token": csrf, "minutes": "240", "next": "https://evil.example/"},
                        follow_redirects=False)
    assert plain.status_code == 303
    assert plain.headers["location"] == "/monitoring/triage"
    assert alerts_of(engine, patient)[0].status == "snoozed"
    assert client.post(f"/monitoring/alerts/{row.id}/explode",
                       data={"csrf_token": csrf}).status_code == 404


def test_a_step_without_the_csrf_token_is_refused(client, actors, db, engine):
    patient = actors.patients["a"]
    row = raise_alert(db, patient, blood_pressure(patient, 188, 114, now_utc()))
    sign_in(client, actors.person("a", Role.CLINICIAN))
    response = client.post(f"/monitoring/alerts/{row.id}/resolve", data={})
    assert response.status_code == 403
    assert alerts_of(engine, patient)[0].status == "open"


def test_a_clinician_takes_and_hands_back_the_on_call_duty(client, actors, engine):
    clinician = actors.person("a", Role.CLINICIAN)
    csrf = sign_in(client, clinician)
    taken = client.post("/monitoring/on-call", data={"csrf_token": csrf,
                                                     "institution_id": str(actors.a.id)})
    assert taken.status_code == 200
    assert f"on call: {clinician.user.display_name}" in taken.text
    assert "Hand back on-call" in taken.text
    with session_factory(engine)() as session:
        policy = session.execute(select(EscalationPolicyRow)).scalar_one()
        assert policy.on_call_user_id == clinician.user.id
    client.post("/monitoring/on-call", data={"csrf_token": csrf, "off": "true",
                                             "institution_id": str(actors.a.id)})
    with session_factory(engine)() as session:
        assert session.execute(select(EscalationPolicyRow)).scalar_one().on_call_user_id is None
    other = client.post("/monitoring/on-call", data={"csrf_token": csrf,
                                                     "institution_id": str(actors.b.id)})
    assert other.status_code == 404


# --------------------------------------------------------------- a patient, for the care team


def test_the_patient_page_shows_blood_pressure_and_weight_charts_and_the_plan(client, actors,
                                                                              db):
    patient = actors.patients["a"]
    now = enrolled_with_history(db, patient, PlanTemplate.HEART_FAILURE)
    store_readings(db, patient, [[reading(patient, Metric.BODY_WEIGHT, 71 + day / 10,
                                          now - timedelta(days=day))] for day in range(20)])
    sign_in(client, actors.person("a", Role.CLINICIAN))
    page = client.get(f"/monitoring/patients/{patient.id}")
    assert page.status_code == 200
    html = page.text
    assert html.count("<svg") >= 2
    assert "jaejin-chart-blood-pressure" in html and "jaejin-chart-weight" in html
    assert 'role="img"' in html
    assert "Goal" in html  # the weight band's label
    assert "jaejin-chart-agp" not in html
    assert f'action="/monitoring/patients/{patient.id}/care-plan"' in html
    assert "Heart failure since" in html
    assert "Alert when missing for" in html


def test_a_cgm_patient_page_shows_the_profile_and_time_in_range(client, actors, db):
    patient = actors.patients["a"]
    now = now_utc().replace(second=0)
    add_plan(db, patient, PlanTemplate.TYPE1_DIABETES_CGM, created_at=now - timedelta(days=20))
    store_readings(db, patient, [
        [cgm(patient, 120 + (step % 36) * 3, now - timedelta(minutes=5 * step))]
        for step in range(1, 3 * 288)])
    sign_in(client, actors.person("a", Role.COORDINATOR))
    html = client.get(f"/monitoring/patients/{patient.id}").text
    assert "jaejin-chart-agp" in html and "jaejin-chart-time-in-range" in html
    assert "Last 14 days: time in range" in html
    assert "jaejin-chart-blood-pressure" not in html
    # Coordinators read the plan; only clinicians change it.
    assert f'action="/monitoring/patients/{patient.id}/care-plan"' not in html


def test_another_institutions_patient_page_is_not_found(client, actors):
    sign_in(client, actors.person("b", Role.CLINICIAN))
    assert client.get(f"/monitoring/patients/{actors.patients['a'].id}").status_code == 404


def test_the_care_plan_form_keeps_only_what_differs_from_the_template(client, actors, engine):
    patient = actors.patients["a"]
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    response = client.post(f"/monitoring/patients/{patient.id}/care-plan", data={
        "csrf_token": csrf, "template": "hypertension", "high_risk": "on",
        "bp_target_systolic": "140", "bp_target_diastolic": "90", "bp_crisis_systolic": "175",
        "expected_every_hours.systolic": "12", "missing_after_days.systolic": "2",
    }, follow_redirects=False)
    assert response.status_code == 303, response.text
    with session_factory(engine)() as session:
        plan = session.execute(select(CarePlanRow).where(CarePlanRow.active)).scalar_one()
    assert plan.template == "hypertension"
    assert plan.overrides == {"high_risk": True, "bp_crisis_systolic": 175.0,
                              "expected_every_hours": {"systolic": 12.0},
                              "missing_after_days": {"systolic": 2.0}}
    page = client.get(response.headers["location"])
    assert "The care plan was saved." in page.text
    assert 'value="130"' in page.text  # the high-risk target in force


def test_the_care_plan_form_explains_what_is_wrong(client, actors, engine):
    patient = actors.patients["a"]
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    url = f"/monitoring/patients/{patient.id}/care-plan"
    contradiction = client.post(url, data={"csrf_token": csrf, "template": "hypertension",
                                           "bp_crisis_systolic": "130"})
    assert contradiction.status_code == 422
    assert "The care plan was not saved" in contradiction.text
    assert "crisis systolic threshold" in contradiction.text
    not_a_number = client.post(url, data={"csrf_token": csrf, "template": "hypertension",
                                          "spo2_low": "ninety"})
    assert not_a_number.status_code == 422
    assert "must be a number" in not_a_number.text
    no_template = client.post(url, data={"csrf_token": csrf, "template": "astrology"})
    assert no_template.status_code == 422
    with session_factory(engine)() as session:
        assert session.execute(select(CarePlanRow)).first() is None
    coordinator_csrf = sign_in(client, actors.person("a", Role.COORDINATOR))
    refused = client.post(url, data={"csrf_token": coordinator_csrf, "template": "hypertension"})
    assert refused.status_code == 403
    assert "Your role does not allow this." in refused.text


# ------------------------------------------------------------------------ the patient's own


def test_a_patient_sees_their_charts_and_readings(client, actors, db):
    patient = actors.patients["a"]
    enrolled_with_history(db, patient)
    sign_in(client, actors.person("a", Role.PATIENT))
    page = client.get("/monitoring/me")
    assert page.status_code == 200
    assert "jaejin-chart-blood-pressure" in page.text
    assert "mmHg" in page.text and 'id="manual-entry"' in page.text
    assert f'action="/api/v1/monitoring/patients/{patient.id}/uploads"' in page.text
    assert 'id="upload-bar"' in page.text and "/static/monitoring/upload.js" in page.text
    assert "Act now" not in page.text


def test_critical_guidance_names_the_emergency_number_where_the_patient_is_now(client, actors,
                                                                              db):
    patient = actors.patients["a"]
    # A Korean patient reading their page in Korean, travelling in the United States.
    patient.preferred_language, patient.current_country = "ko", "US"
    actors.person("a", Role.PATIENT).user.language = "ko"
    db.commit()
    raise_alert(db, patient, blood_pressure(patient, 192, 110, now_utc()))
    sign_in(client, actors.person("a", Role.PATIENT))
    html = client.get("/monitoring/me").text
    assert "지금 조치하세요" in html and "미국 응급 전화번호" in html
    assert "혈압이 매우 높습니다" in html and "911" in html
    assert 'href="tel:911"' in html
    # They travel on: the number follows them, not the country of the reading.
    patient.current_country = "JP"
    db.commit()
    assert 'href="tel:119"' in client.get("/monitoring/me").text


def test_a_patient_enters_a_reading_by_hand_in_their_own_time_zone(client, actors, db, engine):
    patient = actors.patients["a"]
    patient.time_zone = "America/Los_Angeles"
    db.commit()
    csrf = sign_in(client, actors.person("a", Role.PATIENT))
    local = (now_utc() - timedelta(minutes=10)).astimezone(ZoneInfo("America/Los_Angeles"))
    response = client.post("/monitoring/me/readings", data={
        "csrf_token": csrf, "patient_id": str(patient.id), "entry_key": "form-1",
        "metric": "blood_pressure", "systolic": "186", "diastolic": "104",
        "measured_at": local.strftime("%Y-%m-%dT%H:%M")}, follow_redirects=False)
    assert response.status_code == 303, response.text
    with session_factory(engine)() as session:
        rows = list(session.execute(select(ReadingRow).order_by(ReadingRow.id)).scalars())
    assert [(row.metric, row.value) for row in rows] == [("systolic", 186), ("diastolic", 104)]
    assert rows[0].effective_offset_minutes == local.utcoffset().total_seconds() // 60
    page = client.get(response.headers["location"])
    assert "Saved. Your care team sees it now." in page.text
    assert "Act now" in page.text
    assert [row.kind for row in alerts_of(engine, patient)] == ["BP_CRISIS"]
    # Sending the same form twice stores it once.
    again = client.post("/monitoring/me/readings", data={
        "csrf_token": csrf, "patient_id": str(patient.id), "entry_key": "form-1",
        "metric": "blood_pressure", "systolic": "186", "diastolic": "104",
        "measured_at": local.strftime("%Y-%m-%dT%H:%M")}, follow_redirects=False)
    assert again.status_code == 303
    with session_factory(engine)() as session:
        assert len(list(session.execute(select(ReadingRow)).scalars())) == 2


def test_a_wrong_manual_entry_is_explained_and_nothing_is_stored(client, actors, engine):
    patient = actors.patients["a"]
    csrf = sign_in(client, actors.person("a", Role.PATIENT))
    cases = [
        ({"metric": "blood_pressure", "systolic": "80", "diastolic": "120"}, "not below"),
        ({"metric": "glucose", "value": "lots"}, "as numbers"),
        ({"metric": "heart_rate", "value": "900"}, "outside what a person can have"),
        ({"metric": "mood", "value": "5"}, "Choose what you measured"),
    ]
    stamp = now_utc().astimezone(ZoneInfo("Asia/Seoul"))
    for fields, reason in cases:
        response = client.post("/monitoring/me/readings", data={
            "csrf_token": csrf, "patient_id": str(patient.id),
            "measured_at": stamp.strftime("%Y-%m-%dT%H:%M"), **fields})
        assert response.status_code == 422, fields
        assert reason in response.text, (fields, response.text[-3000:])
    future = client.post("/monitoring/me/readings", data={
        "csrf_token": csrf, "metric": "heart_rate", "value": "70",
        "measured_at": (stamp + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")})
    assert future.status_code == 422
    with session_factory(engine)() as session:
        assert session.execute(select(ReadingRow)).first() is None


@pytest.mark.parametrize("named", ["²", "x1", "99999999999999999999999"])
def test_a_manual_entry_naming_no_record_of_the_patient_is_not_found_and_stores_nothing(
        client, actors, engine, named):
    csrf = sign_in(client, actors.person("a", Role.PATIENT))
    stamp = now_utc().astimezone(ZoneInfo("Asia/Seoul"))
    response = client.post("/monitoring/me/readings", data={
        "csrf_token": csrf, "patient_id": named, "metric": "heart_rate", "value": "70",
        "measured_at": stamp.strftime("%Y-%m-%dT%H:%M")}, follow_redirects=False)
    assert response.status_code == 404, response.text[-2000:]
    with session_factory(engine)() as session:
        assert session.execute(select(ReadingRow)).first() is None


def test_a_patient_cannot_reach_another_patients_page(client, actors):
    sign_in(client, actors.person("a", Role.PATIENT))
    other = actors.patients["b"].id
    assert client.get(f"/monitoring/me?patient={other}").status_code == 404
    assert client.get(f"/monitoring/patients/{actors.patients['a'].id}").status_code == 403


# ------------------------------------------------------------------------- live event stream


def _listen(app, cookies, found: queue.Queue, ready: threading.Event,
            wanted: str | None = None) -> None:
    """Put the first event (or the first one containing `wanted`) on `found`.

    Several kinds of event share the stream (alerts, steps, triage refreshes), and their order
    after one request is not part of the contract.
    """
    with TestClient(app, base_url="http://testserver") as listener:
        listener.cookies.update(cookies)
        with listener.stream("GET", "/monitoring/triage/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith(": connected"):
                    ready.set()
                if line.startswith("data:") and (wanted is None or wanted in line):
                    found.put((time.monotonic(), line[5:].strip()))
                    return


def test_the_event_stream_delivers_a_critical_reading_as_it_is_stored(app, client, actors):
    patient = actors.patients["a"]
    sign_in(client, actors.person("a", Role.CLINICIAN))
    found: queue.Queue = queue.Queue()
    ready = threading.Event()
    listener = threading.Thread(target=_listen, args=(app, dict(client.cookies), found, ready,
                                                      '"severity":"critical"'), daemon=True)
    listener.start()
    assert ready.wait(15), "the stream did not open"
    with TestClient(app, base_url="http://testserver") as device:
        token = sign_in(device, actors.person("a", Role.PATIENT))
        stamp = now_utc().isoformat()
        posted = device.post(f"/api/v1/monitoring/patients/{patient.id}/readings",
                             headers={"X-CSRF-Token": token}, json={"readings": [{
                                 "idempotency_key": "live-1", "metric": "blood_pressure",
                                 "systolic": 191, "diastolic": 105, "unit": "mmHg",
                                 "effective_at": stamp}]})
    assert posted.status_code == 200, posted.text
    _received, data = found.get(timeout=15)
    assert '"severity":"critical"' in data and f'"patient_id":{patient.id}' in data
    listener.join(5)


def test_the_event_stream_carries_a_step_taken_elsewhere(app, client, actors, db):
    patient = actors.patients["a"]
    row = raise_alert(db, patient, blood_pressure(patient, 188, 114, now_utc()))
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    found: queue.Queue = queue.Queue()
    ready = threading.Event()
    threading.Thread(target=_listen, args=(app, dict(client.cookies), found, ready,
                                           '"step":"acknowledge"'), daemon=True).start()
    assert ready.wait(15)
    response = client.post(f"/api/v1/monitoring/alerts/{row.id}/acknowledge",
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200
    _received, data = found.get(timeout=15)
    assert '"step":"acknowledge"' in data and f'"alert_id":{row.id}' in data


def test_another_institutions_events_never_reach_the_stream(app, client, actors, db):
    sign_in(client, actors.person("b", Role.CLINICIAN))
    found: queue.Queue = queue.Queue()
    ready = threading.Event()
    threading.Thread(target=_listen, args=(app, dict(client.cookies), found, ready),
                     daemon=True).start()
    assert ready.wait(15)
    raise_alert(db, actors.patients["a"], blood_pressure(actors.patients["a"], 188, 114,
                                                          now_utc()))
    raise_alert(db, actors.patients["b"], blood_pressure(actors.patients["b"], 189, 115,
                                                          now_utc()))
    _received, data = found.get(timeout=15)
    assert f'"patient_id":{actors.patients["b"].id}' in data


def test_a_step_from_the_patients_page_answers_with_that_patients_alerts(client, actors, db):
    patient = actors.patients["a"]
    row = raise_alert(db, patient, blood_pressure(patient, 188, 114, now_utc()))
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    page = client.get(f"/monitoring/patients/{patient.id}")
    assert 'hx-target="#patient-alerts"' in page.text
    response = client.post(f"/monitoring/alerts/{row.id}/acknowledge",
                           headers={"HX-Request": "true"},
                           data={"csrf_token": csrf, "expected_status": "open",
                                 "next": f"/monitoring/patients/{patient.id}"})
    assert response.status_code == 200
    assert 'class="alert-list"' in response.text and 'class="triage"' not in response.text
    assert f'data-alert-id="{row.id}" data-state="acknowledged"' in response.text
