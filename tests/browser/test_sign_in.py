"""Signing in as a person does it: typing into the real pages of the running app in Chromium."""

from __future__ import annotations

import time

import pyotp
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session

from jaejin.accounts.service import create_user
from jaejin.core.accounts import Role
from tests.browser.helpers import low_contrast_text, wait_for_path
from tests.support import PASSWORD, Actors, make_institution

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def _a_wrong_code(secret: str) -> str:
    """A six-digit code that no time step near now produces, so it is wrong on any clock."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    nearby = {totp.at(now, counter_offset=offset) for offset in range(-3, 4)}
    candidate = int(totp.now())
    while f"{candidate:06d}" in nearby:
        candidate = (candidate + 1) % 1_000_000
    return f"{candidate:06d}"


def test_a_coordinator_who_mistypes_sees_the_error_then_lands_on_home_with_their_cards(
        page: Page, actors: Actors, screenshot) -> None:
    person = actors.person("a", Role.COORDINATOR)
    page.goto("/login")
    screenshot(page, "login-en")
    page.fill("#email", person.email)
    page.fill("#password", "not-the-password")
    page.click("main button[type=submit]")
    error = page.locator("#login-error")
    expect(error).to_have_text("The e-mail or password is not right.")
    expect(error).to_have_attribute("role", "alert")
    expect(page.locator("#email")).to_have_value(person.email)
    expect(page.locator("#email")).to_have_attribute("aria-invalid", "true")
    wait_for_path(page, "/login")
    screenshot(page, "login-error-en")

    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    wait_for_path(page, "/")
    expect(page.locator("h1")).to_have_text(f"Welcome, {person.user.display_name}")
    expect(page.locator(".cards .card h2", has_text="Patients")).to_have_count(1)
    expect(page.locator(".cards .card h2", has_text="Home")).to_have_count(0)
    expect(page.locator(".site-nav a[href='/']")).to_have_attribute("aria-current", "page")
    assert low_contrast_text(page) == []
    screenshot(page, "home-coordinator-en")
    page.click(".cards a[href='/patients']")
    wait_for_path(page, "/patients")
    expect(page.locator(".site-nav a[href='/patients']")).to_have_attribute("aria-current", "page")
    expect(page.locator(".site-nav a[href='/']")).not_to_have_attribute("aria-current", "page")

    response = page.goto("/patients/999999")
    assert response is not None and response.status == 404
    expect(page.locator("main [role=alert]")).to_contain_text("No such patient")
    screenshot(page, "error-not-found-en")


def test_a_clinician_enters_the_authenticator_code_and_reaches_home(page: Page,
                                                                    actors: Actors) -> None:
    person = actors.person("a", Role.CLINICIAN)
    assert person.totp_secret
    page.goto("/login")
    page.fill("#email", person.email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    wait_for_path(page, "/login/two-factor")
    page.fill("#code", _a_wrong_code(person.totp_secret))
    page.click("main button[type=submit]")
    expect(page.locator("#code-error")).to_have_text(
        "That code is not right. Use the newest code.")
    page.fill("#code", pyotp.TOTP(person.totp_secret).now())
    page.click("main button[type=submit]")
    wait_for_path(page, "/")
    expect(page.locator("h1")).to_have_text(f"Welcome, {person.user.display_name}")


def test_a_clinician_without_an_authenticator_is_taken_through_setup(
        page: Page, db: Session, screenshot) -> None:
    clinic = make_institution(db, "INST-NEW")
    newcomer = create_user(db, email="new.clinician@test.example", password=PASSWORD,
                           display_name="New Clinician", language="en",
                           memberships=[(clinic.id, Role.CLINICIAN)])
    db.commit()
    page.goto("/login")
    page.fill("#email", newcomer.email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    wait_for_path(page, "/account/two-factor/setup")
    secret = page.locator("#totp-secret").inner_text().strip()
    assert len(secret) >= 16
    screenshot(page, "two-factor-setup-en")
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("main button[type=submit]")
    wait_for_path(page, "/")
    expect(page.locator("h1")).to_have_text("Welcome, New Clinician")
    db.refresh(newcomer)
    assert newcomer.totp_enabled
