"""A patient in New York books a follow-up with a clinic in Seoul, in headless Chromium: the
free times come in both zones, the booking is confirmed, and the calendar file is offered."""

from __future__ import annotations

from datetime import timedelta

import pytest
from icalendar import Calendar
from playwright.sync_api import expect

from jaejin.core.accounts import Role
from jaejin.scheduling.display import format_local_time
from tests.browser.conftest import ContextFactory
from tests.browser.helpers import sign_in, unlabelled_controls
from tests.scheduling.test_booking_fixtures import NEW_YORK, SchedulingWorld

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
pytest_plugins = ("tests.scheduling.test_booking_fixtures",)


def test_a_patient_in_new_york_books_a_follow_up_in_both_zones(
        new_context: ContextFactory, world: SchedulingWorld, screenshot) -> None:
    page = new_context(locale="en-US", timezone_id="America/New_York").new_page()
    sign_in(page, world.actors.person("a", Role.PATIENT))

    page.goto("/appointments")
    page.click("#book-link")
    # The page asks the browser for its zone; the week's free times then load by themselves.
    listing = page.locator("#slot-listing")
    expect(listing).to_have_attribute("data-zone", "America/New_York")
    assert unlabelled_controls(page) == []

    # Move on to the week holding the test day, if it is not this one.
    start = world.at("10:00")
    wanted = page.locator(f'a.slot[data-start="{start.isoformat()}"]')
    later = page.locator("#later-slots")
    for _ in range(3):
        if wanted.count():
            break
        this_week = later.get_attribute("href") or ""
        later.click()
        # Wait until the next week's listing has replaced this one, however long that takes.
        expect(later).not_to_have_attribute("href", this_week)
    expect(wanted).to_be_visible()
    local = format_local_time(start, NEW_YORK, "en", date_style="weekday")
    # 10:00 in Seoul is the evening before in New York: the label says both, with weekdays.
    assert start.astimezone(NEW_YORK).date() < start.date()
    expect(wanted).to_contain_text("Seoul")
    expect(wanted).to_contain_text(f"{local} New York")
    screenshot(page, "booking-slots-new-york")

    wanted.click()
    expect(page.locator("#booking-summary")).to_contain_text("New York")
    expect(page.locator("#summary-when")).to_contain_text("Seoul")
    screenshot(page, "booking-confirm-new-york")
    page.click("#confirm-booking")

    expect(page.locator("#appointment-title")).to_have_text("Your appointment is booked")
    expect(page.locator("#appointment-local")).to_contain_text("New York")
    calendar_link = page.locator("#add-to-calendar")
    expect(calendar_link).to_be_visible()
    screenshot(page, "booking-done-new-york")
    answer = page.request.get(calendar_link.get_attribute("href") or "")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/calendar")
    event = Calendar.from_ical(answer.body()).walk("VEVENT")[0]
    assert event.decoded("DTSTART") == start

    # The booked time is no longer offered; the next one is.
    page.goto(f"/appointments/book/slots?practitioner_id={world.practitioner_a}"
              f"&visit=follow_up:video&tz=America/New_York"
              f"&start={(world.day - timedelta(days=1)).isoformat()}")
    expect(page.locator(f'a.slot[data-start="{start.isoformat()}"]')).to_have_count(0)
    later = world.at("10:15").isoformat()
    expect(page.locator(f'a.slot[data-start="{later}"]')).to_have_count(1)
