"""Nightscout-compatible uploads: a per-patient API secret, `POST /api/v1/entries` as CGM
uploaders send it, and the per-patient base URL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

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


def fetch(db, statement) -> list[Any]:
    with session_factory(db.get_bind())() as session:
        return list(session.execute(statement).scalars())


def readings(db) -> int:
    return int(fetch(db, select(func.count()).select_from(ReadingRow))[0])


def sgv(value: float, minutes_ago: float, **extra: Any) -> dict[str, Any]:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"type": "sgv", "sgv": value, "date": int(moment.timestamp() * 1000),
            "dateString": moment.isoformat(), "direction": "Flat",
            "device": "xDrip-DexcomG6", **extra}


def issue(client, actors, key: str = "a") -> dict[str, Any]:
    csrf = sign_in(client, actors.person(key, Role.PATIENT))
    response = client.post(
        f"/api/v1/monitoring/patients/{actors.patients[key].id}/nightscout",
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 201, response.text
    client.cookies.clear()
    body: dict[str, Any] = response.json()
    return body


def sha1(secret: str) -> str:
    return hashlib.sha1(secret.encode()).hexdigest()  # noqa: S324 - Nightscout's protocol


def test_a_patient_gets_an_api_secret_and_the_url_to_type_into_the_uploader(client, actors):
    issued = issue(client, actors)
    assert len(issued["api_secret"]) >= 12
    assert issued["api_secret_sha1"] == sha1(issued["api_secret"])
    assert issued["uploader_url"] == (
        f"http://{issued['api_secret']}@testserver/nightscout/{issued['url_token']}/api/v1/"
    )
    headers = bearer(client_token(client, actors.clients["a"]))
    shown = client.get(f"/api/v1/monitoring/patients/{actors.patients['a'].id}/nightscout",
                       headers=headers).json()
    assert shown["api_secret"] == issued["api_secret"]


def test_an_uploader_posts_cgm_entries_with_the_sha1_of_the_secret(client, actors, db):
    issued = issue(client, actors)
    entries = [sgv(112, 10), sgv(118, 5),
               {"type": "mbg", "mbg": 104, "date": sgv(0, 3)["date"]},
               {"type": "cal", "slope": 1000, "date": sgv(0, 2)["date"]}]
    response = client.post("/api/v1/entries", json=entries,
                           headers={"api-secret": issued["api_secret_sha1"]})
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert [entry["jaejin"]["status"] for entry in echoed] == [
        "created", "created", "created", "skipped"]
    assert echoed[0]["sgv"] == 112 and echoed[0]["_id"].isdigit()
    loincs = sorted(fetch(db, select(ReadingRow.loinc)))
    assert loincs == ["2339-0", "99504-3", "99504-3"]
    assert set(fetch(db, select(ReadingRow.channel))) == {"nightscout"}
    assert readings(db) == 3


def test_a_retried_upload_stores_nothing_twice(client, actors, db):
    issued = issue(client, actors)
    entries = [sgv(130, 15), sgv(128, 10)]
    headers = {"api-secret": issued["api_secret_sha1"]}
    client.post("/api/v1/entries", json=entries, headers=headers)
    again = client.post("/api/v1/entries.json", json=entries, headers=headers).json()
    assert [entry["jaejin"]["status"] for entry in again] == ["duplicate", "duplicate"]
    assert readings(db) == 2


def test_the_per_patient_base_url_and_a_sha512_secret_are_accepted(client, actors, db):
    issued = issue(client, actors)
    sha512 = hashlib.sha512(issued["api_secret"].encode()).hexdigest().upper()
    response = client.post(f"/nightscout/{issued['url_token']}/api/v1/entries",
                           json=sgv(140, 5), headers={"api-secret": sha512})
    assert response.status_code == 200
    assert readings(db) == 1


def test_a_wrong_secret_is_refused_clearly_and_changes_nothing(client, actors, db):
    issued = issue(client, actors)
    for headers in ({"api-secret": sha1("not the secret at all")}, {}):
        response = client.post("/api/v1/entries", json=[sgv(120, 5)], headers=headers)
        assert response.status_code == 401
        assert problem(response)["code"] == "NIGHTSCOUT_SECRET_INVALID"
    other = issue(client, actors, "b")
    crossed = client.post(f"/nightscout/{other['url_token']}/api/v1/entries",
                          json=[sgv(120, 5)], headers={"api-secret": issued["api_secret_sha1"]})
    assert crossed.status_code == 401
    assert readings(db) == 0


def test_a_replaced_or_revoked_secret_stops_working(client, actors, db):
    first = issue(client, actors)
    second = issue(client, actors)
    stale = client.post("/api/v1/entries", json=[sgv(120, 5)],
                        headers={"api-secret": first["api_secret_sha1"]})
    assert stale.status_code == 401
    headers = bearer(client_token(client, actors.clients["a"]))
    url = f"/api/v1/monitoring/patients/{actors.patients['a'].id}/nightscout"
    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404
    revoked = client.post("/api/v1/entries", json=[sgv(120, 5)],
                          headers={"api-secret": second["api_secret_sha1"]})
    assert revoked.status_code == 401
    assert readings(db) == 0


def test_an_urgent_low_from_the_sensor_raises_a_critical_alert(client, actors, db):
    issued = issue(client, actors)
    response = client.post("/api/v1/entries", json=[sgv(48, 2)],
                           headers={"api-secret": issued["api_secret_sha1"]})
    assert response.status_code == 200
    [alert] = fetch(db, select(AlertRow))
    assert (alert.kind, alert.severity) == ("GLUCOSE_VERY_LOW", "critical")


def test_bad_entries_are_refused_one_by_one_and_the_upload_is_audited_once(client, actors, db):
    issued = issue(client, actors)
    before = fetch(db, select(func.count()).select_from(AuditEntry))[0]
    entries = [sgv(2000, 5), sgv(121, 4), {"type": "sgv", "sgv": "high", "date": 1}]
    response = client.post("/api/v1/entries", json=entries,
                           headers={"api-secret": issued["api_secret_sha1"]}).json()
    assert [entry["jaejin"]["status"] for entry in response] == [
        "refused", "created", "refused"]
    assert response[0]["jaejin"]["problems"][0]["code"] == "IMPOSSIBLE_VALUE"
    entries_after = fetch(db, select(AuditEntry).order_by(AuditEntry.id))[before:]
    assert [(entry.actor_type, entry.detail["created"]) for entry in entries_after] == [
        ("device", 1)]
    not_entries = client.post("/api/v1/entries", json="hello",
                              headers={"api-secret": issued["api_secret_sha1"]})
    assert not_entries.status_code == 400
    assert readings(db) == 1


def test_managing_the_secret_of_another_institutions_patient_is_not_found(client, actors):
    headers = bearer(client_token(client, actors.clients["b"]))
    url = f"/api/v1/monitoring/patients/{actors.patients['a'].id}/nightscout"
    assert client.post(url, headers=headers).status_code == 404
    assert client.get(url, headers=headers).status_code == 404


def test_an_uploader_checking_the_connection_gets_a_nightscout_status(client):
    for url in ("/api/v1/status.json", "/nightscout/whatever/api/v1/status.json"):
        status = client.get(url)
        assert status.status_code == 200
        assert status.json()["status"] == "ok" and status.json()["apiEnabled"] is True
