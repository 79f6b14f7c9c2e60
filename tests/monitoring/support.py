"""Helpers shared by the monitoring logic tests: readings, plans, emergency numbers (the
catalogues are compiled once per run by tests/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from zoneinfo import ZoneInfo

from jaejin.monitoring.readings import (
    CANONICAL_UNITS,
    LOINC_GLUCOSE_BLOOD_MASS,
    LOINC_GLUCOSE_CGM,
    METRIC_SPECS,
    Metric,
    Reading,
)

SEOUL = ZoneInfo("Asia/Seoul")
NOW = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)

#: Medical emergency numbers from DOMAIN.md section 3, as the policy country packs will give them.
EMERGENCY_NUMBERS = {
    "KR": "119", "JP": "119", "CN": "120", "US": "911", "CA": "911", "TW": "119",
    "TH": "1669", "MN": "103", "VN": "115", "RU": "103", "KZ": "103", "AE": "998",
    "GB": "999", "DE": "112", "FR": "112",
}


def emergency_number_for(country_code: str) -> str:
    return EMERGENCY_NUMBERS[country_code.upper()]


_serial = count()


def reading(
    metric: Metric,
    value: float,
    at: datetime = NOW,
    *,
    patient: str = "patient-1",
    loinc: str | None = None,
    unit: str | None = None,
    panel_id: str | None = None,
    received_after: timedelta = timedelta(minutes=1),
) -> Reading:
    return Reading(
        patient_ref=patient,
        metric=metric,
        value=value,
        unit=unit if unit is not None else CANONICAL_UNITS[metric],
        loinc=loinc if loinc is not None else METRIC_SPECS[metric].primary_loinc,
        effective_at=at.astimezone(SEOUL),
        source_device="test-device",
        received_at=at + received_after,
        panel_id=panel_id,
    )


def blood_pressure(
    systolic: float, diastolic: float, at: datetime = NOW, *, patient: str = "patient-1"
) -> tuple[Reading, Reading]:
    panel = f"panel-{next(_serial)}"
    return (
        reading(Metric.SYSTOLIC, systolic, at, patient=patient, panel_id=panel),
        reading(Metric.DIASTOLIC, diastolic, at, patient=patient, panel_id=panel),
    )


def blood_glucose(value: float, at: datetime = NOW, *, patient: str = "patient-1") -> Reading:
    return reading(Metric.GLUCOSE, value, at, patient=patient, loinc=LOINC_GLUCOSE_BLOOD_MASS)


def cgm(value: float, at: datetime = NOW, *, patient: str = "patient-1") -> Reading:
    return reading(Metric.GLUCOSE, value, at, patient=patient, loinc=LOINC_GLUCOSE_CGM)


def cgm_series(values: list[float], end: datetime = NOW, *, patient: str = "patient-1"):
    """CGM readings every 5 minutes ending at `end`, oldest first."""
    first = end - timedelta(minutes=5 * (len(values) - 1))
    return [
        cgm(value, first + timedelta(minutes=5 * index), patient=patient)
        for index, value in enumerate(values)
    ]
