"""Patients join after an in-person visit: staff issue an invitation, the patient accepts it by
link or by code, in their language and time zone, and is signed in as a patient."""

from __future__ import annotations

import re
import threading
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jaejin.core.accounts import Membership, Role, User, WebSession
from jaejin.core.authn import SESSION_COOKIE
from jaejin.core.database import utcnow
from jaejin.directory.store import Invitation, Patient
from tests.core.helpers import audit_entries, count_rows, fresh, html_lang
from tests.support import bearer, client_token, csrf_from, make_patient, problem, sign_in

NEW_PASSWORD = "a-good-long-password"


@pytest.fixture
def newcomer(db, actors) -> Patient:
    """A Japanese patient of institution A, seen in person, without an account yet."""
    patient = make_patient(db, actors.a, "MRN-A-77", family_name_native="佐藤",
                           given_name_native="春香", family_name_latin="Sato",
                           given_name_latin="Haruka", birth_date=date(1992, 6, 3),
                           sex="female", nationality="JP", residence_country="JP",
                           residence_region=None, current_country="JP", languages=["ja", "en"],
                           preferred_language="ja", time_zone="Asia/Tokyo", nhi_covered=False)
    db.commit()
    return patient


def issue_by_api(client, actors, patient: Patient) -> dict:
    csrf = sign_in(client, actors.person("a", Role.COORDINATOR))
    response = client.post(f"/api/v1/patients/{patient.id}/invitations",
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201, response.text
    client.cookies.clear()
    return response.json()


def selected_time_zone(page: str) -> str:
    select_element = re.search(r'<select id="time_zone".*?</select>', page, re.S)
    assert select_element, "the invitation page has no time-zone choice"
    chosen = re.findall(r"<option[^>]*\bselected\b[^>]*>([^<]+)</option>",
                        select_element.group(0))
    assert len(chosen) == 1, chosen
    return chosen[0]


def token_of(invitation: dict) -> str:
    return invitation["link"].split("token=", 1)[1]


def accept(client, fields: dict, language: str = "en", time_zone: str = "Asia/Tokyo"):
    """Open the invitation page as the patient would (a browser asking for English), then
    submit it."""
    english = {"Accept-Language": "en"}
    page = client.get("/invitation", params={"token": fields["token"]} if "token" in fields
                      else {}, headers=english)
    data = {"email": "haruka.sato@example.jp", "password": NEW_PASSWORD, "language": language,
            "time_zone": time_zone, "csrf_token": csrf_from(page.text)} | fields
    return client.post("/invitation", data=data, headers=english, follow_redirects=False)


def nothing_was_created(engine, patient: Patient, users_before: int) -> None:
    assert count_rows(engine, User)["users"] == users_before
    with fresh(engine) as session:
        stored = session.get(Patient, patient.id)
        assert stored.user_id is None
        assert stored.preferred_language == "ja"
        assert all(invitation.accepted_at is None for invitation in session.execute(
            select(Invitation).where(Invitation.patient_id == patient.id)).scalars())
    assert not audit_entries(engine, action="accept")


# ------------------------------------------------------------------------------------- issuing


def test_a_coordinator_issues_an_invitation_through_the_api(client, actors, newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    assert invitation["link"].startswith("http://testserver/invitation?token=")
    assert re.fullmatch(r"[0-9]{8}", invitation["code"])
    lifetime = date.fromisoformat(invitation["expires_at"][:10]) - utcnow().date()
    assert lifetime in (timedelta(days=14), timedelta(days=13))
    with fresh(client.app.state.engine) as session:
        stored = session.get(Invitation, invitation["invitation_id"])
        # Only digests are stored: a database leak yields no usable link or code.
        assert token_of(invitation) not in stored.token_hash
        assert invitation["code"] not in stored.code_hash
        assert stored.language == "ja"
    created = audit_entries(client.app.state.engine, action="create", resource_type="invitation")
    assert [(e.patient_id, e.institution_id, e.purpose) for e in created] == [
        (newcomer.id, actors.a.id, "registration")]


def test_a_hospital_system_issues_an_invitation_with_its_token(client, actors, newcomer):
    token = client_token(client, actors.clients["a"])
    response = client.post(f"/api/v1/patients/{newcomer.id}/invitations", headers=bearer(token))
    assert response.status_code == 201


def test_a_patient_who_already_has_an_account_is_not_invited_again(client, actors):
    csrf = sign_in(client, actors.person("a", Role.COORDINATOR))
    response = client.post(f"/api/v1/patients/{actors.patients['a'].id}/invitations",
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 409
    assert problem(response)["code"] == "ALREADY_REGISTERED"
    page = client.post(f"/patients/{actors.patients['a'].id}/invitation",
                       data={"csrf_token": csrf}, headers={"Accept": "text/html"})
    assert page.status_code == 409
    assert count_rows(client.app.state.engine, Invitation)["invitations"] == 0


def test_another_institution_cannot_invite_our_patient(client, actors, newcomer):
    csrf = sign_in(client, actors.person("b", Role.COORDINATOR))
    response = client.post(f"/api/v1/patients/{newcomer.id}/invitations",
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 404
    assert count_rows(client.app.state.engine, Invitation)["invitations"] == 0


def test_staff_issue_an_invitation_from_the_patient_page(client, actors, newcomer):
    sign_in(client, actors.person("a", Role.CLINICIAN))
    record = client.get(f"/patients/{newcomer.id}")
    assert record.status_code == 200
    form = re.search(rf'<form method="post" action="/patients/{newcomer.id}/invitation">.*?'
                     r'</form>', record.text, re.S)
    assert form, "the patient page offers no invitation form"
    issued = client.post(f"/patients/{newcomer.id}/invitation",
                         data={"csrf_token": csrf_from(form.group(0))})
    assert issued.status_code == 200
    link = re.search(r'<code id="invitation-link">([^<]+)</code>', issued.text).group(1)
    code = re.search(r'<code id="invitation-code">([0-9]{8})</code>', issued.text).group(1)
    assert "INST-A" in issued.text and "MRN-A-77" in issued.text
    client.cookies.clear()
    accepted = accept(client, {"institution_code": "INST-A", "mrn": "MRN-A-77",
                               "birth_date": "1992-06-03", "code": code})
    assert accepted.status_code == 303, accepted.text
    assert link.startswith("http://testserver/invitation?token=")


def test_the_page_refuses_an_invitation_language_jaejin_does_not_speak(client, actors, newcomer):
    csrf = sign_in(client, actors.person("a", Role.COORDINATOR))
    response = client.post(f"/patients/{newcomer.id}/invitation",
                           data={"csrf_token": csrf, "language": "xx"})
    assert response.status_code == 422
    assert count_rows(client.app.state.engine, Invitation)["invitations"] == 0


# ------------------------------------------------------------------------------------ accepting


def test_the_patient_accepts_by_link_in_their_language_and_zone_and_is_signed_in(
        client, actors, newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    page = client.get("/invitation", params={"token": token_of(invitation)})
    assert page.status_code == 200
    assert html_lang(page.text) == "ja"
    assert selected_time_zone(page.text) == "Asia/Tokyo"

    response = accept(client, {"token": token_of(invitation)}, language="ja")
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert client.cookies.get(SESSION_COOKIE)
    home = client.get("/")
    assert home.status_code == 200
    assert html_lang(home.text) == "ja"
    institutions = client.get("/api/v1/institutions")
    assert [i["code"] for i in institutions.json()] == ["INST-A"]

    with fresh(client.app.state.engine) as session:
        patient = session.get(Patient, newcomer.id)
        user = session.get(User, patient.user_id)
        assert (user.email, user.language, user.time_zone) == (
            "haruka.sato@example.jp", "ja", "Asia/Tokyo")
        assert [(m.institution_id, m.role) for m in session.execute(
            select(Membership).where(Membership.user_id == user.id)).scalars()] == [
            (actors.a.id, "patient")]
        assert session.get(Invitation, invitation["invitation_id"]).accepted_at is not None
        web_session = session.execute(select(WebSession)
                                      .where(WebSession.user_id == user.id)).scalar_one()
        assert web_session.two_factor_passed
    accepted = audit_entries(client.app.state.engine, action="accept")
    assert [(e.patient_id, e.institution_id) for e in accepted] == [(newcomer.id, actors.a.id)]


def test_the_patient_may_choose_another_language_and_zone_than_on_file(client, actors, newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    response = accept(client, {"token": token_of(invitation)}, language="en",
                      time_zone="America/New_York")
    assert response.status_code == 303
    with fresh(client.app.state.engine) as session:
        patient = session.get(Patient, newcomer.id)
        assert (patient.preferred_language, patient.time_zone) == ("en", "America/New_York")


def test_the_patient_accepts_with_institution_code_mrn_birth_date_and_code(client, actors,
                                                                           newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    page = client.get("/invitation")
    assert 'name="institution_code"' in page.text
    response = accept(client, {"institution_code": "INST-A", "mrn": "MRN-A-77",
                               "birth_date": "1992-06-03", "code": invitation["code"]})
    assert response.status_code == 303
    assert client.get("/api/v1/institutions").status_code == 200


def test_wrong_codes_are_counted_and_the_invitation_locks_after_five(client, actors, newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    users_before = count_rows(client.app.state.engine, User)["users"]
    wrong = f"{(int(invitation['code']) + 1) % 100_000_000:08d}"
    for attempt in range(1, 6):
        response = accept(client, {"institution_code": "INST-A", "mrn": "MRN-A-77",
                                   "birth_date": "1992-06-03", "code": wrong})
        assert response.status_code == 404
        assert "We could not find a valid invitation with these details." in response.text
        with fresh(client.app.state.engine) as session:
            assert session.get(Invitation, invitation["invitation_id"]).failed_attempts == \
                attempt
    locked = accept(client, {"institution_code": "INST-A", "mrn": "MRN-A-77",
                             "birth_date": "1992-06-03", "code": invitation["code"]})
    assert locked.status_code == 404
    nothing_was_created(client.app.state.engine, newcomer, users_before)


@pytest.mark.parametrize("details", [
    {"institution_code": "INST-B"},
    {"mrn": "MRN-A-1"},
    {"birth_date": "1992-06-04"},
])
def test_the_code_only_works_with_the_patients_own_institution_mrn_and_birth_date(
        client, actors, newcomer, details):
    invitation = issue_by_api(client, actors, newcomer)
    fields = {"institution_code": "INST-A", "mrn": "MRN-A-77", "birth_date": "1992-06-03",
              "code": invitation["code"]} | details
    users_before = count_rows(client.app.state.engine, User)["users"]
    assert accept(client, fields).status_code == 404
    nothing_was_created(client.app.state.engine, newcomer, users_before)


@pytest.mark.parametrize("birth_date", ["2026-02-30", "03/06/1992", ""])
def test_an_impossible_birth_date_is_refused(client, actors, newcomer, birth_date):
    invitation = issue_by_api(client, actors, newcomer)
    response = accept(client, {"institution_code": "INST-A", "mrn": "MRN-A-77",
                               "birth_date": birth_date, "code": invitation["code"]})
    assert response.status_code == 422
    assert "Enter your birth date as YYYY-MM-DD." in response.text


def test_an_expired_link_shows_a_gone_page_and_cannot_be_used(client, db, actors, newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    db.get(Invitation, invitation["invitation_id"]).expires_at = utcnow() - timedelta(minutes=1)
    db.commit()
    users_before = count_rows(client.app.state.engine, User)["users"]
    page = client.get("/invitation", params={"token": token_of(invitation)},
                      headers={"Accept-Language": "en"})
    assert page.status_code == 410
    assert "This invitation link has expired or was already used." in page.text
    assert "Sato" not in page.text and "MRN-A-77" not in page.text
    assert accept(client, {"token": token_of(invitation)}).status_code == 404
    assert accept(client, {"institution_code": "INST-A", "mrn": "MRN-A-77",
                           "birth_date": "1992-06-03",
                           "code": invitation["code"]}).status_code == 404
    nothing_was_created(client.app.state.engine, newcomer, users_before)


def test_a_used_link_shows_a_gone_page_and_cannot_be_used_again(client, actors, newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    assert accept(client, {"token": token_of(invitation)}).status_code == 303
    client.cookies.clear()
    assert client.get("/invitation", params={"token": token_of(invitation)}).status_code == 410
    again = accept(client, {"token": token_of(invitation)})
    assert again.status_code == 404
    assert count_rows(client.app.state.engine, User)["users"] == \
        len(actors.people) + 1


def test_an_unknown_link_shows_a_gone_page(client):
    assert client.get("/invitation", params={"token": "not-a-token"}).status_code == 410


def test_a_short_password_is_refused_and_nothing_is_created(client, actors, newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    users_before = count_rows(client.app.state.engine, User)["users"]
    response = accept(client, {"token": token_of(invitation), "password": "short"})
    assert response.status_code == 422
    assert "Use at least 10 characters." in response.text
    assert not client.cookies.get(SESSION_COOKIE)
    nothing_was_created(client.app.state.engine, newcomer, users_before)
    # The invitation is still good for a proper password.
    assert accept(client, {"token": token_of(invitation)}).status_code == 303


def test_an_e_mail_already_taken_is_refused_and_nothing_is_half_written(client, actors,
                                                                      newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    users_before = count_rows(client.app.state.engine, User)["users"]
    taken = actors.person("a", Role.PATIENT).email.upper()
    response = accept(client, {"token": token_of(invitation), "email": taken},
                      time_zone="Europe/Paris")
    assert response.status_code == 409
    assert "An account with this e-mail already exists." in response.text
    nothing_was_created(client.app.state.engine, newcomer, users_before)
    with fresh(client.app.state.engine) as session:
        assert session.get(Patient, newcomer.id).time_zone == "Asia/Tokyo"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("language", "xx", "Choose one of the listed languages."),
    ("time_zone", "Mars/Olympus_Mons", "Choose a time zone from the list."),
])
def test_an_unknown_language_or_time_zone_is_refused(client, actors, newcomer, field, value,
                                                     message):
    invitation = issue_by_api(client, actors, newcomer)
    users_before = count_rows(client.app.state.engine, User)["users"]
    response = accept(client, {"token": token_of(invitation), field: value})
    assert response.status_code == 422
    assert message in response.text
    nothing_was_created(client.app.state.engine, newcomer, users_before)


def test_accepting_needs_the_forms_csrf_cookie(client, actors, newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    page = client.get("/invitation", params={"token": token_of(invitation)})
    client.cookies.clear()
    response = client.post("/invitation", data={
        "token": token_of(invitation), "email": "x@example.jp", "password": NEW_PASSWORD,
        "language": "ja", "time_zone": "Asia/Tokyo", "csrf_token": csrf_from(page.text)})
    assert response.status_code == 403
    assert count_rows(client.app.state.engine, User)["users"] == len(actors.people)


def test_two_people_racing_to_accept_one_invitation_make_one_account(app, client, actors,
                                                                      newcomer):
    invitation = issue_by_api(client, actors, newcomer)
    users_before = count_rows(client.app.state.engine, User)["users"]
    browsers = [TestClient(app) for _ in range(4)]
    forms = []
    for number, browser in enumerate(browsers):
        page = browser.get("/invitation", params={"token": token_of(invitation)})
        forms.append({"token": token_of(invitation), "email": f"racer{number}@example.jp",
                      "password": NEW_PASSWORD, "language": "ja", "time_zone": "Asia/Tokyo",
                      "csrf_token": csrf_from(page.text)})
    start = threading.Barrier(len(browsers))
    statuses: list[int] = []

    def accept_now(browser: TestClient, form: dict) -> None:
        start.wait(timeout=30)
        statuses.append(browser.post("/invitation", data=form,
                                     follow_redirects=False).status_code)

    threads = [threading.Thread(target=accept_now, args=pair)
               for pair in zip(browsers, forms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(statuses) == len(browsers), "a request failed without answering"
    assert statuses.count(303) == 1, statuses
    assert all(status in (303, 404, 409, 410) for status in statuses), statuses
    assert count_rows(client.app.state.engine, User)["users"] == users_before + 1
    with fresh(client.app.state.engine) as session:
        patient = session.get(Patient, newcomer.id)
        user = session.get(User, patient.user_id)
        assert user.email.startswith("racer")


def test_two_patients_racing_for_one_e_mail_address_get_one_account(app, db, client, actors,
                                                                    newcomer):
    second = make_patient(db, actors.a, "MRN-A-78")
    db.commit()
    links = [token_of(issue_by_api(client, actors, patient)) for patient in (newcomer, second)]
    users_before = count_rows(client.app.state.engine, User)["users"]
    browsers = [TestClient(app) for _ in links]
    forms = []
    for browser, link in zip(browsers, links, strict=True):
        page = browser.get("/invitation", params={"token": link})
        forms.append({"token": link, "email": "shared@example.jp", "password": NEW_PASSWORD,
                      "language": "ja", "time_zone": "Asia/Tokyo",
                      "csrf_token": csrf_from(page.text)})
    start = threading.Barrier(len(browsers))
    statuses: list[int] = []

    def accept_now(browser: TestClient, form: dict) -> None:
        start.wait(timeout=30)
        statuses.append(browser.post("/invitation", data=form,
                                     follow_redirects=False).status_code)

    threads = [threading.Thread(target=accept_now, args=pair)
               for pair in zip(browsers, forms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [303, 409], statuses
    assert count_rows(client.app.state.engine, User)["users"] == users_before + 1
