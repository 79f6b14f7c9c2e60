"""Tables of who is who: institutions, practitioners, patients and their care relationships.

Every row of patient data carries `institution_id`: an institution's staff and systems see only
their own institution's rows, even when one deployment hosts many institutions.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jaejin.core.database import Base, utcnow
from jaejin.core.i18n import LANGUAGE_TAG_LENGTH


class Institution(Base):
    __tablename__ = "institutions"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name_ko: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    region: Mapped[str] = mapped_column(String(10))
    designations: Mapped[list[str]] = mapped_column(JSON, default=list)
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Seoul")
    cancellation_cutoff_hours: Mapped[int] = mapped_column(default=24)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def display_name(self, language: str) -> str:
        return self.name_ko if language == "ko" else self.name_en


class Practitioner(Base):
    """A licensed person; where they work is in `PractitionerRole` (as in FHIR)."""

    __tablename__ = "practitioners"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    licence_number: Mapped[str] = mapped_column(String(40), unique=True)
    profession: Mapped[str] = mapped_column(String(40))
    specialty: Mapped[str | None] = mapped_column(String(80))
    name_native: Mapped[str] = mapped_column(String(200))
    name_latin: Mapped[str] = mapped_column(String(200))
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Seoul")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    roles: Mapped[list[PractitionerRole]] = relationship(
        back_populates="practitioner", cascade="all, delete-orphan"
    )


class PractitionerRole(Base):
    __tablename__ = "practitioner_roles"
    __table_args__ = (UniqueConstraint("practitioner_id", "institution_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id", ondelete="CASCADE"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    department: Mapped[str | None] = mapped_column(String(80))
    active: Mapped[bool] = mapped_column(default=True)

    practitioner: Mapped[Practitioner] = relationship(back_populates="roles")


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("institution_id", "mrn"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    mrn: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    family_name_native: Mapped[str] = mapped_column(String(100))
    given_name_native: Mapped[str] = mapped_column(String(100))
    family_name_latin: Mapped[str] = mapped_column(String(100))
    given_name_latin: Mapped[str] = mapped_column(String(100))
    birth_date: Mapped[date]
    sex: Mapped[str] = mapped_column(String(10))
    nationality: Mapped[str] = mapped_column(String(2))
    residence_country: Mapped[str] = mapped_column(String(2))
    residence_region: Mapped[str | None] = mapped_column(String(10))
    residence_district: Mapped[str | None] = mapped_column(String(60))
    current_country: Mapped[str] = mapped_column(String(2))
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    preferred_language: Mapped[str] = mapped_column(String(LANGUAGE_TAG_LENGTH), default="ko")
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Seoul")
    nhi_covered: Mapped[bool] = mapped_column(default=True)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    long_term_care_grade: Mapped[int | None]
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    photo_on_file: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    local_physicians: Mapped[list[LocalPhysician]] = relationship(back_populates="patient")

    @property
    def display_name(self) -> str:
        return f"{self.family_name_native}{self.given_name_native}" if self.nationality in {
            "KR", "CN", "TW", "JP"
        } else f"{self.given_name_native} {self.family_name_native}"

    @property
    def latin_name(self) -> str:
        return f"{self.family_name_latin.upper()} {self.given_name_latin}"


class LocalPhysician(Base):
    """The doctor near the patient's home who takes over locally (tri-party consultations)."""

    __tablename__ = "local_physicians"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    clinic: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="local_physicians")


class Interpreter(Base):
    __tablename__ = "interpreters"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Seoul")
    active: Mapped[bool] = mapped_column(default=True)


class Encounter(Base):
    """A contact between a patient and the institution: what makes later follow-ups eligible."""

    __tablename__ = "encounters"
    __table_args__ = (
        Index("ix_encounters_patient_started", "patient_id", "started_at"),
        UniqueConstraint("institution_id", "external_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("practitioners.id"))
    external_id: Mapped[str | None] = mapped_column(String(80))
    mode: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20), default="visit")
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list)
    summary: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Consent(Base):
    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_patient_kind", "patient_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    kind: Mapped[str] = mapped_column(String(40))
    text_version: Mapped[str] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(LANGUAGE_TAG_LENGTH))
    granted_at: Mapped[datetime]
    withdrawn_at: Mapped[datetime | None]
    recorded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Invitation(Base):
    """Issued after an in-person visit so the patient can set up their own account."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(LANGUAGE_TAG_LENGTH))
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    failed_attempts: Mapped[int] = mapped_column(default=0)
