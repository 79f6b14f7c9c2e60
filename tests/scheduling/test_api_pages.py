"""The scheduling pages: a patient books through the flow and gets the calendar file,
coordinators see and staff the week, practitioners and interpreters see their own schedule."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlparse

from jaejin.core.accounts import Role
from tests.scheduling.test_booking_fixtures import SchedulingWorld

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)


def _slot_links(html: str) -> list[str]:
    return [link.replace("&amp;", "&") for link in re.findall(r'class="button secondary slot"'
                                                              r'[^>]*href="([^"]+)"', html)]


def test_a_patient_books_through_the_pages_in_their_own_zone(world: SchedulingWorld,
                                                            browser_for):
    headers, session = browser_for(world.mongolian_person)
    form = session.get("/appointments/book")
    assert form.status_code == 200, form.text
    assert 'id="booking-form"' in form.text
    listing = session.get("/appointments/book/slots", params={
        "practitioner_id": world.practitioner_a, "visit": "follow_up:video",
        "tz": "America/New_York", "start": world.day.isoformat(), "lang": "en"},
        headers={"HX-Request": "true"})
    assert listing.status_code == 200, listing.text
    assert 'id="interpreter-notice"' in listing.text
    assert "New York" in listing.text and "Seoul" in listing.text
    links = _slot_links(listing.text)
    assert links
    start = parse_qs(urlparse(links[0]).query)["start"][0]
    confirm = session.get(links[0])
    assert confirm.status_code == 200, confirm.text
    assert 'id="confirm-booking"' in confirm.text
    booked = session.post("/appointments/book", data={
        "csrf_token": headers["X-CSRF-Token"], "practitioner_id": world.practitioner_a,
        "start": start, "visit": "follow_up:video", "interpreter": "",
        "tz": "America/New_York"}, follow_redirects=False)
    assert booked.status_code == 303, booked.text
    page = session.get(booked.headers["location"])
    assert 'id="add-to-calendar"' in page.text
    assert "Batbayar" in page.text
    appointment_id = int(booked.headers["location"].split("/")[2].split("?")[0])
    ics = session.get(f"/api/v1/appointments/{appointment_id}.ics")
    assert ics.status_code == 200 and b"BEGIN:VCALENDAR" in ics.content
    mine = session.get("/appointments")
    assert f"/appointments/{appointment_id}" in mine.text
    assert datetime.fromisoformat(start) > datetime.fromisoformat(start) - timedelta(1)


def test_a_taken_time_shows_the_next_free_ones(world: SchedulingWorld, browser_for, client,
                                               system_a):
    client.post("/api/v1/appointments", json=world.booking(
        "10:00", patient_id=world.mongolian.id, mode="in_person",
        visit_type="in_person_follow_up"), headers=system_a)
    headers, session = browser_for(world.actors.person("a", Role.PATIENT))
    refused = session.post("/appointments/book", data={
        "csrf_token": headers["X-CSRF-Token"], "practitioner_id": world.practitioner_a,
        "start": world.at("10:00").isoformat(), "visit": "follow_up:video",
        "interpreter": "", "tz": "Asia/Seoul"})
    assert refused.status_code == 409
    assert 'id="next-free"' in refused.text


def test_a_denied_video_visit_shows_the_rules_and_the_in_person_alternative(
        world: SchedulingWorld, browser_for):
    headers, session = browser_for(world.actors.person("b", Role.PATIENT))
    confirm = session.get("/appointments/book/confirm", params={
        "practitioner_id": world.practitioner_b, "start": world.at("10:00").isoformat(),
        "visit": "follow_up:video", "tz": "Asia/Seoul"})
    assert confirm.status_code == 200, confirm.text
    assert 'data-decision="denied"' in confirm.text
    assert 'id="book-in-person"' in confirm.text
    assert 'id="confirm-booking"' not in confirm.text
    refused = session.post("/appointments/book", data={
        "csrf_token": headers["X-CSRF-Token"], "practitioner_id": world.practitioner_b,
        "start": world.at("10:00").isoformat(), "visit": "follow_up:video", "tz": "Asia/Seoul"})
    assert refused.status_code == 422
    assert 'data-decision="denied"' in refused.text


def test_patients_move_and_cancel_from_the_appointment_page(world: SchedulingWorld,
                                                            browser_for):
    headers, session = browser_for(world.actors.person("a", Role.PATIENT))
    booked = session.post("/api/v1/appointments", json=world.booking("10:00"),
                          headers=headers).json()
    page = session.get(f"/appointments/{booked['id']}/reschedule",
                       params={"start": world.day.isoformat()})
    assert page.status_code == 200, page.text
    moved = session.post(f"/appointments/{booked['id']}/reschedule", data={
        "csrf_token": headers["X-CSRF-Token"], "start": world.at("15:00").isoformat()},
        follow_redirects=False)
    assert moved.status_code == 303, moved.text
    assert session.get(f"/api/v1/appointments/{booked['id']}").json()["sequence"] == 1
    cancelled = session.post(f"/appointments/{booked['id']}/cancel", data={
        "csrf_token": headers["X-CSRF-Token"], "reason": "travel"}, follow_redirects=False)
    assert cancelled.status_code == 303
    assert session.get(f"/api/v1/appointments/{booked['id']}").json()["status"] == "cancelled"


def test_coordinators_see_the_week_and_assign_interpreters(world: SchedulingWorld, client,
                                                           system_a, browser_for):
    booked = client.post("/api/v1/appointments", json=world.booking(
        "10:00", mode="in_person", visit_type="in_person_follow_up"), headers=system_a).json()
    headers, session = browser_for(world.actors.person("a", Role.COORDINATOR))
    calendar = session.get("/scheduling/calendar", params={"week": world.day.isoformat()})
    assert calendar.status_code == 200, calendar.text
    assert f'data-appointment="{booked["id"]}"' in calendar.text
    assert f'data-interpreter="{world.interpreter.id}"' in calendar.text
    assigned = session.post(f"/scheduling/appointments/{booked['id']}/interpreter", data={
        "csrf_token": headers["X-CSRF-Token"], "interpreter_id": str(world.interpreter.id),
        "week": world.day.isoformat()}, follow_redirects=False)
    assert assigned.status_code == 303, assigned.text
    again = session.get("/scheduling/calendar", params={"week": world.day.isoformat()})
    row = again.text.split(f'data-interpreter="{world.interpreter.id}"')[1]
    assert f'data-appointment="{booked["id"]}"' in row.split("</tr>")[0]


def test_an_interpreter_id_that_is_no_record_id_is_not_found(world: SchedulingWorld, client,
                                                              system_a, browser_for):
    booked = client.post("/api/v1/appointments", json=world.booking(
        "10:00", mode="in_person", visit_type="in_person_follow_up"), headers=system_a).json()
    headers, session = browser_for(world.actors.person("a", Role.COORDINATOR))
    # "²" passes str.isdigit() and then failed int() with a 500; 20 digits overflow the id.
    for odd in ("\u00b2", "\u0661\u0662", "9" * 20, "x1", "-3"):
        refused = session.post(f"/scheduling/appointments/{booked['id']}/interpreter", data={
            "csrf_token": headers["X-CSRF-Token"], "interpreter_id": odd},
            follow_redirects=False)
        assert refused.status_code == 404, (odd, refused.text)
    stored = client.get(f"/api/v1/appointments/{booked['id']}", headers=system_a).json()
    assert stored["interpreter_id"] is None


def test_practitioners_and_interpreters_see_their_own_schedule(world: SchedulingWorld, client,
                                                               system_a, browser_for):
    booked = client.post("/api/v1/appointments", json=world.booking(
        "10:00", patient_id=world.mongolian.id), headers=system_a).json()
    for role in (Role.CLINICIAN, Role.INTERPRETER):
        _headers, session = browser_for(world.actors.person("a", role))
        week = session.get("/scheduling/my", params={"day": world.day.isoformat()})
        assert week.status_code == 200, week.text
        assert f'data-appointment="{booked["id"]}"' in week.text
        day = session.get("/scheduling/my", params={"view": "day",
                                                    "day": world.day.isoformat()})
        assert f'data-appointment="{booked["id"]}"' in day.text
    # The interpreter's own zone: 10:00 in Seoul is 09:00 in Ulaanbaatar.
    assert "09:00" in day.text and "Ulaanbaatar" in day.text
