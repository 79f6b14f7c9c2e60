"""Alerts: what a reading or a window of readings means for the care team, and its workflow.

Two entry points, for two paths:
- `evaluate_on_ingest` runs on every reading as it arrives: threshold checks only, looking back
  at most a few hours in `recent_readings` (chronological), so it stays cheap.
- `evaluate_scheduled` runs periodically per patient over a window of readings: missing data,
  7-day blood-pressure trend against the previous 4 weeks, heart-failure weight gain, CGM
  consensus targets, a pattern of high blood-glucose readings.

Both return `AlertSignal`s. An `EpisodeGrouper` folds signals of one episode (same patient, same
`episode_key`, no quiet period in between) into one `Alert`, the item a clinician acknowledges,
snoozes or resolves. Critical signals carry guidance for the patient in their language with the
emergency number of the country they are in now (looked up by the caller's function).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import islice
from types import MappingProxyType

from jaejin.core.i18n import N_, translate
from jaejin.monitoring.careplans import CarePlan, PlanTemplate
from jaejin.monitoring.cgm import (
    CGM_GLUCOSE_LOINC_CODES,
    CgmTarget,
    cgm_metrics,
    is_cgm_reading,
    missed_targets,
)
from jaejin.monitoring.readings import GlucoseSource, Metric, Reading, metric_label


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MODERATE = "moderate"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK: Mapping[Severity, int] = MappingProxyType(
    {Severity.CRITICAL: 3, Severity.HIGH: 2, Severity.MODERATE: 1, Severity.INFO: 0}
)


class AlertKind(StrEnum):
    """Stable codes of what an alert is about."""

    BP_CRISIS = "BP_CRISIS"
    HYPOTENSION = "HYPOTENSION"
    BP_ABOVE_TARGET = "BP_ABOVE_TARGET"
    GLUCOSE_VERY_LOW = "GLUCOSE_VERY_LOW"
    GLUCOSE_LOW = "GLUCOSE_LOW"
    GLUCOSE_VERY_HIGH = "GLUCOSE_VERY_HIGH"
    GLUCOSE_HIGH_PATTERN = "GLUCOSE_HIGH_PATTERN"
    HEART_RATE_OUT_OF_RANGE = "HEART_RATE_OUT_OF_RANGE"
    SPO2_LOW = "SPO2_LOW"
    FEVER = "FEVER"
    WEIGHT_GAIN = "WEIGHT_GAIN"
    WOUND_PHOTO_REVIEW = "WOUND_PHOTO_REVIEW"
    MISSING_DATA = "MISSING_DATA"
    CGM_OUT_OF_TARGET = "CGM_OUT_OF_TARGET"
    CGM_LOW_WEAR = "CGM_LOW_WEAR"


#: Kinds that fold into one episode: a hypoglycaemia that deepens from level 1 to level 2 is one
#: event for the clinician, not two.
_EPISODE_FAMILY: Mapping[AlertKind, str] = MappingProxyType(
    {
        AlertKind.GLUCOSE_VERY_LOW: "glucose_low",
        AlertKind.GLUCOSE_LOW: "glucose_low",
        AlertKind.CGM_OUT_OF_TARGET: "cgm_report",
        AlertKind.CGM_LOW_WEAR: "cgm_report",
    }
)

#: Kinds a person must close: never resolved by the system, never closed by a quiet period.
NEVER_AUTO_CLEARED: frozenset[AlertKind] = frozenset({AlertKind.WOUND_PHOTO_REVIEW})


def episode_key_for(patient_ref: str, kind: AlertKind, metric: Metric | None = None) -> str:
    """Key shared by every signal of one patient's episode of one kind (family)."""
    family = _EPISODE_FAMILY.get(kind, kind.value.lower())
    if kind is AlertKind.MISSING_DATA and metric is not None:
        family = f"{family}:{metric.value}"
    return f"{patient_ref}|{family}"


@dataclass(frozen=True, slots=True)
class PatientContext:
    """Who receives patient-facing guidance: their language and the country they are in now."""

    language: str
    current_country: str
    #: ISO 3166-1 alpha-2 country code -> medical emergency number; raises LookupError when the
    #: country is unknown (the guidance then names no number rather than a wrong one).
    emergency_number_for: Callable[[str], str]


@dataclass(frozen=True, slots=True)
class AlertSignal:
    """One detection. Several signals of one episode become one `Alert`."""

    patient_ref: str
    kind: AlertKind
    severity: Severity
    episode_key: str
    #: When Jaejin detected it (reading received, or scheduled evaluation time), aware UTC.
    detected_at: datetime
    #: When the measurement that triggered it was taken (patient's offset kept).
    observed_at: datetime
    metric: Metric | None
    #: English msgid of the clinician-facing explanation and its parameters.
    message: str
    params: Mapping[str, str] = field(default_factory=dict)
    #: Patient-facing guidance, rendered in the patient's language (critical signals only).
    patient_guidance: str | None = None

    def explain(self, language: str) -> str:
        params = dict(self.params)
        if "metric" in params:
            params["metric"] = metric_label(Metric(params["metric"]), language)
        if "missed" in params:
            params["missed"] = ", ".join(
                translate(language, CGM_TARGET_LABELS[CgmTarget(item)])
                for item in params["missed"].split(",")
                if item
            )
        return translate(language, self.message, **params)


CGM_TARGET_LABELS: Mapping[CgmTarget, str] = MappingProxyType(
    {
        CgmTarget.SENSOR_WEAR: N_("sensor wear"),
        CgmTarget.TIME_IN_RANGE: N_("time in range"),
        CgmTarget.BELOW_70: N_("time below 70"),
        CgmTarget.BELOW_54: N_("time below 54"),
        CgmTarget.ABOVE_180: N_("time above 180"),
        CgmTarget.ABOVE_250: N_("time above 250"),
        CgmTarget.VARIABILITY: N_("glucose variability"),
    }
)

_GUIDANCE: Mapping[AlertKind, tuple[str, str]] = MappingProxyType(
    {
        AlertKind.BP_CRISIS: (
            N_(
                "Your blood pressure is very high ({value} mmHg). Sit down, rest for 5 minutes "
                "and measure again. If it stays this high, or you have chest pain, shortness of "
                "breath, weakness, trouble speaking or a severe headache, call {emergency_number} "
                "now."
            ),
            N_(
                "Your blood pressure is very high ({value} mmHg). Sit down, rest for 5 minutes "
                "and measure again. If it stays this high, or you have chest pain, shortness of "
                "breath, weakness, trouble speaking or a severe headache, call your local "
                "emergency number now."
            ),
        ),
        AlertKind.GLUCOSE_VERY_LOW: (
            N_(
                "Your glucose is very low ({value} mg/dL). Take 15 g of fast-acting sugar now "
                "(juice, glucose tablets) and check again in 15 minutes. If you feel confused or "
                "cannot swallow safely, someone should call {emergency_number}."
            ),
            N_(
                "Your glucose is very low ({value} mg/dL). Take 15 g of fast-acting sugar now "
                "(juice, glucose tablets) and check again in 15 minutes. If you feel confused or "
                "cannot swallow safely, someone should call your local emergency number."
            ),
        ),
    }
)


def patient_guidance(kind: AlertKind, value: str, patient: PatientContext) -> str | None:
    """Guidance for the patient about a critical finding, or None for other kinds.

    Names the emergency number of the patient's current country; when that country is not
    known to the lookup the text points to the local emergency number instead of guessing.
    """
    texts = _GUIDANCE.get(kind)
    if texts is None:
        return None
    with_number, without_number = texts
    try:
        number = patient.emergency_number_for(patient.current_country)
    except LookupError:
        return translate(patient.language, without_number, value=value)
    return translate(patient.language, with_number, value=value, emergency_number=number)


def _whole(value: float) -> str:
    return f"{value:.0f}"


def _one_decimal(value: float) -> str:
    return f"{value:.1f}"


def _signal(
    reading: Reading,
    kind: AlertKind,
    severity: Severity,
    message: str,
    patient: PatientContext | None,
    guidance_value: str = "",
    **params: str,
) -> AlertSignal:
    guidance = None
    if severity is Severity.CRITICAL and patient is not None:
        guidance = patient_guidance(kind, guidance_value, patient)
    return AlertSignal(
        patient_ref=reading.patient_ref,
        kind=kind,
        severity=severity,
        episode_key=episode_key_for(reading.patient_ref, kind, reading.metric),
        detected_at=reading.received_at,
        observed_at=reading.effective_at,
        metric=reading.metric,
        message=message,
        params=MappingProxyType(dict(params)),
        patient_guidance=guidance,
    )


def _recent_of(
    recent_readings: Sequence[Reading],
    reading: Reading,
    lookback: timedelta,
    predicate: Callable[[Reading], bool],
) -> list[Reading]:
    """Readings matching `predicate` taken in the `lookback` before `reading` (the start
    excluded), oldest first.

    `recent_readings` is chronological, so the walk stops at the first older reading.
    """
    since = reading.effective_ts - lookback.total_seconds()
    until = reading.effective_ts
    found: list[Reading] = []
    for candidate in reversed(recent_readings):
        moment = candidate.effective_ts
        if moment <= since:
            break
        if candidate is not reading and moment <= until and predicate(candidate):
            found.append(candidate)
    found.reverse()
    return found


def _panel_partner(recent_readings: Sequence[Reading], reading: Reading) -> Reading | None:
    if reading.panel_id is None:
        return None
    wanted = Metric.DIASTOLIC if reading.metric is Metric.SYSTOLIC else Metric.SYSTOLIC
    # The other half arrives right next to this one; a few readings back is far enough.
    for candidate in islice(reversed(recent_readings), 8):
        if candidate.metric is wanted and candidate.panel_id == reading.panel_id:
            return candidate
    return None


#: Daily weights are taken at about the same hour, not to the minute: "2 kg in 2 days" compares
#: with the weighing two mornings ago even if it happened a little earlier in the day.
WEIGHT_TIME_TOLERANCE = timedelta(hours=12)
#: CGM level 1 hypoglycaemia counts as an event after 15 minutes (three 5-minute readings).
CGM_EVENT_DURATION = timedelta(minutes=15)
#: Extended CGM hyperglycaemia: above level 2 for at least 90 of the last 120 minutes.
CGM_EXTENDED_HIGH_WINDOW = timedelta(minutes=120)
CGM_EXTENDED_HIGH_MINUTES = 90

_CRISIS_PAIR = N_(
    "Blood pressure {systolic}/{diastolic} mmHg reached the crisis threshold "
    "({crisis_systolic}/{crisis_diastolic})"
)
_CRISIS_SYSTOLIC = N_("Systolic pressure {value} mmHg reached the crisis threshold {threshold}")
_CRISIS_DIASTOLIC = N_("Diastolic pressure {value} mmHg reached the crisis threshold {threshold}")
_HYPOTENSION = N_("Systolic pressure {value} mmHg is below {threshold}")
_GLUCOSE_VERY_LOW = N_("Glucose {value} mg/dL is below {threshold} (level 2 hypoglycaemia)")
_GLUCOSE_LOW = N_("Glucose {value} mg/dL is below {threshold} (level 1 hypoglycaemia)")
_GLUCOSE_LOW_CGM = N_(
    "CGM glucose below {threshold} mg/dL for at least 15 minutes, now {value} "
    "(level 1 hypoglycaemia)"
)
_GLUCOSE_VERY_HIGH = N_("Glucose {value} mg/dL is above {threshold} (level 2 hyperglycaemia)")
_GLUCOSE_VERY_HIGH_CGM = N_(
    "CGM glucose above {threshold} mg/dL for {minutes} of the last 120 minutes, now {value}"
)
_HEART_RATE = N_("Heart rate {value}/min is outside {low}–{high}")
_SPO2_LOW = N_("Oxygen saturation {value} % is below {threshold} %")
_FEVER = N_("Temperature {value} °C is at or above {threshold} °C")
_WEIGHT_GAIN = N_("Weight {value} kg, up {gain} kg within {days} days (limit {threshold} kg)")
_WOUND_PHOTO = N_("New wound photo to review")
_MISSING_DATA = N_("No {metric} reading for {hours} hours (alert after {limit_hours} hours)")
_MISSING_DATA_NEVER = N_("No {metric} reading received yet")
_BP_ABOVE_TARGET = N_(
    "7-day mean blood pressure {systolic}/{diastolic} mmHg is above the target "
    "{target_systolic}/{target_diastolic} (previous 4 weeks {previous_systolic}/"
    "{previous_diastolic})"
)
_BP_ABOVE_TARGET_NO_HISTORY = N_(
    "7-day mean blood pressure {systolic}/{diastolic} mmHg is above the target "
    "{target_systolic}/{target_diastolic}"
)
_GLUCOSE_HIGH_PATTERN = N_(
    "{above} of {total} glucose readings in the last 7 days were above {threshold} mg/dL"
)
_CGM_OUT_OF_TARGET = N_(
    "CGM {days} days: time in range {in_range} %, below 70 {below_70} %, below 54 {below_54} %, "
    "above 250 {above_250} %, CV {cv} %, GMI {gmi} %; missed: {missed}"
)
_CGM_LOW_WEAR = N_(
    "CGM sensor wear {wear} % over {days} days, below the {goal} % needed for a reliable report"
)


def evaluate_on_ingest(
    reading: Reading,
    plan: CarePlan,
    recent_readings: Sequence[Reading],
    *,
    patient: PatientContext | None = None,
) -> list[AlertSignal]:
    """Threshold checks for one validated reading as it arrives.

    `recent_readings` are the same patient's earlier readings in chronological order; only the
    last few hours (CGM events, the other half of a blood-pressure panel) and the
    weight-gain window are looked at. Critical thresholds apply even to metrics the plan does
    not ask for: a crisis reading is a crisis whoever sent it. Pass `patient` to have critical
    signals carry guidance in the patient's language.
    """
    limits = plan.thresholds
    metric = reading.metric
    value = reading.value
    signals: list[AlertSignal] = []
    if metric is Metric.SYSTOLIC or metric is Metric.DIASTOLIC:
        signals.extend(_blood_pressure_signals(reading, plan, recent_readings, patient))
    elif metric is Metric.GLUCOSE:
        signals.extend(_glucose_signals(reading, plan, recent_readings, patient))
    elif metric is Metric.HEART_RATE:
        if value < limits.heart_rate_low or value > limits.heart_rate_high:
            signals.append(
                _signal(
                    reading, AlertKind.HEART_RATE_OUT_OF_RANGE, Severity.HIGH, _HEART_RATE,
                    patient, value=_whole(value), low=_whole(limits.heart_rate_low),
                    high=_whole(limits.heart_rate_high),
                )
            )
    elif metric is Metric.SPO2:
        if value < limits.spo2_low:
            signals.append(
                _signal(
                    reading, AlertKind.SPO2_LOW, Severity.HIGH, _SPO2_LOW, patient,
                    value=_whole(value), threshold=_whole(limits.spo2_low),
                )
            )
    elif metric is Metric.BODY_TEMPERATURE:
        if value >= limits.fever_celsius:
            # After surgery a fever may be an infection of the wound: it outranks a fever of a
            # patient whose plan does not watch temperature.
            watched = plan.template is PlanTemplate.POST_OPERATIVE or plan.monitors(metric)
            signals.append(
                _signal(
                    reading, AlertKind.FEVER, Severity.HIGH if watched else Severity.MODERATE,
                    _FEVER, patient, value=_one_decimal(value),
                    threshold=_one_decimal(limits.fever_celsius),
                )
            )
    elif metric is Metric.BODY_WEIGHT:
        if plan.monitors(metric):
            window = timedelta(days=limits.weight_gain_window_days) + WEIGHT_TIME_TOLERANCE
            earlier = _recent_of(
                recent_readings, reading, window, lambda item: item.metric is Metric.BODY_WEIGHT
            )
            signal = _weight_gain_signal(reading, earlier, plan, patient)
            if signal is not None:
                signals.append(signal)
    elif metric is Metric.WOUND_PHOTO:
        signals.append(
            _signal(reading, AlertKind.WOUND_PHOTO_REVIEW, Severity.MODERATE, _WOUND_PHOTO, patient)
        )
    return signals


def _blood_pressure_signals(
    reading: Reading,
    plan: CarePlan,
    recent_readings: Sequence[Reading],
    patient: PatientContext | None,
) -> list[AlertSignal]:
    limits = plan.thresholds
    partner = _panel_partner(recent_readings, reading)
    systolic: Reading | None
    diastolic: Reading | None
    if reading.metric is Metric.SYSTOLIC:
        systolic, diastolic = reading, partner
    else:
        systolic, diastolic = partner, reading
    systolic_crisis = systolic is not None and systolic.value >= limits.bp_crisis_systolic
    diastolic_crisis = diastolic is not None and diastolic.value >= limits.bp_crisis_diastolic
    signals: list[AlertSignal] = []
    # The systolic half speaks for the panel; the diastolic half only when the systolic one
    # is unknown or not in crisis. Whatever order the halves arrive in, and whether or not
    # each sees the other, at least one of them raises the crisis.
    if reading.metric is Metric.SYSTOLIC:
        own_crisis = systolic_crisis
        partner_already_raised = False
    else:
        own_crisis = diastolic_crisis
        partner_already_raised = systolic_crisis
    if own_crisis and not partner_already_raised:
        if systolic is not None and diastolic is not None:
            shown = f"{_whole(systolic.value)}/{_whole(diastolic.value)}"
            signals.append(
                _signal(
                    reading, AlertKind.BP_CRISIS, Severity.CRITICAL, _CRISIS_PAIR, patient,
                    guidance_value=shown,
                    systolic=_whole(systolic.value), diastolic=_whole(diastolic.value),
                    crisis_systolic=_whole(limits.bp_crisis_systolic),
                    crisis_diastolic=_whole(limits.bp_crisis_diastolic),
                )
            )
        else:
            is_systolic = reading.metric is Metric.SYSTOLIC
            threshold = limits.bp_crisis_systolic if is_systolic else limits.bp_crisis_diastolic
            signals.append(
                _signal(
                    reading, AlertKind.BP_CRISIS, Severity.CRITICAL,
                    _CRISIS_SYSTOLIC if is_systolic else _CRISIS_DIASTOLIC, patient,
                    guidance_value=_whole(reading.value),
                    value=_whole(reading.value), threshold=_whole(threshold),
                )
            )
    if reading.metric is Metric.SYSTOLIC and reading.value < limits.bp_hypotension_systolic:
        signals.append(
            _signal(
                reading, AlertKind.HYPOTENSION, Severity.HIGH, _HYPOTENSION, patient,
                value=_whole(reading.value), threshold=_whole(limits.bp_hypotension_systolic),
            )
        )
    return signals


def _glucose_signals(
    reading: Reading,
    plan: CarePlan,
    recent_readings: Sequence[Reading],
    patient: PatientContext | None,
) -> list[AlertSignal]:
    limits = plan.thresholds
    value = reading.value
    from_cgm = reading.glucose_source is GlucoseSource.CGM
    shown = _whole(value)
    if value < limits.glucose_level2_low:
        # Any single value below level 2 is acted on at once, as CGM urgent-low alarms do.
        return [
            _signal(
                reading, AlertKind.GLUCOSE_VERY_LOW, Severity.CRITICAL, _GLUCOSE_VERY_LOW,
                patient, guidance_value=shown, value=shown,
                threshold=_whole(limits.glucose_level2_low),
            )
        ]
    if value < limits.glucose_level1_low:
        if not from_cgm:
            return [
                _signal(
                    reading, AlertKind.GLUCOSE_LOW, Severity.HIGH, _GLUCOSE_LOW, patient,
                    value=shown, threshold=_whole(limits.glucose_level1_low),
                )
            ]
        earlier = _recent_of(recent_readings, reading, CGM_EVENT_DURATION, is_cgm_reading)
        # Consensus: a CGM event lasts 15 minutes, i.e. this reading and the two before it
        # (5-minute cadence), all below the threshold.
        if len(earlier) >= 2 and all(item.value < limits.glucose_level1_low for item in earlier):
            return [
                _signal(
                    reading, AlertKind.GLUCOSE_LOW, Severity.HIGH, _GLUCOSE_LOW_CGM, patient,
                    value=shown, threshold=_whole(limits.glucose_level1_low),
                )
            ]
        return []
    if value > limits.glucose_level2_high:
        if not from_cgm:
            return [
                _signal(
                    reading, AlertKind.GLUCOSE_VERY_HIGH, Severity.MODERATE, _GLUCOSE_VERY_HIGH,
                    patient, value=shown, threshold=_whole(limits.glucose_level2_high),
                )
            ]
        earlier = _recent_of(recent_readings, reading, CGM_EXTENDED_HIGH_WINDOW, is_cgm_reading)
        above = 1 + sum(1 for item in earlier if item.value > limits.glucose_level2_high)
        minutes_above = above * 5
        if minutes_above >= CGM_EXTENDED_HIGH_MINUTES:
            return [
                _signal(
                    reading, AlertKind.GLUCOSE_VERY_HIGH, Severity.MODERATE,
                    _GLUCOSE_VERY_HIGH_CGM, patient, value=shown,
                    threshold=_whole(limits.glucose_level2_high),
                    minutes=str(min(minutes_above, 120)),
                )
            ]
    return []


def _weight_gain_signal(
    reading: Reading,
    earlier: Sequence[Reading],
    plan: CarePlan,
    patient: PatientContext | None,
) -> AlertSignal | None:
    if not earlier:
        return None
    limits = plan.thresholds
    lowest = min(item.value for item in earlier)
    gain = reading.value - lowest
    if gain <= limits.weight_gain_kg:
        return None
    return _signal(
        reading, AlertKind.WEIGHT_GAIN, Severity.HIGH, _WEIGHT_GAIN, patient,
        value=_one_decimal(reading.value), gain=_one_decimal(gain),
        days=f"{limits.weight_gain_window_days:g}", threshold=_one_decimal(limits.weight_gain_kg),
    )


#: Blood-pressure trend: the recent week against the four weeks before it.
BP_RECENT_WINDOW = timedelta(days=7)
BP_BASELINE_WINDOW = timedelta(days=28)
#: Fewer home readings than this in a week say too little about the mean.
BP_MIN_RECENT_READINGS = 3
#: A rise this large against the patient's own previous 4 weeks makes an above-target week
#: a moderate alert even below stage 2.
BP_RISE_SYSTOLIC = 10.0
BP_RISE_DIASTOLIC = 5.0
GLUCOSE_PATTERN_WINDOW = timedelta(days=7)
GLUCOSE_PATTERN_MIN_READINGS = 3


def scheduled_window(plan: CarePlan) -> timedelta:
    """How far back `evaluate_scheduled` looks for this plan (what a caller must pass)."""
    spans = [timedelta(days=1), *plan.missing_after.values()]
    if plan.monitors(Metric.SYSTOLIC) or plan.monitors(Metric.DIASTOLIC):
        spans.append(BP_RECENT_WINDOW + BP_BASELINE_WINDOW)
    if plan.uses_cgm:
        spans.append(timedelta(days=plan.cgm_targets.window_days))
    if plan.monitors(Metric.GLUCOSE):
        spans.append(GLUCOSE_PATTERN_WINDOW)
    if plan.monitors(Metric.BODY_WEIGHT):
        spans.append(
            timedelta(days=plan.thresholds.weight_gain_window_days + 1) + WEIGHT_TIME_TOLERANCE
        )
    return max(spans)


def _scheduled_signal(
    patient_ref: str,
    kind: AlertKind,
    severity: Severity,
    now: datetime,
    observed_at: datetime,
    metric: Metric | None,
    message: str,
    /,
    **params: str,
) -> AlertSignal:
    return AlertSignal(
        patient_ref=patient_ref,
        kind=kind,
        severity=severity,
        episode_key=episode_key_for(patient_ref, kind, metric),
        detected_at=now,
        observed_at=observed_at,
        metric=metric,
        message=message,
        params=MappingProxyType(dict(params)),
    )


def evaluate_scheduled(
    readings_window: Iterable[Reading],
    plan: CarePlan,
    now: datetime,
    *,
    patient_ref: str | None = None,
    monitoring_since: datetime | None = None,
) -> list[AlertSignal]:
    """Periodic checks over one patient's readings in the `scheduled_window(plan)` before `now`.

    `monitoring_since` is when the plan started: missing data and CGM sensor wear are not
    counted before it. `patient_ref` is required when the window holds no reading; a window
    mixing patients is refused rather than judged as one person.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now_ts = now.timestamp()
    by_metric: dict[Metric, list[Reading]] = {}
    for reading in readings_window:
        if reading.effective_ts <= now_ts:
            found = by_metric.get(reading.metric)
            if found is None:
                by_metric[reading.metric] = [reading]
            else:
                found.append(reading)
    for readings in by_metric.values():
        readings.sort(key=_effective_ts)
    refs = {item.patient_ref for readings in by_metric.values() for item in readings}
    if patient_ref is None:
        if len(refs) != 1:
            raise ValueError("pass patient_ref: the window holds no reading or several patients")
        patient_ref = refs.pop()
    elif refs - {patient_ref}:
        raise ValueError("the window holds readings of another patient")
    signals: list[AlertSignal] = []
    signals.extend(_missing_data(patient_ref, by_metric, plan, now, monitoring_since))
    signals.extend(_blood_pressure_trend(patient_ref, by_metric, plan, now))
    signals.extend(_scheduled_weight_gain(by_metric, plan, now))
    signals.extend(_glucose_pattern(patient_ref, by_metric, plan, now))
    signals.extend(_cgm_report(patient_ref, by_metric, plan, now, monitoring_since))
    return signals


def _missing_data(
    patient_ref: str,
    by_metric: Mapping[Metric, Sequence[Reading]],
    plan: CarePlan,
    now: datetime,
    monitoring_since: datetime | None,
) -> list[AlertSignal]:
    signals: list[AlertSignal] = []
    for metric, delay in sorted(plan.missing_after.items()):
        readings = by_metric.get(metric, ())
        last_seen = readings[-1].effective_at if readings else monitoring_since
        if last_seen is None:
            signals.append(
                _scheduled_signal(
                    patient_ref, AlertKind.MISSING_DATA, Severity.MODERATE, now, now, metric,
                    _MISSING_DATA_NEVER, metric=metric.value,
                )
            )
            continue
        silent_for = now - last_seen
        if silent_for >= delay:
            signals.append(
                _scheduled_signal(
                    patient_ref, AlertKind.MISSING_DATA, Severity.MODERATE, now, last_seen,
                    metric, _MISSING_DATA, metric=metric.value,
                    hours=str(int(silent_for.total_seconds() // 3600)),
                    limit_hours=str(int(delay.total_seconds() // 3600)),
                )
            )
    return signals


def _effective_ts(reading: Reading) -> float:
    return reading.effective_ts


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _values_between(
    readings: Sequence[Reading], start: datetime, end: datetime
) -> list[float]:
    start_ts = start.timestamp()
    end_ts = end.timestamp()
    return [item.value for item in readings if start_ts <= item.effective_ts < end_ts]


def _blood_pressure_trend(
    patient_ref: str,
    by_metric: Mapping[Metric, Sequence[Reading]],
    plan: CarePlan,
    now: datetime,
) -> list[AlertSignal]:
    systolic_readings = by_metric.get(Metric.SYSTOLIC, ())
    diastolic_readings = by_metric.get(Metric.DIASTOLIC, ())
    recent_start = now - BP_RECENT_WINDOW
    baseline_start = recent_start - BP_BASELINE_WINDOW
    recent_systolic = _values_between(systolic_readings, recent_start, now)
    recent_diastolic = _values_between(diastolic_readings, recent_start, now)
    if (
        len(recent_systolic) < BP_MIN_RECENT_READINGS
        or len(recent_diastolic) < BP_MIN_RECENT_READINGS
    ):
        return []
    limits = plan.thresholds
    mean_systolic = _mean(recent_systolic)
    mean_diastolic = _mean(recent_diastolic)
    if mean_systolic < limits.bp_target_systolic and mean_diastolic < limits.bp_target_diastolic:
        return []
    previous_systolic = _values_between(systolic_readings, baseline_start, recent_start)
    previous_diastolic = _values_between(diastolic_readings, baseline_start, recent_start)
    stage2 = (
        mean_systolic >= limits.bp_stage2_systolic or mean_diastolic >= limits.bp_stage2_diastolic
    )
    params = {
        "systolic": _whole(mean_systolic),
        "diastolic": _whole(mean_diastolic),
        "target_systolic": _whole(limits.bp_target_systolic),
        "target_diastolic": _whole(limits.bp_target_diastolic),
    }
    rising = False
    message = _BP_ABOVE_TARGET_NO_HISTORY
    if previous_systolic and previous_diastolic:
        before_systolic = _mean(previous_systolic)
        before_diastolic = _mean(previous_diastolic)
        rising = (
            mean_systolic - before_systolic >= BP_RISE_SYSTOLIC
            or mean_diastolic - before_diastolic >= BP_RISE_DIASTOLIC
        )
        params["previous_systolic"] = _whole(before_systolic)
        params["previous_diastolic"] = _whole(before_diastolic)
        message = _BP_ABOVE_TARGET
    severity = Severity.MODERATE if stage2 or rising else Severity.INFO
    observed = max(systolic_readings[-1].effective_at, diastolic_readings[-1].effective_at)
    return [
        _scheduled_signal(
            patient_ref, AlertKind.BP_ABOVE_TARGET, severity, now, observed, Metric.SYSTOLIC,
            message, **params,
        )
    ]


def _scheduled_weight_gain(
    by_metric: Mapping[Metric, Sequence[Reading]], plan: CarePlan, now: datetime
) -> list[AlertSignal]:
    if not plan.monitors(Metric.BODY_WEIGHT):
        return []
    weights = by_metric.get(Metric.BODY_WEIGHT, ())
    if not weights:
        return []
    latest = weights[-1]
    # Older readings were judged by earlier runs (and on ingest); only the last day is new.
    if now - latest.effective_at > timedelta(days=1):
        return []
    window = timedelta(days=plan.thresholds.weight_gain_window_days) + WEIGHT_TIME_TOLERANCE
    earlier = [
        item for item in weights[:-1] if latest.effective_at - window <= item.effective_at
    ]
    signal = _weight_gain_signal(latest, earlier, plan, None)
    return [replace(signal, detected_at=now)] if signal is not None else []


def _glucose_pattern(
    patient_ref: str,
    by_metric: Mapping[Metric, Sequence[Reading]],
    plan: CarePlan,
    now: datetime,
) -> list[AlertSignal]:
    if not plan.monitors(Metric.GLUCOSE):
        return []
    glucose = by_metric.get(Metric.GLUCOSE, ())
    first = bisect_left(
        glucose, (now - GLUCOSE_PATTERN_WINDOW).timestamp(), key=_effective_ts
    )
    blood = [item for item in glucose[first:] if item.loinc not in CGM_GLUCOSE_LOINC_CODES]
    if len(blood) < GLUCOSE_PATTERN_MIN_READINGS:
        return []
    threshold = plan.thresholds.glucose_level1_high
    above = sum(1 for item in blood if item.value > threshold)
    if above * 2 < len(blood):
        return []
    return [
        _scheduled_signal(
            patient_ref, AlertKind.GLUCOSE_HIGH_PATTERN, Severity.MODERATE, now,
            blood[-1].effective_at, Metric.GLUCOSE, _GLUCOSE_HIGH_PATTERN,
            above=str(above), total=str(len(blood)), threshold=_whole(threshold),
        )
    ]


def _cgm_report(
    patient_ref: str,
    by_metric: Mapping[Metric, Sequence[Reading]],
    plan: CarePlan,
    now: datetime,
    monitoring_since: datetime | None,
) -> list[AlertSignal]:
    if not plan.uses_cgm:
        return []
    targets = plan.cgm_targets
    days = targets.window_days
    if monitoring_since is not None and now - monitoring_since < timedelta(days=days):
        # A report needs the whole window: the first days of a sensor are not yet 14 days.
        return []
    glucose = by_metric.get(Metric.GLUCOSE, ())
    first = bisect_left(glucose, (now - timedelta(days=days)).timestamp(), key=_effective_ts)
    metrics = cgm_metrics(glucose[first:], now, days)
    if metrics is None:
        return []
    misses = missed_targets(metrics, targets)
    if not misses:
        return []
    observed = by_metric[Metric.GLUCOSE][-1].effective_at
    if misses[0].target is CgmTarget.SENSOR_WEAR:
        return [
            _scheduled_signal(
                patient_ref, AlertKind.CGM_LOW_WEAR, Severity.INFO, now, observed,
                Metric.GLUCOSE, _CGM_LOW_WEAR, wear=_whole(metrics.sensor_wear_percent),
                days=str(days), goal=_whole(targets.minimum_sensor_wear_percent),
            )
        ]
    lows = {CgmTarget.BELOW_54, CgmTarget.BELOW_70}
    severity = Severity.HIGH if any(miss.target in lows for miss in misses) else Severity.MODERATE
    return [
        _scheduled_signal(
            patient_ref, AlertKind.CGM_OUT_OF_TARGET, severity, now, observed, Metric.GLUCOSE,
            _CGM_OUT_OF_TARGET, days=str(days),
            in_range=_whole(metrics.percent_in_range),
            below_70=_one_decimal(metrics.percent_below_70),
            below_54=_one_decimal(metrics.percent_below_54),
            above_250=_one_decimal(metrics.percent_above_250),
            cv=_whole(metrics.coefficient_of_variation_percent),
            gmi=_one_decimal(metrics.gmi_percent),
            missed=",".join(miss.target.value for miss in misses),
        )
    ]


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


class AlertTransitionError(ValueError):
    """A workflow step that the alert's state does not allow."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode as the care team sees it: its signals, worst severity and workflow state."""

    alert_id: str
    episode_key: str
    patient_ref: str
    kind: AlertKind
    severity: Severity
    opened_at: datetime
    last_signal_at: datetime
    signals: tuple[AlertSignal, ...]
    state: AlertState = AlertState.OPEN
    #: Since when nobody has acknowledged it (reset when a worse signal reopens it).
    unacknowledged_since: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    snoozed_until: datetime | None = None
    resolved_at: datetime | None = None
    #: None with `resolved_at` set means the system cleared it after a quiet period.
    resolved_by: str | None = None
    resolution_note: str = ""

    @property
    def signal_count(self) -> int:
        return len(self.signals)

    @property
    def latest(self) -> AlertSignal:
        return self.signals[-1]

    @property
    def worst(self) -> AlertSignal:
        return max(self.signals, key=lambda item: (item.severity.rank, item.detected_at))

    def explain(self, language: str) -> str:
        return self.worst.explain(language)

    def state_at(self, now: datetime) -> AlertState:
        """The state in force at `now`: a snooze that ran out is open again."""
        if (
            self.state is AlertState.SNOOZED
            and self.snoozed_until is not None
            and now >= self.snoozed_until
        ):
            return AlertState.OPEN
        return self.state


def open_alert(signal: AlertSignal) -> Alert:
    return Alert(
        alert_id=f"{signal.episode_key}@{signal.detected_at.isoformat()}",
        episode_key=signal.episode_key,
        patient_ref=signal.patient_ref,
        kind=signal.kind,
        severity=signal.severity,
        opened_at=signal.detected_at,
        last_signal_at=signal.detected_at,
        signals=(signal,),
        unacknowledged_since=signal.detected_at,
    )


def merge_signal(alert: Alert, signal: AlertSignal) -> Alert:
    """`alert` with one more signal of its episode.

    A worse signal than any before reopens an acknowledged or snoozed alert: the care team
    saw a milder episode than the one now going on.
    """
    if signal.episode_key != alert.episode_key:
        raise ValueError("signal belongs to another episode")
    if alert.state is AlertState.RESOLVED:
        raise AlertTransitionError("a resolved alert takes no more signals")
    worse = signal.severity.rank > alert.severity.rank
    updated = replace(
        alert,
        signals=(*alert.signals, signal),
        last_signal_at=max(alert.last_signal_at, signal.detected_at),
        severity=signal.severity if worse else alert.severity,
        kind=signal.kind if worse else alert.kind,
    )
    if worse and updated.state in (AlertState.ACKNOWLEDGED, AlertState.SNOOZED):
        updated = replace(
            updated,
            state=AlertState.OPEN,
            unacknowledged_since=signal.detected_at,
            acknowledged_at=None,
            acknowledged_by=None,
            snoozed_until=None,
        )
    return updated


def acknowledge(alert: Alert, by: str, now: datetime) -> Alert:
    state = alert.state_at(now)
    if state not in (AlertState.OPEN, AlertState.SNOOZED):
        raise AlertTransitionError(f"cannot acknowledge an alert that is {state}")
    return replace(
        alert,
        state=AlertState.ACKNOWLEDGED,
        acknowledged_at=now,
        acknowledged_by=by,
        unacknowledged_since=None,
        snoozed_until=None,
    )


def snooze(alert: Alert, by: str, now: datetime, until: datetime) -> Alert:
    """Hide the alert until `until`. A critical alert must be acknowledged before a snooze."""
    state = alert.state_at(now)
    if until <= now:
        raise AlertTransitionError("a snooze must end in the future")
    if state is AlertState.RESOLVED:
        raise AlertTransitionError("cannot snooze a resolved alert")
    if alert.severity is Severity.CRITICAL and state is not AlertState.ACKNOWLEDGED:
        raise AlertTransitionError("acknowledge a critical alert before snoozing it")
    acknowledged_by = alert.acknowledged_by if state is AlertState.ACKNOWLEDGED else None
    return replace(
        alert,
        state=AlertState.SNOOZED,
        snoozed_until=until,
        acknowledged_by=acknowledged_by if acknowledged_by is not None else by,
        acknowledged_at=alert.acknowledged_at if acknowledged_by is not None else now,
        unacknowledged_since=None,
    )


def resolve(alert: Alert, by: str, now: datetime, note: str = "") -> Alert:
    if alert.state is AlertState.RESOLVED:
        raise AlertTransitionError("the alert is already resolved")
    return replace(
        alert,
        state=AlertState.RESOLVED,
        resolved_at=now,
        resolved_by=by,
        resolution_note=note,
        unacknowledged_since=None,
        snoozed_until=None,
    )


def can_auto_clear(alert: Alert, now: datetime, quiet_period: timedelta) -> bool:
    """Whether the system may resolve a quiet alert on its own.

    Never a wound photo (a clinician must look at it), never a critical alert nobody
    acknowledged, never before the quiet period has passed since its last signal.
    """
    if alert.kind in NEVER_AUTO_CLEARED or alert.state is AlertState.RESOLVED:
        return False
    if any(signal.kind in NEVER_AUTO_CLEARED for signal in alert.signals):
        return False
    if alert.severity is Severity.CRITICAL and alert.state_at(now) is not AlertState.ACKNOWLEDGED:
        return False
    return now - alert.last_signal_at >= quiet_period


def auto_clear(alert: Alert, now: datetime, quiet_period: timedelta) -> Alert:
    if not can_auto_clear(alert, now, quiet_period):
        raise AlertTransitionError("this alert needs a person to resolve it")
    return replace(
        alert,
        state=AlertState.RESOLVED,
        resolved_at=now,
        resolved_by=None,
        unacknowledged_since=None,
        snoozed_until=None,
    )


def needs_escalation(alert: Alert, now: datetime, escalate_after: timedelta) -> bool:
    """True for a critical alert still unacknowledged `escalate_after` after it (re)opened."""
    if alert.severity is not Severity.CRITICAL:
        return False
    if alert.state_at(now) is not AlertState.OPEN or alert.unacknowledged_since is None:
        return False
    return now - alert.unacknowledged_since >= escalate_after


#: Default quiet period: longer than a day so that a condition found by the daily scheduled
#: evaluation stays one episode while it lasts.
DEFAULT_QUIET_PERIOD = timedelta(hours=48)


class EpisodeGrouper:
    """Folds signals into alerts: one open alert per episode key.

    A signal joins the open alert of its key unless that alert was resolved or has been quiet
    (no signal) for longer than the quiet period of its kind; then a new alert opens. Wound
    photo reviews have no quiet period: they stay one open item until a clinician resolves it.
    """

    def __init__(
        self,
        quiet_period: timedelta = DEFAULT_QUIET_PERIOD,
        quiet_periods: Mapping[AlertKind, timedelta] | None = None,
    ) -> None:
        self._quiet_period = quiet_period
        self._quiet_periods = dict(quiet_periods or {})
        self._open: dict[str, Alert] = {}
        self._closed: list[Alert] = []

    def quiet_period_for(self, kind: AlertKind) -> timedelta | None:
        if kind in NEVER_AUTO_CLEARED:
            return None
        return self._quiet_periods.get(kind, self._quiet_period)

    def _is_quiet(self, alert: Alert, moment: datetime) -> bool:
        quiet = self.quiet_period_for(alert.kind)
        return quiet is not None and moment - alert.last_signal_at > quiet

    def add(self, signal: AlertSignal) -> Alert:
        """Put `signal` into its episode; returns the alert that now holds it."""
        current = self._open.get(signal.episode_key)
        if current is not None and (
            current.state is AlertState.RESOLVED or self._is_quiet(current, signal.detected_at)
        ):
            self._closed.append(current)
            current = None
        alert = open_alert(signal) if current is None else merge_signal(current, signal)
        self._open[signal.episode_key] = alert
        return alert

    def add_all(self, signals: Iterable[AlertSignal]) -> list[Alert]:
        return [self.add(signal) for signal in signals]

    def update(self, alert: Alert) -> None:
        """Store a workflow step (acknowledge, snooze, resolve) taken on an open alert."""
        current = self._open.get(alert.episode_key)
        if current is None or current.alert_id != alert.alert_id:
            raise KeyError(f"no open alert {alert.alert_id}")
        self._open[alert.episode_key] = alert

    def close_quiet(self, now: datetime) -> list[Alert]:
        """Close episodes quiet for longer than their period; returns the ones closed.

        Closing ends grouping (the next signal opens a new alert); it does not resolve
        anything: that is `auto_clear` or a person.
        """
        closed = [
            alert
            for alert in self._open.values()
            if alert.state is AlertState.RESOLVED or self._is_quiet(alert, now)
        ]
        for alert in closed:
            del self._open[alert.episode_key]
            self._closed.append(alert)
        return closed

    def open_alerts(self) -> list[Alert]:
        return sorted(self._open.values(), key=lambda alert: (alert.opened_at, alert.alert_id))

    def all_alerts(self) -> list[Alert]:
        return sorted(
            [*self._closed, *self._open.values()],
            key=lambda alert: (alert.opened_at, alert.alert_id),
        )
