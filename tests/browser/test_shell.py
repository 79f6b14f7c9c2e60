"""The page shell every capability shares: language switch, right-to-left, keyboard, phones."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from jaejin.core.accounts import Role
from tests.browser.conftest import DESKTOP, PHONE, ContextFactory
from tests.browser.helpers import low_contrast_text, sign_in, unlabelled_controls, wait_for_path
from tests.support import Actors

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def _switch_language(page: Page, code: str) -> None:
    path = page.evaluate("location.pathname")
    page.select_option("#language-select", code)
    page.click(".language-switch button[type=submit]")
    wait_for_path(page, path)


def test_switching_to_korean_then_arabic_relabels_the_page_and_turns_it_right_to_left(
        page: Page, actors: Actors, screenshot) -> None:
    sign_in(page, actors.person("a", Role.COORDINATOR))
    expect(page.locator("#sign-out")).to_have_text("Sign out")

    _switch_language(page, "ko")
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.locator("#sign-out")).to_have_text("로그아웃")
    expect(page.locator(".skip-link")).to_have_text("본문 바로가기")
    expect(page.locator(".cards .card h2", has_text="환자")).to_have_count(1)
    expect(page.locator(".site-nav a[aria-current=page]")).to_have_text("홈")
    screenshot(page, "home-coordinator-ko")
    page.click(".cards a[href='/patients']")
    wait_for_path(page, "/patients")
    expect(page.locator("caption")).to_have_text("환자 1명")
    page.click(f"a[href='/patients/{actors.patients['a'].id}']")
    expect(page.locator("table")).to_contain_text("대면")
    assert low_contrast_text(page) == []
    screenshot(page, "patient-coordinator-ko")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "patient-coordinator-ko-phone")
    page.set_viewport_size(DESKTOP)
    page.goto("/")

    _switch_language(page, "ar")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.locator("html")).to_have_attribute("lang", "ar")
    brand = page.locator(".brand").bounding_box()
    tools = page.locator(".header-tools").bounding_box()
    assert brand and tools and brand["x"] > tools["x"], "right-to-left puts the brand on the right"
    assert low_contrast_text(page) == []
    screenshot(page, "home-coordinator-ar")

    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "home-coordinator-ar-phone")


def test_a_visitor_switches_the_login_page_to_korean_before_signing_in(page: Page) -> None:
    page.goto("/login")
    _switch_language(page, "ko")
    expect(page.locator("main h1")).to_have_text("로그인")
    expect(page.locator("label[for=password]")).to_have_text("비밀번호")


def test_the_skip_link_comes_first_and_moves_focus_to_the_main_content(page: Page) -> None:
    page.goto("/login")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.className")
    assert focused == "skip-link"
    box = page.locator(".skip-link").bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0, "the focused skip link is on screen"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "email"


def test_every_control_on_the_login_page_has_a_label_and_enough_contrast(page: Page,
                                                                         screenshot) -> None:
    page.goto("/login")
    assert unlabelled_controls(page) == []
    assert low_contrast_text(page) == []
    landmarks = page.evaluate(
        "['header', 'nav', 'main', 'footer'].filter((tag) => document.querySelector(tag))")
    assert {"header", "main", "footer"} <= set(landmarks)


def test_the_login_page_fits_a_phone_in_korean(new_context: ContextFactory, screenshot) -> None:
    phone = new_context(locale="ko-KR", viewport=PHONE).new_page()
    phone.goto("/")
    expect(phone.locator("main h1")).to_contain_text("재진")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(phone, "landing-ko-phone")
    phone.goto("/login")
    expect(phone.locator("html")).to_have_attribute("lang", "ko")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    field = phone.locator("#email").bounding_box()
    assert field and field["x"] + field["width"] <= PHONE["width"]
    screenshot(phone, "login-ko-phone")
