"""Signing in and staying safe: passwords, cookies, CSRF, throttling, two-factor, sign-out,
redirects and the language switch, all through the real pages and API."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from urllib.parse import urljoin, urlparse

import pyotp
import pytest
from argon2 import Type
from argon2.exceptions import InvalidHashError
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from jaejin.accounts import service
from jaejin.accounts.service import ADDRESS_FAILURE_LIMIT, create_user
from jaejin.core import security
from jaejin.core.accounts import LoginFailure, Role, User, WebSession
from jaejin.core.audit import AuditActor
from jaejin.core.authn import SESSION_COOKIE
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem
from jaejin.directory.store import Invitation, Patient
from tests.core.helpers import (
    alternate_app,
    audit_entries,
    client_for,
    count_rows,
    fresh,
    html_lang,
    set_cookie_headers,
)
from tests.support import (
    PASSWORD,
    Person,
    bearer,
    client_token,
    csrf_from,
    problem,
    sign_in,
)

PATIENT_HOME_MARKER = "Welcome, patient a"


def post_login(client, email: str, password: str, next_path: str = "/", headers=None):
    """Sign in through the form, as a guest whose browser asks for English."""
    english = {"Accept-Language": "en"}
    form = client.get("/login", headers=english)
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": csrf_from(form.text), "next": next_path},
                       headers=english | (headers or {}), follow_redirects=False)


def totp_code(secret: str, steps_ahead: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.at(utcnow() + timedelta(seconds=totp.interval * steps_ahead))


# ------------------------------------------------------------------------------------ passwords


def test_production_passwords_are_hashed_with_argon2id_at_the_rfc_9106_cost():
    from tests.core.helpers import PRODUCTION_HASHER

    assert PRODUCTION_HASHER.type is Type.ID
    assert (PRODUCTION_HASHER.time_cost, PRODUCTION_HASHER.memory_cost,
            PRODUCTION_HASHER.parallelism) == (3, 65536, 4)
    assert PRODUCTION_HASHER.hash("a-long-password").startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_the_database_keeps_only_an_argon2id_hash_of_the_password(db, actors):
    user = db.get(User, actors.person("a", Role.PATIENT).user.id)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert security.verify_password(user.password_hash, PASSWORD)
    assert not security.verify_password(user.password_hash, PASSWORD + "x")


def test_a_password_hashed_with_older_parameters_is_upgraded_at_sign_in(client, db, actors):
    from tests.core.helpers import PRODUCTION_HASHER

    person = actors.person("a", Role.PATIENT)
    user = db.get(User, person.user.id)
    user.password_hash = PRODUCTION_HASHER.hash(PASSWORD)  # other parameters than today's
    db.commit()
    assert post_login(client, person.email, PASSWORD).status_code == 303
    with fresh(client.app.state.engine) as session:
        upgraded = session.get(User, person.user.id).password_hash
    assert upgraded != user.password_hash
    assert not security.password_needs_rehash(upgraded)
    assert security.verify_password(upgraded, PASSWORD)


def test_a_corrupt_stored_hash_never_signs_anyone_in():
    with pytest.raises(InvalidHashError):
        security._password_hasher.verify("not-a-hash", "x")
    assert security.verify_password("not-a-hash", "x") is False
    assert security.verify_password(None, "x") is False


# -------------------------------------------------------------------------------------- sign-in


def test_a_patient_signs_in_with_the_right_password_and_lands_on_their_home(client, actors):
    person = actors.person("a", Role.PATIENT)
    response = post_login(client, person.email.upper() + "  ", PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert client.cookies.get(SESSION_COOKIE)
    home = client.get("/")
    assert home.status_code == 200
    assert PATIENT_HOME_MARKER in home.text
    assert [e.outcome for e in audit_entries(client.app.state.engine, action="login",
                                             actor_id=str(person.user.id))] == ["success"]


def test_a_wrong_password_is_refused_and_starts_no_session(client, actors):
    person = actors.person("a", Role.PATIENT)
    response = post_login(client, person.email, "not-the-password")
    assert response.status_code == 401
    assert "The e-mail or password is not right." in response.text
    assert not client.cookies.get(SESSION_COOKIE)
    assert count_rows(client.app.state.engine, WebSession)["web_sessions"] == 0
    failures = audit_entries(client.app.state.engine, action="login", outcome="failure")
    assert [(e.resource_id, e.ip_address) for e in failures] == [(person.email, "testclient")]


def test_an_unknown_email_gets_the_same_answer_as_a_wrong_password(client, actors):
    unknown = post_login(client, "nobody@test.example", PASSWORD)
    wrong = post_login(client, actors.person("a", Role.PATIENT).email, "not-the-password")
    assert unknown.status_code == wrong.status_code == 401
    assert "The e-mail or password is not right." in unknown.text


def test_a_deactivated_account_cannot_sign_in_even_with_the_right_password(client, db, actors):
    person = actors.person("a", Role.COORDINATOR)
    db.get(User, person.user.id).active = False
    db.commit()
    assert post_login(client, person.email, PASSWORD).status_code == 401


def test_a_session_of_a_deactivated_account_stops_working(client, db, actors):
    person = actors.person("a", Role.COORDINATOR)
    sign_in(client, person)
    assert client.get("/api/v1/institutions").status_code == 200
    db.get(User, person.user.id).active = False
    db.commit()
    assert problem(client.get("/api/v1/institutions"))["code"] == "UNAUTHENTICATED"


def test_an_expired_session_is_refused(client, db, actors):
    sign_in(client, actors.person("a", Role.COORDINATOR))
    for web_session in db.execute(select(WebSession)).scalars():
        web_session.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    response = client.get("/api/v1/institutions")
    assert response.status_code == 401
    assert problem(response)["code"] == "UNAUTHENTICATED"


def test_the_sign_in_form_is_refused_without_its_csrf_cookie(client, actors):
    person = actors.person("a", Role.PATIENT)
    form = client.get("/login")
    token = csrf_from(form.text)
    client.cookies.clear()
    response = client.post("/login", data={"email": person.email, "password": PASSWORD,
                                           "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 403
    assert problem(response)["code"] == "CSRF_FAILED"
    assert not client.cookies.get(SESSION_COOKIE)


def test_the_sign_in_form_is_refused_with_a_forged_csrf_field(client, actors):
    client.get("/login")
    response = client.post("/login", data={"email": actors.person("a", Role.PATIENT).email,
                                           "password": PASSWORD, "csrf_token": "forged"},
                           follow_redirects=False)
    assert response.status_code == 403


# -------------------------------------------------------------------------------- cookie flags


def _session_cookie_attributes(response) -> set[str]:
    headers = set_cookie_headers(response, SESSION_COOKIE)
    assert len(headers) == 1, response.headers
    return {part.strip().lower() for part in headers[0].split(";")[1:]}


def test_the_session_cookie_is_http_only_and_same_site_lax_but_not_secure_over_http(
        client, actors):
    response = post_login(client, actors.person("a", Role.PATIENT).email, PASSWORD)
    attributes = _session_cookie_attributes(response)
    assert {"httponly", "samesite=lax", "path=/"} <= attributes
    assert "secure" not in attributes


def test_the_session_cookie_is_secure_when_jaejin_is_served_over_https(app, engine, actors):
    with alternate_app(app, engine, public_base_url="https://jaejin.example") as https_app, \
            client_for(https_app, base_url="https://jaejin.example") as https_client:
        form = https_client.get("/login")
        assert "secure" in {part.strip().lower() for part in
                            set_cookie_headers(form, "jaejin_csrf")[0].split(";")}
        response = https_client.post(
            "/login", data={"email": actors.person("a", Role.PATIENT).email,
                            "password": PASSWORD, "csrf_token": csrf_from(form.text)},
            follow_redirects=False)
        assert response.status_code == 303
        assert {"httponly", "samesite=lax", "secure"} <= _session_cookie_attributes(response)
        assert https_client.get("/api/v1/institutions").status_code == 200


# ------------------------------------------------------------------------------------------ CSRF


NEW_PATIENT = {
    "mrn": "MRN-NEW-1", "family_name_native": "김", "given_name_native": "민수",
    "family_name_latin": "Kim", "given_name_latin": "Min-su", "birth_date": "1980-01-02",
    "sex": "male", "nationality": "KR", "residence_country": "KR",
    "current_country": "KR", "languages": ["ko"],
}


def test_a_json_call_with_the_session_cookie_needs_the_csrf_header(client, actors):
    csrf = sign_in(client, actors.person("a", Role.COORDINATOR))
    before = count_rows(client.app.state.engine, Patient)
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        response = client.post("/api/v1/patients", json=NEW_PATIENT, headers=headers)
        assert response.status_code == 403
        assert problem(response)["code"] == "CSRF_FAILED"
    assert count_rows(client.app.state.engine, Patient) == before
    created = client.post("/api/v1/patients", json=NEW_PATIENT, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201, created.text


def test_a_bearer_token_call_needs_no_csrf_token(client, actors):
    token = client_token(client, actors.clients["a"])
    client.cookies.clear()
    response = client.post("/api/v1/patients", json=NEW_PATIENT, headers=bearer(token))
    assert response.status_code == 201, response.text


def test_a_state_changing_form_is_refused_without_the_csrf_field(client, db, actors):
    sign_in(client, actors.person("a", Role.COORDINATOR))
    patient = actors.patients["a"]
    db.get(Patient, patient.id).user_id = None
    db.commit()
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post(f"/patients/{patient.id}/invitation", data=data,
                               headers={"Accept": "text/html"})
        assert response.status_code == 403
        assert "CSRF_FAILED" in response.text
    assert count_rows(client.app.state.engine, Invitation)["invitations"] == 0


def test_the_language_switch_of_a_signed_in_user_is_refused_without_the_csrf_field(
        client, actors):
    person = actors.person("a", Role.PATIENT)
    sign_in(client, person)
    response = client.post("/language", data={"language": "ko", "csrf_token": "forged"},
                           follow_redirects=False)
    assert response.status_code == 403
    with fresh(client.app.state.engine) as session:
        assert session.get(User, person.user.id).language == "en"


# ------------------------------------------------------------------------------------ throttling


def test_after_five_failures_even_the_right_password_is_refused_for_a_while(client, actors):
    person = actors.person("a", Role.PATIENT)
    for _ in range(5):
        assert post_login(client, person.email, "wrong-password!").status_code == 401
    response = post_login(client, person.email, PASSWORD)
    assert response.status_code == 429
    assert "Too many failed attempts. Try again in 15 minutes." in response.text
    assert response.headers["retry-after"] == "900"
    assert not client.cookies.get(SESSION_COOKIE)
    throttled = audit_entries(client.app.state.engine, action="login", outcome="throttled")
    assert [e.resource_id for e in throttled] == [person.email]
    # Another account from the same address is not locked by this one's failures.
    assert post_login(client, actors.person("a", Role.COORDINATOR).email,
                      PASSWORD).status_code == 303


def test_the_throttle_answers_with_the_stable_code_login_throttled(db, settings, actors):
    person = actors.person("a", Role.PATIENT)
    actor = AuditActor("guest", "anonymous", "anonymous", "192.0.2.1")
    for _ in range(settings.login_failures_before_lockout):
        with pytest.raises(Problem) as failed:
            service.authenticate(db, settings, person.email, "wrong-password!", actor)
        assert failed.value.code == "INVALID_CREDENTIALS"
    with pytest.raises(Problem) as throttled:
        service.authenticate(db, settings, person.email, PASSWORD, actor)
    assert (throttled.value.status, throttled.value.code) == (429, "LOGIN_THROTTLED")


def test_failures_older_than_the_lockout_window_no_longer_count(client, db, settings, actors):
    person = actors.person("a", Role.PATIENT)
    for _ in range(5):
        post_login(client, person.email, "wrong-password!")
    for failure in db.execute(select(LoginFailure)).scalars():
        failure.failed_at = utcnow() - timedelta(minutes=settings.login_lockout_minutes + 1)
    db.commit()
    assert post_login(client, person.email, PASSWORD).status_code == 303


def test_one_address_guessing_many_accounts_is_throttled(client, actors):
    for number in range(ADDRESS_FAILURE_LIMIT):
        assert post_login(client, f"guess{number}@test.example", "x" * 12).status_code == 401
    response = post_login(client, actors.person("a", Role.PATIENT).email, PASSWORD)
    assert response.status_code == 429
    # X-Forwarded-For from a peer that is not a configured proxy is not believed.
    spoofed = post_login(client, actors.person("a", Role.PATIENT).email, PASSWORD,
                         headers={"X-Forwarded-For": "198.51.100.7"})
    assert spoofed.status_code == 429


def test_behind_a_trusted_proxy_each_forwarded_address_is_throttled_on_its_own(
        app, engine, actors):
    # The proxy (the test client's address) appends the address it saw to X-Forwarded-For.
    with alternate_app(app, engine, trusted_proxies=["testclient", "10.0.0.2"]) as proxied, \
            client_for(proxied) as client:
        guesser = {"X-Forwarded-For": "203.0.113.66"}
        for number in range(ADDRESS_FAILURE_LIMIT):
            post_login(client, f"guess{number}@test.example", "x" * 12, headers=guesser)
        person = actors.person("a", Role.PATIENT)
        assert post_login(client, person.email, PASSWORD, headers=guesser).status_code == 429
        # Addresses the guesser writes in front of its own prove nothing: still throttled.
        forged = {"X-Forwarded-For": "198.51.100.7, 203.0.113.66"}
        assert post_login(client, person.email, PASSWORD, headers=forged).status_code == 429
        # Someone else, through two of our proxies, is not.
        neighbour = {"X-Forwarded-For": "198.51.100.7, 10.0.0.2"}
        assert post_login(client, person.email, PASSWORD, headers=neighbour).status_code == 303
    addresses = {e.ip_address for e in audit_entries(engine, action="login")}
    assert addresses == {"203.0.113.66", "198.51.100.7"}


# ---------------------------------------------------------------------------------- two-factor


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.INSTITUTION_ADMIN])
def test_staff_who_must_use_two_factor_get_nothing_until_they_pass_it(client, actors, role):
    person = actors.person("a", role)
    response = post_login(client, person.email, PASSWORD, next_path="/patients")
    assert response.status_code == 303
    assert response.headers["location"] == "/login/two-factor?next=/patients"
    api = client.get("/api/v1/institutions")
    assert api.status_code == 401
    assert problem(api)["code"] == "TWO_FACTOR_REQUIRED"
    page = client.get("/patients", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login/two-factor")
    home = client.get("/", follow_redirects=False)
    assert home.headers["location"].startswith("/login/two-factor")

    form = client.get("/login/two-factor?next=/patients")
    passed = client.post("/login/two-factor",
                         data={"code": totp_code(person.totp_secret), "next": "/patients",
                               "csrf_token": csrf_from(form.text)}, follow_redirects=False)
    assert passed.status_code == 303
    assert passed.headers["location"] == "/patients"
    assert client.get("/api/v1/institutions").status_code == 200


def test_a_wrong_two_factor_code_keeps_the_door_shut(client, actors):
    person = actors.person("a", Role.CLINICIAN)
    post_login(client, person.email, PASSWORD)
    form = client.get("/login/two-factor")
    right = totp_code(person.totp_secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    response = client.post("/login/two-factor",
                           data={"code": wrong, "csrf_token": csrf_from(form.text)},
                           follow_redirects=False)
    assert response.status_code == 401
    assert "That code is not right." in response.text
    assert client.get("/api/v1/institutions").status_code == 401


@pytest.mark.parametrize("code", ["²²²²²²", "١٢٣٤٥٦", "１２３４５６"])
def test_a_two_factor_code_in_other_digits_is_just_wrong(client, actors, code):
    """Superscript, Arabic-Indic or full-width digits pass str.isdigit but are no code."""
    person = actors.person("a", Role.CLINICIAN)
    post_login(client, person.email, PASSWORD)
    form = client.get("/login/two-factor")
    response = client.post("/login/two-factor",
                           data={"code": code, "csrf_token": csrf_from(form.text)},
                           follow_redirects=False)
    assert response.status_code == 401
    assert "That code is not right." in response.text
    assert client.get("/api/v1/institutions").status_code == 401


def test_guessing_two_factor_codes_is_throttled_even_for_the_right_code(client, actors):
    person = actors.person("a", Role.CLINICIAN)
    post_login(client, person.email, PASSWORD)
    csrf = csrf_from(client.get("/login/two-factor").text)
    right = totp_code(person.totp_secret)
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    for _ in range(5):
        assert client.post("/login/two-factor", data={"code": wrong, "csrf_token": csrf},
                           follow_redirects=False).status_code == 401
    response = client.post("/login/two-factor", data={"code": right, "csrf_token": csrf},
                           follow_redirects=False)
    assert response.status_code == 429
    assert client.get("/api/v1/institutions").status_code == 401


def test_a_patient_does_not_need_a_second_factor(client, actors):
    sign_in(client, actors.person("a", Role.PATIENT))
    assert client.get("/api/v1/institutions").status_code == 200


def _new_clinician_without_authenticator(db, actors) -> User:
    user = create_user(db, email="new.doctor@test.example", password=PASSWORD,
                       display_name="New Doctor", language="en",
                       memberships=[(actors.a.id, Role.CLINICIAN)])
    db.commit()
    return user


def _secret_on_setup_page(page: str) -> str:
    match = re.search(r'<code id="totp-secret"[^>]*>([A-Z2-7]+)</code>', page)
    assert match, "the setup page shows no key to type in"
    return match.group(1)


def test_a_new_clinician_enrols_an_authenticator_and_a_replayed_code_is_refused(client, db,
                                                                                  actors):
    user = _new_clinician_without_authenticator(db, actors)
    response = post_login(client, user.email, PASSWORD)
    assert response.headers["location"] == "/account/two-factor/setup?next=/"
    assert problem(client.get("/api/v1/institutions"))["code"] == "TWO_FACTOR_REQUIRED"
    setup = client.get("/account/two-factor/setup")
    assert setup.status_code == 200
    secret = _secret_on_setup_page(setup.text)
    assert "<svg" in setup.text  # the QR code to scan

    wrong = client.post("/account/two-factor/setup",
                        data={"code": "000000" if totp_code(secret) != "000000" else "111111",
                              "csrf_token": csrf_from(setup.text)}, follow_redirects=False)
    assert wrong.status_code == 422
    with fresh(client.app.state.engine) as session:
        assert session.get(User, user.id).totp_enabled is False

    code = totp_code(secret)
    enrolled = client.post("/account/two-factor/setup",
                           data={"code": code, "csrf_token": csrf_from(setup.text)},
                           follow_redirects=False)
    assert enrolled.status_code == 303
    assert client.get("/api/v1/institutions").status_code == 200
    with fresh(client.app.state.engine) as session:
        stored = session.get(User, user.id)
        assert (stored.totp_enabled, stored.totp_secret) == (True, secret)

    # Next sign-in: the code just used cannot be used again, the following one can.
    client.cookies.clear()
    assert post_login(client, user.email, PASSWORD).headers["location"] == \
        "/login/two-factor?next=/"
    csrf = csrf_from(client.get("/login/two-factor").text)
    replay = client.post("/login/two-factor", data={"code": code, "csrf_token": csrf},
                         follow_redirects=False)
    assert replay.status_code == 401
    following = client.post("/login/two-factor",
                            data={"code": totp_code(secret, steps_ahead=1), "csrf_token": csrf},
                            follow_redirects=False)
    assert following.status_code == 303


def test_a_clinician_without_an_authenticator_is_sent_to_set_one_up(client, db, actors):
    user = _new_clinician_without_authenticator(db, actors)
    post_login(client, user.email, PASSWORD)
    response = client.get("/patients", follow_redirects=True)
    assert response.status_code == 200
    assert 'id="totp-secret"' in response.text


def test_a_working_second_factor_cannot_be_replaced_with_only_the_password(client, actors):
    person = actors.person("a", Role.CLINICIAN)
    post_login(client, person.email, PASSWORD)
    page = client.get("/account/two-factor/setup", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login/two-factor")
    assert person.totp_secret not in client.get("/account/two-factor/setup").text


def test_the_two_factor_pages_send_strangers_to_sign_in(client):
    for path in ("/login/two-factor", "/account/two-factor/setup"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")


# ------------------------------------------------------------------------------------- sign-out


def test_signing_out_ends_the_session_on_the_server_not_only_in_the_browser(client, actors):
    csrf = sign_in(client, actors.person("a", Role.COORDINATOR))
    stolen = client.cookies.get(SESSION_COOKIE)
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert set_cookie_headers(response, SESSION_COOKIE)  # the browser is told to forget it
    assert count_rows(client.app.state.engine, WebSession)["web_sessions"] == 0
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, stolen)
    assert problem(client.get("/api/v1/institutions"))["code"] == "UNAUTHENTICATED"


def test_signing_out_needs_the_csrf_token_so_another_site_cannot_sign_you_out(client, actors):
    sign_in(client, actors.person("a", Role.COORDINATOR))
    response = client.post("/logout", data={"csrf_token": "forged"}, follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/api/v1/institutions").status_code == 200


# ----------------------------------------------------------------------------- where to go next


OFFSITE_TARGETS = [
    "https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example",
    "/\t/evil.example", "javascript:alert(1)", "http:/evil.example", "/\\/evil.example",
]


@pytest.mark.parametrize("target", OFFSITE_TARGETS)
def test_sign_in_never_redirects_to_another_site(client, actors, target):
    page = client.get("/login", params={"next": target})
    assert next_field(page.text, form_action="/login") == "/"
    response = post_login(client, actors.person("a", Role.PATIENT).email, PASSWORD,
                          next_path=target)
    assert response.headers["location"] == "/"


@pytest.mark.parametrize("target", OFFSITE_TARGETS)
def test_the_language_switch_never_redirects_to_another_site(client, target):
    response = client.post("/language", data={"language": "en", "next": target},
                           follow_redirects=False)
    assert response.headers["location"] == "/"


def test_sign_in_returns_to_the_page_asked_for_with_its_query(client, actors):
    response = post_login(client, actors.person("a", Role.PATIENT).email, PASSWORD,
                          next_path="/patients?q=Hong")
    assert response.headers["location"] == "/patients?q=Hong"


def test_two_factor_keeps_the_whole_page_asked_for(client, actors):
    person = actors.person("a", Role.CLINICIAN)
    response = post_login(client, person.email, PASSWORD, next_path="/audit?actor=x&page=2")
    form = client.get(response.headers["location"])
    passed = client.post("/login/two-factor",
                         data={"code": totp_code(person.totp_secret),
                               "next": next_field(form.text, form_action="/login/two-factor"),
                               "csrf_token": csrf_from(form.text)}, follow_redirects=False)
    assert passed.headers["location"] == "/audit?actor=x&page=2"


def next_field(page: str, form_action: str) -> str:
    """The hidden `next` field of the form posting to `form_action`."""
    form = re.search(rf'<form[^>]*action="{re.escape(form_action)}".*?</form>', page, re.S)
    assert form, f"no form posting to {form_action}"
    match = re.search(r'name="next" value="([^"]*)"', form.group(0))
    assert match, "the form has no next field"
    return html.unescape(match.group(1))


# ------------------------------------------------------------------------------------- language


def test_a_signed_in_users_language_choice_is_kept_on_their_account(client, actors):
    person = actors.person("a", Role.PATIENT)
    csrf = sign_in(client, person)
    assert html_lang(client.get("/").text) == "en"
    response = client.post("/language", data={"language": "ko", "csrf_token": csrf,
                                              "next": "/"}, follow_redirects=False)
    assert response.status_code == 303
    with fresh(client.app.state.engine) as session:
        assert session.get(User, person.user.id).language == "ko"
    client.cookies.delete("jaejin_lang")  # the account, not the cookie, carries the choice
    assert html_lang(client.get("/").text) == "ko"


def test_a_guests_language_choice_is_kept_in_a_cookie(client):
    response = client.post("/language", data={"language": "ja", "next": "/login"},
                           follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert client.cookies.get("jaejin_lang") == "ja"
    assert html_lang(client.get("/login").text) == "ja"


def test_regional_language_tags_are_understood(client):
    client.post("/language", data={"language": "zh-TW"}, follow_redirects=False)
    assert client.cookies.get("jaejin_lang") == "zh-Hant"


def test_an_unknown_language_is_refused_with_422(client):
    response = client.post("/language", data={"language": "xx"}, follow_redirects=False)
    assert response.status_code == 422
    body = problem(response)
    assert body["code"] == "UNKNOWN_LANGUAGE"
    assert "xx" in body["detail"]
    assert not client.cookies.get("jaejin_lang")


def test_a_signed_in_user_sees_pages_in_their_own_language_over_the_browsers(client, db,
                                                                             actors):
    person = actors.person("a", Role.PATIENT)
    db.get(User, person.user.id).language = "ja"
    db.commit()
    sign_in(client, person)
    assert html_lang(client.get("/", headers={"Accept-Language": "ko"}).text) == "ja"


def test_sessions_are_never_stored_in_a_usable_form(client, actors):
    sign_in(client, actors.person("a", Role.PATIENT))
    cookie = client.cookies.get(SESSION_COOKIE)
    with fresh(client.app.state.engine) as session:
        stored = session.execute(select(WebSession)).scalar_one()
    assert stored.token_hash == security.token_digest(cookie)
    assert cookie not in stored.token_hash


TRICKY_STARTS = st.sampled_from(["/", "//", "/\\", "\\", "/\t/", "http:", "https://", "/%2F",
                                 "\x00/", " /", "/\n/", "javascript:", "/.", "?", "#"])


@given(target=st.one_of(st.text(max_size=40), st.tuples(TRICKY_STARTS, st.text(max_size=30))
                        .map("".join)))
@settings(max_examples=300, deadline=None)
def test_whatever_target_is_asked_for_the_redirect_stays_on_jaejin(target):
    from jaejin.accounts.pages import _safe_next

    chosen = _safe_next(target)
    assert chosen.startswith("/") and not chosen.startswith("//")
    assert "\\" not in chosen
    assert not any(ord(character) < 0x20 or ord(character) == 0x7F for character in chosen)
    resolved = urlparse(urljoin("https://jaejin.example/login", chosen))
    assert (resolved.scheme, resolved.netloc) == ("https", "jaejin.example")


# ------------------------------------------------------------------------- long language tags


def test_a_cantonese_speaker_with_a_long_language_tag_reads_traditional_chinese(client, actors,
                                                                                db):
    """BCP 47 tags longer than 10 characters are stored whole (PostgreSQL enforces the column
    length), and a language without a catalogue of its own is answered in the nearest one."""
    user = create_user(db, email="cantonese@a.example", password=PASSWORD,
                       display_name="陳大文", language="yue-Hant-HK",
                       memberships=[(actors.a.id, Role.PATIENT)])
    patient = Patient(institution_id=actors.a.id, mrn="A-YUE", user_id=user.id,
                      family_name_native="陳", given_name_native="大文",
                      family_name_latin="Chan", given_name_latin="Tai-man",
                      birth_date=actors.patients["a"].birth_date, sex="male", nationality="HK",
                      residence_country="HK", current_country="HK", languages=["yue-Hant-HK"],
                      preferred_language="yue-Hant-HK", time_zone="Asia/Hong_Kong", flags=[])
    db.add(patient)
    db.commit()
    with fresh(db.get_bind()) as session:
        stored = session.get(User, user.id)
        assert stored is not None and stored.language == "yue-Hant-HK"
        assert session.get(Patient, patient.id).preferred_language == "yue-Hant-HK"
    sign_in(client, Person(user, Role.PATIENT, actors.a))
    forbidden = client.get("/audit")
    assert forbidden.status_code == 403
    assert html_lang(forbidden.text) == "zh-Hant"
    assert "您目前的角色無權執行此操作。" in forbidden.text
