"""A coordinator invites a patient; the patient, abroad, creates the account from the link."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role, User
from tests.browser.conftest import ContextFactory
from tests.browser.helpers import sign_in, unlabelled_controls, wait_for_path
from tests.support import Actors, make_patient

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def _issue_invitation(page: Page, patient_id: int, screenshot) -> str:
    page.goto(f"/patients/{patient_id}")
    expect(page.locator("dl.details")).to_contain_text("Type 1 diabetes")
    screenshot(page, "patient-coordinator-en")
    page.get_by_role("button", name="Issue an invitation").click()
    wait_for_path(page, f"/patients/{patient_id}/invitation")
    screenshot(page, "invitation-issued-en")
    link = page.locator("#invitation-link").inner_text().strip()
    tokens = parse_qs(urlparse(link).query)["token"]
    return tokens[0]


def test_a_patient_abroad_accepts_the_invitation_in_korean_and_is_signed_in(
        new_context: ContextFactory, actors: Actors, db: Session, screenshot) -> None:
    patient = make_patient(db, actors.a, "MRN-A-77", family_name_native="佐藤",
                           given_name_native="花子", family_name_latin="Sato",
                           given_name_latin="Hanako", nationality="JP", residence_country="JP",
                           residence_region=None, current_country="US",
                           languages=["ja", "en", "ko"], preferred_language="ja",
                           time_zone="Asia/Tokyo", nhi_covered=False,
                           email="hanako@test.example", flags=["type1_diabetes"])
    db.commit()

    coordinator = new_context().new_page()
    sign_in(coordinator, actors.person("a", Role.COORDINATOR))
    token = _issue_invitation(coordinator, patient.id, screenshot)
    coordinator.select_option("#language-select", "ko")
    coordinator.click(".language-switch button[type=submit]")
    wait_for_path(coordinator, f"/patients/{patient.id}")
    expect(coordinator.locator("#details-title")).to_have_text("기본 정보")

    visitor = new_context(locale="ja-JP", timezone_id="America/New_York").new_page()
    visitor.goto(f"/invitation?token={token}")
    expect(visitor.locator("html")).to_have_attribute("lang", "ja")
    expect(visitor.locator("#email")).to_have_value("hanako@test.example")
    assert unlabelled_controls(visitor) == []
    screenshot(visitor, "invitation-ja")

    expect(visitor.locator("#time_zone")).to_have_value("Asia/Tokyo")
    expect(visitor.locator("#zone-suggestion")).to_contain_text("America/New_York")
    visitor.click("#use-device-zone")
    expect(visitor.locator("#time_zone")).to_have_value("America/New_York")
    expect(visitor.locator("#zone-suggestion")).to_be_hidden()
    visitor.select_option("#language", "ko")
    visitor.fill("#password", "a-long-enough-password")
    visitor.click("main button[type=submit]")
    wait_for_path(visitor, "/")
    expect(visitor.locator("html")).to_have_attribute("lang", "ko")
    expect(visitor.locator("h1")).to_contain_text("환영합니다")
    expect(visitor.locator("main")).not_to_contain_text("역할이 지정되지 않았습니다")
    expect(visitor.locator("#sign-out")).to_have_text("로그아웃")
    screenshot(visitor, "home-patient-ko")

    db.expire_all()
    account = db.execute(select(User).where(User.email == "hanako@test.example")).scalar_one()
    assert (account.language, account.time_zone) == ("ko", "America/New_York")


def test_an_unknown_invitation_link_explains_what_to_do(page: Page) -> None:
    page.goto("/invitation?token=not-a-real-token")
    expect(page.locator("#invitation-error")).to_contain_text("expired or was already used")


def test_the_code_form_labels_every_control_and_takes_the_device_time_zone(
        new_context: ContextFactory) -> None:
    page = new_context(timezone_id="America/Sao_Paulo").new_page()
    page.goto("/invitation")
    expect(page.locator("#institution_code")).to_be_visible()
    assert unlabelled_controls(page) == []
    expect(page.locator("#time_zone")).to_have_value("America/Sao_Paulo")
    expect(page.locator("#zone-suggestion")).to_be_hidden()
