"""Accounts: people who log in, their roles per institution, sessions and system clients."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jaejin.core.database import Base, utcnow
from jaejin.core.i18n import LANGUAGE_TAG_LENGTH


class Role(StrEnum):
    PATIENT = "patient"
    CLINICIAN = "clinician"
    COORDINATOR = "coordinator"
    INTERPRETER = "interpreter"
    INSTITUTION_ADMIN = "institution_admin"
    AUDITOR = "auditor"
    SYSTEM_CLIENT = "system_client"


#: Roles whose accounts must use two-factor authentication.
TWO_FACTOR_REQUIRED = frozenset({Role.CLINICIAN, Role.INSTITUTION_ADMIN})
#: Staff roles that may read an institution's patient records.
CARE_TEAM = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN})


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(LANGUAGE_TAG_LENGTH), default="ko")
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Seoul")
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled: Mapped[bool] = mapped_column(default=False)
    totp_last_used_step: Mapped[int | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def roles(self) -> set[Role]:
        return {Role(m.role) for m in self.memberships}

    @property
    def needs_two_factor(self) -> bool:
        return bool(self.roles & TWO_FACTOR_REQUIRED)


class Membership(Base):
    """A user's role at one institution; patients are members of the institutions treating them."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "institution_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    role: Mapped[str] = mapped_column(String(30))

    user: Mapped[User] = relationship(back_populates="memberships")


class WebSession(Base):
    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    two_factor_passed: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))


class LoginFailure(Base):
    """One failed login, counted per account and per address to throttle guessing."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "throttle_key", "failed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    throttle_key: Mapped[str] = mapped_column(String(300))
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiClient(Base):
    """A hospital system or device gateway using OAuth 2.0 client credentials."""

    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
