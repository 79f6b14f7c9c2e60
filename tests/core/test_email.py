"""E-mail through a real SMTP server (aiosmtpd on a free port): the recipient's language is on
the message whatever its structure (plain, with an HTML alternative, with attachments)."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from jaejin.core.config import Settings
from jaejin.notify.email import Attachment, OutgoingEmail, SmtpUnavailable, send_email

CALENDAR = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Jaejin//EN\r\nMETHOD:REQUEST\r\n"
            b"END:VCALENDAR\r\n")


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, Settings]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, Settings(smtp_host="127.0.0.1", smtp_port=port,
                              mail_from="Jaejin <no-reply@jaejin.test>")
    finally:
        controller.stop()


MESSAGES = {
    "plain": OutgoingEmail(to="patient@example.com", subject="예약 안내", text="내일 10시",
                           language="ko"),
    "with html": OutgoingEmail(to="patient@example.com", subject="Reminder", text="Tomorrow",
                               html="<p>Tomorrow</p>", language="en"),
    "with an attachment": OutgoingEmail(
        to="patient@example.com", subject="預約確認", text="明天上午十時",
        attachments=(Attachment("visit.ics", "text/calendar; method=REQUEST", CALENDAR),),
        language="yue-Hant-HK"),
    "with html and attachments": OutgoingEmail(
        to="patient@example.com", subject="Напоминание", text="Завтра",
        html="<p>Завтра</p>",
        attachments=(Attachment("visit.ics", "text/calendar; method=REQUEST", CALENDAR),
                     Attachment("map.pdf", "application/pdf", b"%PDF-1.4 map")),
        language="ru"),
}


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_the_recipients_language_is_on_the_delivered_message(smtp, kind):
    inbox, settings = smtp
    sent = MESSAGES[kind]
    send_email(settings, sent)
    [received] = inbox.messages
    assert received["Content-Language"] == sent.language
    assert received["Subject"] == sent.subject
    body = received.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == sent.text
    attachments = list(received.iter_attachments())
    assert [part.get_filename() for part in attachments] == [
        attachment.filename for attachment in sent.attachments]
    for part, attachment in zip(attachments, sent.attachments, strict=True):
        assert part.get_content_type() == attachment.content_type.split(";")[0]
        assert part.get_payload(decode=True) == attachment.content
    if sent.attachments and sent.attachments[0].content_type.endswith("method=REQUEST"):
        assert attachments[0].get_param("method") == "REQUEST"


def test_without_an_smtp_server_configured_the_message_is_kept_for_later():
    with pytest.raises(SmtpUnavailable):
        send_email(Settings(smtp_host=None), MESSAGES["plain"])
