"""Invitations, updates, cancellations and reminders: queued with the booking, delivered after
commit over real SMTP (aiosmtpd on a free port) and through the SMS log transport, each in the
recipient's language and zone, once, retried with back-off when the server is down."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage as Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from icalendar import Calendar
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from jaejin.core.config import Settings
from jaejin.core.events import OutboxMessage, deliver_due
from jaejin.core.i18n import translate
from jaejin.scheduling import notifications
from jaejin.scheduling.display import zone_label
from jaejin.scheduling.model import visit_type_by_code
from tests.scheduling.test_booking_fixtures import SEOUL, ULAANBAATAR, SchedulingWorld

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)


class Inbox:
    """An SMTP server's received messages."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(email.message_from_bytes(envelope.content,
                                                            policy=email.policy.default))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        return [message for message in self.messages if message["To"] == address]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def mail_settings(settings: Settings, inbox: tuple[Inbox, int], engine: Engine) -> Settings:
    """The app's settings with the test SMTP server; the outbox handler uses them."""
    configured = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": inbox[1]})
    notifications.register_outbox_handlers(engine, configured)
    return configured


def _ics(message: Message) -> Calendar:
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            assert part.get_param("method") in {"REQUEST", "CANCEL"}
            return Calendar.from_ical(payload)
    raise AssertionError("no calendar attachment")


def _book(client, headers, world: SchedulingWorld, clock: str = "10:00", **body: Any) -> dict:
    response = client.post("/api/v1/appointments", json=world.booking(clock, **body),
                           headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _rows(engine: Engine, appointment_id: int) -> list[OutboxMessage]:
    with Session(engine) as db:
        return list(db.execute(select(OutboxMessage).where(
            OutboxMessage.dedupe_key.like(f"{notifications.KEY_PREFIX}:{appointment_id}:%"))
            .order_by(OutboxMessage.id)).scalars())


def _deliver_everything_due(engine: Engine) -> int:
    total = 0
    while delivered := deliver_due(engine):
        total += delivered
    return total


def test_a_booking_invites_each_person_in_their_language_and_zone(
        client, engine, world, system_a, inbox, mail_settings):
    received, _port = inbox
    booked = _book(client, system_a, world, "10:00")
    # Nothing is sent inside the booking's transaction.
    assert received.messages == []
    delivered = _deliver_everything_due(engine)
    assert delivered >= 2, [(row.topic, row.last_error) for row in _rows(engine, booked["id"])]
    patient_mail = received.to("patient.a@test.example")
    assert len(patient_mail) == 1
    message = patient_mail[0]
    start = world.at("10:00")
    visit = visit_type_by_code("follow_up").display_name("ko")
    expected = translate("ko", notifications.SUBJECTS[notifications.Change.BOOKED], visit=visit,
                         when=zone_label(start, SEOUL, "ko"))
    assert message["Subject"] == expected
    assert "예약 완료" in expected
    text_part = message.get_body(("plain",))
    assert text_part is not None and "안녕하세요" in text_part.get_content()
    calendar = _ics(message)
    assert str(calendar["METHOD"]) == "REQUEST"
    event = calendar.walk("VEVENT")[0]
    assert event.decoded("DTSTART") == start
    assert int(event["SEQUENCE"]) == 0
    assert str(event["UID"]).startswith(f"appointment-{booked['id']}@")
    # The practitioner (an English-speaking account) gets theirs in English.
    doctor_mail = received.to("clinician.a@test.example")
    assert len(doctor_mail) == 1 and doctor_mail[0]["Subject"].startswith("Appointment booked")


def test_the_patient_abroad_and_the_interpreter_get_their_own_zone(
        client, engine, world, system_a, inbox, mail_settings, caplog):
    received, _port = inbox
    _book(client, system_a, world, "10:00", patient_id=world.mongolian.id)
    with caplog.at_level(logging.INFO, logger="jaejin.sms"):
        _deliver_everything_due(engine)
    start = world.at("10:00")
    patient_mail = received.to("baterdene@example.mn")
    assert len(patient_mail) == 1
    body = patient_mail[0].get_body(("plain",))
    assert body is not None
    text = body.get_content()
    # 10:00 in Seoul is 09:00 in Ulaanbaatar; the letter says both.
    assert zone_label(start, ULAANBAATAR, "mn") in text
    interpreter_mail = received.to("interpreter.a@test.example")
    assert len(interpreter_mail) == 1
    assert "Bat-Erdene" in interpreter_mail[0].get_body(("plain",)).get_content()
    texts = [record.getMessage() for record in caplog.records if record.name == "jaejin.sms"]
    assert len(texts) == 1 and "+97699112233" in texts[0]
    assert zone_label(start, ULAANBAATAR, "mn") in texts[0]


def test_reminders_are_queued_at_the_configured_offsets(client, engine, world, system_a):
    booked = _book(client, system_a, world, "10:00", patient_id=world.mongolian.id)
    reminders = [row for row in _rows(engine, booked["id"])
                 if row.payload["kind"] == "reminder"]
    start = world.at("10:00").astimezone(UTC)
    by_target = {(row.payload["recipient"]["role"], row.payload["channel"],
                  row.payload["offset_minutes"]): row.available_at for row in reminders}
    for offset in (24 * 60, 60):
        for target in (("patient", "email"), ("patient", "sms"), ("interpreter", "email")):
            assert by_target[(*target, offset)] == start - timedelta(minutes=offset)
    assert len(reminders) == 6


def test_a_due_reminder_is_sent_in_the_recipients_language(client, engine, world, system_a,
                                                           inbox, mail_settings, caplog):
    received, _port = inbox
    booked = _book(client, system_a, world, "10:00")
    _deliver_everything_due(engine)
    received.messages.clear()
    with Session(engine) as db:
        db.execute(update(OutboxMessage).where(
            OutboxMessage.dedupe_key.like(f"{notifications.KEY_PREFIX}:{booked['id']}:%"),
            OutboxMessage.dedupe_key.like("%:reminder:%:60"))
            .values(available_at=datetime.now(UTC) - timedelta(seconds=1)))
        db.commit()
    assert _deliver_everything_due(engine) == 1
    (reminder,) = received.messages
    assert str(reminder["Subject"]).startswith("진료 알림")


def test_a_reschedule_supersedes_what_was_queued_and_updates_every_calendar(
        client, engine, world, system_a, inbox, mail_settings):
    received, _port = inbox
    booked = _book(client, system_a, world, "10:00")
    moved = client.patch(f"/api/v1/appointments/{booked['id']}",
                         json={"start": world.at("15:00").isoformat()}, headers=system_a)
    assert moved.status_code == 200
    rows = _rows(engine, booked["id"])
    assert {row.payload["sequence"] for row in rows} == {1}, "sequence 0 withdrawn"
    _deliver_everything_due(engine)
    (invitation,) = received.to("patient.a@test.example")
    event = _ics(invitation).walk("VEVENT")[0]
    assert int(event["SEQUENCE"]) == 1
    assert event.decoded("DTSTART") == world.at("15:00")
    # A message of the old sequence already claimed by a worker is not sent either.
    received.messages.clear()
    stale = {"appointment_id": booked["id"], "sequence": 0, "kind": "reminder",
             "change": "booked", "recipient": {"role": "patient", "id": world.patient_a},
             "channel": "email", "offset_minutes": 60}
    notifications.deliver(engine, mail_settings, stale)
    assert received.messages == []


def test_a_cancellation_is_sent_as_cancel_with_a_higher_sequence(
        client, engine, world, system_a, inbox, mail_settings):
    received, _port = inbox
    booked = _book(client, system_a, world, "10:00")
    client.delete(f"/api/v1/appointments/{booked['id']}", headers=system_a)
    _deliver_everything_due(engine)
    (cancellation,) = received.to("patient.a@test.example")
    calendar = _ics(cancellation)
    assert str(calendar["METHOD"]) == "CANCEL"
    event = calendar.walk("VEVENT")[0]
    assert int(event["SEQUENCE"]) == 1 and str(event["STATUS"]) == "CANCELLED"
    remaining = [row for row in _rows(engine, booked["id"]) if row.delivered_at is None]
    assert remaining == [], "no reminder waits for a cancelled visit"


def test_failures_are_retried_with_back_off_and_shown_to_staff(client, engine, world,
                                                               system_a, settings):
    closed_port = _free_port()
    notifications.register_outbox_handlers(engine, settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": closed_port}))
    booked = _book(client, system_a, world, "10:00")
    before = datetime.now(UTC)
    assert deliver_due(engine) == 0
    failed = [row for row in _rows(engine, booked["id"]) if row.attempts]
    assert failed and all(row.last_error and row.delivered_at is None for row in failed)
    assert all(row.available_at >= before + timedelta(seconds=29) for row in failed)
    seen = client.get(f"/api/v1/appointments/{booked['id']}", headers=system_a).json()
    states = {item["state"] for item in seen["notifications"]}
    assert "retrying" in states


def test_two_workers_deliver_each_message_once(client, engine, world, system_a, inbox,
                                               mail_settings):
    received, _port = inbox
    for index, clock in enumerate(("10:00", "11:00", "12:00", "13:00")):
        _book(client, system_a, world, clock,
              **({"patient_id": world.mongolian.id} if index % 2 else {}))
    with Session(engine) as db:
        due = list(db.execute(select(OutboxMessage.payload).where(
            OutboxMessage.available_at <= datetime.now(UTC),
            OutboxMessage.delivered_at.is_(None))).scalars())
    emails_due = sum(1 for payload in due if payload["channel"] == "email")
    assert emails_due < len(due), "the Mongolian patient's text messages are due too"
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def worker() -> None:
        barrier.wait()
        counts.append(_deliver_everything_due(engine))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts) == len(due)
    assert len(received.messages) == emails_due
    keys = [(message["To"], message["Subject"]) for message in received.messages]
    assert len(keys) == len(set(keys))
