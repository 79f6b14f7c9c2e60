"""Account actions: sign-in with throttling, two-factor, invitations, system clients.

Every state change about accounts goes through a function here, so pages and the CLI behave alike.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jaejin.core.accounts import ApiClient, LoginFailure, Membership, Role, User
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.config import Settings
from jaejin.core.database import utcnow
from jaejin.core.errors import FieldError, Problem
from jaejin.core.i18n import N_
from jaejin.core.security import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    new_numeric_code,
    new_token,
    password_needs_rehash,
    token_digest,
    verify_password,
    verify_totp,
)
from jaejin.directory.store import Institution, Invitation, Patient

ADDRESS_FAILURE_LIMIT = 30


def _recent_failures(db: Session, key: str, since: datetime) -> int:
    return db.execute(
        select(func.count()).select_from(LoginFailure)
        .where(LoginFailure.throttle_key == key, LoginFailure.failed_at > since)
    ).scalar_one()


def authenticate(db: Session, settings: Settings, email: str, password: str,
                 actor: AuditActor) -> User:
    """The user for these credentials, or a Problem; failures are throttled per account and
    per address, and locked-out attempts are refused before the password is even checked."""
    normalised = email.strip().lower()
    window_start = utcnow() - timedelta(minutes=settings.login_lockout_minutes)
    account_key, address_key = f"account:{normalised}", f"address:{actor.ip_address}"
    if (
        _recent_failures(db, account_key, window_start) >= settings.login_failures_before_lockout
        or _recent_failures(db, address_key, window_start) >= ADDRESS_FAILURE_LIMIT
    ):
        record(db, actor, AuditEvent("login", "account", normalised, outcome="throttled",
                                     purpose="security"))
        db.commit()
        raise _throttled(settings)
    user = db.execute(select(User).where(User.email == normalised)).scalar_one_or_none()
    password_ok = verify_password(user.password_hash if user else None, password)
    if user is None or not password_ok or not user.active:
        db.add_all([LoginFailure(throttle_key=account_key), LoginFailure(throttle_key=address_key)])
        record(db, actor, AuditEvent("login", "account", normalised, outcome="failure",
                                     purpose="security"))
        db.commit()
        raise Problem(401, "INVALID_CREDENTIALS", N_("The e-mail or password is not right."))
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    db.execute(delete(LoginFailure).where(LoginFailure.throttle_key == account_key))
    return user


def _throttled(settings: Settings) -> Problem:
    return Problem(429, "LOGIN_THROTTLED",
                   N_("Too many failed attempts. Try again in {minutes} minutes."),
                   params={"minutes": settings.login_lockout_minutes},
                   headers={"Retry-After": str(settings.login_lockout_minutes * 60)})


def check_second_factor(db: Session, settings: Settings, user: User, code: str,
                        now: datetime) -> bool:
    """Whether `code` is the user's next one-time code. Wrong codes are counted like wrong
    passwords: six digits fall to guessing without a limit, so after too many the account's
    second factor is locked (LOGIN_THROTTLED) for the lockout window, even for the right code."""
    key = f"two_factor:{user.id}"
    window_start = now - timedelta(minutes=settings.login_lockout_minutes)
    if _recent_failures(db, key, window_start) >= settings.login_failures_before_lockout:
        raise _throttled(settings)
    step = (verify_totp(user.totp_secret, code, now, user.totp_last_used_step)
            if user.totp_secret else None)
    if step is None:
        db.add(LoginFailure(throttle_key=key, failed_at=now))
        return False
    user.totp_last_used_step = step
    db.execute(delete(LoginFailure).where(LoginFailure.throttle_key == key))
    return True


def validate_new_password(password: str, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Problem(422, "VALIDATION_FAILED", N_("Some fields are not valid."), errors=[
            FieldError(field, "PASSWORD_TOO_SHORT",
                       N_("Use at least {count} characters."), {"count": MIN_PASSWORD_LENGTH})
        ])


def create_user(db: Session, *, email: str, password: str, display_name: str,
                language: str = "ko", time_zone: str = "Asia/Seoul",
                memberships: Sequence[tuple[int, Role]] = ()) -> User:
    validate_new_password(password)
    normalised = email.strip().lower()
    if db.execute(select(User.id).where(User.email == normalised)).first():
        raise Problem(409, "EMAIL_TAKEN", N_("An account with this e-mail already exists."))
    user = User(email=normalised, password_hash=hash_password(password),
                display_name=display_name, language=language, time_zone=time_zone)
    user.memberships = [Membership(institution_id=i, role=str(r)) for i, r in memberships]
    try:
        # In a savepoint: someone registering the same address at this moment makes the
        # insert fail, which is the same answer as above, not a server error.
        with db.begin_nested():
            db.add(user)
    except IntegrityError:
        raise Problem(409, "EMAIL_TAKEN",
                      N_("An account with this e-mail already exists.")) from None
    return user


# --------------------------------------------------------------------------------- invitations


@dataclass(frozen=True, slots=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # goes in the link
    code: str  # typed by the patient if the link is not at hand


def issue_invitation(db: Session, settings: Settings, patient: Patient, language: str,
                     actor: AuditActor, created_by_user_id: int | None = None) -> IssuedInvitation:
    token, code = new_token(), new_numeric_code(8)
    invitation = Invitation(
        institution_id=patient.institution_id, patient_id=patient.id,
        token_hash=token_digest(token), code_hash=token_digest(f"{patient.id}:{code}"),
        language=language, created_by_user_id=created_by_user_id,
        expires_at=utcnow() + timedelta(days=settings.invitation_lifetime_days),
    )
    db.add(invitation)
    db.flush()
    record(db, actor, AuditEvent("create", "invitation", str(invitation.id), patient.id,
                                 patient.institution_id, purpose="registration"))
    return IssuedInvitation(invitation, token, code)


def find_invitation_by_token(db: Session, token: str) -> Invitation | None:
    invitation = db.execute(
        select(Invitation).where(Invitation.token_hash == token_digest(token))
    ).scalar_one_or_none()
    if invitation is None or invitation.accepted_at or invitation.expires_at < utcnow():
        return None
    return invitation


def find_invitation_by_code(db: Session, institution_code: str, mrn: str, birth_date: date,
                            code: str) -> Invitation | None:
    """Look up by what the patient was told at the desk; the birth date guards a guessed MRN."""
    patient = db.execute(
        select(Patient).join(Institution, Institution.id == Patient.institution_id)
        .where(Institution.code == institution_code, Patient.mrn == mrn)
    ).scalar_one_or_none()
    if patient is None or patient.birth_date != birth_date:
        return None
    candidates = db.execute(
        select(Invitation).where(Invitation.patient_id == patient.id,
                                 Invitation.accepted_at.is_(None),
                                 Invitation.expires_at > utcnow())
    ).scalars().all()
    wanted = token_digest(f"{patient.id}:{code.strip()}")
    for invitation in candidates:
        if invitation.failed_attempts >= 5:
            continue
        if secrets.compare_digest(invitation.code_hash, wanted):
            return invitation
        invitation.failed_attempts += 1
    return None


def _locked(db: Session, model: type[Invitation] | type[Patient], row_id: int) -> Any:
    return db.execute(select(model).where(model.id == row_id).with_for_update()
                      .execution_options(populate_existing=True)).scalar_one()


def accept_invitation(db: Session, invitation: Invitation, *, email: str, password: str,
                      language: str, time_zone: str, actor: AuditActor) -> User:
    # Re-read under a row lock: people accepting one invitation at once queue here, and only
    # the first still finds it open (otherwise each made an account for the same patient).
    invitation = _locked(db, Invitation, invitation.id)
    if invitation.accepted_at is not None or invitation.expires_at < utcnow():
        raise Problem(410, "INVITATION_USED", N_(
            "This invitation link has expired or was already used. "
            "Ask your clinic for a new one."))
    patient: Patient = _locked(db, Patient, invitation.patient_id)
    normalised = email.strip().lower()
    existing = db.execute(select(User).where(User.email == normalised)).scalar_one_or_none()
    if patient.user_id is not None:
        raise Problem(409, "ALREADY_REGISTERED",
                      N_("This patient already has an account. Sign in instead."))
    if existing is not None:
        raise Problem(409, "EMAIL_TAKEN", N_("An account with this e-mail already exists."))
    user = create_user(
        db, email=normalised, password=password, display_name=patient.display_name,
        language=language, time_zone=time_zone,
        memberships=[(patient.institution_id, Role.PATIENT)],
    )
    patient.user_id = user.id
    patient.preferred_language = language
    patient.time_zone = time_zone
    invitation.accepted_at = utcnow()
    record(db, actor, AuditEvent("accept", "invitation", str(invitation.id), patient.id,
                                 patient.institution_id, purpose="registration"))
    return user


# ------------------------------------------------------------------------------ system clients

KNOWN_SCOPES = frozenset({
    "directory.read", "directory.write", "policy.evaluate", "scheduling.read",
    "scheduling.write", "monitoring.write", "monitoring.read",
})


def create_client(db: Session, institution: Institution, name: str,
                  scopes: list[str]) -> tuple[ApiClient, str]:
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown:
        raise Problem(422, "UNKNOWN_SCOPE", N_("Unknown scope: {scopes}."),
                      params={"scopes": ", ".join(unknown)})
    secret = new_token(32)
    client = ApiClient(client_id=f"jaejin-{new_token(9)}", secret_hash=hash_password(secret),
                       institution_id=institution.id, name=name, scopes=sorted(set(scopes)))
    db.add(client)
    db.flush()
    record(db, AuditActor.system("cli"), AuditEvent("create", "api_client", client.client_id,
                                                   institution_id=institution.id,
                                                   purpose="operations"))
    return client, secret


def authenticate_client(db: Session, client_id: str, secret: str) -> ApiClient | None:
    client = db.execute(
        select(ApiClient).where(ApiClient.client_id == client_id)
    ).scalar_one_or_none()
    valid = verify_password(client.secret_hash if client else None, secret)
    if client is None or not valid or not client.active:
        return None
    return client
