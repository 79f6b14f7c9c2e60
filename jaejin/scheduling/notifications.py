"""Invitations, updates, cancellations and reminders for appointments, through the outbox.

Queued in the transaction that books, moves or cancels (so a rolled-back booking notifies no
one) and delivered after commit by `deliver_due` (`jaejin worker`): once each, even with several
workers (the outbox claims rows with SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), retried
with back-off, failures kept on the outbox row (`last_error`, `failed_at`) and shown to staff
with the appointment.

An outbox row carries only what identifies the message (appointment, SEQUENCE, recipient,
channel, offset); the text is written when it is sent, in the recipient's language and zone,
from the appointment as it is then. A message for an older SEQUENCE is superseded and not sent:
a reschedule or cancellation also withdraws the rows nobody has claimed yet, in its own
transaction, and the handler checks again at delivery for those already claimed.

Recipients: the patient (e-mail with the .ics invitation, and SMS when a phone number is on
file), the interpreter (e-mail) and the practitioner (e-mail), each in their own language and
zone. Reminders go to the patient and the interpreter at the offsets of
`Settings.reminder_offsets_minutes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, delete, insert, or_, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import User
from jaejin.core.config import Settings, get_settings
from jaejin.core.database import get_engine, session_factory, utcnow
from jaejin.core.events import OutboxMessage, register_handler
from jaejin.core.i18n import N_, normalise_language, translate
from jaejin.directory.store import Institution, Interpreter, Patient, Practitioner
from jaejin.notify.email import Attachment, OutgoingEmail, send_email
from jaejin.notify.sms import InvalidPhoneNumber, OutgoingSms, normalise_phone_number, send_sms
from jaejin.scheduling.calendar_files import (
    CalendarParticipant,
    InvitationDetails,
    InvitationMethod,
    build_invitation_ics,
)
from jaejin.scheduling.display import dual_zone_label, zone_label
from jaejin.scheduling.model import MODE_NAMES, VisitMode, visit_type_by_code
from jaejin.scheduling.reminders import reminder_text, reminder_times
from jaejin.scheduling.store import Appointment
from jaejin.scheduling.zones import resolve_zone

log = logging.getLogger(__name__)

TOPIC = "scheduling.notification"
KEY_PREFIX = "scheduling:appointment"


class Change(StrEnum):
    BOOKED = "booked"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    INTERPRETER_CHANGED = "interpreter_changed"


class Kind(StrEnum):
    INVITATION = "invitation"
    CANCELLATION = "cancellation"
    REMINDER = "reminder"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


SUBJECTS: dict[Change | Kind, str] = {
    Change.BOOKED: N_("Appointment booked: {visit}, {when}"),
    Change.RESCHEDULED: N_("Appointment moved: {visit}, {when}"),
    Change.INTERPRETER_CHANGED: N_("Appointment updated: {visit}, {when}"),
    Change.CANCELLED: N_("Appointment cancelled: {visit}, {when}"),
    Kind.REMINDER: N_("Reminder: {visit}, {when}"),
}
SMS_TEXTS: dict[Change, str] = {
    Change.BOOKED: N_("Jaejin: {visit} ({mode}) with {practitioner} is booked for {when}."),
    Change.RESCHEDULED: N_("Jaejin: your {visit} with {practitioner} has moved to {when}."),
    Change.INTERPRETER_CHANGED: N_(
        "Jaejin: your {visit} with {practitioner} at {when} has been updated."),
    Change.CANCELLED: N_("Jaejin: your {visit} with {practitioner} at {when} is cancelled."),
}
GREETING = N_("Hello {name},")
BODY_VISIT = N_("{visit} ({mode}) with {practitioner}, {institution}.")
BODY_WHEN = N_("When: {when}")
BODY_BOTH_ZONES = N_("In both zones: {both}")
BODY_INTERPRETER = N_("An interpreter ({language}) joins the visit.")
BODY_YOU_INTERPRET = N_("You interpret this visit ({language}) for {patient}.")
BODY_PATIENT = N_("Patient: {patient}")
BODY_CANCELLED = N_("This appointment has been cancelled.")
BODY_NO_LONGER_INTERPRETING = N_("You no longer interpret this visit.")
BODY_CALENDAR = N_("The attached invitation (.ics) adds it to your calendar.")
BODY_OPEN = N_("Details: {url}")


# --------------------------------------------------------------------------- recipients


@dataclass(frozen=True, slots=True)
class RecipientRef:
    """Who a message is for: "patient", "practitioner" or "interpreter" with its id."""

    role: str
    identifier: int

    @property
    def key(self) -> str:
        return f"{self.role}-{self.identifier}"

    def as_json(self) -> dict[str, Any]:
        return {"role": self.role, "id": self.identifier}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecipientRef:
        return cls(str(data["role"]), int(data["id"]))


def _key(appointment_id: int, sequence: int, kind: Kind, recipient: RecipientRef,
         channel: Channel, offset_minutes: int | None = None) -> str:
    base = f"{KEY_PREFIX}:{appointment_id}:seq:{sequence}:{kind.value}:{recipient.key}:{channel}"
    return base if offset_minutes is None else f"{base}:{offset_minutes}"


def _payload(appointment: Appointment, kind: Kind, recipient: RecipientRef, channel: Channel,
             change: Change, offset_minutes: int | None = None) -> dict[str, Any]:
    return {"appointment_id": appointment.id, "sequence": appointment.sequence,
            "kind": kind.value, "change": change.value, "recipient": recipient.as_json(),
            "channel": channel.value, "offset_minutes": offset_minutes}


def _queue(rows: list[dict[str, Any]], appointment: Appointment, kind: Kind,
           recipient: RecipientRef, channel: Channel, change: Change, *, available_at: datetime,
           offset_minutes: int | None = None) -> None:
    rows.append({
        "topic": TOPIC,
        "payload": _payload(appointment, kind, recipient, channel, change, offset_minutes),
        "available_at": available_at,
        "dedupe_key": _key(appointment.id, appointment.sequence, kind, recipient, channel,
                           offset_minutes),
    })


#: With RETURNING, several parameter sets are sent as ONE multi-row INSERT ("insertmanyvalues");
#: without it the driver's executemany sends one INSERT per row (psycopg: in a pipeline).
_QUEUE = insert(OutboxMessage).returning(OutboxMessage.id)


def _enqueue_all(db: Session, rows: list[dict[str, Any]]) -> None:
    """The outbox rows in one statement, in the caller's transaction (`events.enqueue` row by
    row would cost a round trip each on the booking's hot path)."""
    if rows:
        # Through the connection: a plain multi-row INSERT, no ORM bulk-insert bookkeeping.
        db.connection().execute(_QUEUE, rows).close()


def reminder_offsets(settings: Settings) -> list[timedelta]:
    return [timedelta(minutes=minutes) for minutes in settings.reminder_offsets_minutes
            if minutes > 0]


def withdraw_pending(db: Session, appointment_id: int, *, now: datetime) -> int:
    """Delete the appointment's invitations and reminders nobody has claimed yet, except
    cancellations (they are always sent). Returns how many were withdrawn."""
    rows = db.execute(
        select(OutboxMessage.id, OutboxMessage.dedupe_key).where(
            OutboxMessage.topic == TOPIC,
            OutboxMessage.dedupe_key.like(f"{KEY_PREFIX}:{appointment_id}:%"),
            OutboxMessage.delivered_at.is_(None),
            OutboxMessage.failed_at.is_(None),
            or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until < now),
        )
    ).all()
    withdrawn = [identifier for identifier, key in rows
                 if f":{Kind.CANCELLATION.value}:" not in (key or "")]
    if withdrawn:
        db.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(withdrawn)))
    return len(withdrawn)


def queue_for_change(
    db: Session, appointment: Appointment, change: Change, *, settings: Settings,
    now: datetime, former_interpreter_id: int | None = None,
) -> None:
    """Queue what a booking, move, interpreter change or cancellation tells everyone."""
    if change is not Change.BOOKED:
        withdraw_pending(db, appointment.id, now=now)
    patient_row = db.get(Patient, appointment.patient_id)
    texts_patient = patient_row is not None and bool(patient_row.phone)
    _enqueue_all(db, messages_for_change(appointment, change, settings=settings, now=now,
                                         texts_patient=texts_patient,
                                         former_interpreter_id=former_interpreter_id))


def messages_for_change(
    appointment: Appointment, change: Change, *, settings: Settings, now: datetime,
    texts_patient: bool, former_interpreter_id: int | None = None,
) -> list[dict[str, Any]]:
    """The outbox rows (`topic`, `payload`, `available_at`, `dedupe_key`) that
    `queue_for_change` writes; `texts_patient`: the patient has a phone number on file."""
    patient = RecipientRef("patient", appointment.patient_id)
    practitioner = RecipientRef("practitioner", appointment.practitioner_id)
    interpreter = (RecipientRef("interpreter", appointment.interpreter_id)
                   if appointment.interpreter_id is not None else None)
    kind = Kind.CANCELLATION if change is Change.CANCELLED else Kind.INVITATION
    rows: list[dict[str, Any]] = []
    for recipient in (patient, practitioner, interpreter):
        if recipient is not None:
            _queue(rows, appointment, kind, recipient, Channel.EMAIL, change, available_at=now)
    if texts_patient:
        _queue(rows, appointment, kind, patient, Channel.SMS, change, available_at=now)
    if former_interpreter_id is not None and former_interpreter_id != appointment.interpreter_id:
        _queue(rows, appointment, Kind.CANCELLATION,
               RecipientRef("interpreter", former_interpreter_id), Channel.EMAIL, change,
               available_at=now)
    if change is Change.CANCELLED:
        return rows
    for reminder in reminder_times(appointment.start_at, reminder_offsets(settings), now=now):
        minutes = int(reminder.offset // timedelta(minutes=1))
        targets = [(patient, Channel.EMAIL)]
        if texts_patient:
            targets.append((patient, Channel.SMS))
        if interpreter is not None:
            targets.append((interpreter, Channel.EMAIL))
        for recipient, channel in targets:
            _queue(rows, appointment, Kind.REMINDER, recipient, channel, change,
                   available_at=reminder.send_at, offset_minutes=minutes)
    return rows


def outbox_status(db: Session, appointment_id: int) -> list[dict[str, Any]]:
    """What was queued for an appointment and what became of it, for staff."""
    rows = db.execute(
        select(OutboxMessage).where(OutboxMessage.topic == TOPIC,
                                    OutboxMessage.dedupe_key.like(f"{KEY_PREFIX}:{appointment_id}:%"))
        .order_by(OutboxMessage.available_at, OutboxMessage.id)
    ).scalars()
    found: list[dict[str, Any]] = []
    for row in rows:
        state = ("delivered" if row.delivered_at else "failed" if row.failed_at
                 else "retrying" if row.last_error else "pending")
        found.append({
            "kind": row.payload.get("kind"), "channel": row.payload.get("channel"),
            "recipient": row.payload.get("recipient"), "sequence": row.payload.get("sequence"),
            "offset_minutes": row.payload.get("offset_minutes"), "state": state,
            "available_at": row.available_at.isoformat(), "attempts": row.attempts,
            "last_error": row.last_error,
        })
    return found


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class Addressee:
    name: str
    language: str
    zone: ZoneInfo
    email: str | None
    phone: str | None


def _language(tag: str | None) -> str:
    return normalise_language(tag) or "en"


def practitioner_name(practitioner: Practitioner, lang: str) -> str:
    return practitioner.name_native if lang == "ko" else practitioner.name_latin


def patient_name(patient: Patient, lang: str) -> str:
    return patient.display_name if lang == patient.preferred_language else patient.latin_name


def addressee(db: Session, recipient: RecipientRef) -> Addressee | None:
    if recipient.role == "patient":
        patient = db.get(Patient, recipient.identifier)
        if patient is None:
            return None
        user = db.get(User, patient.user_id) if patient.user_id else None
        return Addressee(patient.display_name, _language(patient.preferred_language),
                         resolve_zone(patient.time_zone),
                         patient.email or (user.email if user else None), patient.phone)
    if recipient.role == "interpreter":
        interpreter = db.get(Interpreter, recipient.identifier)
        if interpreter is None:
            return None
        user = db.get(User, interpreter.user_id) if interpreter.user_id else None
        return Addressee(interpreter.name, _language(user.language if user else "ko"),
                         resolve_zone(interpreter.time_zone), user.email if user else None, None)
    practitioner = db.get(Practitioner, recipient.identifier)
    if practitioner is None:
        return None
    user = db.get(User, practitioner.user_id) if practitioner.user_id else None
    lang = _language(user.language if user else "ko")
    return Addressee(practitioner_name(practitioner, lang), lang,
                     resolve_zone(practitioner.time_zone), user.email if user else None, None)


@dataclass(frozen=True, slots=True)
class Rendered:
    email: OutgoingEmail | None
    sms: OutgoingSms | None


def appointment_url(settings: Settings, appointment_id: int) -> str:
    return f"{settings.public_base_url.rstrip('/')}/appointments/{appointment_id}"


def invitation_details(db: Session, appointment: Appointment, lang: str,
                       settings: Settings) -> InvitationDetails:
    institution = db.get(Institution, appointment.institution_id)
    practitioner = db.get(Practitioner, appointment.practitioner_id)
    assert institution is not None and practitioner is not None
    return InvitationDetails(
        appointment_id=str(appointment.id), start=appointment.start_at, end=appointment.end_at,
        visit_type=visit_type_by_code(appointment.visit_type), mode=appointment.visit_mode,
        institution_name=institution.display_name(lang),
        institution_zone=resolve_zone(institution.time_zone),
        practitioner_name=practitioner_name(practitioner, lang),
        join_url=appointment_url(settings, appointment.id)
        if appointment.visit_mode is VisitMode.VIDEO else None,
        location=institution.display_name(lang)
        if appointment.visit_mode is VisitMode.IN_PERSON else None,
    )


def organiser(settings: Settings, institution_name: str) -> CalendarParticipant:
    _name, address = parseaddr(settings.mail_from)
    return CalendarParticipant(institution_name, address or "no-reply@jaejin.local")


def invitation_ics(db: Session, appointment: Appointment, who: Addressee, settings: Settings,
                   *, method: InvitationMethod, sequence: int, now: datetime) -> bytes:
    details = invitation_details(db, appointment, who.language, settings)
    return build_invitation_ics(
        details, organiser(settings, details.institution_name),
        CalendarParticipant(who.name, who.email or "no-reply@jaejin.local"), who.language,
        method, sequence, recipient_zone=who.zone, issued_at=now)


def render(db: Session, appointment: Appointment, payload: dict[str, Any], who: Addressee,
           settings: Settings, *, now: datetime) -> Rendered:
    """The message in the recipient's language and zone."""
    lang = who.language
    kind = Kind(payload["kind"])
    change = Change(payload["change"])
    channel = Channel(payload["channel"])
    sequence = int(payload["sequence"])
    recipient = RecipientRef.from_json(payload["recipient"])
    details = invitation_details(db, appointment, lang, settings)
    visit = details.visit_type.display_name(lang)
    when = zone_label(appointment.start_at, who.zone, lang)
    if channel is Channel.SMS:
        if who.phone is None:
            return Rendered(None, None)
        try:
            number = normalise_phone_number(who.phone)
        except InvalidPhoneNumber:
            log.warning("appointment %s: patient phone number is not valid", appointment.id)
            return Rendered(None, None)
        if kind is Kind.REMINDER:
            text = reminder_text(lang, visit_type=details.visit_type, mode=details.mode,
                                 start=appointment.start_at,
                                 institution_zone=details.institution_zone,
                                 recipient_zone=who.zone,
                                 practitioner_name=details.practitioner_name,
                                 join_url=details.join_url)
        else:
            text = translate(lang, SMS_TEXTS[change], visit=visit,
                             mode=translate(lang, MODE_NAMES[details.mode]),
                             practitioner=details.practitioner_name, when=when)
        return Rendered(None, OutgoingSms(number, text))
    if who.email is None:
        return Rendered(None, None)
    cancelled = kind is Kind.CANCELLATION
    subject_key: Change | Kind = Kind.REMINDER if kind is Kind.REMINDER else change
    if cancelled:
        subject_key = Change.CANCELLED
    lines = [translate(lang, GREETING, name=who.name), ""]
    if cancelled:
        released = (recipient.role == "interpreter"
                    and recipient.identifier != appointment.interpreter_id)
        lines.append(translate(lang, BODY_NO_LONGER_INTERPRETING if released else BODY_CANCELLED))
    lines.append(translate(lang, BODY_VISIT, visit=visit,
                           mode=translate(lang, MODE_NAMES[details.mode]),
                           practitioner=details.practitioner_name,
                           institution=details.institution_name))
    lines.append(translate(lang, BODY_WHEN, when=when))
    if who.zone.key != details.institution_zone.key:
        lines.append(translate(lang, BODY_BOTH_ZONES, both=dual_zone_label(
            appointment.start_at, details.institution_zone, who.zone, lang)))
    if appointment.interpreter_language:
        if recipient.role == "interpreter":
            patient = db.get(Patient, appointment.patient_id)
            assert patient is not None
            lines.append(translate(lang, BODY_YOU_INTERPRET,
                                   language=appointment.interpreter_language,
                                   patient=patient.latin_name))
        elif appointment.interpreter_id is not None:
            lines.append(translate(lang, BODY_INTERPRETER,
                                   language=appointment.interpreter_language))
    if recipient.role == "practitioner":
        patient = db.get(Patient, appointment.patient_id)
        assert patient is not None
        lines.append(translate(lang, BODY_PATIENT, patient=patient_name(patient, lang)))
    if not cancelled:
        lines.append(translate(lang, BODY_OPEN, url=appointment_url(settings, appointment.id)))
    lines.append(translate(lang, BODY_CALENDAR))
    method = InvitationMethod.CANCEL if cancelled else InvitationMethod.REQUEST
    ics = invitation_ics(db, appointment, who, settings, method=method, sequence=sequence,
                         now=now)
    email = OutgoingEmail(
        to=who.email,
        subject=translate(lang, SUBJECTS[subject_key], visit=visit, when=when),
        text="\n".join(lines), language=lang,
        attachments=(Attachment("invitation.ics", f"text/calendar; method={method.value}", ics),),
    )
    return Rendered(email, None)


def superseded(appointment: Appointment, payload: dict[str, Any]) -> bool:
    """True when the message no longer describes the appointment and must not be sent."""
    kind = Kind(payload["kind"])
    if kind is Kind.CANCELLATION:
        return False
    if int(payload["sequence"]) != appointment.sequence or not appointment.is_active:
        return True
    recipient = RecipientRef.from_json(payload["recipient"])
    return recipient.role == "interpreter" and recipient.identifier != appointment.interpreter_id


# --------------------------------------------------------------------------- delivery


_sqlite_readers: dict[str, Engine] = {}


def _reader(engine: Engine) -> Engine:
    """An engine to read with while the outbox holds its row.

    On SQLite every transaction of the application's engine takes the write lock
    (BEGIN IMMEDIATE), which `deliver_due` already holds while the handler runs; a plain engine
    on the same file reads beside it (WAL). PostgreSQL reads with the same engine.
    """
    if engine.dialect.name != "sqlite":
        return engine
    url = engine.url.render_as_string(hide_password=False)
    if url not in _sqlite_readers:
        _sqlite_readers[url] = create_engine(url, connect_args={"check_same_thread": False})
    return _sqlite_readers[url]


def deliver(engine: Engine, settings: Settings, payload: dict[str, Any]) -> None:
    """Send one queued message, unless superseded; errors propagate so the outbox retries."""
    now = utcnow()
    with session_factory(_reader(engine))() as db:
        appointment = db.get(Appointment, int(payload["appointment_id"]))
        if appointment is None or superseded(appointment, payload):
            log.info("appointment notification superseded: %s", payload)
            return
        who = addressee(db, RecipientRef.from_json(payload["recipient"]))
        if who is None:
            return
        rendered = render(db, appointment, payload, who, settings, now=now)
        db.rollback()
    if rendered.email is not None:
        send_email(settings, rendered.email)
    if rendered.sms is not None:
        send_sms(settings, rendered.sms)


def register_outbox_handlers(engine: Engine | None = None, settings: Settings | None = None
                             ) -> None:
    """Register the delivery of appointment messages (`jaejin worker` calls it with none:
    the configured database and settings)."""

    def handler(payload: dict[str, Any]) -> None:
        chosen = settings or get_settings()
        deliver(engine or get_engine(chosen), chosen, payload)

    handle: Callable[[dict[str, Any]], None] = handler
    register_handler(TOPIC, handle)
