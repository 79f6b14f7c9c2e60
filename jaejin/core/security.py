"""Secrets handling: password hashing, one-time codes, tokens. No storage here."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2id with the library's defaults (RFC 9106 low-memory profile).
_password_hasher = PasswordHasher()
#: A valid hash compared against when the account does not exist, so timing reveals nothing.
_DUMMY_HASH = _password_hasher.hash("jaejin-no-such-account")

MIN_PASSWORD_LENGTH = 10
TOTP_ISSUER = "Jaejin"
ACCESS_TOKEN_AUDIENCE = "jaejin-api"  # noqa: S105 - an audience name, not a secret


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _password_hasher.verify(password_hash or _DUMMY_HASH, password) and bool(
            password_hash
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _password_hasher.check_needs_rehash(password_hash)


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def token_digest(token: str) -> str:
    """What we store for a bearer secret: a database leak must not yield usable tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equals(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())


def new_numeric_code(digits: int = 8) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(digits))


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=TOTP_ISSUER)


_TOTP_CODE = re.compile(r"[0-9]{6}")


def verify_totp(secret: str, code: str, now: datetime, last_used_step: int | None) -> int | None:
    """The matched time step, or None; a step already used is refused (no replay)."""
    cleaned = code.replace(" ", "").strip()
    # ASCII digits only: str.isdigit passes "²" or "١", which hmac.compare_digest refuses
    # (TypeError) where it should simply not match.
    if not _TOTP_CODE.fullmatch(cleaned):
        return None
    totp = pyotp.TOTP(secret)
    current_step = int(now.timestamp()) // totp.interval
    for step in (current_step, current_step - 1, current_step + 1):
        if last_used_step is not None and step <= last_used_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), cleaned):
            return step
    return None


def issue_access_token(
    secret_key: str, subject: str, claims: dict[str, Any], lifetime: timedelta
) -> tuple[str, datetime]:
    issued = datetime.now(UTC)
    expires = issued + lifetime
    payload = {
        "sub": subject,
        "aud": ACCESS_TOKEN_AUDIENCE,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": new_token(12),
        **claims,
    }
    return jwt.encode(payload, secret_key, algorithm="HS256"), expires


def decode_access_token(secret_key: str, token: str) -> dict[str, Any] | None:
    try:
        decoded: dict[str, Any] = jwt.decode(
            token, secret_key, algorithms=["HS256"], audience=ACCESS_TOKEN_AUDIENCE
        )
    except jwt.PyJWTError:
        return None
    return decoded
