"""Evaluation of the alert pipeline on a simulated cohort, against a naive baseline.

For each simulated patient the readings are fed, in the order they arrive, through the real
pipeline: `evaluate_on_ingest` per reading, `evaluate_scheduled` once a day, and an
`EpisodeGrouper` that turns signals into alerts. The naive baseline raises an alert for every
reading outside the plan's thresholds (a blood-pressure panel counts once). Reported:
- sensitivity for the injected events (an alert of the expected kind while the event lasts),
  critical events apart (goal 100 %);
- alerts per patient-week for both, and how many times fewer the pipeline raises (goal >= 5).

Wound-photo review items are counted apart: both approaches must show every photo to a
clinician, so they say nothing about alert fatigue. No clinician action is simulated.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from jaejin.core.i18n import N_, translate
from jaejin.monitoring.alerts import (
    WEIGHT_TIME_TOLERANCE,
    AlertKind,
    EpisodeGrouper,
    Severity,
    evaluate_on_ingest,
    evaluate_scheduled,
    scheduled_window,
)
from jaejin.monitoring.careplans import CarePlan, PlanTemplate
from jaejin.monitoring.readings import Metric, Reading
from jaejin.monitoring.simulation import (
    CRITICAL_EVENTS,
    EXPECTED_ALERTS,
    Cohort,
    EventKind,
    InjectedEvent,
    SimulatedPatient,
    simulate_cohort,
)

#: How often the scheduled evaluation runs for each patient.
SCHEDULE_EVERY = timedelta(days=1)
#: How much of a patient's recent history the ingest path keeps at hand.
RECENT_HISTORY = timedelta(days=3)
#: An event counts as detected by an alert raised from an hour before its first abnormal
#: measurement (a CGM falling through 54 on its way to the nadir) until this long after its end.
DETECTION_LEAD = timedelta(hours=1)
DETECTION_ALLOWANCE: Mapping[EventKind, timedelta] = MappingProxyType(
    {
        EventKind.HYPERTENSIVE_CRISIS: timedelta(hours=1),
        EventKind.SEVERE_HYPOGLYCAEMIA: timedelta(hours=1),
        EventKind.HYPOGLYCAEMIA: timedelta(hours=1),
        EventKind.POST_OPERATIVE_FEVER: timedelta(hours=1),
        # Found by the daily scheduled run at the latest.
        EventKind.HEART_FAILURE_WEIGHT_GAIN: SCHEDULE_EVERY,
        EventKind.MISSING_DATA: SCHEDULE_EVERY,
    }
)

#: Which naive out-of-range readings count as noticing an event.
_NAIVE_EVIDENCE: Mapping[EventKind, frozenset[Metric]] = MappingProxyType(
    {
        EventKind.HYPERTENSIVE_CRISIS: frozenset({Metric.SYSTOLIC, Metric.DIASTOLIC}),
        EventKind.SEVERE_HYPOGLYCAEMIA: frozenset({Metric.GLUCOSE}),
        EventKind.HYPOGLYCAEMIA: frozenset({Metric.GLUCOSE}),
        EventKind.POST_OPERATIVE_FEVER: frozenset({Metric.BODY_TEMPERATURE}),
        EventKind.HEART_FAILURE_WEIGHT_GAIN: frozenset({Metric.BODY_WEIGHT}),
        EventKind.MISSING_DATA: frozenset(),
    }
)


def naive_out_of_range(
    reading: Reading, plan: CarePlan, recent_weights: Sequence[Reading] = ()
) -> bool:
    """The baseline: is this single reading outside any of the plan's thresholds?"""
    limits = plan.thresholds
    value = reading.value
    metric = reading.metric
    if metric is Metric.SYSTOLIC:
        return value >= limits.bp_stage2_systolic or value < limits.bp_hypotension_systolic
    if metric is Metric.DIASTOLIC:
        return value >= limits.bp_stage2_diastolic
    if metric is Metric.GLUCOSE:
        return value < limits.glucose_level1_low or value > limits.glucose_level1_high
    if metric is Metric.HEART_RATE:
        return value < limits.heart_rate_low or value > limits.heart_rate_high
    if metric is Metric.SPO2:
        return value < limits.spo2_low
    if metric is Metric.BODY_TEMPERATURE:
        return value >= limits.fever_celsius
    if metric is Metric.BODY_WEIGHT:
        return bool(recent_weights) and (
            value - min(item.value for item in recent_weights) > limits.weight_gain_kg
        )
    return False


@dataclass(frozen=True, slots=True)
class PatientOutcome:
    patient_ref: str
    template: PlanTemplate
    uses_cgm: bool
    monitored_weeks: float
    readings: int
    signals: int
    alerts_by_severity: Mapping[Severity, int]
    wound_review_items: int
    naive_alerts: int
    #: (event, detected by the pipeline, noticed by the naive baseline)
    events: tuple[tuple[InjectedEvent, bool, bool], ...]


def evaluate_patient(cohort: Cohort, patient: SimulatedPatient) -> PatientOutcome:
    """Run the pipeline and the naive baseline over one simulated patient's readings."""
    plan = patient.plan
    readings = cohort.readings_for(patient)
    by_effective = sorted(readings, key=lambda item: item.effective_ts)
    effective_ts = [item.effective_ts for item in by_effective]
    longest_delay = max(
        ((item.received_at - item.effective_at).total_seconds() for item in readings),
        default=0.0,
    )
    grouper = EpisodeGrouper()
    detections: list[tuple[AlertKind, datetime]] = []
    naive_hits: list[tuple[Metric, datetime]] = []
    naive_panels: set[str] = set()
    recent: deque[Reading] = deque()
    weight_window = timedelta(days=plan.thresholds.weight_gain_window_days)
    weight_window += WEIGHT_TIME_TOLERANCE
    lookback = scheduled_window(plan)
    signal_count = 0
    position = 0
    run_at = patient.monitoring_start + SCHEDULE_EVERY
    final_run = patient.monitoring_end
    total = len(readings)
    while position < total or run_at <= final_run:
        next_reading = readings[position] if position < total else None
        if next_reading is not None and (run_at > final_run or next_reading.received_at <= run_at):
            position += 1
            reading = next_reading
            horizon = reading.effective_ts - RECENT_HISTORY.total_seconds()
            while recent and recent[0].effective_ts < horizon:
                recent.popleft()
            for signal in evaluate_on_ingest(reading, plan, recent):
                grouper.add(signal)
                detections.append((signal.kind, signal.detected_at))
                signal_count += 1
            weights: list[Reading] = []
            if reading.metric is Metric.BODY_WEIGHT:
                since = reading.effective_at - weight_window
                weights = [
                    item for item in recent
                    if item.metric is Metric.BODY_WEIGHT and item.effective_at >= since
                ]
            if naive_out_of_range(reading, plan, weights):
                panel = reading.panel_id
                if panel is None or panel not in naive_panels:
                    naive_hits.append((reading.metric, reading.received_at))
                    if panel is not None:
                        naive_panels.add(panel)
            recent.append(reading)
            continue
        run_ts = run_at.timestamp()
        first = bisect_left(effective_ts, run_ts - lookback.total_seconds())
        after_last = bisect_right(effective_ts, run_ts)
        # Only the last few minutes can hold readings taken but not yet received.
        settled = max(first, bisect_right(effective_ts, run_ts - longest_delay))
        window = by_effective[first:settled] + [
            item for item in by_effective[settled:after_last] if item.received_at <= run_at
        ]
        for signal in evaluate_scheduled(
            window, plan, run_at, patient_ref=patient.patient_ref,
            monitoring_since=patient.monitoring_start,
        ):
            grouper.add(signal)
            detections.append((signal.kind, signal.detected_at))
            signal_count += 1
        grouper.close_quiet(run_at)
        run_at += SCHEDULE_EVERY
    alerts = grouper.all_alerts()
    by_severity = {severity: 0 for severity in Severity}
    wound_reviews = 0
    for alert in alerts:
        if alert.kind is AlertKind.WOUND_PHOTO_REVIEW:
            wound_reviews += 1
        else:
            by_severity[alert.severity] += 1
    outcomes = tuple(
        (
            event,
            _detected(event, detections),
            _noticed(event, naive_hits),
        )
        for event in patient.events
    )
    return PatientOutcome(
        patient_ref=patient.patient_ref,
        template=patient.template,
        uses_cgm=patient.uses_cgm,
        monitored_weeks=patient.monitored_weeks,
        readings=total,
        signals=signal_count,
        alerts_by_severity=MappingProxyType(by_severity),
        wound_review_items=wound_reviews,
        naive_alerts=len(naive_hits),
        events=outcomes,
    )


def _detection_window(event: InjectedEvent) -> tuple[datetime, datetime]:
    return event.start - DETECTION_LEAD, event.end + DETECTION_ALLOWANCE[event.kind]


def _detected(event: InjectedEvent, detections: Sequence[tuple[AlertKind, datetime]]) -> bool:
    expected = EXPECTED_ALERTS[event.kind]
    first, last = _detection_window(event)
    return any(kind in expected and first <= at <= last for kind, at in detections)


def _noticed(event: InjectedEvent, hits: Sequence[tuple[Metric, datetime]]) -> bool:
    evidence = _NAIVE_EVIDENCE[event.kind]
    first, last = _detection_window(event)
    return any(metric in evidence and first <= at <= last for metric, at in hits)


@dataclass(frozen=True, slots=True)
class EventTally:
    total: int = 0
    detected: int = 0
    naive_noticed: int = 0

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.total if self.total else None

    @property
    def naive_sensitivity(self) -> float | None:
        return self.naive_noticed / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class GroupVolume:
    """Alert volume of one group of patients (a care-plan template, on CGM or not)."""

    patients: int
    patient_weeks: float
    alerts: int
    naive_alerts: int

    @property
    def alerts_per_patient_week(self) -> float:
        return self.alerts / self.patient_weeks if self.patient_weeks else 0.0

    @property
    def naive_alerts_per_patient_week(self) -> float:
        return self.naive_alerts / self.patient_weeks if self.patient_weeks else 0.0


def _group_name(outcome: PatientOutcome) -> str:
    cgm = outcome.uses_cgm and outcome.template is not PlanTemplate.TYPE1_DIABETES_CGM
    return f"{outcome.template.value}+cgm" if cgm else outcome.template.value


@dataclass(frozen=True, slots=True)
class MissedEvent:
    patient_ref: str
    event: InjectedEvent


_TEXT_HEADER = N_(
    "Remote-monitoring alert evaluation: {patients} simulated patients, {days} days, seed {seed}"
)
_TEXT_VOLUME = N_(
    "{readings} readings, {patient_weeks} patient-weeks, {signals} signals, "
    "{seconds} s"
)
_TEXT_EVENTS = N_("Injected events: {detected} of {total} detected ({sensitivity})")
_TEXT_CRITICAL = N_(
    "Critical events: {detected} of {total} detected ({sensitivity}); goal 100 %"
)
_TEXT_EVENT_LINE = N_("{kind}: {detected} of {total} detected; naive baseline {naive} of {total}")
_TEXT_PIPELINE = N_(
    "Alerts (grouped episodes): {alerts}, {per_week} per patient-week "
    "(critical {critical}, high {high}, moderate {moderate}, info {info})"
)
_TEXT_NAIVE = N_(
    "Naive baseline (one alert per out-of-range reading): {alerts}, {per_week} per patient-week"
)
_TEXT_REDUCTION = N_("Reduction: {ratio}× fewer alerts than the naive baseline; goal ≥ 5×")
_TEXT_WOUNDS = N_("Wound photo review items (not counted above): {items}")
_TEXT_REDUCTION_WITHOUT_CGM = N_("Reduction among patients without CGM: {ratio}×")
_TEXT_GROUP = N_(
    "{group}: {patients} patients, {per_week} alerts per patient-week; naive baseline "
    "{naive_per_week}"
)
_TEXT_MISSED = N_("missed: {patient} {kind} at {start}")
_TEXT_NO_VALUE = N_("n/a")
_INDENT = "  "


def _percent(share: float | None, language: str) -> str:
    return translate(language, _TEXT_NO_VALUE) if share is None else f"{100 * share:.1f} %"


def _ratio(value: float | None, language: str) -> str:
    return translate(language, _TEXT_NO_VALUE) if value is None else f"{value:.1f}"


@dataclass(frozen=True)
class EvaluationReport:
    patients: int
    days: int
    seed: int
    readings: int
    signals: int
    patient_weeks: float
    events: Mapping[EventKind, EventTally]
    alerts_by_severity: Mapping[Severity, int]
    naive_alerts: int
    wound_review_items: int
    missed: tuple[MissedEvent, ...] = ()
    #: Volume per care-plan template ("type2_diabetes+cgm" apart): CGM patients dominate the
    #: naive count, so the ratio is also worth reading without them.
    groups: Mapping[str, GroupVolume] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    outcomes: tuple[PatientOutcome, ...] = field(default=(), repr=False)

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_severity.values())

    def _total(self, kinds: frozenset[EventKind] | None = None) -> EventTally:
        chosen = [tally for kind, tally in self.events.items() if kinds is None or kind in kinds]
        return EventTally(
            sum(item.total for item in chosen),
            sum(item.detected for item in chosen),
            sum(item.naive_noticed for item in chosen),
        )

    @property
    def all_events(self) -> EventTally:
        return self._total()

    @property
    def critical_events(self) -> EventTally:
        return self._total(CRITICAL_EVENTS)

    @property
    def sensitivity(self) -> float | None:
        return self.all_events.sensitivity

    @property
    def critical_sensitivity(self) -> float | None:
        return self.critical_events.sensitivity

    @property
    def alerts_per_patient_week(self) -> float:
        return self.alerts / self.patient_weeks if self.patient_weeks else 0.0

    @property
    def naive_alerts_per_patient_week(self) -> float:
        return self.naive_alerts / self.patient_weeks if self.patient_weeks else 0.0

    @property
    def reduction_ratio(self) -> float:
        """Naive alerts per pipeline alert (infinite when the pipeline raised none)."""
        if self.alerts == 0:
            return float("inf") if self.naive_alerts else 1.0
        return self.naive_alerts / self.alerts

    def _volume_without_cgm(self) -> GroupVolume:
        chosen = [item for item in self.outcomes if not item.uses_cgm]
        return GroupVolume(
            patients=len(chosen),
            patient_weeks=sum(item.monitored_weeks for item in chosen),
            alerts=sum(sum(item.alerts_by_severity.values()) for item in chosen),
            naive_alerts=sum(item.naive_alerts for item in chosen),
        )

    @property
    def reduction_ratio_without_cgm(self) -> float | None:
        """The reduction among patients without CGM, whose every 5-minute value would
        otherwise dominate the naive count; None when there are none."""
        volume = self._volume_without_cgm()
        if volume.patients == 0:
            return None
        if volume.alerts == 0:
            return float("inf") if volume.naive_alerts else 1.0
        return volume.naive_alerts / volume.alerts

    def to_text(self, language: str = "en") -> str:
        everything = self.all_events
        critical = self.critical_events
        lines = [
            translate(language, _TEXT_HEADER, patients=self.patients, days=self.days,
                      seed=self.seed),
            translate(language, _TEXT_VOLUME, readings=self.readings,
                      patient_weeks=f"{self.patient_weeks:.1f}", signals=self.signals,
                      seconds=f"{self.elapsed_seconds:.1f}"),
            translate(language, _TEXT_CRITICAL, detected=critical.detected, total=critical.total,
                      sensitivity=_percent(critical.sensitivity, language)),
            translate(language, _TEXT_EVENTS, detected=everything.detected,
                      total=everything.total,
                      sensitivity=_percent(everything.sensitivity, language)),
        ]
        for kind, tally in self.events.items():
            lines.append(
                _INDENT
                + translate(language, _TEXT_EVENT_LINE, kind=kind.value, detected=tally.detected,
                          total=tally.total, naive=tally.naive_noticed)
            )
        lines.extend(
            [
                translate(
                    language, _TEXT_PIPELINE, alerts=self.alerts,
                    per_week=f"{self.alerts_per_patient_week:.2f}",
                    critical=self.alerts_by_severity.get(Severity.CRITICAL, 0),
                    high=self.alerts_by_severity.get(Severity.HIGH, 0),
                    moderate=self.alerts_by_severity.get(Severity.MODERATE, 0),
                    info=self.alerts_by_severity.get(Severity.INFO, 0),
                ),
                translate(language, _TEXT_NAIVE, alerts=self.naive_alerts,
                          per_week=f"{self.naive_alerts_per_patient_week:.2f}"),
                translate(language, _TEXT_REDUCTION, ratio=f"{self.reduction_ratio:.1f}"),
                translate(
                    language, _TEXT_REDUCTION_WITHOUT_CGM,
                    ratio=_ratio(self.reduction_ratio_without_cgm, language),
                ),
                translate(language, _TEXT_WOUNDS, items=self.wound_review_items),
            ]
        )
        for name, group in self.groups.items():
            lines.append(
                _INDENT
                + translate(language, _TEXT_GROUP, group=name, patients=group.patients,
                            per_week=f"{group.alerts_per_patient_week:.2f}",
                            naive_per_week=f"{group.naive_alerts_per_patient_week:.2f}")
            )
        for missed in self.missed:
            lines.append(
                _INDENT
                + translate(language, _TEXT_MISSED, patient=missed.patient_ref,
                          kind=missed.event.kind.value,
                          start=missed.event.start.isoformat(timespec="minutes"))
            )
        return "\n".join(lines)


def summarise(
    cohort: Cohort, outcomes: Sequence[PatientOutcome], elapsed_seconds: float = 0.0
) -> EvaluationReport:
    tallies: dict[EventKind, list[int]] = {kind: [0, 0, 0] for kind in EventKind}
    missed: list[MissedEvent] = []
    by_severity = {severity: 0 for severity in Severity}
    for outcome in outcomes:
        for severity, count in outcome.alerts_by_severity.items():
            by_severity[severity] += count
        for event, detected, noticed in outcome.events:
            tally = tallies[event.kind]
            tally[0] += 1
            tally[1] += int(detected)
            tally[2] += int(noticed)
            if not detected:
                missed.append(MissedEvent(outcome.patient_ref, event))
    grouped: dict[str, list[PatientOutcome]] = {}
    for outcome in outcomes:
        grouped.setdefault(_group_name(outcome), []).append(outcome)
    groups = {
        name: GroupVolume(
            patients=len(members),
            patient_weeks=sum(item.monitored_weeks for item in members),
            alerts=sum(sum(item.alerts_by_severity.values()) for item in members),
            naive_alerts=sum(item.naive_alerts for item in members),
        )
        for name, members in sorted(grouped.items())
    }
    return EvaluationReport(
        patients=len(cohort.patients),
        days=cohort.days,
        seed=cohort.seed,
        readings=sum(outcome.readings for outcome in outcomes),
        signals=sum(outcome.signals for outcome in outcomes),
        patient_weeks=sum(outcome.monitored_weeks for outcome in outcomes),
        events=MappingProxyType(
            {kind: EventTally(*values) for kind, values in tallies.items() if values[0]}
        ),
        alerts_by_severity=MappingProxyType(by_severity),
        naive_alerts=sum(outcome.naive_alerts for outcome in outcomes),
        wound_review_items=sum(outcome.wound_review_items for outcome in outcomes),
        missed=tuple(missed),
        groups=MappingProxyType(groups),
        elapsed_seconds=elapsed_seconds,
        outcomes=tuple(outcomes),
    )


def evaluate(cohort: Cohort) -> EvaluationReport:
    """Run the pipeline and the naive baseline over every patient of `cohort`."""
    started = time.perf_counter()
    outcomes = [evaluate_patient(cohort, patient) for patient in cohort.patients]
    return summarise(cohort, outcomes, time.perf_counter() - started)


def run_evaluation(patients: int = 200, days: int = 90, seed: int = 0) -> EvaluationReport:
    """Simulate a cohort and evaluate the alert pipeline on it (what `jaejin monitoring
    evaluate` prints)."""
    return evaluate(simulate_cohort(patients=patients, days=days, seed=seed))
