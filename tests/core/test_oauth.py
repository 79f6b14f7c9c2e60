"""Hospital systems and device gateways: OAuth 2.0 client credentials and bearer tokens."""

from __future__ import annotations

import base64
from datetime import timedelta

import jwt
import pytest

from jaejin.core.accounts import ApiClient
from jaejin.core.i18n import translate
from jaejin.core.security import issue_access_token
from jaejin.directory.store import Patient
from tests.core.helpers import (
    HANGUL,
    KOREAN_CORE_CATALOGUE,
    alternate_app,
    audit_entries,
    client_for,
    count_rows,
)
from tests.support import bearer, client_token, problem

ALL_SCOPES = ("directory.read directory.write monitoring.read monitoring.write policy.evaluate "
              "scheduling.read scheduling.write")


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def ask_for_token(client, credentials, **form):
    return client.post("/oauth2/token", data={"grant_type": "client_credentials"} | form,
                       headers=basic(*credentials))


# --------------------------------------------------------------------------------- the endpoint


def test_a_client_exchanges_its_credentials_for_a_short_lived_bearer_token(client, actors):
    response = ask_for_token(client, actors.clients["a"])
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == ALL_SCOPES
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900
    assert claims["sub"] == actors.clients["a"][0]
    found = client.get("/api/v1/patients", params={"mrn": "MRN-A-1"},
                       headers=bearer(body["access_token"]))
    assert [p["mrn"] for p in found.json()] == ["MRN-A-1"]
    issued = audit_entries(client.app.state.engine, action="token", outcome="success")
    assert [(e.resource_id, e.institution_id) for e in issued] == [
        (actors.clients["a"][0], actors.a.id)]


def test_a_wrong_secret_gets_401_invalid_client(client, actors):
    client_id, _secret = actors.clients["a"]
    response = ask_for_token(client, (client_id, "not-the-secret"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    assert "access_token" not in response.text
    failed = audit_entries(client.app.state.engine, action="token", outcome="failure")
    assert [e.resource_id for e in failed] == [client_id]


def test_an_unknown_client_gets_401_invalid_client(client):
    response = ask_for_token(client, ("jaejin-nobody", "whatever"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("authorization", [
    None, "Bearer abc", "Basic not-base64!!", "Basic " + base64.b64encode(b"no-colon").decode(),
])
def test_without_http_basic_client_authentication_the_answer_is_401(client, actors,
                                                                    authorization):
    client_id, secret = actors.clients["a"]
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/oauth2/token", headers=headers, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "refresh_token"])
def test_grants_other_than_client_credentials_are_unsupported(client, actors, grant_type):
    response = ask_for_token(client, actors.clients["a"], grant_type=grant_type)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_a_token_request_without_a_grant_type_is_refused(client, actors):
    client_id, secret = actors.clients["a"]
    response = client.post("/oauth2/token", headers=basic(client_id, secret), data={})
    assert 400 <= response.status_code < 500
    assert "access_token" not in response.text


def test_a_client_may_ask_for_fewer_scopes_and_the_token_carries_only_those(client, actors):
    response = ask_for_token(client, actors.clients["a"], scope="directory.read")
    assert response.json()["scope"] == "directory.read"
    token = response.json()["access_token"]
    assert client.get("/api/v1/patients", headers=bearer(token)).status_code == 200
    before = count_rows(client.app.state.engine, Patient)
    refused = client.post("/api/v1/patients", headers=bearer(token), json={})
    assert refused.status_code == 403
    body = problem(refused)
    assert body["code"] == "INSUFFICIENT_SCOPE"
    assert "directory.write" in body["detail"]
    assert count_rows(client.app.state.engine, Patient) == before


def test_a_client_cannot_ask_for_a_scope_it_was_not_granted(db, client, actors):
    stored = db.query(ApiClient).filter_by(client_id=actors.clients["a"][0]).one()
    stored.scopes = ["directory.read"]
    db.commit()
    response = ask_for_token(client, actors.clients["a"], scope="directory.read directory.write")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_scope"
    assert "directory.write" in body["error_description"]
    whole = ask_for_token(client, actors.clients["a"])
    assert whole.json()["scope"] == "directory.read"


def test_a_deactivated_client_gets_no_token_and_its_tokens_stop_working(db, client, actors):
    token = client_token(client, actors.clients["a"])
    stored = db.query(ApiClient).filter_by(client_id=actors.clients["a"][0]).one()
    stored.active = False
    db.commit()
    assert problem(client.get("/api/v1/patients", headers=bearer(token)))["code"] == \
        "INVALID_TOKEN"
    assert ask_for_token(client, actors.clients["a"]).status_code == 401


# ---------------------------------------------------------------------------------- the tokens


def test_an_expired_token_is_refused_with_401_invalid_token(app, engine, client, actors):
    with alternate_app(app, engine, access_token_lifetime_seconds=-60) as short_lived, \
            client_for(short_lived) as other:
        token = client_token(other, actors.clients["a"])
        assert other.get("/api/v1/institutions", headers=bearer(token)).status_code == 401
    response = client.get("/api/v1/institutions", headers=bearer(token))
    assert response.status_code == 401
    assert problem(response)["code"] == "INVALID_TOKEN"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_a_token_signed_with_another_key_or_tampered_with_is_refused(client, settings, actors):
    client_id = actors.clients["a"][0]
    claims = {"kind": "client", "scope": ALL_SCOPES}
    forged, _ = issue_access_token("another-key-" * 4, client_id, claims, timedelta(minutes=5))
    genuine = client_token(client, actors.clients["a"])
    header, payload, signature = genuine.split(".")
    tampered = ".".join([header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA"
                                                             else "BB")])
    for token in (forged, tampered, "not.a.jwt", ""):
        response = client.get("/api/v1/institutions", headers=bearer(token))
        assert response.status_code == 401, token
    unsigned = jwt.encode({"sub": client_id, "kind": "client", "scope": ALL_SCOPES,
                           "aud": "jaejin-api"}, key=None, algorithm="none")
    assert client.get("/api/v1/institutions", headers=bearer(unsigned)).status_code == 401


def test_a_token_for_another_audience_is_refused(client, settings, actors):
    token = jwt.encode({"sub": actors.clients["a"][0], "kind": "client", "scope": ALL_SCOPES,
                        "aud": "someone-else", "exp": 9_999_999_999},
                       settings.secret_key, algorithm="HS256")
    assert client.get("/api/v1/institutions", headers=bearer(token)).status_code == 401


def test_a_client_of_one_institution_cannot_reach_anothers_patients(client, actors):
    token = client_token(client, actors.clients["a"])
    other = actors.patients["b"]
    response = client.get(f"/api/v1/patients/{other.id}", headers=bearer(token))
    assert response.status_code == 404
    assert problem(response)["code"] == "NOT_FOUND"
    assert "MRN-B-1" not in response.text
    assert client.get("/api/v1/patients", params={"mrn": "MRN-B-1"},
                      headers=bearer(token)).json() == []
    encounter = client.post("/api/v1/encounters", headers=bearer(token), json={
        "patient_id": other.id, "mode": "in_person", "started_at": "2026-01-05T09:00:00+09:00"})
    assert encounter.status_code == 404
    invitation = client.post(f"/api/v1/patients/{other.id}/invitations", headers=bearer(token))
    assert invitation.status_code == 404
    institutions = client.get("/api/v1/institutions", headers=bearer(token)).json()
    assert [i["code"] for i in institutions] == ["INST-A"]


def test_a_client_cannot_create_records_for_another_institution(client, actors):
    token = client_token(client, actors.clients["a"])
    response = client.post("/api/v1/practitioners", params={"institution_id": actors.b.id},
                           headers=bearer(token), json={
                               "licence_number": "LIC-X-9", "name_native": "의사",
                               "name_latin": "Doctor"})
    assert response.status_code == 404


def test_a_client_without_the_read_scope_is_refused_with_403_insufficient_scope(client, db,
                                                                               actors):
    stored = db.query(ApiClient).filter_by(client_id=actors.clients["a"][0]).one()
    stored.scopes = ["monitoring.write"]
    db.commit()
    token = client_token(client, actors.clients["a"])
    for path in ("/api/v1/patients", f"/api/v1/patients/{actors.patients['a'].id}",
                 "/api/v1/practitioners"):
        response = client.get(path, headers=bearer(token))
        assert response.status_code == 403, path
        assert problem(response)["code"] == "INSUFFICIENT_SCOPE"
        assert "MRN-A-1" not in response.text


def test_problem_messages_for_a_client_follow_its_accept_language(client, actors):
    token = client_token(client, actors.clients["a"])
    english = client.get("/api/v1/patients/999999", headers=bearer(token))
    korean = client.get("/api/v1/patients/999999",
                        headers=bearer(token) | {"Accept-Language": "ko"})
    assert problem(english)["code"] == problem(korean)["code"] == "NOT_FOUND"
    assert problem(english)["detail"] == "No such patient, or you may not see it."
    assert problem(korean)["detail"] == translate(
        "ko", "No such {resource}, or you may not see it.", resource="patient")
    if KOREAN_CORE_CATALOGUE.exists():
        assert HANGUL.search(problem(korean)["detail"])
