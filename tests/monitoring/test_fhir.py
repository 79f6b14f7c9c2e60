"""FHIR R4 Observations: create, conditional create, transaction and batch Bundles, search, read,
and OperationOutcome for everything refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from jaejin.core.accounts import Role
from jaejin.core.database import session_factory
from jaejin.monitoring.store import AlertRow, ReadingRow
from tests.core.helpers import fast_password_hashing
from tests.support import bearer, client_token, sign_in


@pytest.fixture(autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """People of `actors` sign in for real, with argon2 parameters cheap enough for tests."""
    with fast_password_hashing():
        yield

NOW = datetime.now(UTC).replace(microsecond=0)
FHIR = "application/fhir+json"


def seoul(minutes_ago: float) -> str:
    from zoneinfo import ZoneInfo

    return (NOW - timedelta(minutes=minutes_ago)).astimezone(ZoneInfo("Asia/Seoul")).isoformat()


def coding(code: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://loinc.org", "code": code}]}


def quantity(value: Any, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


def bp_observation(patient_id: Any, systolic: Any = 128, diastolic: Any = 82,
                   minutes_ago: float = 5) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final", "code": coding("85354-9"),
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": seoul(minutes_ago),
        "device": {"display": "Omron HEM-7155T"},
        "component": [
            {"code": coding("8480-6"), "valueQuantity": quantity(systolic, "mm[Hg]")},
            {"code": coding("8462-4"), "valueQuantity": quantity(diastolic, "mm[Hg]")},
        ],
    }


def observation(patient_id: Any, code: str, value: Any, unit: str,
                minutes_ago: float = 5) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final", "code": coding(code),
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": seoul(minutes_ago), "valueQuantity": quantity(value, unit),
    }


def entry(resource: dict[str, Any], if_none_exist: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": "Observation"}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": "urn:uuid:x", "resource": resource, "request": request}


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def count(db, model=ReadingRow) -> int:
    with session_factory(db.get_bind())() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def gateway(client, actors, key: str = "a", scope: str | None = None) -> dict[str, str]:
    return {**bearer(client_token(client, actors.clients[key], scope)), "Content-Type": FHIR}


def outcome(response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith(FHIR), response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


# ------------------------------------------------------------------------------- create


def test_a_device_gateway_creates_a_blood_pressure_panel_and_reads_it_back(client, actors, db):
    patient_id = actors.patients["a"].id
    headers = gateway(client, actors)
    response = client.post("/fhir/R4/Observation", json=bp_observation(patient_id),
                           headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith(FHIR)
    created = response.json()
    assert created["code"]["coding"][0]["code"] == "85354-9"
    assert [c["valueQuantity"]["value"] for c in created["component"]] == [128, 82]
    assert created["effectiveDateTime"].endswith("+09:00")
    assert response.headers["Location"] == f"/fhir/R4/Observation/{created['id']}/_history/1"
    assert count(db) == 2
    again = client.get(f"/fhir/R4/Observation/{created['id']}", headers=headers)
    assert again.status_code == 200
    assert again.json()["component"] == created["component"]


def test_if_none_exist_makes_a_retried_create_return_the_first_observation(client, actors, db):
    patient_id = actors.patients["a"].id
    headers = {**gateway(client, actors), "If-None-Exist": "identifier=urn:dev|42"}
    first = client.post("/fhir/R4/Observation",
                        json=observation(patient_id, "8867-4", 64, "/min"), headers=headers)
    retried = client.post("/fhir/R4/Observation",
                          json=observation(patient_id, "8867-4", 64, "/min"), headers=headers)
    assert (first.status_code, retried.status_code) == (201, 200)
    assert retried.json()["id"] == first.json()["id"]
    assert count(db) == 1


def test_an_exact_duplicate_is_answered_with_the_stored_observation(client, actors, db):
    patient_id = actors.patients["a"].id
    headers = gateway(client, actors)
    resource = observation(patient_id, "2339-0", 6.1, "mmol/L")
    first = client.post("/fhir/R4/Observation", json=resource, headers=headers)
    second = client.post("/fhir/R4/Observation", json=resource, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["valueQuantity"]["unit"] == "mg/dL"
    assert count(db) == 1


@pytest.mark.parametrize(
    ("resource_change", "issue_code", "expression"),
    [
        ({"code": coding("12345-6")}, "code-invalid", "Observation.code.coding"),
        ({"valueQuantity": quantity(70, "furlong")}, "code-invalid",
         "Observation.valueQuantity.code"),
        ({"valueQuantity": quantity(0, "mg/dL"), "code": coding("2339-0")}, "value",
         "Observation.valueQuantity.value"),
        ({"effectiveDateTime": "2999-01-01T00:00:00+09:00"}, "value",
         "Observation.effectiveDateTime"),
        ({"status": "entered-in-error"}, "value", "Observation.status"),
    ],
)
def test_bad_observations_are_refused_with_an_operation_outcome_and_nothing_is_stored(
    client, actors, db, resource_change, issue_code, expression
):
    patient_id = actors.patients["a"].id
    resource = {**observation(patient_id, "8867-4", 70, "/min"), **resource_change}
    response = client.post("/fhir/R4/Observation", json=resource,
                           headers=gateway(client, actors))
    assert response.status_code == 422
    issue = outcome(response)["issue"][0]
    assert issue["code"] == issue_code and issue["expression"] == [expression]
    assert count(db) == 0


def test_systolic_400_is_refused_with_the_reason(client, actors, db):
    response = client.post("/fhir/R4/Observation",
                           json=bp_observation(actors.patients["a"].id, 400, 90),
                           headers=gateway(client, actors))
    issue = outcome(response)["issue"][0]
    assert issue["code"] == "value" and "300" in issue["diagnostics"]
    assert count(db) == 0


def test_another_institutions_patient_is_not_found_as_an_operation_outcome(client, actors, db):
    response = client.post("/fhir/R4/Observation",
                           json=bp_observation(actors.patients["b"].id),
                           headers=gateway(client, actors))
    assert response.status_code == 404
    body = outcome(response)
    assert body["issue"][0]["code"] == "not-found"
    assert body["issue"][0]["details"]["coding"][0]["code"] == "NOT_FOUND"
    assert count(db) == 0


def test_a_subject_that_is_not_a_patient_id_is_not_found(client, actors, db):
    response = client.post("/fhir/R4/Observation",
                           json=bp_observation("not-a-number"), headers=gateway(client, actors))
    assert response.status_code == 404 and outcome(response)
    missing = bp_observation(actors.patients["a"].id)
    del missing["subject"]
    response = client.post("/fhir/R4/Observation", json=missing, headers=gateway(client, actors))
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == ["Observation.subject"]
    assert count(db) == 0


@pytest.mark.parametrize("subject", ["²", "١٢", "99999999999999999999999", "9223372036854775808"])
def test_a_subject_id_that_is_no_stored_id_is_not_found_and_nothing_is_stored(
    client, actors, db, subject
):
    """Unicode digits and ids beyond 64 bits: refused like any unknown patient, not a 500."""
    headers = gateway(client, actors)
    single = client.post("/fhir/R4/Observation", json=bp_observation(subject), headers=headers)
    assert single.status_code == 404
    assert outcome(single)["issue"][0]["details"]["coding"][0]["code"] == "NOT_FOUND"
    patient_id = actors.patients["a"].id
    transaction = client.post("/fhir/R4", headers=headers, json=bundle(
        "transaction", entry(bp_observation(patient_id)), entry(bp_observation(subject))))
    assert transaction.status_code == 404 and outcome(transaction)
    assert count(db) == 0
    batch = client.post("/fhir/R4", headers=headers, json=bundle(
        "batch", entry(observation(patient_id, "8867-4", 61, "/min")),
        entry(bp_observation(subject))))
    assert batch.status_code == 200
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses == ["201 Created", "404 Not Found"]
    assert count(db) == 1
    read = client.get(f"/fhir/R4/Observation/{subject}", headers=headers)
    assert read.status_code == 404 and outcome(read)


def test_unreadable_bodies_and_missing_credentials_answer_operation_outcomes(client, actors):
    headers = gateway(client, actors)
    broken = client.post("/fhir/R4/Observation", content=b"{", headers=headers)
    assert broken.status_code == 400 and outcome(broken)
    xml = client.post("/fhir/R4/Observation", content=b"<Observation/>",
                      headers={**headers, "Content-Type": "application/fhir+xml"})
    assert xml.status_code == 415 and outcome(xml)
    anonymous = client.post("/fhir/R4/Observation", json=bp_observation(1),
                            headers={"Content-Type": FHIR})
    assert anonymous.status_code == 401
    assert outcome(anonymous)["issue"][0]["code"] == "login"


def test_a_gateway_without_the_write_scope_is_forbidden(client, actors, db):
    response = client.post("/fhir/R4/Observation", json=bp_observation(actors.patients["a"].id),
                           headers=gateway(client, actors, scope="monitoring.read"))
    assert response.status_code == 403
    assert outcome(response)["issue"][0]["code"] == "forbidden"
    assert count(db) == 0


def test_a_critical_observation_opens_an_alert_in_the_same_request(client, actors, db):
    response = client.post("/fhir/R4/Observation",
                           json=bp_observation(actors.patients["a"].id, 185, 125),
                           headers=gateway(client, actors))
    assert response.status_code == 201
    assert count(db, AlertRow) == 1


# ------------------------------------------------------------------------------ bundles


def test_a_transaction_stores_every_entry_or_none(client, actors, db):
    patient_id = actors.patients["a"].id
    headers = gateway(client, actors)
    good = bundle("transaction", entry(bp_observation(patient_id)),
                  entry(observation(patient_id, "8867-4", 61, "/min")))
    response = client.post("/fhir/R4", json=good, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created", "201 Created"]
    assert count(db) == 3
    bad = bundle("transaction", entry(observation(patient_id, "8867-4", 62, "/min", 2)),
                 entry(observation(patient_id, "8867-4", 900, "/min", 3)))
    refused = client.post("/fhir/R4", json=bad, headers=headers)
    assert refused.status_code == 400
    issue = outcome(refused)["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.valueQuantity.value"]
    assert count(db) == 3


def test_a_batch_reports_each_entry_and_stores_the_good_ones(client, actors, db):
    patient_id = actors.patients["a"].id
    other_id = actors.patients["b"].id
    payload = bundle(
        "batch",
        entry(observation(patient_id, "8867-4", 61, "/min"), "identifier=urn:x|1"),
        entry(observation(patient_id, "8867-4", 900, "/min")),
        entry(observation(other_id, "8867-4", 61, "/min")),
        {"request": {"method": "DELETE", "url": "Observation/1"}},
    )
    response = client.post("/fhir/R4", json=payload, headers=gateway(client, actors))
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "404 Not Found",
                        "400 Bad Request"]
    assert count(db) == 1
    retried = client.post("/fhir/R4", json=payload, headers=gateway(client, actors)).json()
    assert retried["entry"][0]["response"]["status"] == "200 OK"
    assert count(db) == 1


def test_a_transaction_naming_another_institutions_patient_stores_nothing(client, actors, db):
    payload = bundle("transaction", entry(bp_observation(actors.patients["a"].id)),
                     entry(bp_observation(actors.patients["b"].id)))
    response = client.post("/fhir/R4", json=payload, headers=gateway(client, actors))
    assert response.status_code == 404 and outcome(response)
    assert count(db) == 0


def test_a_body_that_is_not_a_bundle_is_refused(client, actors):
    response = client.post("/fhir/R4", json={"resourceType": "Bundle", "type": "collection"},
                           headers=gateway(client, actors))
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["details"]["coding"][0]["code"] == "NOT_A_BUNDLE"


# ------------------------------------------------------------------------------- search


def _seed(client, actors) -> None:
    patient_id = actors.patients["a"].id
    entries = [entry(bp_observation(patient_id, 120 + i, 80, 60 * 24 * i)) for i in range(3)]
    entries += [entry(observation(patient_id, "8867-4", 60 + i, "/min", 60 * 24 * i))
                for i in range(3)]
    response = client.post("/fhir/R4", json=bundle("batch", *entries),
                           headers=gateway(client, actors))
    assert response.status_code == 200


def test_search_by_subject_code_and_date_returns_a_searchset_newest_first(client, actors):
    _seed(client, actors)
    patient_id = actors.patients["a"].id
    headers = gateway(client, actors, scope="monitoring.read")
    everything = client.get("/fhir/R4/Observation", params={"subject": f"Patient/{patient_id}"},
                            headers=headers).json()
    assert everything["type"] == "searchset" and len(everything["entry"]) == 6
    panels = client.get("/fhir/R4/Observation",
                        params={"subject": f"Patient/{patient_id}",
                                "code": "http://loinc.org|85354-9"}, headers=headers).json()
    systolics = [e["resource"]["component"][0]["valueQuantity"]["value"]
                 for e in panels["entry"]]
    assert systolics == [120, 121, 122]
    since = (NOW - timedelta(hours=36)).isoformat()
    recent = client.get("/fhir/R4/Observation",
                        params=[("patient", str(patient_id)), ("code", "8867-4"),
                                ("date", f"ge{since}")], headers=headers).json()
    assert [e["resource"]["valueQuantity"]["value"] for e in recent["entry"]] == [60, 61]
    paged = client.get("/fhir/R4/Observation",
                       params={"subject": f"Patient/{patient_id}", "_count": 4},
                       headers=headers).json()
    assert len(paged["entry"]) == 4
    next_link = next(link["url"] for link in paged["link"] if link["relation"] == "next")
    rest = client.get(next_link, headers=headers).json()
    assert len(rest["entry"]) == 2


def test_a_patient_searches_their_own_observations_without_naming_themself(client, actors):
    _seed(client, actors)
    sign_in(client, actors.person("a", Role.PATIENT))
    own = client.get("/fhir/R4/Observation")
    assert own.status_code == 200 and len(own.json()["entry"]) == 6
    other = client.get("/fhir/R4/Observation",
                       params={"subject": f"Patient/{actors.patients['b'].id}"})
    assert other.status_code == 404 and outcome(other)


def test_search_refuses_a_malformed_date_and_hides_other_institutions(client, actors):
    _seed(client, actors)
    headers = gateway(client, actors, key="b")
    hidden = client.get("/fhir/R4/Observation",
                        params={"subject": f"Patient/{actors.patients['a'].id}"},
                        headers=headers)
    assert hidden.status_code == 404 and outcome(hidden)
    bad = client.get("/fhir/R4/Observation",
                     params={"subject": f"Patient/{actors.patients['b'].id}",
                             "date": "gelast-tuesday"}, headers=headers)
    assert bad.status_code == 400 and outcome(bad)


def test_reading_an_unknown_or_foreign_observation_is_not_found(client, actors):
    _seed(client, actors)
    assert client.get("/fhir/R4/Observation/999999",
                      headers=gateway(client, actors)).status_code == 404
    listed = client.get("/fhir/R4/Observation",
                        params={"subject": f"Patient/{actors.patients['a'].id}"},
                        headers=gateway(client, actors)).json()
    observation_id = listed["entry"][0]["resource"]["id"]
    foreign = client.get(f"/fhir/R4/Observation/{observation_id}",
                         headers=gateway(client, actors, key="b"))
    assert foreign.status_code == 404 and outcome(foreign)


def test_the_openapi_schema_describes_the_fhir_bodies_read_by_hand(client):
    """The FHIR creates read their body themselves (RawBody); the schema still says what to
    send, for clients and for the API sweep (tests/test_api_fuzz.py)."""
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    single = paths["/fhir/R4/Observation"]["post"]["requestBody"]["content"][FHIR]["schema"]
    assert single["properties"]["resourceType"]["enum"] == ["Observation"]
    bundle_body = paths["/fhir/R4"]["post"]["requestBody"]["content"][FHIR]["schema"]
    assert bundle_body["properties"]["entry"]["items"]["properties"]["resource"] == single


def test_the_capability_statement_is_public_and_names_observation(client):
    response = client.get("/fhir/R4/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["rest"][0]["resource"][0]["type"] == "Observation"
