"""Notifications to people: e-mail and SMS, always through the outbox (sent after commit)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from jaejin.core.config import get_settings
from jaejin.core.events import OutboxMessage, enqueue, register_handler
from jaejin.notify.email import Attachment, OutgoingEmail, send_email
from jaejin.notify.sms import OutgoingSms, send_sms

EMAIL_TOPIC = "notify.email"
SMS_TOPIC = "notify.sms"


def queue_email(db: Session, email: OutgoingEmail, *, available_at: datetime | None = None,
                dedupe_key: str | None = None) -> OutboxMessage:
    payload: dict[str, Any] = {
        "to": email.to, "subject": email.subject, "text": email.text, "html": email.html,
        "language": email.language,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type,
             "content": base64.b64encode(a.content).decode()}
            for a in email.attachments
        ],
    }
    return enqueue(db, EMAIL_TOPIC, payload, available_at=available_at, dedupe_key=dedupe_key)


def queue_sms(db: Session, sms: OutgoingSms, *, available_at: datetime | None = None,
              dedupe_key: str | None = None) -> OutboxMessage:
    return enqueue(db, SMS_TOPIC, {"to": sms.to, "text": sms.text}, available_at=available_at,
                   dedupe_key=dedupe_key)


def email_from_payload(payload: dict[str, Any]) -> OutgoingEmail:
    return OutgoingEmail(
        to=payload["to"], subject=payload["subject"], text=payload["text"],
        html=payload.get("html"), language=payload.get("language", "ko"),
        attachments=tuple(
            Attachment(a["filename"], a["content_type"], base64.b64decode(a["content"]))
            for a in payload.get("attachments", [])
        ),
    )


def _deliver_email(payload: dict[str, Any]) -> None:
    send_email(get_settings(), email_from_payload(payload))


def _deliver_sms(payload: dict[str, Any]) -> None:
    send_sms(get_settings(), OutgoingSms(payload["to"], payload["text"]))


def register_outbox_handlers() -> None:
    register_handler(EMAIL_TOPIC, _deliver_email)
    register_handler(SMS_TOPIC, _deliver_sms)


__all__ = [
    "Attachment", "OutgoingEmail", "OutgoingSms", "queue_email", "queue_sms",
    "register_outbox_handlers",
]
