"""Monitoring tables: readings, care plans, alerts, Nightscout secrets and file uploads.

Readings are written on the hot path with SQLAlchemy Core (`jaejin.monitoring.ingest`), never
one ORM object per reading; the ORM classes here describe the schema and serve the slower
workflow screens (care plans, alerts, uploads).

Every row carries `institution_id` (copied from the patient) so an institution's staff and
systems only ever query their own rows.

Identity of a person acting on a row (`created_by`, `acknowledged_by`, `resolved_by`, ...) is
stored as `actor_ref(principal)`: `"user:12"` or `"client:3"`, the same text the pure `Alert`
keeps in its `acknowledged_by`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Final

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from jaejin.core.database import Base, utcnow
from jaejin.core.i18n import LANGUAGE_TAG_LENGTH
from jaejin.monitoring.careplans import CarePlan, PlanTemplate, template_plan
from jaejin.monitoring.readings import Metric, Reading

#: 64-bit ids where tables grow without bound; SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class ReadingChannel:
    """How a reading reached Jaejin (stored in `ReadingRow.channel`)."""

    FHIR: Final = "fhir"
    JSON: Final = "json"
    CSV: Final = "csv"
    APPLE_HEALTH: Final = "apple_health"
    NIGHTSCOUT: Final = "nightscout"


class ReadingRow(Base):
    """One reading of one metric, the value in the metric's canonical UCUM unit.

    `effective_at` is stored in UTC and `effective_offset_minutes` keeps the offset the device
    reported, so the reading is shown at the patient's local clock time of the measurement.
    `fingerprint` (SHA-256 of `parsers.reading_fingerprint`, 32 bytes) makes an exact duplicate
    a no-op; `idempotency_key` lets a sender retry safely. Both are unique per patient.
    """

    __tablename__ = "monitoring_readings"
    __table_args__ = (
        UniqueConstraint("patient_id", "fingerprint", name="uq_monitoring_readings_fingerprint"),
        UniqueConstraint(
            "patient_id", "idempotency_key", name="uq_monitoring_readings_idempotency_key"
        ),
        # The trend query (one patient, one metric, a date range) reads only this index on
        # PostgreSQL: the value rides along in the leaf pages.
        Index(
            "ix_monitoring_readings_trend",
            "patient_id",
            "metric",
            "effective_at",
            postgresql_include=["value"],
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    #: Copied from the patient on insert. No foreign key of its own: the patient's already
    #: guarantees it, and each constraint trigger costs on every one of millions of inserts.
    institution_id: Mapped[int]
    metric: Mapped[str] = mapped_column(String(20))
    loinc: Mapped[str] = mapped_column(String(20))
    value: Mapped[float] = mapped_column(Double())
    unit: Mapped[str] = mapped_column(String(20))
    effective_at: Mapped[datetime]
    effective_offset_minutes: Mapped[int] = mapped_column(SmallInteger)
    source_device: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime]
    channel: Mapped[str] = mapped_column(String(20))
    panel_id: Mapped[str | None] = mapped_column(String(40))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    idempotency_key: Mapped[str | None] = mapped_column(String(220))
    #: Where a wound photo's image is stored (documents capability), for `wound_photo` only.
    attachment_ref: Mapped[str | None] = mapped_column(String(200))


class CarePlanRow(Base):
    """A patient's care plan: a template plus a clinician's overrides (`CarePlanOverrides`).

    A new plan replaces the old one by deactivating it; at most one plan per patient is
    active (a partial unique index), so history stays readable.
    """

    __tablename__ = "monitoring_care_plans"
    __table_args__ = (
        Index(
            "uq_monitoring_care_plans_active",
            "patient_id",
            unique=True,
            postgresql_where=text("active"),
            sqlite_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    template: Mapped[str] = mapped_column(String(40))
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(80))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deactivated_at: Mapped[datetime | None]
    #: When the scheduled checks (missing data, trends, CGM metrics) last ran for this plan; a
    #: worker claims plans whose time has come, so several workers never evaluate one twice.
    evaluated_at: Mapped[datetime | None] = mapped_column(index=True)


class AlertStatus:
    """Values of `AlertRow.status` (the same strings as `alerts.AlertState`)."""

    OPEN: Final = "open"
    ACKNOWLEDGED: Final = "acknowledged"
    SNOOZED: Final = "snoozed"
    RESOLVED: Final = "resolved"


class AlertRow(Base):
    """One alert episode as the care team works it.

    Signals of one `episode_key` fold into the patient's unresolved alert of that key (at most
    one: a partial unique index), counted in `signal_count`; `message` and `params` are the
    explanation of the worst signal (an English msgid and its parameters, as in
    `alerts.AlertSignal`), rendered in the reader's language.
    """

    __tablename__ = "monitoring_alerts"
    __table_args__ = (
        Index(
            "uq_monitoring_alerts_open_episode",
            "patient_id",
            "episode_key",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
            sqlite_where=text("status <> 'resolved'"),
        ),
        Index("ix_monitoring_alerts_institution_status", "institution_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    episode_key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=AlertStatus.OPEN)
    metric: Mapped[str | None] = mapped_column(String(20))
    opened_at: Mapped[datetime]
    last_signal_at: Mapped[datetime]
    #: When the measurement behind the latest signal was taken.
    last_observed_at: Mapped[datetime]
    signal_count: Mapped[int] = mapped_column(default=1)
    message: Mapped[str] = mapped_column(String(400))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Since when nobody has acknowledged it (reset when a worse signal reopens it).
    unacknowledged_since: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(80))
    acknowledged_at: Mapped[datetime | None]
    snoozed_until: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(80))
    resolved_at: Mapped[datetime | None]
    resolution_note: Mapped[str] = mapped_column(Text, default="")
    escalated_at: Mapped[datetime | None]
    escalated_to: Mapped[str | None] = mapped_column(String(200))


class EscalationPolicyRow(Base):
    """How an institution escalates a critical alert nobody acknowledged.

    After `escalate_after_minutes` the on-call clinician (`on_call_user_id`, a clinician of the
    institution who took the on-call duty) is notified by e-mail, and by SMS to `on_call_phone`
    when given. An institution without a row uses the defaults (15 minutes; the clinician who
    set the patient's care plan).
    """

    __tablename__ = "monitoring_escalation_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), unique=True)
    escalate_after_minutes: Mapped[int] = mapped_column(default=15)
    on_call_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    on_call_phone: Mapped[str | None] = mapped_column(String(32))
    updated_by: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class NightscoutSecretRow(Base):
    """A patient's Nightscout API secret, for CGM uploaders (xDrip+, Spike, AndroidAPS, ...).

    Uploaders send SHA-1 (or SHA-512) of the secret in the `api-secret` header, so the header
    itself is the credential: storing only the digests would protect nothing more. The secret is
    kept as given (the patient's page shows it again to type into a new phone) and its two
    digests are indexed so `POST /api/v1/entries` can find the patient by the header alone.
    Encryption at rest is not done here: it is the database's (disk/volume encryption).
    `url_token` names the patient in the per-patient base URL `/nightscout/<url_token>/`.
    """

    __tablename__ = "monitoring_nightscout_secrets"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    secret: Mapped[str] = mapped_column(String(100))
    secret_sha1: Mapped[str] = mapped_column(String(40), unique=True)
    secret_sha512: Mapped[str] = mapped_column(String(128), unique=True)
    url_token: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class UploadStatus:
    """Values of `UploadRow.status`, in the order an upload goes through them."""

    QUEUED: Final = "queued"
    PARSING: Final = "parsing"
    DONE: Final = "done"
    FAILED: Final = "failed"


class UploadRow(Base):
    """A CSV or Apple Health file uploaded from the patient's page, parsed in the background.

    The page polls `GET /api/v1/monitoring/uploads/{id}` for `bytes_read`/`bytes_total` (the
    progress bar) and the counts; a failed file keeps `error_code` and stores nothing.
    """

    __tablename__ = "monitoring_uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    filename: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default=UploadStatus.QUEUED)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    items_seen: Mapped[int] = mapped_column(default=0)
    readings_created: Mapped[int] = mapped_column(default=0)
    items_created: Mapped[int] = mapped_column(default=0)
    items_duplicate: Mapped[int] = mapped_column(default=0)
    items_refused: Mapped[int] = mapped_column(default=0)
    items_skipped: Mapped[int] = mapped_column(default=0)
    alerts_raised: Mapped[int] = mapped_column(default=0)
    #: The first refused items (index, pointer, code, message params) for the page to show.
    problems: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    language: Mapped[str] = mapped_column(String(LANGUAGE_TAG_LENGTH), default="ko")
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


# --------------------------------------------------------------------------------- helpers


def actor_ref(kind: str, subject_id: int) -> str:
    """How a person or client acting on a row is recorded: `user:12`, `client:3`."""
    return f"{kind}:{subject_id}"


def offset_minutes(moment: datetime) -> int:
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("an aware datetime is required")
    return int(offset.total_seconds() // 60)


def local_time(utc_moment: datetime, minutes: int) -> datetime:
    """A stored UTC instant back at the offset the device reported."""
    return utc_moment.astimezone(timezone(timedelta(minutes=minutes)))


#: Columns needed to rebuild a `Reading` (in this order; see `reading_from_values`).
READING_COLUMNS = (
    ReadingRow.patient_id,
    ReadingRow.metric,
    ReadingRow.value,
    ReadingRow.unit,
    ReadingRow.loinc,
    ReadingRow.effective_at,
    ReadingRow.effective_offset_minutes,
    ReadingRow.source_device,
    ReadingRow.received_at,
    ReadingRow.panel_id,
    ReadingRow.attachment_ref,
)


def reading_from_values(values: Sequence[Any]) -> Reading:
    """A pure `Reading` from a row selected with `READING_COLUMNS`."""
    (patient_id, metric, value, unit, loinc, effective_at, offset, device, received_at,
     panel_id, attachment_ref) = values
    return Reading(
        patient_ref=str(patient_id),
        metric=Metric(metric),
        value=float(value),
        unit=unit,
        loinc=loinc,
        effective_at=local_time(effective_at, offset),
        source_device=device,
        received_at=received_at,
        panel_id=panel_id,
        attachment_ref=attachment_ref,
    )


def readings_between(
    db: Session,
    patient_id: int,
    since: datetime,
    until: datetime | None = None,
    metrics: Iterable[Metric] | None = None,
) -> list[Reading]:
    """One patient's readings with `since <= effective_at < until`, oldest first."""
    query = select(*READING_COLUMNS).where(
        ReadingRow.patient_id == patient_id, ReadingRow.effective_at >= since.astimezone(UTC)
    )
    if until is not None:
        query = query.where(ReadingRow.effective_at < until.astimezone(UTC))
    if metrics is not None:
        query = query.where(ReadingRow.metric.in_([metric.value for metric in metrics]))
    query = query.order_by(ReadingRow.effective_at, ReadingRow.id)
    return [reading_from_values(row) for row in db.execute(query)]


def trend_points(
    db: Session, patient_id: int, metric: Metric, since: datetime, until: datetime
) -> list[tuple[datetime, float]]:
    """(UTC instant, value) of one metric in `[since, until)`, oldest first: the chart query.

    Reads only the trend index on PostgreSQL (index-only scan when the table is vacuumed).
    """
    rows = db.execute(
        select(ReadingRow.effective_at, ReadingRow.value)
        .where(
            ReadingRow.patient_id == patient_id,
            ReadingRow.metric == metric.value,
            ReadingRow.effective_at >= since.astimezone(UTC),
            ReadingRow.effective_at < until.astimezone(UTC),
        )
        .order_by(ReadingRow.effective_at)
    )
    return [(moment, float(value)) for moment, value in rows]


#: The plan of a patient nobody enrolled: default thresholds (DOMAIN.md section 4), so critical
#: readings still raise alerts, but no metric is expected and nothing can go "missing".
UNENROLLED_PLAN: Final[CarePlan] = replace(
    template_plan(PlanTemplate.HYPERTENSION),
    monitored_metrics=frozenset(),
    expected_every={},
    missing_after={},
)


def active_plan_row(db: Session, patient_id: int) -> CarePlanRow | None:
    return db.execute(
        select(CarePlanRow).where(CarePlanRow.patient_id == patient_id, CarePlanRow.active)
    ).scalar_one_or_none()


def plan_from_row(row: CarePlanRow | None) -> CarePlan:
    """The `CarePlan` a stored plan row describes (`UNENROLLED_PLAN` for None)."""
    if row is None:
        return UNENROLLED_PLAN
    return plan_of(row.template, row.overrides)


def plan_of(template: str | None, overrides: Mapping[str, Any] | None) -> CarePlan:
    """The `CarePlan` of a stored template and overrides (`UNENROLLED_PLAN` without a template).

    Built once per distinct plan: applying overrides validates them, about half a millisecond
    that every reading sent would otherwise spend again. A `CarePlan` is immutable, so one
    instance serves every request.
    """
    if template is None:
        return UNENROLLED_PLAN
    return _built_plan(template, orjson.dumps(overrides or {}, option=orjson.OPT_SORT_KEYS))


@lru_cache(maxsize=4096)
def _built_plan(template: str, overrides: bytes) -> CarePlan:
    base = template_plan(PlanTemplate(template))
    given = orjson.loads(overrides)
    return base.with_overrides(given) if given else base


def active_plan(db: Session, patient_id: int) -> CarePlan:
    """The patient's active care plan with its overrides, or `UNENROLLED_PLAN` if none.

    Both ingest (critical alerts) and the scheduled evaluation use this one function.
    """
    return plan_from_row(active_plan_row(db, patient_id))
