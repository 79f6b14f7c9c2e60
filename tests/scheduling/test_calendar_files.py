from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from icalendar import Calendar

from jaejin.scheduling.calendar_files import (
    CalendarParticipant,
    InvitationDetails,
    InvitationMethod,
    appointment_uid,
    build_invitation_ics,
)
from jaejin.scheduling.model import VISIT_TYPES_BY_CODE, VisitMode

from .builders import NEW_YORK, SEOUL, at

START = at(SEOUL, 2026, 3, 10, 9)
DETAILS = InvitationDetails(
    appointment_id="7f3c2a9e",
    start=START,
    end=START + timedelta(minutes=30),
    visit_type=VISIT_TYPES_BY_CODE["international_follow_up"],
    mode=VisitMode.VIDEO,
    institution_name="Seoul Hanbit Hospital",
    institution_zone=SEOUL,
    practitioner_name="Dr Kim Minjun",
    join_url="https://jaejin.example/visit/7f3c2a9e",
)
CLINIC = CalendarParticipant("Seoul Hanbit Hospital", "clinic@hanbit.example")
PATIENT = CalendarParticipant("Jane Doe", "jane@example.com")
ISSUED = datetime(2026, 3, 1, 12, tzinfo=UTC)


def parse(ics: bytes):
    calendar = Calendar.from_ical(ics)
    return calendar, calendar.walk("VEVENT")[0]


def invitation(**options) -> bytes:
    arguments = {
        "details": DETAILS, "organiser": CLINIC, "attendee": PATIENT, "lang": "en",
        "recipient_zone": NEW_YORK, "issued_at": ISSUED,
    } | options
    return build_invitation_ics(**arguments)


def test_an_invitation_parses_back_with_utc_times_a_stable_uid_and_the_join_link() -> None:
    calendar, event = parse(invitation())

    assert str(calendar["method"]) == "REQUEST"
    assert str(calendar["version"]) == "2.0"
    assert str(event["uid"]) == appointment_uid("7f3c2a9e")
    assert event.decoded("dtstart") == datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
    assert event.decoded("dtstart").utcoffset() == timedelta(0)
    assert event.decoded("dtend") == datetime(2026, 3, 10, 0, 30, tzinfo=UTC)
    assert event.decoded("dtstamp") == ISSUED
    assert int(event["sequence"]) == 0
    assert str(event["status"]) == "CONFIRMED"
    assert str(event["url"]) == DETAILS.join_url
    assert str(event["location"]) == DETAILS.join_url
    assert str(event["organizer"]) == "mailto:clinic@hanbit.example"
    assert str(event["attendee"]) == "mailto:jane@example.com"
    assert event["attendee"].params["CN"] == "Jane Doe"
    assert event["attendee"].params["RSVP"] == "TRUE"
    assert b"DTSTART:20260310T000000Z" in invitation()


def test_the_text_is_in_the_recipients_language_and_shows_their_time_and_the_clinics() -> None:
    _, english = parse(invitation())
    _, korean = parse(invitation(lang="ko", recipient_zone=SEOUL))

    assert str(english["summary"]) == (
        "International follow-up with Dr Kim Minjun (Seoul Hanbit Hospital)"
    )
    assert english["summary"].params["LANGUAGE"] == "en"
    description = str(english["description"])
    assert "Time: Mon, Mar 9, 20:00 New York (Tue 09:00 Seoul = Mon 20:00 New York)" in description
    assert f"Join the video visit: {DETAILS.join_url}" in description
    assert "not for emergencies" in description
    assert str(korean["summary"]) == "해외 환자 재진 - Dr Kim Minjun 선생님 (Seoul Hanbit Hospital)"
    assert "일시: 서울 3월 10일 (화) 09:00" in str(korean["description"])
    assert korean["description"].params["LANGUAGE"] == "ko"


def test_the_invitation_carries_an_alarm_in_the_recipients_language() -> None:
    _, event = parse(invitation(lang="ko", alarm_before=timedelta(minutes=30)))

    alarm = event.walk("VALARM")[0]
    assert str(alarm["action"]) == "DISPLAY"
    assert alarm.decoded("trigger") == timedelta(minutes=-30)
    assert str(alarm["description"]) == "30분 후에 진료가 시작됩니다."


def test_a_reschedule_keeps_the_uid_and_raises_the_sequence() -> None:
    moved = replace(
        DETAILS, start=START + timedelta(days=1), end=START + timedelta(days=1, minutes=30)
    )
    _, first = parse(invitation())
    _, second = parse(invitation(details=moved, sequence=1))

    assert str(first["uid"]) == str(second["uid"])
    assert int(second["sequence"]) == 1
    assert second.decoded("dtstart") == datetime(2026, 3, 11, 0, 0, tzinfo=UTC)


def test_a_cancellation_uses_method_cancel_and_drops_the_alarm_and_the_join_link() -> None:
    calendar, event = parse(invitation(method=InvitationMethod.CANCEL, sequence=2))

    assert str(calendar["method"]) == "CANCEL"
    assert str(event["status"]) == "CANCELLED"
    assert int(event["sequence"]) == 2
    assert str(event["summary"]).startswith("Cancelled: ")
    assert event.walk("VALARM") == []
    assert "Join the video visit" not in str(event["description"])
    assert event["attendee"].params["RSVP"] == "FALSE"


def test_an_in_person_visit_gives_the_address_as_location_and_no_emergency_notice() -> None:
    details = InvitationDetails(
        appointment_id="a1", start=START, end=START + timedelta(minutes=15),
        visit_type=VISIT_TYPES_BY_CODE["in_person_follow_up"], mode=VisitMode.IN_PERSON,
        institution_name="Seoul Hanbit Hospital", institution_zone=SEOUL,
        practitioner_name="Dr Kim", location="12 Hanbit-ro, Jongno-gu, Seoul",
    )

    _, event = parse(invitation(details=details, recipient_zone=SEOUL))

    assert str(event["location"]) == "12 Hanbit-ro, Jongno-gu, Seoul"
    assert "url" not in event
    assert "emergencies" not in str(event["description"])


def test_other_attendees_such_as_the_interpreter_are_listed() -> None:
    interpreter = CalendarParticipant("Bat-Erdene", "bat@interpreters.example")

    _, event = parse(invitation(other_attendees=[interpreter]))

    assert [str(address) for address in event["attendee"]] == [
        "mailto:jane@example.com", "mailto:bat@interpreters.example",
    ]


def test_a_negative_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="SEQUENCE"):
        invitation(sequence=-1)
