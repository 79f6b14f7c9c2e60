"""E-mail over SMTP (reminders, invitations, guest links), with attachments such as `.ics` files."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

from jaejin.core.config import Settings


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str  # e.g. "text/calendar; method=REQUEST"
    content: bytes


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str | None = None
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    language: str = "ko"


class SmtpUnavailable(RuntimeError):
    """No SMTP server is configured: the outbox keeps the message and retries later."""


def build_message(email: OutgoingEmail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Message-ID"] = make_msgid(domain="jaejin.local")
    message.set_content(email.text)
    if email.html:
        message.add_alternative(email.html, subtype="html")
    for attachment in email.attachments:
        main_type, _, rest = attachment.content_type.partition("/")
        sub_type, _, params = rest.partition(";")
        parameters: dict[str, str] = {}
        if params.strip().startswith("method="):
            # Calendar clients act on an invitation only when the MIME part names its method.
            parameters["method"] = params.split("=", 1)[1].strip()
        message.add_attachment(attachment.content, maintype=main_type, subtype=sub_type.strip(),
                               filename=attachment.filename, params=parameters)
    # Set last: turning the message into multipart/alternative or multipart/mixed moves every
    # Content-* header of the top level into the first part, so a header set earlier would
    # end up on the text part only.
    message["Content-Language"] = email.language
    return message


def send_email(settings: Settings, email: OutgoingEmail) -> None:
    if not settings.smtp_host:
        raise SmtpUnavailable("JAEJIN_SMTP_HOST is not set")
    message = build_message(email, settings.mail_from)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.send_message(message)
