"""A deterministic cohort of simulated remote-monitoring patients with known clinical events.

Each patient follows a care-plan template with realistic noise, daily rhythms (morning blood
pressure surge, meals and the dawn phenomenon in glucose, evening temperature rise) and imperfect
adherence. On top of that, events are injected at known times: hypertensive crises, level 1 and
level 2 hypoglycaemia, fever after surgery, heart-failure weight gain and gaps without data.
Outside the injected events the values stay clear of the alert thresholds, so the events are the
ground truth an alert pipeline is measured against.

The cohort itself holds only each patient's description; `Cohort.readings_for(patient)`
generates the readings again from the patient's seed, so 90 days of 5-minute CGM for dozens of
patients never sit in memory at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from jaejin.monitoring.alerts import AlertKind
from jaejin.monitoring.careplans import TEMPLATES, CarePlan, PlanTemplate
from jaejin.monitoring.readings import (
    LOINC_BODY_TEMPERATURE,
    LOINC_BODY_WEIGHT,
    LOINC_DIASTOLIC,
    LOINC_GLUCOSE_BLOOD_MASS,
    LOINC_GLUCOSE_CGM,
    LOINC_HEART_RATE,
    LOINC_PHOTOGRAPHIC_IMAGE,
    LOINC_SPO2_PULSE_OXIMETRY,
    LOINC_SYSTOLIC,
    Metric,
    Reading,
)

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
CGM_STEP = timedelta(minutes=5)
POST_OPERATIVE_MONITORING = timedelta(days=30)


class EventKind(StrEnum):
    HYPERTENSIVE_CRISIS = "hypertensive_crisis"
    SEVERE_HYPOGLYCAEMIA = "severe_hypoglycaemia"
    HYPOGLYCAEMIA = "hypoglycaemia"
    POST_OPERATIVE_FEVER = "post_operative_fever"
    HEART_FAILURE_WEIGHT_GAIN = "heart_failure_weight_gain"
    MISSING_DATA = "missing_data"


#: Critical events must never go unnoticed; the evaluation reports their sensitivity apart.
CRITICAL_EVENTS = frozenset({EventKind.HYPERTENSIVE_CRISIS, EventKind.SEVERE_HYPOGLYCAEMIA})

EXPECTED_ALERTS: dict[EventKind, frozenset[AlertKind]] = {
    EventKind.HYPERTENSIVE_CRISIS: frozenset({AlertKind.BP_CRISIS}),
    EventKind.SEVERE_HYPOGLYCAEMIA: frozenset({AlertKind.GLUCOSE_VERY_LOW}),
    EventKind.HYPOGLYCAEMIA: frozenset({AlertKind.GLUCOSE_LOW, AlertKind.GLUCOSE_VERY_LOW}),
    EventKind.POST_OPERATIVE_FEVER: frozenset({AlertKind.FEVER}),
    EventKind.HEART_FAILURE_WEIGHT_GAIN: frozenset({AlertKind.WEIGHT_GAIN}),
    EventKind.MISSING_DATA: frozenset({AlertKind.MISSING_DATA}),
}


@dataclass(frozen=True, slots=True)
class InjectedEvent:
    kind: EventKind
    #: From the first abnormal (or first missing) measurement to the last one, UTC.
    start: datetime
    end: datetime

    @property
    def critical(self) -> bool:
        return self.kind in CRITICAL_EVENTS


@dataclass(frozen=True, slots=True)
class Physiology:
    """One patient's own levels; every template uses the fields it needs."""

    systolic: float
    diastolic: float
    blood_pressure_drift: float
    heart_rate: float
    glucose_mean: float
    meal_response: float
    weight: float
    temperature: float
    spo2: float


@dataclass(frozen=True, slots=True)
class SimulatedPatient:
    patient_ref: str
    template: PlanTemplate
    plan: CarePlan
    zone: ZoneInfo
    country: str
    language: str
    monitoring_start: datetime
    monitoring_end: datetime
    seed: int
    physiology: Physiology
    events: tuple[InjectedEvent, ...]

    @property
    def uses_cgm(self) -> bool:
        return self.plan.uses_cgm

    @property
    def monitored_weeks(self) -> float:
        return (self.monitoring_end - self.monitoring_start) / timedelta(days=7)


#: Where patients live: mostly Korea, some abroad (their readings carry their local offset).
_RESIDENCES: tuple[tuple[str, str, str, int], ...] = (
    ("Asia/Seoul", "KR", "ko", 80),
    ("Asia/Tokyo", "JP", "ja", 5),
    ("America/Los_Angeles", "US", "en", 5),
    ("Asia/Shanghai", "CN", "zh-Hans", 4),
    ("Asia/Bangkok", "TH", "th", 3),
    ("Asia/Ulaanbaatar", "MN", "mn", 3),
)

#: Template of the n-th patient, repeating every 20 patients: 35 % hypertension, 15 % type 1
#: diabetes on CGM, 20 % type 2 diabetes (a quarter of them on CGM), 15 % after surgery, 15 %
#: heart failure.
_MIX: tuple[tuple[PlanTemplate, bool], ...] = (
    *((PlanTemplate.HYPERTENSION, False),) * 7,
    *((PlanTemplate.TYPE1_DIABETES_CGM, True),) * 3,
    *((PlanTemplate.TYPE2_DIABETES, False),) * 3,
    (PlanTemplate.TYPE2_DIABETES, True),
    *((PlanTemplate.POST_OPERATIVE, False),) * 3,
    *((PlanTemplate.HEART_FAILURE, False),) * 3,
)

_CGM_OVERRIDES = {
    "uses_cgm": True,
    "expected_every_hours": {Metric.GLUCOSE: 5 / 60},
    "missing_after_days": {Metric.GLUCOSE: 1.0},
}


def _plan_for(template: PlanTemplate, on_cgm: bool, high_risk: bool) -> CarePlan:
    plan = TEMPLATES[template]
    if on_cgm and not plan.uses_cgm:
        plan = plan.with_overrides(_CGM_OVERRIDES)
    if high_risk:
        plan = plan.with_overrides({"high_risk": True})
    return plan


def _at_day(start: datetime, day: int, zone: ZoneInfo, hour: float) -> datetime:
    """UTC instant of `hour` (local, fractional) on the `day`-th day after `start`."""
    local_date = (start + timedelta(days=day)).astimezone(zone).date()
    local_midnight = datetime(local_date.year, local_date.month, local_date.day, tzinfo=zone)
    return (local_midnight + timedelta(hours=hour)).astimezone(UTC)


def _pick_days(rng: random.Random, first: int, last: int, count: int, spacing: int) -> list[int]:
    """Up to `count` days in [first, last], at least `spacing` days apart."""
    chosen: list[int] = []
    candidates = list(range(first, last + 1))
    rng.shuffle(candidates)
    for day in candidates:
        if len(chosen) == count:
            break
        if all(abs(day - other) >= spacing for other in chosen):
            chosen.append(day)
    return sorted(chosen)


@dataclass(frozen=True, slots=True)
class _Hypoglycaemia:
    day: int
    #: UTC instant of the first reading below the nadir band (a fingerstick: the reading).
    at: datetime
    nadir: float
    #: CGM readings held at the nadir (5 minutes each).
    hold_slots: int
    severe: bool


@dataclass(frozen=True, slots=True)
class _EventPlan:
    """Exact times and sizes of each injected event; the reading generator follows them."""

    crises: tuple[datetime, ...] = ()
    hypoglycaemias: tuple[_Hypoglycaemia, ...] = ()
    #: [first day, day after the last) of fever.
    fevers: tuple[tuple[int, int], ...] = ()
    weight_gain_days: tuple[int, ...] = ()
    #: [first day, day after the last) without any reading.
    gaps: tuple[tuple[int, int], ...] = ()


_GAP_LENGTH: dict[PlanTemplate, tuple[int, int]] = {
    # Always longer than the plan's missing-data delay plus a day of scheduled evaluation.
    PlanTemplate.HYPERTENSION: (5, 8),
    PlanTemplate.TYPE1_DIABETES_CGM: (3, 4),
    PlanTemplate.TYPE2_DIABETES: (5, 8),
    PlanTemplate.POST_OPERATIVE: (4, 5),
    PlanTemplate.HEART_FAILURE: (5, 8),
}

_WANTED_EVENTS: dict[PlanTemplate, tuple[str, ...]] = {
    PlanTemplate.HYPERTENSION: ("crisis", "crisis", "gap"),
    PlanTemplate.TYPE1_DIABETES_CGM: ("severe", "severe", "mild", "mild", "gap"),
    PlanTemplate.TYPE2_DIABETES: ("severe", "mild", "gap"),
    PlanTemplate.POST_OPERATIVE: ("fever", "gap"),
    PlanTemplate.HEART_FAILURE: ("weight", "gap"),
}


def _event_plan(
    rng: random.Random,
    template: PlanTemplate,
    on_cgm: bool,
    start: datetime,
    zone: ZoneInfo,
    span_days: int,
) -> _EventPlan:
    """Which days carry which event, never sharing a day range, inside the monitored span."""
    last = span_days - 3
    if last < 6:
        return _EventPlan()
    wanted = _WANTED_EVENTS[template]
    days = _pick_days(rng, 3, last, len(wanted), 9 if span_days >= 45 else 5)
    rng.shuffle(days)
    crises: list[datetime] = []
    hypoglycaemias: list[_Hypoglycaemia] = []
    fevers: list[tuple[int, int]] = []
    weight_gain_days: list[int] = []
    gaps: list[tuple[int, int]] = []
    for name, day in zip(wanted, days, strict=False):
        # Not every patient has every event: about two in three do.
        if rng.random() > 0.65:
            continue
        if name == "gap":
            length = rng.randint(*_GAP_LENGTH[template])
            if day + length <= span_days - 1:
                gaps.append((day, day + length))
        elif name == "fever":
            fevers.append((day, min(span_days - 1, day + rng.randint(1, 3))))
        elif name == "weight":
            weight_gain_days.append(day)
        elif name == "crisis":
            crises.append(_at_day(start, day, zone, rng.uniform(9.0, 22.0)))
        else:
            severe = name == "severe"
            nadir = rng.uniform(40, 50) if severe else rng.uniform(57, 66)
            if on_cgm:
                # Night-time lows: 01:00–05:00 after the day's start, aligned to the CGM grid.
                slot = day * 288 + rng.randint(12, 60)
                at = start + slot * CGM_STEP + 6 * CGM_STEP
            else:
                at = _at_day(start, day, zone, rng.choice((3.0, 11.5, 16.0)))
            hypoglycaemias.append(
                _Hypoglycaemia(day, at, nadir, rng.randint(5, 9), severe)
            )
    # A gap swallows whatever would have been measured in it: an event there (or on the days
    # just around it) could not be seen by anyone and is not part of the ground truth.
    silent = {day for first, after in gaps for day in range(first - 1, after + 2)}

    def audible(day: int) -> bool:
        return day not in silent

    return _EventPlan(
        crises=tuple(
            sorted(at for at in crises if audible((at - start) // timedelta(days=1)))
        ),
        hypoglycaemias=tuple(
            sorted((low for low in hypoglycaemias if audible(low.day)), key=lambda low: low.at)
        ),
        fevers=tuple(
            sorted(fever for fever in fevers if all(audible(day) for day in range(*fever)))
        ),
        weight_gain_days=tuple(
            sorted(day for day in weight_gain_days if all(audible(day + step)
                                                         for step in range(-2, 3)))
        ),
        gaps=tuple(sorted(gaps)),
    )


def _events_of(
    plan: _EventPlan, start: datetime, zone: ZoneInfo, on_cgm: bool
) -> tuple[InjectedEvent, ...]:
    events: list[InjectedEvent] = []
    for at in plan.crises:
        events.append(InjectedEvent(EventKind.HYPERTENSIVE_CRISIS, at, at + CRISIS_REPEAT))
    for low in plan.hypoglycaemias:
        kind = EventKind.SEVERE_HYPOGLYCAEMIA if low.severe else EventKind.HYPOGLYCAEMIA
        end = low.at + (low.hold_slots - 1) * CGM_STEP if on_cgm else low.at
        events.append(InjectedEvent(kind, low.at, end))
    for first, after_last in plan.fevers:
        events.append(
            InjectedEvent(
                EventKind.POST_OPERATIVE_FEVER,
                _at_day(start, first, zone, 0.0),
                _at_day(start, after_last, zone, 0.0),
            )
        )
    for day in plan.weight_gain_days:
        events.append(
            InjectedEvent(
                EventKind.HEART_FAILURE_WEIGHT_GAIN,
                _at_day(start, day, zone, 0.0),
                _at_day(start, day + 2, zone, 12.0),
            )
        )
    for first, after_last in plan.gaps:
        events.append(
            InjectedEvent(
                EventKind.MISSING_DATA,
                start + timedelta(days=first),
                start + timedelta(days=after_last),
            )
        )
    return tuple(sorted(events, key=lambda item: (item.start, item.kind.value)))


#: Patients are told to measure again 15 minutes after a very high reading.
CRISIS_REPEAT = timedelta(minutes=15)


@dataclass(frozen=True)
class Cohort:
    start: datetime
    days: int
    seed: int
    patients: tuple[SimulatedPatient, ...]
    _event_plans: dict[str, _EventPlan] = field(repr=False, compare=False, default_factory=dict)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def events(self) -> list[tuple[SimulatedPatient, InjectedEvent]]:
        return [(patient, event) for patient in self.patients for event in patient.events]

    def readings_for(self, patient: SimulatedPatient) -> list[Reading]:
        """Every reading of `patient`, in the order Jaejin receives them."""
        generator = _ReadingGenerator(patient, self._event_plans[patient.patient_ref])
        readings = [
            reading
            for reading in generator.generate()
            if patient.monitoring_start <= reading.effective_at < patient.monitoring_end
        ]
        readings.sort(key=lambda item: item.received_at)
        return readings


def simulate_cohort(
    patients: int = 200, days: int = 90, seed: int = 0, start: datetime = DEFAULT_START
) -> Cohort:
    """A cohort of `patients` monitored for `days` from `start`; same seed, same cohort."""
    if patients < 1 or days < 1:
        raise ValueError("a cohort needs at least one patient and one day")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    cohort_rng = random.Random(seed)
    residences = [item for item in _RESIDENCES for _ in range(item[3])]
    members: list[SimulatedPatient] = []
    event_plans: dict[str, _EventPlan] = {}
    for index in range(patients):
        template, on_cgm = _MIX[index % len(_MIX)]
        patient_seed = cohort_rng.randrange(2**31)
        rng = random.Random(patient_seed)
        zone_name, country, language, _share = rng.choice(residences)
        zone = ZoneInfo(zone_name)
        high_risk = template is PlanTemplate.HYPERTENSION and rng.random() < 0.25
        monitoring_start = start
        monitoring_end = start + timedelta(days=days)
        if template is PlanTemplate.POST_OPERATIVE:
            latest_start = max(0, days - 30)
            monitoring_start = start + timedelta(days=rng.randint(0, latest_start))
            monitoring_end = min(monitoring_end, monitoring_start + POST_OPERATIVE_MONITORING)
        span_days = round((monitoring_end - monitoring_start) / timedelta(days=1))
        patient_ref = f"sim-{seed}-{index:04d}"
        event_plan = _event_plan(rng, template, on_cgm, monitoring_start, zone, span_days)
        event_plans[patient_ref] = event_plan
        members.append(
            SimulatedPatient(
                patient_ref=patient_ref,
                template=template,
                plan=_plan_for(template, on_cgm, high_risk),
                zone=zone,
                country=country,
                language=language,
                monitoring_start=monitoring_start,
                monitoring_end=monitoring_end,
                seed=patient_seed,
                physiology=_physiology(rng, template),
                events=_events_of(event_plan, monitoring_start, zone, on_cgm),
            )
        )
    return Cohort(
        start=start, days=days, seed=seed, patients=tuple(members), _event_plans=event_plans
    )


def _physiology(rng: random.Random, template: PlanTemplate) -> Physiology:
    hypertensive = template is PlanTemplate.HYPERTENSION
    systolic = rng.uniform(118, 150) if hypertensive else rng.uniform(110, 138)
    type1 = template is PlanTemplate.TYPE1_DIABETES_CGM
    return Physiology(
        systolic=systolic,
        diastolic=systolic * 0.6 + rng.uniform(-4, 4),
        blood_pressure_drift=rng.uniform(-8, 10),
        heart_rate=rng.uniform(60, 84),
        glucose_mean=rng.uniform(135, 165) if type1 else rng.uniform(115, 150),
        meal_response=rng.uniform(40, 95) if type1 else rng.uniform(25, 60),
        weight=rng.uniform(52, 95),
        temperature=rng.uniform(36.3, 36.9),
        spo2=rng.uniform(95, 98.5),
    )


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


class _ReadingGenerator:
    """Turns a patient and their event plan into readings, deterministically."""

    def __init__(self, patient: SimulatedPatient, event_plan: _EventPlan) -> None:
        self.patient = patient
        self.events = event_plan
        self.zone = patient.zone
        self.start = patient.monitoring_start
        self.span_days = round(
            (patient.monitoring_end - patient.monitoring_start) / timedelta(days=1)
        )
        self.gap_days = {day for first, last in event_plan.gaps for day in range(first, last)}

    def generate(self) -> Iterator[Reading]:
        rng = random.Random(self.patient.seed ^ 0x5EED)
        if self.patient.uses_cgm:
            yield from self._cgm(rng)
        else:
            yield from self._daily(rng)

    def _reading(
        self,
        rng: random.Random,
        metric: Metric,
        value: float,
        unit: str,
        loinc: str,
        at: datetime,
        panel_id: str | None = None,
        attachment_ref: str | None = None,
        delay: timedelta | None = None,
    ) -> Reading:
        if delay is None:
            delay = timedelta(seconds=rng.randint(20, 600))
        return Reading(
            patient_ref=self.patient.patient_ref,
            metric=metric,
            value=round(value, 1),
            unit=unit,
            loinc=loinc,
            effective_at=at.astimezone(self.zone),
            source_device="sim-device",
            received_at=at + delay,
            panel_id=panel_id,
            attachment_ref=attachment_ref,
        )

    def _daily(self, rng: random.Random) -> Iterator[Reading]:
        patient = self.patient
        plan = patient.plan
        body = patient.physiology
        weight_offsets = self._weight_offsets()
        crises_by_day: dict[int, list[datetime]] = {}
        for at in self.events.crises:
            crises_by_day.setdefault(int((at - self.start) / timedelta(days=1)), []).append(at)
        lows_by_day: dict[int, list[_Hypoglycaemia]] = {}
        for low in self.events.hypoglycaemias:
            lows_by_day.setdefault(low.day, []).append(low)
        for day in range(-1, self.span_days + 1):
            if day in self.gap_days:
                continue
            for at in crises_by_day.get(day, []):
                yield from self._crisis(rng, day, at)
            if plan.monitors(Metric.SYSTOLIC):
                yield from self._blood_pressure_day(rng, day)
            if plan.monitors(Metric.GLUCOSE):
                for low in lows_by_day.get(day, []):
                    yield self._reading(rng, Metric.GLUCOSE, low.nadir, "mg/dL",
                                        LOINC_GLUCOSE_BLOOD_MASS, low.at)
                yield from self._fingersticks(rng, day)
            if plan.monitors(Metric.BODY_WEIGHT):
                at = _at_day(self.start, day, self.zone, 7.0 + rng.uniform(-0.4, 0.4))
                around_gain = any(
                    gain_day - 1 <= day <= gain_day + 1 for gain_day in self.events.weight_gain_days
                )
                # Patients weigh themselves faithfully while they feel the change.
                if around_gain or rng.random() < 0.93:
                    noise = _clamp(rng.gauss(0, 0.15), -0.3, 0.3)
                    weight = body.weight + weight_offsets[max(0, day)] + noise
                    yield self._reading(rng, Metric.BODY_WEIGHT, weight, "kg",
                                        LOINC_BODY_WEIGHT, at)
            if plan.monitors(Metric.SPO2):
                at = _at_day(self.start, day, self.zone, 8.2 + rng.uniform(-0.3, 0.3))
                if rng.random() < 0.9:
                    spo2 = _clamp(body.spo2 + rng.gauss(0, 0.8), 93, 100)
                    yield self._reading(rng, Metric.SPO2, round(spo2), "%",
                                        LOINC_SPO2_PULSE_OXIMETRY, at)
            if plan.monitors(Metric.BODY_TEMPERATURE):
                yield from self._temperatures(rng, day)
            if plan.monitors(Metric.WOUND_PHOTO) and day % 2 == 1:
                at = _at_day(self.start, day, self.zone, 10.0 + rng.uniform(-1, 2))
                yield self._reading(
                    rng, Metric.WOUND_PHOTO, 1.0, "1", LOINC_PHOTOGRAPHIC_IMAGE, at,
                    attachment_ref=f"{patient.patient_ref}/wound/{day}",
                )

    def _blood_pressure_day(self, rng: random.Random, day: int) -> Iterator[Reading]:
        """Morning (with its surge) and evening for hypertension; one morning otherwise."""
        body = self.patient.physiology
        drift = body.blood_pressure_drift * max(0, day) / max(1, self.span_days)
        sessions: tuple[tuple[float, float, float], ...] = ((7.0, 0.92, 4.0), (21.0, 0.7, 0.0))
        if self.patient.template is not PlanTemplate.HYPERTENSION:
            sessions = ((8.0, 0.9, 3.0),)
        for number, (hour, adherence, surge) in enumerate(sessions):
            at = _at_day(self.start, day, self.zone, hour + rng.uniform(-0.5, 0.75))
            if rng.random() > adherence:
                continue
            systolic = _clamp(body.systolic + drift + surge + rng.gauss(0, 7), 96, 172)
            diastolic = _clamp(
                body.diastolic + drift * 0.5 + surge / 2 + rng.gauss(0, 5), 55,
                min(112.0, systolic - 25),
            )
            yield from self._blood_pressure(
                rng, f"{day}/{number}", at, systolic, diastolic,
                body.heart_rate + rng.gauss(0, 5),
            )

    def _blood_pressure(
        self,
        rng: random.Random,
        session: str,
        at: datetime,
        systolic: float,
        diastolic: float,
        heart_rate: float,
    ) -> Iterator[Reading]:
        panel = f"{self.patient.patient_ref}/bp/{session}"
        # One upload carries the whole panel.
        delay = timedelta(seconds=rng.randint(20, 600))
        yield self._reading(rng, Metric.SYSTOLIC, round(systolic), "mm[Hg]", LOINC_SYSTOLIC, at,
                            panel, delay=delay)
        yield self._reading(rng, Metric.DIASTOLIC, round(diastolic), "mm[Hg]", LOINC_DIASTOLIC,
                            at, panel, delay=delay)
        if self.patient.plan.monitors(Metric.HEART_RATE):
            yield self._reading(rng, Metric.HEART_RATE, round(_clamp(heart_rate, 48, 118)),
                                "/min", LOINC_HEART_RATE, at, panel, delay=delay)

    def _crisis(self, rng: random.Random, day: int, at: datetime) -> Iterator[Reading]:
        """A crisis reading, then the re-measurement 15 minutes later, still in crisis."""
        body = self.patient.physiology
        for number, moment in enumerate((at, at + CRISIS_REPEAT)):
            if rng.random() < 0.6:
                systolic = rng.uniform(182, 215)
                diastolic = rng.uniform(95, 125)
            else:
                systolic = rng.uniform(165, 195)
                diastolic = rng.uniform(121, 132)
            yield from self._blood_pressure(
                rng, f"{day}/crisis/{number}", moment, systolic, diastolic, body.heart_rate + 12
            )

    def _fingersticks(self, rng: random.Random, day: int) -> Iterator[Reading]:
        body = self.patient.physiology
        fasting_at = _at_day(self.start, day, self.zone, 7.0 + rng.uniform(-0.5, 0.75))
        if rng.random() < 0.85:
            fasting = _clamp(body.glucose_mean - 10 + rng.gauss(0, 18), 76, 230)
            yield self._reading(rng, Metric.GLUCOSE, fasting, "mg/dL",
                                LOINC_GLUCOSE_BLOOD_MASS, fasting_at)
        if rng.random() < 0.3:
            at = _at_day(self.start, day, self.zone, 21.0 + rng.uniform(-0.5, 1.0))
            after_meal = _clamp(
                body.glucose_mean + body.meal_response * 0.6 + rng.gauss(0, 22), 80, 245
            )
            yield self._reading(rng, Metric.GLUCOSE, after_meal, "mg/dL",
                                LOINC_GLUCOSE_BLOOD_MASS, at)

    def _temperatures(self, rng: random.Random, day: int) -> Iterator[Reading]:
        """Twice a day (evening a little warmer); four times a day while feverish."""
        body = self.patient.physiology
        feverish = any(first <= day < after for first, after in self.events.fevers)
        hours = (8.0, 14.0, 20.0, 23.0) if feverish else (8.0, 20.0)
        for hour in hours:
            at = _at_day(self.start, day, self.zone, hour + rng.uniform(-0.5, 0.5))
            evening = 0.25 if hour >= 14 else 0.0
            if feverish:
                value = rng.uniform(38.1, 39.3)
                heart_rate = body.heart_rate + rng.uniform(12, 22)
            else:
                if rng.random() > 0.9:
                    continue
                value = _clamp(body.temperature + evening + rng.gauss(0, 0.2), 35.8, 37.6)
                heart_rate = body.heart_rate + rng.gauss(0, 5)
            yield self._reading(rng, Metric.BODY_TEMPERATURE, value, "Cel",
                                LOINC_BODY_TEMPERATURE, at)
            yield self._reading(rng, Metric.HEART_RATE, round(_clamp(heart_rate, 48, 125)),
                                "/min", LOINC_HEART_RATE, at)

    def _weight_offsets(self) -> list[float]:
        """Extra kilograms per day: half the gain on the first day, all of it on the second,
        held a few days, then lost again over three days of diuretics."""
        rng = random.Random(self.patient.seed ^ 0xF1F1)
        offsets = [0.0] * (self.span_days + 2)
        for day in self.events.weight_gain_days:
            gain = rng.uniform(2.8, 4.5)
            hold = rng.randint(3, 6)
            for offset_day in range(day, min(len(offsets), day + 2 + hold + 3)):
                step = offset_day - day
                if step == 0:
                    value = gain * 0.5
                elif step <= 1 + hold:
                    value = gain
                else:
                    value = gain * (1 - (step - 1 - hold) / 3)
                offsets[offset_day] = max(offsets[offset_day], value)
        return offsets

    def _cgm(self, rng: random.Random) -> Iterator[Reading]:
        """Every 5 minutes: mean + dawn rise + meal bumps + slow noise. Sensors are changed
        every 10 days (a 2-hour warm-up without data) and 1.5 % of readings drop out."""
        body = self.patient.physiology
        slots_per_day = 288
        total = self.span_days * slots_per_day
        shape = [0.0] * total
        for day in range(self.span_days):
            local_midnight = _at_day(self.start, day, self.zone, 0.0)
            first_slot = round((local_midnight - self.start) / CGM_STEP)
            for meal_hour in (7.5, 12.5, 19.0):
                meal_slot = first_slot + round((meal_hour + rng.uniform(-0.5, 0.75)) * 12)
                size = body.meal_response * rng.uniform(0.5, 1.2)
                for step in range(1, 60):
                    index = meal_slot + step
                    if 0 <= index < total:
                        hours = step / 12
                        shape[index] += size * hours * math.exp(1 - hours)
            for step in range(slots_per_day):
                index = first_slot + step
                if 0 <= index < total:
                    # Dawn phenomenon: growth hormone and cortisol raise glucose around 06:00.
                    shape[index] += 15 * math.exp(-(((step * 5 - 360) / 90) ** 2))
        lows: dict[int, float] = {}
        for low in self.events.hypoglycaemias:
            first_low = round((low.at - self.start) / CGM_STEP)
            descent = [first_low - 6 + step for step in range(6)]
            for step, index in enumerate(descent):
                lows[index] = low.nadir + 60 * (1 - (step + 1) / 7)
            for step in range(low.hold_slots):
                lows[first_low + step] = low.nadir
            for step in range(5):
                lows[first_low + low.hold_slots + step] = low.nadir + 60 * (step + 1) / 6
        noise = 0.0
        for index in range(total):
            noise = 0.92 * noise + rng.gauss(0, 4.0)
            if index // slots_per_day in self.gap_days:
                continue
            low_target = lows.get(index)
            warming_up = index >= slots_per_day and index % (10 * slots_per_day) < 24
            if low_target is None and (warming_up or rng.random() < 0.015):
                continue
            value = _clamp(body.glucose_mean + shape[index] + noise, 72, 380)
            if low_target is not None:
                value = min(value, _clamp(low_target + rng.uniform(-1.5, 1.5), 39, 400))
            at = self.start + index * CGM_STEP
            # The phone forwards each value within a few minutes, in order.
            delay = timedelta(seconds=rng.randint(30, 240))
            yield self._reading(rng, Metric.GLUCOSE, value, "mg/dL", LOINC_GLUCOSE_CGM, at,
                                delay=delay)
