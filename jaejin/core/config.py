"""Settings from `JAEJIN_*` environment variables (and an optional `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The development secret. Fine on a laptop, refused in production.
DEVELOPMENT_SECRET_KEY = "jaejin-development-secret-do-not-use-in-production"  # noqa: S105

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_ROOT / 'var' / 'jaejin.db'}"


class InsecureConfiguration(RuntimeError):
    """Raised when production settings would be unsafe to run with."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JAEJIN_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str = DEVELOPMENT_SECRET_KEY
    redis_url: str | None = None
    public_base_url: str = "http://127.0.0.1:8000"

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    mail_from: str = "Jaejin <no-reply@jaejin.local>"
    sms_transport: Literal["log"] = "log"
    #: When appointment reminders go out, in minutes before the start (JSON list in the env).
    reminder_offsets_minutes: list[int] = Field(default_factory=lambda: [24 * 60, 60])

    stun_urls: list[str] = Field(default_factory=list)
    turn_urls: list[str] = Field(default_factory=list)
    turn_secret: str | None = None
    turn_credential_ttl_seconds: int = 3600

    session_lifetime_minutes: int = 12 * 60
    access_token_lifetime_seconds: int = 900
    invitation_lifetime_days: int = 14
    max_request_body_bytes: int = 10 * 1024 * 1024
    login_failures_before_lockout: int = 5
    login_lockout_minutes: int = 15
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    policy_packs_directory: Path | None = None
    #: How long a process reuses an institution's 30-day telemedicine counts (0: never);
    #: counts near the share cap are always exact (docs/policy.md, "Speed").
    policy_share_cache_seconds: float = Field(default=60, ge=0)
    #: How long a process trusts a system client's verified bearer token without looking the
    #: client up again (0: look up on every call); deactivation takes effect within this time.
    api_client_cache_seconds: float = Field(default=5, ge=0, le=300)
    #: How often the audit sealer (in `jaejin worker` and `jaejin serve`) chains the entries
    #: written since it last ran: the window in which a new entry is not yet tamper-evident.
    audit_seal_seconds: float = Field(default=1, gt=0, le=300)
    #: An entry left unsealed longer than this is reported by `jaejin audit verify` (the sealer
    #: is not running).
    audit_seal_overdue_seconds: float = Field(default=300, gt=0)

    @field_validator("database_url")
    @classmethod
    def _prefer_psycopg3(cls, value: str) -> str:
        # Operators write the URL their other tools accept; SQLAlchemy needs the driver named.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix):]
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            if self.secret_key == DEVELOPMENT_SECRET_KEY or len(self.secret_key) < 32:
                raise InsecureConfiguration(
                    "JAEJIN_SECRET_KEY must be set to a random value of at least 32 characters "
                    "in production (e.g. the output of `openssl rand -base64 48`)."
                )
            if not self.public_base_url.startswith("https://"):
                raise InsecureConfiguration(
                    "JAEJIN_PUBLIC_BASE_URL must be an https:// URL in production."
                )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
