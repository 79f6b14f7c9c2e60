"""Shared vocabulary of remote monitoring: metrics, their codes and units, one reading, validation.

Everything downstream (parsers, charts, alerts, CGM metrics, triage) speaks in `Reading` values
whose `value` is already in the metric's canonical UCUM unit. Converting from what a device sent
(mmol/L, lb, °F) is the parsers' job (`jaejin.monitoring.units`); this module only checks that a
reading is plausible before anyone acts on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from types import MappingProxyType

from jaejin.core.i18n import N_, translate


class Metric(StrEnum):
    """What was measured. One value per metric: a blood-pressure panel is two readings."""

    SYSTOLIC = "systolic"
    DIASTOLIC = "diastolic"
    HEART_RATE = "heart_rate"
    GLUCOSE = "glucose"
    SPO2 = "spo2"
    BODY_WEIGHT = "body_weight"
    BODY_TEMPERATURE = "body_temperature"
    WOUND_PHOTO = "wound_photo"


class GlucoseSource(StrEnum):
    """Where a glucose value came from; decided by its LOINC code, never by the device name."""

    BLOOD = "blood"
    CGM = "cgm"


#: LOINC 85354-9 "Blood pressure panel with all children optional": it groups a systolic and a
#: diastolic reading, which share a `panel_id`.
BLOOD_PRESSURE_PANEL_LOINC = "85354-9"

LOINC_SYSTOLIC = "8480-6"
LOINC_DIASTOLIC = "8462-4"
LOINC_HEART_RATE = "8867-4"
LOINC_GLUCOSE_BLOOD_MASS = "2339-0"
#: Glucose [Moles/volume] in Blood: accepted as a code, but the value is stored in mg/dL after
#: the parser converted it.
LOINC_GLUCOSE_BLOOD_MOLES = "15074-8"
LOINC_GLUCOSE_CGM = "99504-3"
LOINC_SPO2_PULSE_OXIMETRY = "59408-5"
LOINC_SPO2_ARTERIAL = "2708-6"
LOINC_BODY_WEIGHT = "29463-7"
LOINC_BODY_TEMPERATURE = "8310-5"
#: LOINC 72170-4 "Photographic image": the wound photo itself is stored elsewhere and referenced
#: by `Reading.attachment_ref`; its `value` is the number of images (1).
LOINC_PHOTOGRAPHIC_IMAGE = "72170-4"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    metric: Metric
    #: Every LOINC code accepted for the metric; the first is the one written on export.
    loinc_codes: tuple[str, ...]
    #: Canonical UCUM unit of `Reading.value`.
    unit: str
    #: Lowest and highest value a living patient's device can honestly report, inclusive.
    physiological_limits: tuple[float, float] | None
    #: English label (msgid).
    label: str

    @property
    def primary_loinc(self) -> str:
        return self.loinc_codes[0]


METRIC_SPECS: Mapping[Metric, MetricSpec] = MappingProxyType(
    {
        Metric.SYSTOLIC: MetricSpec(
            Metric.SYSTOLIC, (LOINC_SYSTOLIC,), "mm[Hg]", (40.0, 300.0),
            N_("Systolic blood pressure"),
        ),
        Metric.DIASTOLIC: MetricSpec(
            Metric.DIASTOLIC, (LOINC_DIASTOLIC,), "mm[Hg]", (20.0, 200.0),
            N_("Diastolic blood pressure"),
        ),
        Metric.HEART_RATE: MetricSpec(
            Metric.HEART_RATE, (LOINC_HEART_RATE,), "/min", (20.0, 300.0), N_("Heart rate"),
        ),
        Metric.GLUCOSE: MetricSpec(
            Metric.GLUCOSE,
            (LOINC_GLUCOSE_BLOOD_MASS, LOINC_GLUCOSE_BLOOD_MOLES, LOINC_GLUCOSE_CGM),
            "mg/dL", (10.0, 1000.0), N_("Glucose"),
        ),
        Metric.SPO2: MetricSpec(
            Metric.SPO2, (LOINC_SPO2_PULSE_OXIMETRY, LOINC_SPO2_ARTERIAL), "%", (50.0, 100.0),
            N_("Oxygen saturation"),
        ),
        Metric.BODY_WEIGHT: MetricSpec(
            Metric.BODY_WEIGHT, (LOINC_BODY_WEIGHT,), "kg", (1.0, 400.0), N_("Body weight"),
        ),
        Metric.BODY_TEMPERATURE: MetricSpec(
            Metric.BODY_TEMPERATURE, (LOINC_BODY_TEMPERATURE,), "Cel", (30.0, 45.0),
            N_("Body temperature"),
        ),
        Metric.WOUND_PHOTO: MetricSpec(
            Metric.WOUND_PHOTO, (LOINC_PHOTOGRAPHIC_IMAGE,), "1", None, N_("Wound photo"),
        ),
    }
)

#: Physiological limits per metric (canonical unit, inclusive). Wound photos have none.
PHYSIOLOGICAL_LIMITS: Mapping[Metric, tuple[float, float]] = MappingProxyType(
    {
        metric: spec.physiological_limits
        for metric, spec in METRIC_SPECS.items()
        if spec.physiological_limits is not None
    }
)

CANONICAL_UNITS: Mapping[Metric, str] = MappingProxyType(
    {metric: spec.unit for metric, spec in METRIC_SPECS.items()}
)

_METRIC_BY_LOINC: Mapping[str, Metric] = MappingProxyType(
    {code: spec.metric for spec in METRIC_SPECS.values() for code in spec.loinc_codes}
)

_GLUCOSE_SOURCE_BY_LOINC: Mapping[str, GlucoseSource] = MappingProxyType(
    {
        LOINC_GLUCOSE_BLOOD_MASS: GlucoseSource.BLOOD,
        LOINC_GLUCOSE_BLOOD_MOLES: GlucoseSource.BLOOD,
        LOINC_GLUCOSE_CGM: GlucoseSource.CGM,
    }
)


def metric_for_loinc(code: str) -> Metric | None:
    """The metric a LOINC code measures, or None for a code monitoring does not know."""
    return _METRIC_BY_LOINC.get(code.strip())


def glucose_source_for_loinc(code: str) -> GlucoseSource | None:
    """Blood or CGM for a glucose LOINC code; None for any other code."""
    return _GLUCOSE_SOURCE_BY_LOINC.get(code.strip())


def glucose_codes(source: GlucoseSource) -> frozenset[str]:
    """Every glucose LOINC code of one source (blood or CGM)."""
    return frozenset(code for code, found in _GLUCOSE_SOURCE_BY_LOINC.items() if found is source)


def metric_label(metric: Metric, language: str) -> str:
    return translate(language, METRIC_SPECS[metric].label)


def _require_aware(name: str, moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one patient, in the metric's canonical unit.

    `effective_at` keeps the offset the device reported (a patient abroad measures at their local
    time); `received_at` is when Jaejin got it, normalised to UTC.
    """

    patient_ref: str
    metric: Metric
    value: float
    unit: str
    loinc: str
    effective_at: datetime
    source_device: str | None
    received_at: datetime
    #: Shared by the systolic and diastolic readings of one blood-pressure measurement.
    panel_id: str | None = None
    #: Where a wound photo's image is stored (only for `Metric.WOUND_PHOTO`).
    attachment_ref: str | None = None
    #: `effective_at` as POSIX seconds, computed once: windows over thousands of CGM readings
    #: compare plain numbers instead of datetimes of many time zones.
    effective_ts: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A `datetime.timezone` (the zone of every parsed offset, and UTC) always has an offset:
        # only other zones are asked, which costs each Reading a good share of its making.
        if type(self.effective_at.tzinfo) is not timezone:
            _require_aware("effective_at", self.effective_at)
        if self.received_at.tzinfo is not UTC:
            if type(self.received_at.tzinfo) is not timezone:
                _require_aware("received_at", self.received_at)
            object.__setattr__(self, "received_at", self.received_at.astimezone(UTC))
        object.__setattr__(self, "effective_ts", self.effective_at.timestamp())

    @property
    def glucose_source(self) -> GlucoseSource | None:
        """Blood or CGM for a glucose reading (decided by its LOINC code), else None."""
        if self.metric is not Metric.GLUCOSE:
            return None
        return glucose_source_for_loinc(self.loinc)

    @property
    def effective_utc(self) -> datetime:
        return self.effective_at.astimezone(UTC)


class ProblemCode(StrEnum):
    """Stable codes of why a reading cannot be trusted as sent."""

    IMPOSSIBLE_VALUE = "IMPOSSIBLE_VALUE"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    UNKNOWN_CODE = "UNKNOWN_CODE"
    UNIT_MISMATCH = "UNIT_MISMATCH"
    DIASTOLIC_ABOVE_SYSTOLIC = "DIASTOLIC_ABOVE_SYSTOLIC"


_PROBLEM_MESSAGES: Mapping[ProblemCode, str] = MappingProxyType(
    {
        ProblemCode.IMPOSSIBLE_VALUE: N_(
            "{metric} of {value} {unit} is outside what a person can have ({low}–{high})"
        ),
        ProblemCode.FUTURE_TIMESTAMP: N_(
            "The measurement time {effective_at} is in the future"
        ),
        ProblemCode.UNKNOWN_CODE: N_("The code {loinc} is not a known code for {metric}"),
        ProblemCode.UNIT_MISMATCH: N_("{metric} must be in {expected}, not {unit}"),
        ProblemCode.DIASTOLIC_ABOVE_SYSTOLIC: N_(
            "Diastolic pressure {diastolic} is not below systolic pressure {systolic}"
        ),
    }
)


@dataclass(frozen=True, slots=True)
class ReadingProblem:
    """Why one reading is rejected; `message(language)` explains it to a person."""

    code: ProblemCode
    metric: Metric
    params: Mapping[str, str] = field(default_factory=dict)

    def message(self, language: str) -> str:
        params = dict(self.params)
        params["metric"] = metric_label(self.metric, language)
        return translate(language, _PROBLEM_MESSAGES[self.code], **params)


def _format_number(value: float) -> str:
    return f"{value:g}"


def validate_reading(
    reading: Reading,
    now: datetime,
    clock_skew: timedelta = timedelta(minutes=5),
    *,
    paired_with: Reading | None = None,
) -> list[ReadingProblem]:
    """Every reason `reading` cannot be trusted; empty when it can.

    `clock_skew` tolerates device clocks slightly ahead of the server. Pass the other half of a
    blood-pressure panel as `paired_with` to check that diastolic is below systolic.
    """
    _require_aware("now", now)
    spec = METRIC_SPECS[reading.metric]
    problems: list[ReadingProblem] = []
    if reading.loinc not in spec.loinc_codes:
        problems.append(
            ReadingProblem(ProblemCode.UNKNOWN_CODE, reading.metric, {"loinc": reading.loinc})
        )
    if reading.unit != spec.unit:
        problems.append(
            ReadingProblem(
                ProblemCode.UNIT_MISMATCH,
                reading.metric,
                {"expected": spec.unit, "unit": reading.unit},
            )
        )
    limits = spec.physiological_limits
    # A value in a foreign unit cannot be judged against limits in the canonical one.
    if reading.unit == spec.unit and limits is not None and not (
        math.isfinite(reading.value) and limits[0] <= reading.value <= limits[1]
    ):
        problems.append(
            ReadingProblem(
                ProblemCode.IMPOSSIBLE_VALUE,
                reading.metric,
                {
                    "value": _format_number(reading.value),
                    "unit": spec.unit,
                    "low": _format_number(limits[0]),
                    "high": _format_number(limits[1]),
                },
            )
        )
    if reading.effective_at > now + clock_skew:
        problems.append(
            ReadingProblem(
                ProblemCode.FUTURE_TIMESTAMP,
                reading.metric,
                {"effective_at": reading.effective_at.isoformat(timespec="minutes")},
            )
        )
    if paired_with is not None:
        problems.extend(validate_blood_pressure_pair(reading, paired_with))
    return problems


def validate_blood_pressure_pair(first: Reading, second: Reading) -> list[ReadingProblem]:
    """DIASTOLIC_ABOVE_SYSTOLIC when the diastolic half is not below the systolic half.

    The two readings may come in either order; a pair that is not one systolic and one
    diastolic reading yields no problem (there is nothing to compare).
    """
    by_metric = {first.metric: first, second.metric: second}
    systolic = by_metric.get(Metric.SYSTOLIC)
    diastolic = by_metric.get(Metric.DIASTOLIC)
    if systolic is None or diastolic is None:
        return []
    if diastolic.value >= systolic.value:
        return [
            ReadingProblem(
                ProblemCode.DIASTOLIC_ABOVE_SYSTOLIC,
                Metric.DIASTOLIC,
                {
                    "systolic": _format_number(systolic.value),
                    "diastolic": _format_number(diastolic.value),
                },
            )
        ]
    return []


def validate_readings(
    readings: Sequence[Reading],
    now: datetime,
    clock_skew: timedelta = timedelta(minutes=5),
) -> dict[int, list[ReadingProblem]]:
    """Validate a batch; blood-pressure halves sharing a `panel_id` are checked as a pair.

    Returns the problems by position in `readings`, only for readings that have any.
    """
    halves: dict[tuple[str, str], dict[Metric, int]] = {}
    for index, reading in enumerate(readings):
        if reading.panel_id is not None and reading.metric in (Metric.SYSTOLIC, Metric.DIASTOLIC):
            halves.setdefault((reading.patient_ref, reading.panel_id), {})[reading.metric] = index
    found: dict[int, list[ReadingProblem]] = {}
    for index, reading in enumerate(readings):
        problems = validate_reading(reading, now, clock_skew)
        if problems:
            found[index] = problems
    for pair in halves.values():
        if Metric.SYSTOLIC in pair and Metric.DIASTOLIC in pair:
            diastolic_index = pair[Metric.DIASTOLIC]
            pair_problems = validate_blood_pressure_pair(
                readings[pair[Metric.SYSTOLIC]], readings[diastolic_index]
            )
            if pair_problems:
                found.setdefault(diastolic_index, []).extend(pair_problems)
    return found


def blood_pressure_pairs(readings: Iterable[Reading]) -> list[tuple[Reading, Reading]]:
    """(systolic, diastolic) pairs joined by `panel_id`, in the order their systolic came."""
    diastolic_by_panel: dict[tuple[str, str], Reading] = {}
    systolic_readings: list[Reading] = []
    for reading in readings:
        if reading.panel_id is None:
            continue
        if reading.metric is Metric.DIASTOLIC:
            diastolic_by_panel[(reading.patient_ref, reading.panel_id)] = reading
        elif reading.metric is Metric.SYSTOLIC:
            systolic_readings.append(reading)
    pairs: list[tuple[Reading, Reading]] = []
    for systolic in systolic_readings:
        assert systolic.panel_id is not None
        diastolic = diastolic_by_panel.get((systolic.patient_ref, systolic.panel_id))
        if diastolic is not None:
            pairs.append((systolic, diastolic))
    return pairs
