"""The JSON readings API: batches from Jaejin's apps, reading lists, and who may do either."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.core.database import session_factory
from jaejin.monitoring.store import AlertRow, ReadingRow
from tests.core.helpers import fast_password_hashing
from tests.support import bearer, client_token, problem, sign_in


@pytest.fixture(autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """People of `actors` sign in for real, with argon2 parameters cheap enough for tests."""
    with fast_password_hashing():
        yield

NOW = datetime.now(UTC).replace(microsecond=0)


def when(minutes_ago: float = 0, offset: str = "+09:00") -> str:
    moment = NOW - timedelta(minutes=minutes_ago)
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    sign = 1 if offset[0] == "+" else -1
    from datetime import timezone

    zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return moment.astimezone(zone).isoformat()


def bp(key: str, systolic: float, diastolic: float, minutes_ago: float = 1, **extra: Any):
    return {"idempotency_key": key, "metric": "blood_pressure", "systolic": systolic,
            "diastolic": diastolic, "unit": "mmHg", "effective_at": when(minutes_ago), **extra}


def single(key: str, metric: str, value: float, unit: str, minutes_ago: float = 1, **extra: Any):
    return {"idempotency_key": key, "metric": metric, "value": value, "unit": unit,
            "effective_at": when(minutes_ago), **extra}


def readings_url(patient_id: int) -> str:
    return f"/api/v1/monitoring/patients/{patient_id}/readings"


def fetch(db, statement) -> list[Any]:
    """Rows read in a session of their own, closed at once: an open SQLite transaction of the
    test's session would hold the write lock the app needs."""
    with session_factory(db.get_bind())() as session:
        return list(session.execute(statement).scalars())


def stored(db, patient_id: int | None = None) -> int:
    query = select(func.count()).select_from(ReadingRow)
    if patient_id is not None:
        query = query.where(ReadingRow.patient_id == patient_id)
    return int(fetch(db, query)[0])


def as_patient(client, actors, key: str = "a") -> dict[str, str]:
    csrf = sign_in(client, actors.person(key, Role.PATIENT))
    return {"X-CSRF-Token": csrf}


def as_client(client, actors, key: str = "a", scope: str | None = None) -> dict[str, str]:
    return bearer(client_token(client, actors.clients[key], scope))


# ---------------------------------------------------------------------------- storing


def test_a_patient_stores_a_batch_from_their_app_and_hears_about_every_item(client, actors, db):
    patient = actors.patients["a"]
    headers = as_patient(client, actors)
    body = {"readings": [
        bp("k-1", 128, 82),
        single("k-2", "glucose", 5.6, "mmol/L", 2),
        single("k-3", "heart_rate", 64, "bpm", 3),
    ]}
    response = client.post(readings_url(patient.id), json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["counts"]["created"] == 3
    assert answer["counts"]["readings_created"] == 4
    assert [item["status"] for item in answer["items"]] == ["created"] * 3
    assert [item["idempotency_key"] for item in answer["items"]] == ["k-1", "k-2", "k-3"]
    assert len(answer["items"][0]["reading_ids"]) == 2
    assert answer["alerts"] == [] and answer["emergency"] is None
    assert stored(db, patient.id) == 4


def test_mmol_per_litre_glucose_is_stored_in_mg_per_decilitre_with_its_offset(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    sent = single("g-1", "glucose", 5.6, "mmol/L", 10, device="Accu-Chek")
    sent["effective_at"] = when(10, "-05:00")
    response = client.post(readings_url(patient.id), json={"readings": [sent]}, headers=headers)
    assert response.status_code == 200, response.text
    [row] = fetch(db, select(ReadingRow).where(ReadingRow.patient_id == patient.id))
    assert row.unit == "mg/dL" and row.loinc == "2339-0"
    assert row.value == pytest.approx(5.6 * 18.016)
    assert row.effective_offset_minutes == -300
    assert row.source_device == "Accu-Chek" and row.channel == "json"
    listed = client.get(readings_url(patient.id), headers=headers).json()["items"]
    assert listed[0]["effective_at"].endswith("-05:00")
    assert listed[0]["effective_at"] == sent["effective_at"]


def test_a_retried_batch_is_answered_as_already_stored_and_stores_nothing_twice(
    client, actors, db
):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    body = {"readings": [bp("r-1", 130, 85), single("r-2", "spo2", 97, "%")]}
    first = client.post(readings_url(patient.id), json=body, headers=headers).json()
    second = client.post(readings_url(patient.id), json=body, headers=headers).json()
    assert [item["status"] for item in second["items"]] == ["duplicate", "duplicate"]
    assert [item["reading_ids"] for item in second["items"]] == [
        item["reading_ids"] for item in first["items"]
    ]
    assert stored(db, patient.id) == 3


def test_a_reused_key_with_other_values_keeps_the_first_reading_and_stores_no_half(
    client, actors, db
):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    first = client.post(readings_url(patient.id), json={"readings": [bp("same", 130, 85)]},
                        headers=headers).json()
    again = client.post(readings_url(patient.id), json={"readings": [bp("same", 131, 86)]},
                        headers=headers).json()
    assert again["items"][0]["status"] == "duplicate"
    assert again["items"][0]["reading_ids"] == first["items"][0]["reading_ids"]
    values = sorted(fetch(db, select(ReadingRow.value)))
    assert values == [85.0, 130.0]


def test_an_exact_duplicate_under_a_new_key_is_ignored(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    reading = single("one", "body_weight", 71.4, "kg", 30)
    client.post(readings_url(patient.id), json={"readings": [reading]}, headers=headers)
    again = client.post(readings_url(patient.id),
                        json={"readings": [{**reading, "idempotency_key": "two"}]},
                        headers=headers).json()
    assert again["items"][0]["status"] == "duplicate"
    assert stored(db, patient.id) == 1


def test_impossible_values_are_refused_with_the_reason_and_the_rest_is_stored(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    body = {"readings": [
        bp("bad-bp", 400, 90),
        single("bad-glucose", "glucose", 0, "mg/dL"),
        single("future", "heart_rate", 70, "bpm", -60),
        single("unit", "heart_rate", 70, "mmHg"),
        single("metric", "cholesterol", 5, "mmol/L"),
        single("fine", "heart_rate", 70, "bpm"),
    ]}
    answer = client.post(readings_url(patient.id), json=body, headers=headers).json()
    statuses = {item["idempotency_key"]: item["status"] for item in answer["items"]}
    assert statuses == {"bad-bp": "refused", "bad-glucose": "refused", "future": "refused",
                        "unit": "refused", "metric": "refused", "fine": "created"}
    codes = {item["idempotency_key"]: [p["code"] for p in item.get("problems", [])]
             for item in answer["items"]}
    assert codes["bad-bp"] == ["IMPOSSIBLE_VALUE"]
    assert codes["bad-glucose"] == ["IMPOSSIBLE_VALUE"]
    assert codes["future"] == ["FUTURE_TIMESTAMP"]
    assert codes["unit"] == ["UNIT_MISMATCH"]
    assert codes["metric"] == ["UNKNOWN_METRIC"]
    refused = answer["items"][0]["problems"][0]
    assert refused["pointer"] == "/readings/0/systolic"
    assert "300" in refused["message"]
    assert stored(db, patient.id) == 1


def test_refusals_are_explained_in_the_callers_language(client, actors):
    patient = actors.patients["a"]
    headers = {**as_client(client, actors), "Accept-Language": "ko"}
    answer = client.post(readings_url(patient.id),
                         json={"readings": [single("x", "glucose", 0, "mg/dL")]},
                         headers=headers).json()
    message = answer["items"][0]["problems"][0]["message"]
    assert "혈당" in message or "포도당" in message


def test_a_body_that_is_not_a_batch_is_refused_and_stores_nothing(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    not_json = client.post(readings_url(patient.id), content=b"{oops",
                           headers={**headers, "Content-Type": "application/json"})
    assert not_json.status_code == 400 and problem(not_json)["code"] == "INVALID_JSON"
    wrong = client.post(readings_url(patient.id), json={"values": []}, headers=headers)
    assert wrong.status_code == 400 and problem(wrong)["code"] == "NOT_A_BATCH"
    too_many = client.post(
        readings_url(patient.id),
        json={"readings": [single(f"k{i}", "heart_rate", 60, "bpm") for i in range(1001)]},
        headers=headers,
    )
    assert too_many.status_code == 400 and problem(too_many)["code"] == "TOO_MANY_ITEMS"
    assert stored(db) == 0


# ---------------------------------------------------------------------------- alerts


def _subscribe(bus, channel: str, kind: str) -> tuple[queue.Queue[dict[str, Any]],
                                                     threading.Thread]:
    """Collect the first event of type `kind` published on `channel`, from another thread's
    event loop. The channel carries other kinds too (triage refreshes, which the process-wide
    coalescer may send up to a second late, possibly for an earlier test's patient)."""
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    ready = threading.Event()

    async def first_of_kind(stream) -> dict[str, Any]:
        while True:
            event = await stream.__anext__()
            if event.get("type") == kind:
                return event

    async def listen() -> None:
        stream = bus.subscribe(channel)
        waiting = asyncio.ensure_future(first_of_kind(stream))
        await asyncio.sleep(0.05)
        ready.set()
        try:
            received.put(await asyncio.wait_for(waiting, 10))
        finally:
            await stream.aclose()

    thread = threading.Thread(target=asyncio.run, args=(listen(),), daemon=True)
    thread.start()
    assert ready.wait(5)
    return received, thread


def test_a_crisis_reading_opens_an_alert_tells_the_patient_what_to_do_and_reaches_triage(
    client, actors, db, app
):
    patient = actors.patients["a"]
    patient.current_country = "TH"
    patient.preferred_language = "ko"
    db.commit()
    events, listener = _subscribe(app.state.bus, f"triage:{patient.institution_id}",
                                  "monitoring.alert")
    headers = as_patient(client, actors)
    answer = client.post(readings_url(patient.id), json={"readings": [bp("c-1", 192, 124)]},
                         headers=headers).json()
    assert [alert["kind"] for alert in answer["alerts"]] == ["BP_CRISIS"]
    assert answer["alerts"][0]["severity"] == "critical" and answer["alerts"][0]["opened"]
    assert answer["emergency"] == {"country": "TH", "medical": "1669"}
    assert answer["guidance"][0]["language"] == "ko"
    assert "1669" in answer["guidance"][0]["message"]
    [alert] = fetch(db, select(AlertRow))
    assert (alert.kind, alert.status, alert.signal_count) == ("BP_CRISIS", "open", 1)
    assert alert.params["systolic"] == "192"
    event = events.get(timeout=5)
    listener.join(5)
    assert event["type"] == "monitoring.alert"
    assert event["alert_id"] == alert.id and event["patient_id"] == patient.id


def test_a_second_crisis_joins_the_open_episode_instead_of_opening_another(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    client.post(readings_url(patient.id), json={"readings": [bp("c-1", 190, 100, 20)]},
                headers=headers)
    answer = client.post(readings_url(patient.id), json={"readings": [bp("c-2", 200, 110, 5)]},
                         headers=headers).json()
    assert answer["alerts"][0]["opened"] is False
    assert answer["alerts"][0]["signal_count"] == 2
    [alert] = fetch(db, select(AlertRow))
    assert alert.signal_count == 2 and alert.params["systolic"] == "190"


def test_a_worse_signal_reopens_an_acknowledged_episode(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    client.post(readings_url(patient.id),
                json={"readings": [single("low", "glucose", 65, "mg/dL", 20)]}, headers=headers)
    [alert] = fetch(db, select(AlertRow))
    assert (alert.kind, alert.severity) == ("GLUCOSE_LOW", "high")
    db.execute(update(AlertRow).values(status="acknowledged", acknowledged_by="user:1",
                                       acknowledged_at=NOW))
    db.commit()
    answer = client.post(readings_url(patient.id),
                         json={"readings": [single("lower", "glucose", 45, "mg/dL", 5)]},
                         headers=headers).json()
    assert answer["alerts"][0]["status"] == "open"
    [alert] = fetch(db, select(AlertRow))
    assert (alert.kind, alert.severity, alert.status) == ("GLUCOSE_VERY_LOW", "critical", "open")
    assert alert.acknowledged_by is None and alert.signal_count == 2


def test_old_readings_imported_late_raise_no_acute_alert(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    answer = client.post(readings_url(patient.id),
                         json={"readings": [bp("old", 195, 125, 60 * 24 * 3)]},
                         headers=headers).json()
    assert answer["counts"]["created"] == 1
    assert answer["alerts"] == [] and answer["emergency"] is None
    assert fetch(db, select(func.count()).select_from(AlertRow)) == [0]


# ---------------------------------------------------------------------------- who may


def test_a_clinician_of_the_institution_records_a_reading_taken_in_clinic(client, actors, db):
    patient = actors.patients["a"]
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    response = client.post(readings_url(patient.id), json={"readings": [bp("clinic", 135, 88)]},
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    assert stored(db, patient.id) == 2


def test_a_session_without_the_csrf_token_stores_nothing(client, actors, db):
    patient = actors.patients["a"]
    sign_in(client, actors.person("a", Role.PATIENT))
    response = client.post(readings_url(patient.id), json={"readings": [bp("x", 120, 80)]})
    assert response.status_code == 403 and problem(response)["code"] == "CSRF_FAILED"
    assert stored(db) == 0


def test_another_institutions_patient_is_not_found_and_nothing_is_stored(client, actors, db):
    other = actors.patients["b"]
    for headers in (as_client(client, actors), as_patient(client, actors)):
        response = client.post(readings_url(other.id), json={"readings": [bp("x", 120, 80)]},
                               headers=headers)
        assert response.status_code == 404 and problem(response)["code"] == "NOT_FOUND"
        listed = client.get(readings_url(other.id), headers=headers)
        assert listed.status_code == 404
    assert stored(db) == 0


def test_a_patient_cannot_send_readings_for_another_patient_of_their_own_clinic(
    client, actors, db
):
    from tests.support import make_patient

    neighbour = make_patient(db, actors.a, "MRN-A-2")
    db.commit()
    response = client.post(readings_url(neighbour.id), json={"readings": [bp("x", 120, 80)]},
                           headers=as_patient(client, actors))
    assert response.status_code == 404
    assert stored(db) == 0


def test_a_client_without_the_write_scope_is_refused(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors, scope="monitoring.read")
    response = client.post(readings_url(patient.id), json={"readings": [bp("x", 120, 80)]},
                           headers=headers)
    assert response.status_code == 403 and problem(response)["code"] == "INSUFFICIENT_SCOPE"
    assert client.get(readings_url(patient.id), headers=headers).status_code == 200
    assert stored(db) == 0


@pytest.mark.parametrize("role", [Role.INTERPRETER, Role.AUDITOR])
def test_roles_that_never_handle_readings_are_forbidden(client, actors, db, role):
    patient = actors.patients["a"]
    csrf = sign_in(client, actors.person("a", role))
    response = client.post(readings_url(patient.id), json={"readings": [bp("x", 120, 80)]},
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 403
    assert client.get(readings_url(patient.id)).status_code == 403
    assert stored(db) == 0


def test_an_institution_admin_may_read_readings_but_not_enter_them(client, actors, db):
    patient = actors.patients["a"]
    csrf = sign_in(client, actors.person("a", Role.INSTITUTION_ADMIN))
    assert client.get(readings_url(patient.id)).status_code == 200
    response = client.post(readings_url(patient.id), json={"readings": [bp("x", 120, 80)]},
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 403


def test_an_anonymous_caller_is_asked_to_sign_in(client, actors):
    response = client.post(readings_url(actors.patients["a"].id),
                           json={"readings": [bp("x", 120, 80)]})
    assert response.status_code == 401


def test_each_request_writes_one_audit_entry_with_counts(client, actors, db):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    before = fetch(db, select(func.count()).select_from(AuditEntry))[0]
    client.post(readings_url(patient.id),
                json={"readings": [single(f"a{i}", "heart_rate", 60 + i, "bpm", i + 1)
                                   for i in range(25)] + [bp("bad", 400, 90)]},
                headers=headers)
    entries = fetch(db, select(AuditEntry).order_by(AuditEntry.id))[before:]
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.action, entry.resource_type, entry.patient_id) == (
        "create", "monitoring_reading", patient.id)
    assert entry.detail["created"] == 25 and entry.detail["refused"] == 1
    assert entry.detail["channel"] == "json"
    ids = fetch(db, select(ReadingRow.id).where(ReadingRow.patient_id == patient.id))
    assert entry.detail["reading_ids"] == {"first": min(ids), "last": max(ids)}


# ---------------------------------------------------------------------------- reading


def test_readings_are_listed_oldest_first_in_pages_filtered_by_metric(client, actors):
    patient = actors.patients["a"]
    headers = as_client(client, actors)
    body = {"readings": [single(f"h{i}", "heart_rate", 60 + i, "bpm", 50 - i)
                         for i in range(5)] + [single("w", "body_weight", 70, "kg", 1)]}
    client.post(readings_url(patient.id), json=body, headers=headers)
    first = client.get(readings_url(patient.id),
                       params={"metric": "heart_rate", "limit": 3}, headers=headers).json()
    assert [item["value"] for item in first["items"]] == [60, 61, 62]
    rest = client.get(readings_url(patient.id), params={"metric": "heart_rate", "limit": 3,
                                                       "cursor": first["next_cursor"]},
                      headers=headers).json()
    assert [item["value"] for item in rest["items"]] == [63, 64]
    assert rest["next_cursor"] is None
    since = client.get(readings_url(patient.id),
                       params={"since": (NOW - timedelta(minutes=5)).isoformat()},
                       headers=headers).json()
    assert [item["metric"] for item in since["items"]] == ["body_weight"]
    bad = client.get(readings_url(patient.id), params={"cursor": "nope"}, headers=headers)
    assert bad.status_code == 400


def test_the_openapi_document_describes_the_batch_body(client):
    schema = client.get("/api/v1/openapi.json").json()
    operation = schema["paths"]["/api/v1/monitoring/patients/{patient_id}/readings"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "idempotency_key" in body["properties"]["readings"]["items"]["properties"]
