"""Triage: which of a clinician's patients to look at first, and what changed for each.

A patient's readings are compared with their own baseline (the weeks before), not with a
population: "7-day mean 152/96, up 14/8 from the previous 4 weeks" says more about this patient
than "above 140/90". `rank` orders patients by the worst active alert, how long it has waited
unacknowledged, how far the patient moved from their baseline and how recent the last signal is.
Every part of the score is kept on the item so the order can be explained.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from jaejin.core.i18n import N_, translate
from jaejin.monitoring.alerts import Alert, AlertState, Severity
from jaejin.monitoring.careplans import CarePlan
from jaejin.monitoring.cgm import cgm_metrics
from jaejin.monitoring.readings import GlucoseSource, Metric, Reading, metric_label

RECENT_WINDOW = timedelta(days=7)
BASELINE_WINDOW = timedelta(days=28)
#: Systolic readings at or above this are counted in the blood-pressure summary.
MARKED_SYSTOLIC = 160.0
#: A change of 5 percentage points of CGM time in range is clinically meaningful (consensus).
CGM_MEANINGFUL_CHANGE_POINTS = 5.0
#: Floors for a patient's own variability, so a very steady baseline does not turn a trivial
#: change into a huge deviation.
_MINIMUM_SPREAD: Mapping[Metric, float] = MappingProxyType(
    {
        Metric.SYSTOLIC: 4.0,
        Metric.DIASTOLIC: 3.0,
        Metric.HEART_RATE: 3.0,
        Metric.GLUCOSE: 10.0,
        Metric.SPO2: 1.0,
        Metric.BODY_WEIGHT: 0.5,
        Metric.BODY_TEMPERATURE: 0.2,
    }
)

_BP_UP = N_(
    "7-day mean {systolic}/{diastolic}, up {delta_systolic}/{delta_diastolic} from the previous "
    "4 weeks; {marked} readings above 160"
)
_BP_DOWN = N_(
    "7-day mean {systolic}/{diastolic}, down {delta_systolic}/{delta_diastolic} from the "
    "previous 4 weeks; {marked} readings above 160"
)
_BP_MIXED = N_(
    "7-day mean {systolic}/{diastolic}, {delta_systolic}/{delta_diastolic} against the previous "
    "4 weeks; {marked} readings above 160"
)
_METRIC_CHANGE = N_("7-day mean {metric} {mean} {unit}, {delta} from the previous 4 weeks")
_TIME_IN_RANGE_CHANGE = N_(
    "14-day time in range {in_range} %, {delta} points from the previous 14 days"
)
_NO_ALERT = N_("No open alert")


@dataclass(frozen=True, slots=True)
class BaselineChange:
    """What moved for one metric against the patient's own previous weeks."""

    metric: Metric
    message: str
    params: Mapping[str, str]
    #: Size of the change in units of the patient's own spread (standard deviations), >= 0.
    deviation: float

    def explain(self, language: str) -> str:
        params = dict(self.params)
        if "metric" in params:
            params["metric"] = metric_label(Metric(params["metric"]), language)
        return translate(language, self.message, **params)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _spread(values: Sequence[float], metric: Metric) -> float:
    floor = _MINIMUM_SPREAD.get(metric, 1.0)
    if len(values) < 2:
        return floor
    mean = _mean(values)
    deviation = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1))
    return max(deviation, floor)


def _signed(value: float, digits: int = 0) -> str:
    return f"{value:+.{digits}f}"


def _split(
    readings: Sequence[Reading], now: datetime
) -> tuple[list[float], list[float]]:
    now_ts = now.timestamp()
    recent_start = now_ts - RECENT_WINDOW.total_seconds()
    baseline_start = recent_start - BASELINE_WINDOW.total_seconds()
    recent = [item.value for item in readings if recent_start <= item.effective_ts <= now_ts]
    before = [
        item.value for item in readings if baseline_start <= item.effective_ts < recent_start
    ]
    return recent, before


def _blood_pressure_change(
    systolic: Sequence[Reading], diastolic: Sequence[Reading], now: datetime
) -> BaselineChange | None:
    recent_systolic, before_systolic = _split(systolic, now)
    recent_diastolic, before_diastolic = _split(diastolic, now)
    if not (recent_systolic and before_systolic and recent_diastolic and before_diastolic):
        return None
    delta_systolic = _mean(recent_systolic) - _mean(before_systolic)
    delta_diastolic = _mean(recent_diastolic) - _mean(before_diastolic)
    shown_systolic = round(delta_systolic)
    shown_diastolic = round(delta_diastolic)
    if shown_systolic >= 0 and shown_diastolic >= 0:
        message = _BP_UP
        deltas = (str(shown_systolic), str(shown_diastolic))
    elif shown_systolic <= 0 and shown_diastolic <= 0:
        message = _BP_DOWN
        deltas = (str(-shown_systolic), str(-shown_diastolic))
    else:
        message = _BP_MIXED
        deltas = (_signed(delta_systolic), _signed(delta_diastolic))
    deviation = max(
        abs(delta_systolic) / _spread(before_systolic, Metric.SYSTOLIC),
        abs(delta_diastolic) / _spread(before_diastolic, Metric.DIASTOLIC),
    )
    return BaselineChange(
        Metric.SYSTOLIC,
        message,
        MappingProxyType(
            {
                "systolic": f"{_mean(recent_systolic):.0f}",
                "diastolic": f"{_mean(recent_diastolic):.0f}",
                "delta_systolic": deltas[0],
                "delta_diastolic": deltas[1],
                "marked": str(sum(1 for value in recent_systolic if value > MARKED_SYSTOLIC)),
            }
        ),
        deviation,
    )


_DISPLAY_UNIT: Mapping[Metric, tuple[str, int]] = MappingProxyType(
    {
        Metric.HEART_RATE: ("/min", 0),
        Metric.GLUCOSE: ("mg/dL", 0),
        Metric.SPO2: ("%", 0),
        Metric.BODY_WEIGHT: ("kg", 1),
        Metric.BODY_TEMPERATURE: ("°C", 1),
    }
)


def _metric_change(metric: Metric, readings: Sequence[Reading], now: datetime) -> (
    BaselineChange | None
):
    recent, before = _split(readings, now)
    if not recent or not before:
        return None
    unit, digits = _DISPLAY_UNIT[metric]
    delta = _mean(recent) - _mean(before)
    return BaselineChange(
        metric,
        _METRIC_CHANGE,
        MappingProxyType(
            {
                "metric": metric.value,
                "mean": f"{_mean(recent):.{digits}f}",
                "unit": unit,
                "delta": _signed(delta, digits),
            }
        ),
        abs(delta) / _spread(before, metric),
    )


def _time_in_range_change(readings: Sequence[Reading], now: datetime) -> BaselineChange | None:
    current = cgm_metrics(readings, now, 14)
    previous = cgm_metrics(readings, now - timedelta(days=14), 14)
    if current is None or previous is None:
        return None
    delta = current.percent_in_range - previous.percent_in_range
    return BaselineChange(
        Metric.GLUCOSE,
        _TIME_IN_RANGE_CHANGE,
        MappingProxyType(
            {"in_range": f"{current.percent_in_range:.0f}", "delta": _signed(delta)}
        ),
        abs(delta) / CGM_MEANINGFUL_CHANGE_POINTS,
    )


def baseline_changes(
    readings: Iterable[Reading], plan: CarePlan, now: datetime
) -> list[BaselineChange]:
    """How the patient's last week (two weeks for CGM) compares with the weeks before.

    One change per metric the plan monitors, when there is data on both sides; blood pressure
    is one change for the pair. Sorted by deviation, largest first.
    """
    by_metric: dict[Metric, list[Reading]] = {}
    for reading in readings:
        by_metric.setdefault(reading.metric, []).append(reading)
    changes: list[BaselineChange] = []
    if plan.monitors(Metric.SYSTOLIC):
        change = _blood_pressure_change(
            by_metric.get(Metric.SYSTOLIC, []), by_metric.get(Metric.DIASTOLIC, []), now
        )
        if change is not None:
            changes.append(change)
    for metric in sorted(plan.monitored_metrics):
        if metric not in _DISPLAY_UNIT:
            continue
        if metric is Metric.GLUCOSE and plan.uses_cgm:
            change = _time_in_range_change(by_metric.get(metric, []), now)
        elif metric is Metric.GLUCOSE:
            blood = [
                item for item in by_metric.get(metric, [])
                if item.glucose_source is not GlucoseSource.CGM
            ]
            change = _metric_change(metric, blood, now)
        else:
            change = _metric_change(metric, by_metric.get(metric, []), now)
        if change is not None:
            changes.append(change)
    changes.sort(key=lambda item: (-item.deviation, item.metric.value))
    return changes


def missing_data_ended(newest_reading_at: datetime, missing_after: timedelta | None,
                       now: datetime) -> bool:
    """Whether a reading taken at `newest_reading_at` ends a "no reading for N hours" alert.

    The scheduled check raises it when the last reading is `missing_after` old or older; a
    reading younger than that makes the condition false, and so does a plan that no longer
    expects the metric (`missing_after` None). A late reading from before the gap ends
    nothing.
    """
    if missing_after is None:
        return True
    return now - newest_reading_at < missing_after


@dataclass(frozen=True, slots=True)
class PatientStatus:
    """What triage knows about one patient: their alerts and their changes against baseline."""

    patient_ref: str
    alerts: Sequence[Alert] = ()
    changes: Sequence[BaselineChange] = ()


#: Points per severity of the worst active alert: one critical outranks any number of hours an
#: alert of lower severity waited.
SEVERITY_POINTS: Mapping[Severity, float] = MappingProxyType(
    {Severity.CRITICAL: 1000.0, Severity.HIGH: 300.0, Severity.MODERATE: 100.0, Severity.INFO: 10.0}
)
#: Points per hour an active alert has waited unacknowledged, capped at `WAIT_CAP_HOURS`.
WAIT_POINTS_PER_HOUR: Mapping[Severity, float] = MappingProxyType(
    {Severity.CRITICAL: 20.0, Severity.HIGH: 5.0, Severity.MODERATE: 1.0, Severity.INFO: 0.1}
)
WAIT_CAP_HOURS = 48.0
DEVIATION_POINTS = 20.0
DEVIATION_CAP = 5.0
RECENCY_POINTS = 30.0
RECENCY_HORIZON = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class TriageItem:
    patient_ref: str
    rank: int
    score: float
    #: Worst severity among alerts still needing attention (open or acknowledged), if any.
    severity: Severity | None
    #: The alerts that count, worst first.
    alerts: tuple[Alert, ...]
    changes: tuple[BaselineChange, ...]
    score_parts: Mapping[str, float] = field(default_factory=dict)

    def explain(self, language: str) -> str:
        """The worst alert, then what changed against the patient's own baseline."""
        parts = [self.alerts[0].explain(language)] if self.alerts else [
            translate(language, _NO_ALERT)
        ]
        parts.extend(change.explain(language) for change in self.changes)
        return "; ".join(parts)


def _active(alert: Alert, now: datetime) -> bool:
    return alert.state_at(now) in (AlertState.OPEN, AlertState.ACKNOWLEDGED)


def _score(status: PatientStatus, now: datetime) -> tuple[dict[str, float], list[Alert]]:
    active = sorted(
        (alert for alert in status.alerts if _active(alert, now)),
        key=lambda alert: (-alert.severity.rank, -alert.last_signal_at.timestamp(),
                           alert.alert_id),
    )
    parts = {"severity": 0.0, "waiting": 0.0, "deviation": 0.0, "recency": 0.0}
    if active:
        # An acknowledged alert is in someone's hands: it counts, but less than an unseen one.
        parts["severity"] = max(
            SEVERITY_POINTS[alert.severity]
            * (1.0 if alert.state_at(now) is AlertState.OPEN else 0.5)
            for alert in active
        )
        waiting = 0.0
        for alert in active:
            if alert.state_at(now) is AlertState.OPEN and alert.unacknowledged_since is not None:
                hours = min(
                    WAIT_CAP_HOURS,
                    max(0.0, (now - alert.unacknowledged_since).total_seconds() / 3600),
                )
                waiting = max(waiting, hours * WAIT_POINTS_PER_HOUR[alert.severity])
        parts["waiting"] = waiting
        latest = max(alert.last_signal_at for alert in active)
        age = max(timedelta(0), now - latest)
        if age < RECENCY_HORIZON:
            parts["recency"] = RECENCY_POINTS * (1 - age / RECENCY_HORIZON)
    if status.changes:
        biggest = max(change.deviation for change in status.changes)
        parts["deviation"] = DEVIATION_POINTS * min(DEVIATION_CAP, biggest)
    return parts, active


def rank(items: Iterable[PatientStatus], now: datetime) -> list[TriageItem]:
    """Patients ordered most urgent first; ties broken by patient reference (deterministic)."""
    scored: list[tuple[float, int, str, dict[str, float], list[Alert], PatientStatus]] = []
    for status in items:
        parts, active = _score(status, now)
        score = round(math.fsum(parts.values()), 6)
        worst_rank = active[0].severity.rank if active else -1
        scored.append((score, worst_rank, status.patient_ref, parts, active, status))
    scored.sort(key=lambda entry: (-entry[0], -entry[1], entry[2]))
    ranked: list[TriageItem] = []
    for position, (score, _worst, patient_ref, parts, active, status) in enumerate(scored, 1):
        ranked.append(
            TriageItem(
                patient_ref=patient_ref,
                rank=position,
                score=score,
                severity=active[0].severity if active else None,
                alerts=tuple(active),
                changes=tuple(
                    sorted(status.changes, key=lambda item: (-item.deviation, item.metric.value))
                ),
                score_parts=MappingProxyType(parts),
            )
        )
    return ranked
