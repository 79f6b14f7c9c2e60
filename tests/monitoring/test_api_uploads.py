"""File uploads from the patient's page: CSV and Apple Health exports, imported in the background
with progress, and refused whole when the file is damaged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from jaejin.core.accounts import Role
from jaejin.core.database import session_factory
from jaejin.monitoring.store import ReadingRow, UploadRow
from tests.core.helpers import fast_password_hashing
from tests.monitoring.fixtures import (
    apple_bp_correlation,
    apple_export_xml,
    apple_export_zip,
    apple_record,
)
from tests.support import bearer, client_token, problem, sign_in


@pytest.fixture(autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """People of `actors` sign in for real, with argon2 parameters cheap enough for tests."""
    with fast_password_hashing():
        yield

SEOUL = ZoneInfo("Asia/Seoul")


def fetch(db, statement) -> list[Any]:
    with session_factory(db.get_bind())() as session:
        return list(session.execute(statement).scalars())


def readings(db) -> int:
    return int(fetch(db, select(func.count()).select_from(ReadingRow))[0])


def upload(client, patient_id: int, name: str, data: bytes, headers: dict[str, str],
           **fields: str):
    return client.post(f"/api/v1/monitoring/patients/{patient_id}/uploads",
                       files={"file": (name, data, "application/octet-stream")},
                       data=fields, headers=headers)


def patient_headers(client, actors) -> dict[str, str]:
    return {"X-CSRF-Token": sign_in(client, actors.person("a", Role.PATIENT))}


def hours_ago(hours: float, zone=UTC) -> datetime:
    return (datetime.now(UTC) - timedelta(hours=hours)).astimezone(zone)


def test_a_csv_upload_is_imported_in_the_background_and_reports_progress_and_counts(
    client, actors, db
):
    patient_id = actors.patients["a"].id
    headers = patient_headers(client, actors)
    csv = (
        "effective_at,metric,value,unit,device,systolic,diastolic\n"
        f"{hours_ago(30).isoformat()},blood_pressure,,mmHg,Omron,128,82\n"
        f"{hours_ago(29).isoformat()},glucose,5.6,mmol/L,,,\n"
        f"{hours_ago(28).isoformat()},heart_rate,900,bpm,,,\n"
    ).encode()
    response = upload(client, patient_id, "readings.csv", csv, headers)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and accepted["kind"] == "csv"
    assert response.headers["Location"] == accepted["status_url"]
    status = client.get(accepted["status_url"]).json()
    assert status["status"] == "done" and status["progress"] == 1.0
    assert status["counts"] == {"items": 3, "created": 2, "duplicate": 0, "refused": 1,
                                "skipped": 0, "readings_created": 3, "alerts": 0}
    assert status["problems"][0]["pointer"] == "line 4, value"
    assert status["problems"][0]["code"] == "IMPOSSIBLE_VALUE"
    assert readings(db) == 3
    listed = client.get(f"/api/v1/monitoring/patients/{patient_id}/uploads").json()["items"]
    assert [item["id"] for item in listed] == [accepted["id"]]


def test_times_typed_without_an_offset_are_read_in_the_patients_time_zone(client, actors, db):
    patient_id = actors.patients["a"].id
    local = hours_ago(5, SEOUL).replace(tzinfo=None, microsecond=0)
    csv = f"effective_at,metric,value,unit\n{local.isoformat()},body_weight,71.5,kg\n".encode()
    upload(client, patient_id, "weight.csv", csv, patient_headers(client, actors))
    [row] = fetch(db, select(ReadingRow))
    assert row.effective_offset_minutes == 9 * 60
    assert row.effective_at == local.replace(tzinfo=SEOUL).astimezone(UTC)


def test_uploading_the_same_file_again_stores_nothing_twice(client, actors, db):
    patient_id = actors.patients["a"].id
    headers = bearer(client_token(client, actors.clients["a"]))
    csv = f"effective_at,metric,value,unit\n{hours_ago(3).isoformat()},spo2,97,%\n".encode()
    upload(client, patient_id, "a.csv", csv, headers)
    again = upload(client, patient_id, "a.csv", csv, headers).json()
    status = client.get(again["status_url"], headers=headers).json()
    assert status["counts"]["duplicate"] == 1 and status["counts"]["created"] == 0
    assert readings(db) == 1


def test_an_apple_health_export_is_imported_from_its_zip(client, actors, db):
    patient_id = actors.patients["a"].id
    start = hours_ago(50, SEOUL).strftime("%Y-%m-%d %H:%M:%S %z")
    later = hours_ago(49, SEOUL).strftime("%Y-%m-%d %H:%M:%S %z")
    export = apple_export_zip(apple_export_xml(
        apple_bp_correlation("131", "84", start),
        apple_record("HeartRate", "66", "count/min", later),
        apple_record("StepCount", "1200", "count", later),
    ))
    response = upload(client, patient_id, "export.zip", export, patient_headers(client, actors))
    status = client.get(response.json()["status_url"]).json()
    assert status["kind"] == "apple_health" and status["status"] == "done"
    assert status["counts"]["created"] == 2 and status["counts"]["readings_created"] == 3
    channels = set(fetch(db, select(ReadingRow.channel)))
    assert channels == {"apple_health"}


def test_a_damaged_apple_health_export_fails_with_a_clear_error_and_stores_nothing(
    client, actors, db
):
    patient_id = actors.patients["a"].id
    headers = patient_headers(client, actors)
    start = hours_ago(50, SEOUL).strftime("%Y-%m-%d %H:%M:%S %z")
    xml = apple_export_xml(*(apple_record("HeartRate", str(60 + i), "count/min", start,
                                          source=f"watch {i}") for i in range(50)))
    cut_off = xml[: len(xml) - 200]
    response = upload(client, patient_id, "export.xml", cut_off, headers)
    status = client.get(response.json()["status_url"]).json()
    assert status["status"] == "failed"
    assert status["error"]["code"] == "CORRUPT_XML"
    assert "line" in status["error"]["message"]
    broken_zip = apple_export_zip(xml)[:300]
    response = upload(client, patient_id, "export.zip", broken_zip, headers)
    status = client.get(response.json()["status_url"]).json()
    assert (status["status"], status["error"]["code"]) == ("failed", "CORRUPT_ZIP")
    assert readings(db) == 0


def test_the_upload_error_is_explained_in_the_readers_language(client, actors):
    patient_id = actors.patients["a"].id
    headers = bearer(client_token(client, actors.clients["a"]))
    response = upload(client, patient_id, "x.zip", b"PK\x03\x04 not really a zip", headers)
    korean = client.get(response.json()["status_url"],
                        headers={**headers, "Accept-Language": "ko"}).json()
    english = client.get(response.json()["status_url"],
                         headers={**headers, "Accept-Language": "en"}).json()
    assert korean["error"]["code"] == "CORRUPT_ZIP"
    assert korean["error"]["message"] != english["error"]["message"]


def test_an_upload_without_a_file_or_of_an_unknown_kind_is_refused(client, actors, db):
    patient_id = actors.patients["a"].id
    headers = patient_headers(client, actors)
    empty = client.post(f"/api/v1/monitoring/patients/{patient_id}/uploads",
                        data={"kind": "csv"}, headers=headers)
    assert empty.status_code == 422 and problem(empty)["code"] == "FILE_REQUIRED"
    unknown = upload(client, patient_id, "a.csv", b"x", headers, kind="pdf")
    assert unknown.status_code == 422 and problem(unknown)["code"] == "UNKNOWN_UPLOAD_KIND"
    assert fetch(db, select(func.count()).select_from(UploadRow)) == [0]


def test_another_institutions_patient_and_upload_are_not_found(client, actors, db):
    headers = bearer(client_token(client, actors.clients["b"]))
    refused = upload(client, actors.patients["a"].id, "a.csv", b"effective_at\n", headers)
    assert refused.status_code == 404
    own = bearer(client_token(client, actors.clients["a"]))
    mine = upload(client, actors.patients["a"].id, "a.csv",
                  f"effective_at,metric,value,unit\n{hours_ago(2).isoformat()},spo2,97,%\n"
                  .encode(), own).json()
    assert client.get(mine["status_url"], headers=headers).status_code == 404
    assert fetch(db, select(func.count()).select_from(UploadRow)) == [1]
