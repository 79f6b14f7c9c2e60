"""Builders for the workflow, page and job tests (no tests here): care plans, stored readings
and alerts put in the database the way the application does it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jaejin.core.database import session_factory
from jaejin.directory.store import Patient
from jaejin.monitoring.alerts import AlertSignal, evaluate_on_ingest
from jaejin.monitoring.careplans import PlanTemplate, template_plan
from jaejin.monitoring.ingest import IngestPatient, ingest_items, patient_context, record_signals
from jaejin.monitoring.parsers import ParsedItem
from jaejin.monitoring.readings import (
    CANONICAL_UNITS,
    LOINC_GLUCOSE_CGM,
    METRIC_SPECS,
    Metric,
    Reading,
)
from jaejin.monitoring.store import AlertRow, CarePlanRow, ReadingChannel
from tests.core.helpers import fast_password_hashing

SEOUL = ZoneInfo("Asia/Seoul")


@pytest.fixture(autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Import into a test module: its people get cheap argon2 parameters (production
    parameters are tested with the accounts)."""
    with fast_password_hashing():
        yield


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def add_plan(db: Session, patient: Patient, template: PlanTemplate,
             overrides: dict[str, Any] | None = None, *, created_by: str = "user:1",
             created_at: datetime | None = None) -> CarePlanRow:
    row = CarePlanRow(patient_id=patient.id, institution_id=patient.institution_id,
                      template=template.value, overrides=overrides or {}, created_by=created_by,
                      active=True, created_at=created_at or now_utc())
    db.add(row)
    db.commit()
    return row


def reading(patient: Patient, metric: Metric, value: float, at: datetime, *,
            loinc: str | None = None, panel_id: str | None = None) -> Reading:
    return Reading(
        patient_ref=str(patient.id), metric=metric, value=float(value),
        unit=CANONICAL_UNITS[metric],
        loinc=loinc or METRIC_SPECS[metric].primary_loinc, effective_at=at.astimezone(SEOUL),
        source_device="test-device", received_at=at + timedelta(minutes=1), panel_id=panel_id,
    )


def blood_pressure(patient: Patient, systolic: float, diastolic: float,
                   at: datetime) -> tuple[Reading, Reading]:
    panel = f"p-{patient.id}-{at.timestamp():.0f}"
    return (reading(patient, Metric.SYSTOLIC, systolic, at, panel_id=panel),
            reading(patient, Metric.DIASTOLIC, diastolic, at, panel_id=panel))


def cgm(patient: Patient, value: float, at: datetime) -> Reading:
    return reading(patient, Metric.GLUCOSE, value, at, loinc=LOINC_GLUCOSE_CGM)


def store_readings(db: Session, patient: Patient, items: Iterable[Sequence[Reading]],
                   received_at: datetime | None = None) -> Any:
    """Store readings through the real ingest (critical ones raise alerts as on the API)."""
    parsed = [ParsedItem(index, tuple(group)) for index, group in enumerate(items)]
    result = ingest_items(db, IngestPatient.of(patient), parsed, ReadingChannel.JSON,
                          received_at=received_at)
    db.commit()
    return result


def raise_alert(db: Session, patient: Patient, readings: Sequence[Reading]) -> AlertRow:
    """An alert opened from readings evaluated as ingest does, without storing them."""
    plan = template_plan(PlanTemplate.HYPERTENSION)
    context = patient_context(IngestPatient.of(patient))
    signals: list[AlertSignal] = []
    for one in readings:
        signals.extend(evaluate_on_ingest(one, plan, readings, patient=context))
    assert signals, "these readings raise no alert"
    raised = record_signals(db, IngestPatient.of(patient), signals)
    db.commit()
    row = db.get(AlertRow, raised[0].alert_id)
    # End the read transaction at once: on SQLite it holds the write lock the app needs.
    db.commit()
    assert row is not None
    return row


def alerts_of(engine: Engine, patient: Patient) -> list[AlertRow]:
    with session_factory(engine)() as session:
        return list(session.execute(
            select(AlertRow).where(AlertRow.patient_id == patient.id).order_by(AlertRow.id)
        ).scalars())
