"""Tables of the video visit: the visit itself, its call time, the clinician's note, the files
shared in the call, the prescriptions on the note, and the local physician's guest links.

A visit belongs to exactly one appointment (`jaejin.scheduling.store.Appointment`), which stays
the source of who takes part: its patient, its practitioner and its interpreter. The visit keeps
what happens on the day: check-in, consent, identity verification, the policy decisions made at
check-in and at start, the call intervals (the clinician's minutes), the note, and the encounter
it becomes when closed.

Shared files are stored in the database (`visit_attachments.content`), not on disk: they are
part of the medical record (kept 10 years, Medical Service Act enforcement rule art. 15), so
they must be in the same backups, the same transaction as their audit entry and the chat
announcement, and reachable from every server worker without a shared file system. The size
limit (10 MB) keeps a row small enough for both SQLite and PostgreSQL (bytea, TOASTed); the
content column is deferred so listing attachments never loads the bytes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, deferred, mapped_column

from jaejin.core.database import Base, utcnow
from jaejin.core.i18n import LANGUAGE_TAG_LENGTH
from jaejin.scheduling.store import Appointment
from jaejin.visits.lifecycle import CallInterval, VisitState


class Visit(Base):
    __tablename__ = "visits"
    __table_args__ = (Index("ix_visits_institution_state", "institution_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id"), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    state: Mapped[str] = mapped_column(String(20), default=VisitState.SCHEDULED.value)
    #: How the visit was held, as the encounter records it: "video", or "audio" when the call
    #: fell back to audio only.
    mode: Mapped[str] = mapped_column(String(10), default="video")
    #: The KCD code the visit is about (from the appointment, else the latest encounter).
    condition_code: Mapped[str | None] = mapped_column(String(20))
    #: Held with the patient's local physician (a patient abroad): the policy is asked so.
    tri_party: Mapped[bool] = mapped_column(default=False)
    #: The rules require the local physician connected before the call can start.
    local_physician_required: Mapped[bool] = mapped_column(default=False)
    local_physician_id: Mapped[int | None] = mapped_column(ForeignKey("local_physicians.id"))

    checked_in_at: Mapped[datetime | None]
    waiting_since: Mapped[datetime | None]
    first_call_started_at: Mapped[datetime | None]
    call_ended_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    no_show_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]

    #: The telemedicine-limits consent the patient gave for this visit.
    consent_id: Mapped[int | None] = mapped_column(ForeignKey("consents.id"))
    #: `lifecycle.IdentityVerificationMethod`, who verified and when.
    identity_method: Mapped[str | None] = mapped_column(String(40))
    identity_verified_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    identity_verified_at: Mapped[datetime | None]

    #: The policy engine's whole decision (`Decision.model_dump(mode="json")`) at check-in and
    #: at the last attempt to start the call, for the visit's own time.
    decision_at_check_in: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    decision_at_start: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    #: The encounter the closed visit became (counts in the 30-day share and as history).
    encounter_id: Mapped[int | None] = mapped_column(ForeignKey("encounters.id"))
    #: Whole minutes of the clinician's time in the call, fixed when the visit closes.
    clinician_minutes: Mapped[int | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def visit_state(self) -> VisitState:
        return VisitState(self.state)


class CallIntervalRow(Base):
    """One stretch of the call, from start (or resume) to pause or end."""

    __tablename__ = "visit_call_intervals"

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    started_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    def interval(self) -> CallInterval:
        return CallInterval(self.started_at, self.ended_at)


class VisitNote(Base):
    """The clinician's note: SOAP, condition codes, plan, follow-up and the next appointment."""

    __tablename__ = "visit_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"),
                                          unique=True)
    subjective: Mapped[str] = mapped_column(Text, default="")
    objective: Mapped[str] = mapped_column(Text, default="")
    assessment: Mapped[str] = mapped_column(Text, default="")
    plan: Mapped[str] = mapped_column(Text, default="")
    condition_codes: Mapped[list[str]] = mapped_column(JSON, default=list)
    follow_up_interval_days: Mapped[int | None]
    next_appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    updated_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    signed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[datetime | None]


class VisitPrescription(Base):
    """A prescription written on the visit's note, as the telemedicine rules judged it.

    Only prescriptions the rules allowed are stored (a refused one is only an audit entry), each
    with everything the engine was asked (ingredient, ATC, days, controlled, indication) and
    what it answered (`policy_code`, the pack `policy_pack` in force on `policy_day`, the
    visit's Korean calendar day), so an auditor can replay the decision under the rules of that
    day. The note is one per visit, so the visit names it. A prescription taken back before the
    note is signed keeps its row with `removed_at` (the record shows what was written and
    withdrawn); the note's prescriptions are those without it.
    """

    __tablename__ = "visit_prescriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    ingredient: Mapped[str] = mapped_column(String(200))
    atc: Mapped[str | None] = mapped_column(String(7))
    #: Free text as the clinician writes it: "5 mg tablet", "1 tablet twice a day".
    strength: Mapped[str] = mapped_column(String(100), default="")
    frequency: Mapped[str] = mapped_column(String(100), default="")
    days_supply: Mapped[int]
    quantity: Mapped[int | None]
    instructions: Mapped[str] = mapped_column(Text, default="")
    #: Narcotic or psychotropic by the regulator's product classification (the clinician says).
    controlled: Mapped[bool] = mapped_column(default=False)
    #: The KCD code it is prescribed for, when not the visit's condition.
    indication: Mapped[str | None] = mapped_column(String(20))
    policy_code: Mapped[str] = mapped_column(String(40))
    policy_pack: Mapped[str | None] = mapped_column(String(60))
    policy_day: Mapped[date]
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    removed_at: Mapped[datetime | None]


class VisitAttachment(Base):
    """A file shared in the call (chat), kept with the visit. See the module docstring."""

    __tablename__ = "visit_attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    #: "user:<id>" or "guest:<guest link id>".
    uploaded_by: Mapped[str] = mapped_column(String(40))
    uploader_role: Mapped[str] = mapped_column(String(20))
    filename: Mapped[str] = mapped_column(String(200))
    #: The type found in the bytes (magic numbers, Pillow), never the one the browser claimed.
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GuestLink(Base):
    """A time-limited link for the patient's local physician to join one visit.

    Only the token's SHA-256 is kept. The link works for this visit only, until `expires_at`
    or until revoked; `used_at` is when it was first opened (it keeps working after that, so a
    dropped connection or a reload can rejoin).
    """

    __tablename__ = "visit_guest_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    local_physician_id: Mapped[int] = mapped_column(ForeignKey("local_physicians.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    language: Mapped[str] = mapped_column(String(LANGUAGE_TAG_LENGTH))
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


# --------------------------------------------------------------------------- queries


def get_visit(db: Session, visit_id: int, *, for_update: bool = False) -> Visit | None:
    query = select(Visit).where(Visit.id == visit_id)
    if for_update:
        # Two clinicians' tabs pressing "start" at once must not both win: the row lock orders
        # them on PostgreSQL (SQLite serialises writers with BEGIN IMMEDIATE already).
        query = query.with_for_update()
    return db.execute(query.execution_options(populate_existing=True)).scalar_one_or_none()


def visit_of_appointment(db: Session, appointment_id: int) -> Visit | None:
    return db.execute(
        select(Visit).where(Visit.appointment_id == appointment_id)
    ).scalar_one_or_none()


def insert_visit(db: Session, visit: Visit) -> Visit:
    """Add `visit`, or return the one a concurrent request created for the same appointment."""
    try:
        with db.begin_nested():
            db.add(visit)
            db.flush()
        return visit
    except IntegrityError:
        existing = visit_of_appointment(db, visit.appointment_id)
        if existing is None:
            raise
        return existing


def appointment_of(db: Session, visit: Visit) -> Appointment:
    appointment = db.get(Appointment, visit.appointment_id)
    if appointment is None:  # the foreign key makes this impossible short of corruption
        raise LookupError(f"visit {visit.id} has no appointment {visit.appointment_id}")
    return appointment


def call_intervals(db: Session, visit_id: int) -> list[CallIntervalRow]:
    return list(
        db.execute(
            select(CallIntervalRow)
            .where(CallIntervalRow.visit_id == visit_id)
            .order_by(CallIntervalRow.started_at, CallIntervalRow.id)
        ).scalars()
    )


def open_interval(db: Session, visit_id: int) -> CallIntervalRow | None:
    return db.execute(
        select(CallIntervalRow).where(
            CallIntervalRow.visit_id == visit_id, CallIntervalRow.ended_at.is_(None)
        )
    ).scalar_one_or_none()


def note_of(db: Session, visit_id: int) -> VisitNote | None:
    return db.execute(select(VisitNote).where(VisitNote.visit_id == visit_id)).scalar_one_or_none()


def prescriptions_of(db: Session, visit_id: int) -> list[VisitPrescription]:
    """The note's prescriptions (not removed), in the order written."""
    return list(
        db.execute(
            select(VisitPrescription)
            .where(VisitPrescription.visit_id == visit_id, VisitPrescription.removed_at.is_(None))
            .order_by(VisitPrescription.created_at, VisitPrescription.id)
        ).scalars()
    )


def attachments_of(db: Session, visit_id: int) -> list[VisitAttachment]:
    return list(
        db.execute(
            select(VisitAttachment)
            .where(VisitAttachment.visit_id == visit_id)
            .order_by(VisitAttachment.created_at, VisitAttachment.id)
        ).scalars()
    )


def guest_link_by_hash(db: Session, token_hash: str) -> GuestLink | None:
    return db.execute(
        select(GuestLink).where(GuestLink.token_hash == token_hash)
    ).scalar_one_or_none()


def live_guest_links(db: Session, visit_id: int, now: datetime) -> list[GuestLink]:
    return list(
        db.execute(
            select(GuestLink).where(
                GuestLink.visit_id == visit_id,
                GuestLink.revoked_at.is_(None),
                GuestLink.expires_at > now,
            ).order_by(GuestLink.id)
        ).scalars()
    )


def visits_of_appointments(db: Session, appointment_ids: list[int]) -> dict[int, Visit]:
    if not appointment_ids:
        return {}
    rows = db.execute(select(Visit).where(Visit.appointment_id.in_(appointment_ids))).scalars()
    return {visit.appointment_id: visit for visit in rows}
