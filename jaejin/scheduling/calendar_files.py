"""iCalendar (RFC 5545) invitations, sent with iTIP methods (RFC 5546) REQUEST and CANCEL.

One appointment keeps one UID for life; each reschedule or cancellation raises SEQUENCE so the
recipient's calendar replaces the earlier version. Times are written in UTC (no VTIMEZONE needed);
the description repeats the time in the recipient's zone and the institution's, in the
recipient's language.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from icalendar import Alarm, Calendar, Event, vCalAddress, vText

from jaejin.core.i18n import N_, translate
from jaejin.scheduling.display import dual_zone_label, zone_label
from jaejin.scheduling.model import MODE_NAMES, VisitMode, VisitType
from jaejin.scheduling.zones import ensure_aware

PRODUCT_ID = "-//Jaejin//Scheduling//EN"
UID_DOMAIN = "jaejin.scheduling"
DEFAULT_ALARM_BEFORE = timedelta(minutes=15)

SUMMARY = N_("{visit} with {practitioner} ({institution})")
CANCELLED_SUMMARY = N_("Cancelled: {visit} with {practitioner} ({institution})")
DESCRIPTION_TIME = N_("Time: {when}")
DESCRIPTION_BOTH_TIMES = N_("Time: {when} ({both})")
DESCRIPTION_MODE = N_("Type: {mode}")
DESCRIPTION_JOIN = N_("Join the video visit: {join_url}")
DESCRIPTION_CANCELLED = N_("This appointment has been cancelled.")
DESCRIPTION_NOT_EMERGENCY = N_(
    "Telemedicine is not for emergencies: call your local emergency number."
)
ALARM_TEXT = N_("Your appointment starts in {minutes} minutes.")


class InvitationMethod(StrEnum):
    REQUEST = "REQUEST"
    CANCEL = "CANCEL"


@dataclass(frozen=True, slots=True)
class CalendarParticipant:
    name: str
    email: str

    def address(self, role: str | None = None, *, rsvp: bool = False) -> vCalAddress:
        address = vCalAddress(f"mailto:{self.email}")
        address.params["CN"] = vText(self.name)
        if role is not None:
            address.params["ROLE"] = role
            address.params["PARTSTAT"] = "NEEDS-ACTION"
            address.params["RSVP"] = "TRUE" if rsvp else "FALSE"
        return address


@dataclass(frozen=True, slots=True)
class InvitationDetails:
    """The appointment as the invitation describes it."""

    appointment_id: str
    start: datetime
    end: datetime
    visit_type: VisitType
    mode: VisitMode
    institution_name: str
    institution_zone: ZoneInfo
    practitioner_name: str
    join_url: str | None = None
    location: str | None = None


def appointment_uid(appointment_id: str) -> str:
    """The UID an appointment keeps across every update and its cancellation."""
    return f"appointment-{appointment_id}@{UID_DOMAIN}"


def build_invitation_ics(
    details: InvitationDetails,
    organiser: CalendarParticipant,
    attendee: CalendarParticipant,
    lang: str,
    method: InvitationMethod = InvitationMethod.REQUEST,
    sequence: int = 0,
    *,
    recipient_zone: ZoneInfo,
    issued_at: datetime,
    other_attendees: Sequence[CalendarParticipant] = (),
    alarm_before: timedelta = DEFAULT_ALARM_BEFORE,
) -> bytes:
    """The .ics bytes for one recipient (`attendee`), in their language and zone."""
    if sequence < 0:
        raise ValueError("SEQUENCE cannot be negative")
    start = ensure_aware(details.start, "start")
    end = ensure_aware(details.end, "end")
    cancelled = method is InvitationMethod.CANCEL
    params = {
        "visit": details.visit_type.display_name(lang),
        "practitioner": details.practitioner_name,
        "institution": details.institution_name,
    }

    calendar = Calendar()
    calendar.add("prodid", PRODUCT_ID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", method.value)

    event = Event()
    event.add("uid", appointment_uid(details.appointment_id))
    event.add("sequence", sequence)
    event.add("dtstamp", ensure_aware(issued_at, "issued_at"))
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add(
        "summary",
        translate(lang, CANCELLED_SUMMARY if cancelled else SUMMARY, **params),
        parameters={"LANGUAGE": lang},
    )
    event.add(
        "description",
        _description(details, lang, recipient_zone, cancelled),
        parameters={"LANGUAGE": lang},
    )
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    event.add("transp", "OPAQUE")
    event.add("organizer", organiser.address())
    for participant in (attendee, *other_attendees):
        event.add("attendee", participant.address("REQ-PARTICIPANT", rsvp=not cancelled))
    location = details.join_url if details.mode is VisitMode.VIDEO else details.location
    if location:
        event.add("location", location)
    if details.join_url:
        event.add("url", details.join_url)
    if not cancelled:
        event.add_component(_alarm(lang, alarm_before))
    calendar.add_component(event)
    return bytes(calendar.to_ical())


def _description(
    details: InvitationDetails, lang: str, recipient_zone: ZoneInfo, cancelled: bool
) -> str:
    when = zone_label(details.start, recipient_zone, lang)
    lines: list[str] = []
    if cancelled:
        lines.append(translate(lang, DESCRIPTION_CANCELLED))
    if recipient_zone.key == details.institution_zone.key:
        lines.append(translate(lang, DESCRIPTION_TIME, when=when))
    else:
        both = dual_zone_label(details.start, details.institution_zone, recipient_zone, lang)
        lines.append(translate(lang, DESCRIPTION_BOTH_TIMES, when=when, both=both))
    lines.append(translate(lang, DESCRIPTION_MODE, mode=translate(lang, MODE_NAMES[details.mode])))
    if details.join_url and not cancelled:
        lines.append(translate(lang, DESCRIPTION_JOIN, join_url=details.join_url))
    if details.mode is VisitMode.VIDEO:
        lines.append(translate(lang, DESCRIPTION_NOT_EMERGENCY))
    return "\n".join(lines)


def _alarm(lang: str, before: timedelta) -> Alarm:
    if before <= timedelta(0):
        raise ValueError("an alarm rings before the appointment")
    alarm = Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("trigger", -before)
    alarm.add(
        "description",
        translate(lang, ALARM_TEXT, minutes=int(before // timedelta(minutes=1))),
    )
    return alarm
