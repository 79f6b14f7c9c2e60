"""The policy API other systems and auditors depend on: POST /api/v1/policy/evaluate and
GET /api/v1/policy/packs, through the real application (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from benchmarks.bench_policy import realistic_mix
from jaejin.core.accounts import ApiClient, Role
from jaejin.core.audit import AuditEntry
from jaejin.core.authn import client_token_cache
from jaejin.policy import default_registry, evaluate, evaluate_json, load_packs, parse_request
from jaejin.policy.api import decision_json
from jaejin.policy.packs import DEFAULT_PACK_DIRECTORY
from tests.core.helpers import HANGUL, empty_database, fast_password_hashing
from tests.policy.builders import EXAMPLE, build
from tests.support import bearer, client_token, problem, sign_in

EVALUATE = "/api/v1/policy/evaluate"
PACKS = "/api/v1/policy/packs"
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    with fast_password_hashing():
        yield


@pytest.fixture
def clean_database(engine: Engine) -> Iterator[Engine]:
    empty_database(engine)
    yield engine


@pytest.fixture
def token(client, actors) -> str:  # type: ignore[no-untyped-def]
    return client_token(client, actors.clients["a"])


def post(client, token: str, body: Any, **headers: str):  # type: ignore[no-untyped-def]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(EVALUATE, content=content,
                       headers=bearer(token) | {"Content-Type": "application/json"} | headers)


def fields(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [error["field"] for error in problem(response)["errors"]]


def audit_count(engine: Engine) -> int:
    with Session(engine) as db:
        return int(db.execute(select(func.count(AuditEntry.id))).scalar_one())


# -- the contract ----------------------------------------------------------------------------


def test_the_api_answers_exactly_what_the_engine_decides(client, token):
    registry = default_registry()
    for payload in [EXAMPLE, *realistic_mix()[::7]]:
        response = post(client, token, payload)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == evaluate_json(payload, registry)


def test_the_fast_body_is_the_decisions_own_json():
    registry = default_registry()
    for payload in realistic_mix():
        decision = evaluate(parse_request(payload), registry)
        assert orjson.loads(decision_json(decision)) == decision.model_dump(mode="json")


def test_a_denied_visit_says_why_and_what_is_allowed_instead(client, token):
    response = post(client, token, build({"history": [], "institution.telemedicine_share": 0.45,
                                          "patient.residence_region": "KR-26"}))
    body = response.json()
    assert body["decision"] == "denied"
    assert {reason["code"] for reason in body["reasons"] if reason["effect"] == "deny"} == {
        "SHARE_CAP_EXCEEDED", "FIRST_VISIT_OUTSIDE_REGION"}
    assert [item["code"] for item in body["alternatives"]] == [
        "IN_PERSON_VISIT", "REGIONAL_TELEMEDICINE"]
    assert all(reason["source"] for reason in body["reasons"])


def test_the_decision_speaks_the_requested_language(client, token):
    body = post(client, token, build({"lang": "ko"})).json()
    assert body["lang"] == "ko"
    assert HANGUL.search(body["reasons"][0]["message"])


def test_evaluating_writes_nothing(client, token, engine):
    before = audit_count(engine)
    for payload in realistic_mix()[:10]:
        post(client, token, payload)
    post(client, token, build({"patient.flags": ["vip"]}))
    assert audit_count(engine) == before


# -- who may call ------------------------------------------------------------------------------


def test_any_signed_in_person_may_evaluate(client, actors):
    for role in (Role.PATIENT, Role.INTERPRETER, Role.AUDITOR):
        csrf = sign_in(client, actors.person("a", role))
        response = client.post(EVALUATE, json=build(), headers={"X-CSRF-Token": csrf})
        assert response.status_code == 200, (role, response.text)


def test_a_browser_session_must_send_its_csrf_token(client, actors):
    sign_in(client, actors.person("a", Role.CLINICIAN))
    response = client.post(EVALUATE, json=build())
    assert response.status_code == 403
    assert problem(response)["code"] == "CSRF_FAILED"


def test_a_system_client_needs_the_policy_scope(client, actors):
    narrow = client_token(client, actors.clients["a"], scope="directory.read")
    response = post(client, narrow, build())
    assert response.status_code == 403
    assert problem(response)["code"] == "INSUFFICIENT_SCOPE"
    assert client.get(PACKS, headers=bearer(narrow)).status_code == 403


def test_nobody_unauthenticated_gets_a_decision(client, actors):
    anonymous = client.post(EVALUATE, json=build())
    assert anonymous.status_code == 401
    assert problem(anonymous)["code"] == "UNAUTHENTICATED"
    forged = post(client, "not-a-token", build())
    assert forged.status_code == 401
    assert problem(forged)["code"] == "INVALID_TOKEN"
    assert client.get(PACKS).status_code == 401


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "field", "code"), [
    ({"patient.flags": ["long_term_care", "vip"]}, "patient.flags.1", "ENUM"),
    ({"at": "2027-02-30T10:00:00+09:00"}, "at", "DATETIME_FROM_DATE_PARSING"),
    ({"patient.birth_date": "2027-02-30"}, "patient.birth_date", "DATE_FROM_DATETIME_PARSING"),
    ({"at": "2027-03-10T10:00:00"}, "at", "TIMEZONE_AWARE"),
    ({"institution.region": "KR-99"}, "institution.region", "UNKNOWN_REGION"),
    ({"patient.current_country": "XX"}, "patient.current_country", "UNKNOWN_COUNTRY"),
    ({"patient.nationality": "Korea"}, "patient.nationality", "UNKNOWN_COUNTRY"),
    ({"institution.telemedicine_share": "lots"}, "institution.telemedicine_share",
     "FLOAT_PARSING"),
    ({"institution.telemedicine_share": 1.5}, "institution.telemedicine_share",
     "LESS_THAN_EQUAL"),
    ({"visit.tri_party": "perhaps"}, "visit.tri_party", "BOOL_PARSING"),
    ({"visit.condition": "flu"}, "visit.condition", "KCD_CODE"),
    ({"visit.mode": "fax"}, "visit.mode", "ENUM"),
    ({"institution.kind": "spa"}, "institution.kind", "ENUM"),
    ({"lang": "tlh"}, "lang", "UNKNOWN_LANGUAGE"),
    ({"history": [{"date": "2027-04-01", "mode": "in_person", "same_institution": True}]},
     "history.0.date", "INVALID"),
    ({"patient.birth_date": "2030-01-01"}, "patient.birth_date", "INVALID"),
    ({"patient.residence_district": {"province": "KR-26", "district": "해운대구"}},
     "patient.residence_district.province", "INVALID"),
    ({"prescriptions": [{"ingredient": "metformin", "days": 0}]}, "prescriptions.0.days",
     "GREATER_THAN_EQUAL"),
    ({"documents": [{"kind": "passport"}]}, "documents.0.kind", "ENUM"),
    ({"surprise": True}, "surprise", "EXTRA_FORBIDDEN"),
])
def test_bad_input_is_a_422_naming_the_field(client, token, engine, overrides, field, code):
    before = audit_count(engine)
    response = post(client, token, build(overrides))
    assert response.status_code == 422, response.text
    body = problem(response)
    assert body["code"] == "VALIDATION_FAILED"
    assert [(error["field"], error["code"]) for error in body["errors"]] == [(field, code)]
    assert body["errors"][0]["message"]
    assert audit_count(engine) == before


def test_a_missing_field_and_a_body_that_is_not_an_object_are_named(client, token):
    payload = build()
    del payload["visit"]
    assert fields(post(client, token, payload)) == ["visit"]
    assert fields(post(client, token, [payload])) == ["body"]
    assert fields(post(client, token, b"")) == ["body"]


def test_malformed_json_is_a_422_naming_the_body(client, token):
    response = post(client, token, b'{"at": "2027-03-10T10:00:00+09:00",')
    assert response.status_code == 422
    body = problem(response)
    assert body["errors"] == [{"field": "body", "code": "JSON_INVALID",
                               "message": "The body is not valid JSON."}]


def test_a_request_contradicting_the_reference_data_is_refused_not_guessed(client, token):
    response = post(client, token, build({
        "patient.flags": ["emergency_shortage_area"],
        "patient.residence_district": {"province": "KR-11", "district": "강남구"},
    }))
    assert response.status_code == 422
    body = problem(response)
    assert body["code"] == "POLICY_REQUEST_INCONSISTENT"
    assert fields(response) == ["patient.flags"]
    assert "강남구" in body["errors"][0]["message"]


def test_errors_are_written_in_the_requests_language_or_the_callers(client, token):
    korean = post(client, token, build({"lang": "ko", "institution.region": "KR-99"}))
    assert HANGUL.search(problem(korean)["detail"])
    assert HANGUL.search(problem(korean)["errors"][0]["message"])
    assert "KR-99" in problem(korean)["errors"][0]["message"]
    unreadable = post(client, token, b"{", **{"Accept-Language": "ko"})
    assert HANGUL.search(problem(unreadable)["errors"][0]["message"])
    english = post(client, token, build({"lang": "en", "patient.flags": ["vip"]}),
                   **{"Accept-Language": "ko"})
    assert not HANGUL.search(problem(english)["errors"][0]["message"])


# -- the packs -----------------------------------------------------------------------------------


def test_the_pack_listing_has_every_pack_with_its_parameters(client, token):
    response = client.get(PACKS, headers=bearer(token))
    assert response.status_code == 200
    listed = response.json()
    assert listed == default_registry().describe()
    msa = next(pack for pack in listed if pack["id"] == "kr-msa-2026")
    assert msa["parameters"]["share_cap"] == {
        "value": 0.3, "source": msa["parameters"]["share_cap"]["source"], "provisional": True}
    assert msa["in_force"]["from"] == "2026-12-24"


def test_the_pack_listing_can_show_one_days_packs(client, token):
    response = client.get(PACKS, params={"in_force_on": "2024-03-01"}, headers=bearer(token))
    ids = {pack["id"] for pack in response.json()}
    assert "kr-pilot-2024-02" in ids and "kr-overseas-2016" in ids
    assert not {"kr-pilot-2023-12", "kr-msa-2026"} & ids
    before_any = client.get(PACKS, params={"in_force_on": "2016-01-01"}, headers=bearer(token))
    assert before_any.json() == []


def test_an_impossible_day_for_the_pack_listing_is_a_422(client, token):
    response = client.get(PACKS, params={"in_force_on": "2027-02-30"}, headers=bearer(token))
    assert response.status_code == 422
    assert fields(response) == ["query.in_force_on"]


def test_the_openapi_document_describes_the_request_and_the_decision(client):
    document = client.get("/api/v1/openapi.json").json()
    operation = document["paths"][EVALUATE]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"at", "institution", "patient", "history", "visit"} <= set(schema["properties"])
    assert "$defs" not in json.dumps(schema)
    assert "Decision" in json.dumps(operation["responses"]["200"])
    assert PACKS in document["paths"]


# -- start-up ----------------------------------------------------------------------------------


def _start_app(tmp_path: Path, packs: Path) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {
        "JAEJIN_POLICY_PACKS_DIRECTORY": str(packs),
        "JAEJIN_DATABASE_URL": f"sqlite:///{tmp_path / 'start.db'}",
        "PYTHONPATH": str(REPOSITORY),
    }
    return subprocess.run(
        [sys.executable, "-c", "from jaejin.app import create_app; create_app()"],
        env=environment, capture_output=True, text=True, timeout=120, cwd=REPOSITORY,
        check=False,
    )


def test_a_malformed_pack_stops_the_service_at_start(tmp_path: Path):
    packs = tmp_path / "packs"
    shutil.copytree(DEFAULT_PACK_DIRECTORY, packs)
    load_packs(packs)  # the copy itself is sound
    statute = packs / "kr-msa-2026.toml"
    statute.write_text(statute.read_text(encoding="utf-8").replace(
        "[parameters.share_cap]\nvalue = 0.3", "[parameters.share_cap]\nvalue = 3.0"),
        encoding="utf-8")
    started = _start_app(tmp_path, packs)
    assert started.returncode != 0
    assert "PackError" in started.stderr
    assert "kr-msa-2026.toml: parameters.share_cap.value" in started.stderr


# -- the system client, looked up on every call ---------------------------------------------------


def deactivate(engine: Engine, client_id: str) -> None:
    with Session(engine) as db:
        client = db.execute(select(ApiClient).where(ApiClient.client_id == client_id)
                            ).scalar_one()
        client.active = False
        db.commit()


def test_a_deactivated_client_is_shut_out_once_the_cache_time_has_passed(
        client, actors, engine, monkeypatch):
    """A client's token is trusted for JAEJIN_API_CLIENT_CACHE_SECONDS, then looked up again."""
    cache = client_token_cache(client.app)
    token = client_token(client, actors.clients["a"])
    assert post(client, token, build()).status_code == 200
    deactivate(engine, actors.clients["a"][0])
    assert post(client, token, build()).status_code == 200, "within the cache time"
    now = time.time()
    monkeypatch.setattr("jaejin.core.authn.time.time", lambda: now + cache.ttl + 0.01)
    refused = post(client, token, build())
    assert refused.status_code == 401
    assert problem(refused)["code"] == "INVALID_TOKEN"


def test_with_the_cache_off_a_deactivated_client_is_shut_out_at_its_next_call(
        app, client, actors, engine, monkeypatch):
    cache = client_token_cache(client.app)
    monkeypatch.setattr(cache, "ttl", 0)
    token = client_token(client, actors.clients["a"])
    assert post(client, token, build()).status_code == 200
    deactivate(engine, actors.clients["a"][0])
    refused = post(client, token, build())
    assert refused.status_code == 401
    assert problem(refused)["code"] == "INVALID_TOKEN"


def test_a_forged_token_is_never_answered_from_the_cache(client, actors):
    token = client_token(client, actors.clients["a"])
    assert post(client, token, build()).status_code == 200
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused = post(client, forged, build())
    assert refused.status_code == 401
    assert problem(refused)["code"] == "INVALID_TOKEN"



def test_a_client_calling_again_gets_its_own_language_and_scope_checks(client, actors):
    narrow = client_token(client, actors.clients["a"], scope="directory.read")
    for _ in range(2):
        assert post(client, narrow, build()).status_code == 403
    token = client_token(client, actors.clients["a"])
    post(client, token, build())
    korean = post(client, token, build({"patient.flags": ["vip"]}) | {"lang": "xx"},
                  **{"Accept-Language": "ko"})
    english = post(client, token, build({"patient.flags": ["vip"]}) | {"lang": "xx"},
                   **{"Accept-Language": "en"})
    assert HANGUL.search(problem(korean)["detail"])
    assert not HANGUL.search(problem(english)["detail"])

