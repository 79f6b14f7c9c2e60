"""Care plans: which metrics a patient sends, how often, and the thresholds that raise alerts.

Every figure defaults to DOMAIN.md section 4; a clinician overrides it per patient through
`CarePlanOverrides` (the wire schema), and `CarePlan.with_overrides` refuses a plan whose
thresholds contradict each other (a crisis threshold below stage 2, a hypoglycaemia level 2 above
level 1, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jaejin.core.i18n import N_, translate
from jaejin.monitoring.readings import PHYSIOLOGICAL_LIMITS, Metric, metric_label


class PlanTemplate(StrEnum):
    HYPERTENSION = "hypertension"
    TYPE1_DIABETES_CGM = "type1_diabetes_cgm"
    TYPE2_DIABETES = "type2_diabetes"
    POST_OPERATIVE = "post_operative"
    HEART_FAILURE = "heart_failure"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Alert thresholds in canonical units. Comparison direction is part of each name."""

    #: Crisis when systolic >= this OR diastolic >= `bp_crisis_diastolic`.
    bp_crisis_systolic: float = 180.0
    bp_crisis_diastolic: float = 120.0
    #: Stage 2 hypertension when systolic >= this or diastolic >= `bp_stage2_diastolic`.
    bp_stage2_systolic: float = 140.0
    bp_stage2_diastolic: float = 90.0
    #: Treatment target: a mean below both is controlled (Korean guideline <140/90).
    bp_target_systolic: float = 140.0
    bp_target_diastolic: float = 90.0
    #: Hypotension when systolic < this.
    bp_hypotension_systolic: float = 90.0
    #: Hypoglycaemia level 2 when glucose < this, level 1 when < `glucose_level1_low`.
    glucose_level2_low: float = 54.0
    glucose_level1_low: float = 70.0
    #: Hyperglycaemia level 1 when glucose > this, level 2 when > `glucose_level2_high`.
    glucose_level1_high: float = 180.0
    glucose_level2_high: float = 250.0
    #: Heart rate out of range when < low or > high (at rest).
    heart_rate_low: float = 40.0
    heart_rate_high: float = 130.0
    #: Low oxygen saturation when SpO2 < this.
    spo2_low: float = 92.0
    #: Fever when temperature >= this.
    fever_celsius: float = 38.0
    #: Heart-failure weight gain when weight rises by more than this within the window.
    weight_gain_kg: float = 2.0
    weight_gain_window_days: float = 2.0


#: The Korean target for high-risk patients (diabetes, chronic kidney disease, ...).
HIGH_RISK_BP_TARGET = (130.0, 80.0)


@dataclass(frozen=True, slots=True)
class CgmTargets:
    """International consensus CGM targets over `window_days` (percent of readings)."""

    window_days: int = 14
    minimum_sensor_wear_percent: float = 70.0
    time_in_range_min_percent: float = 70.0
    below_70_max_percent: float = 4.0
    below_54_max_percent: float = 1.0
    above_180_max_percent: float = 25.0
    above_250_max_percent: float = 5.0
    coefficient_of_variation_max_percent: float = 36.0


def _frozen(mapping: Mapping[Metric, timedelta]) -> Mapping[Metric, timedelta]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class CarePlan:
    """What Jaejin expects from one patient and when it raises an alert."""

    template: PlanTemplate
    #: Metrics the patient is asked to send; checks on other metrics stay silent.
    monitored_metrics: frozenset[Metric]
    #: How often the plan expects a reading of each metric.
    expected_every: Mapping[Metric, timedelta]
    #: No reading of the metric for this long is itself an alert.
    missing_after: Mapping[Metric, timedelta]
    thresholds: Thresholds = field(default_factory=Thresholds)
    cgm_targets: CgmTargets = field(default_factory=CgmTargets)
    #: Glucose comes from a continuous monitor (consensus metrics apply).
    uses_cgm: bool = False
    high_risk: bool = False

    def monitors(self, metric: Metric) -> bool:
        return metric in self.monitored_metrics

    def with_overrides(
        self, overrides: CarePlanOverrides | Mapping[str, Any]
    ) -> CarePlan:
        """A copy with a clinician's overrides applied; raises `CarePlanError` if inconsistent.

        Marking a patient high-risk moves the blood-pressure target to 130/80 unless the same
        overrides also set the target explicitly.
        """
        if not isinstance(overrides, CarePlanOverrides):
            overrides = CarePlanOverrides.model_validate(dict(overrides))
        given = overrides.model_dump(exclude_none=True)
        threshold_names = {item.name for item in fields(Thresholds)}
        cgm_names = {item.name for item in fields(CgmTargets)}
        threshold_changes = {name: given[name] for name in threshold_names if name in given}
        cgm_changes = {
            name.removeprefix("cgm_"): value
            for name, value in given.items()
            if name.removeprefix("cgm_") in cgm_names and name.startswith("cgm_")
        }
        high_risk = given.get("high_risk", self.high_risk)
        if high_risk and not self.high_risk:
            threshold_changes.setdefault("bp_target_systolic", HIGH_RISK_BP_TARGET[0])
            threshold_changes.setdefault("bp_target_diastolic", HIGH_RISK_BP_TARGET[1])
        monitored = self.monitored_metrics
        if "monitored_metrics" in given:
            monitored = frozenset(Metric(item) for item in given["monitored_metrics"])
        expected_every = dict(self.expected_every)
        for metric, hours in given.get("expected_every_hours", {}).items():
            expected_every[Metric(metric)] = timedelta(hours=hours)
        missing_after = dict(self.missing_after)
        for metric, days in given.get("missing_after_days", {}).items():
            missing_after[Metric(metric)] = timedelta(days=days)
        updated = replace(
            self,
            thresholds=replace(self.thresholds, **threshold_changes),
            cgm_targets=replace(self.cgm_targets, **cgm_changes),
            monitored_metrics=monitored,
            expected_every=_frozen(expected_every),
            missing_after=_frozen(missing_after),
            uses_cgm=given.get("uses_cgm", self.uses_cgm),
            high_risk=high_risk,
        )
        problems = plan_problems(updated)
        if problems:
            raise CarePlanError(problems)
        return updated


class CarePlanOverrides(BaseModel):
    """What a clinician may change in a patient's plan (the JSON accepted from the clinic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    high_risk: bool | None = None
    uses_cgm: bool | None = None
    monitored_metrics: list[Metric] | None = None
    expected_every_hours: dict[Metric, float] | None = None
    missing_after_days: dict[Metric, float] | None = None

    bp_crisis_systolic: float | None = Field(default=None, ge=40, le=300)
    bp_crisis_diastolic: float | None = Field(default=None, ge=20, le=200)
    bp_stage2_systolic: float | None = Field(default=None, ge=40, le=300)
    bp_stage2_diastolic: float | None = Field(default=None, ge=20, le=200)
    bp_target_systolic: float | None = Field(default=None, ge=40, le=300)
    bp_target_diastolic: float | None = Field(default=None, ge=20, le=200)
    bp_hypotension_systolic: float | None = Field(default=None, ge=40, le=300)
    glucose_level2_low: float | None = Field(default=None, ge=10, le=1000)
    glucose_level1_low: float | None = Field(default=None, ge=10, le=1000)
    glucose_level1_high: float | None = Field(default=None, ge=10, le=1000)
    glucose_level2_high: float | None = Field(default=None, ge=10, le=1000)
    heart_rate_low: float | None = Field(default=None, ge=20, le=300)
    heart_rate_high: float | None = Field(default=None, ge=20, le=300)
    spo2_low: float | None = Field(default=None, ge=50, le=100)
    fever_celsius: float | None = Field(default=None, ge=30, le=45)
    weight_gain_kg: float | None = Field(default=None, gt=0, le=50)
    weight_gain_window_days: float | None = Field(default=None, gt=0, le=30)

    cgm_window_days: int | None = Field(default=None, ge=1, le=90)
    cgm_minimum_sensor_wear_percent: float | None = Field(default=None, ge=0, le=100)
    cgm_time_in_range_min_percent: float | None = Field(default=None, ge=0, le=100)
    cgm_below_70_max_percent: float | None = Field(default=None, ge=0, le=100)
    cgm_below_54_max_percent: float | None = Field(default=None, ge=0, le=100)
    cgm_above_180_max_percent: float | None = Field(default=None, ge=0, le=100)
    cgm_above_250_max_percent: float | None = Field(default=None, ge=0, le=100)
    cgm_coefficient_of_variation_max_percent: float | None = Field(default=None, ge=0, le=100)


THRESHOLD_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "bp_crisis_systolic": N_("crisis systolic threshold"),
        "bp_crisis_diastolic": N_("crisis diastolic threshold"),
        "bp_stage2_systolic": N_("stage 2 systolic threshold"),
        "bp_stage2_diastolic": N_("stage 2 diastolic threshold"),
        "bp_target_systolic": N_("systolic target"),
        "bp_target_diastolic": N_("diastolic target"),
        "bp_hypotension_systolic": N_("hypotension threshold"),
        "glucose_level2_low": N_("level 2 hypoglycaemia threshold"),
        "glucose_level1_low": N_("level 1 hypoglycaemia threshold"),
        "glucose_level1_high": N_("level 1 hyperglycaemia threshold"),
        "glucose_level2_high": N_("level 2 hyperglycaemia threshold"),
        "heart_rate_low": N_("low heart rate threshold"),
        "heart_rate_high": N_("high heart rate threshold"),
        "expected_every": N_("expected interval"),
        "missing_after": N_("missing-data delay"),
    }
)

#: (lower, higher): `lower` must be strictly below `higher`.
_ORDERED_THRESHOLDS: tuple[tuple[str, str], ...] = (
    ("bp_stage2_systolic", "bp_crisis_systolic"),
    ("bp_stage2_diastolic", "bp_crisis_diastolic"),
    ("bp_hypotension_systolic", "bp_target_systolic"),
    ("glucose_level2_low", "glucose_level1_low"),
    ("glucose_level1_low", "glucose_level1_high"),
    ("glucose_level1_high", "glucose_level2_high"),
    ("heart_rate_low", "heart_rate_high"),
)

#: (lower, higher): `lower` may equal `higher` but not exceed it.
_NOT_ABOVE_THRESHOLDS: tuple[tuple[str, str], ...] = (
    ("bp_target_systolic", "bp_stage2_systolic"),
    ("bp_target_diastolic", "bp_stage2_diastolic"),
)

_THRESHOLD_METRIC: Mapping[str, Metric] = MappingProxyType(
    {
        "bp_crisis_systolic": Metric.SYSTOLIC,
        "bp_stage2_systolic": Metric.SYSTOLIC,
        "bp_target_systolic": Metric.SYSTOLIC,
        "bp_hypotension_systolic": Metric.SYSTOLIC,
        "bp_crisis_diastolic": Metric.DIASTOLIC,
        "bp_stage2_diastolic": Metric.DIASTOLIC,
        "bp_target_diastolic": Metric.DIASTOLIC,
        "glucose_level2_low": Metric.GLUCOSE,
        "glucose_level1_low": Metric.GLUCOSE,
        "glucose_level1_high": Metric.GLUCOSE,
        "glucose_level2_high": Metric.GLUCOSE,
        "heart_rate_low": Metric.HEART_RATE,
        "heart_rate_high": Metric.HEART_RATE,
        "spo2_low": Metric.SPO2,
        "fever_celsius": Metric.BODY_TEMPERATURE,
    }
)


class PlanProblemCode(StrEnum):
    THRESHOLDS_OUT_OF_ORDER = "THRESHOLDS_OUT_OF_ORDER"
    THRESHOLD_OUTSIDE_LIMITS = "THRESHOLD_OUTSIDE_LIMITS"
    MISSING_AFTER_TOO_SHORT = "MISSING_AFTER_TOO_SHORT"
    NON_POSITIVE_INTERVAL = "NON_POSITIVE_INTERVAL"


_PLAN_PROBLEM_MESSAGES: Mapping[PlanProblemCode, str] = MappingProxyType(
    {
        PlanProblemCode.THRESHOLDS_OUT_OF_ORDER: N_(
            "The {higher_label} ({higher}) must be above the {lower_label} ({lower})"
        ),
        PlanProblemCode.THRESHOLD_OUTSIDE_LIMITS: N_(
            "The {label} ({value}) is outside the possible range {low}–{high}"
        ),
        PlanProblemCode.MISSING_AFTER_TOO_SHORT: N_(
            "The missing-data delay for {metric} must be longer than its expected interval"
        ),
        PlanProblemCode.NON_POSITIVE_INTERVAL: N_(
            "The expected interval for {metric} must be positive"
        ),
    }
)


@dataclass(frozen=True, slots=True)
class PlanProblem:
    code: PlanProblemCode
    params: Mapping[str, str]

    def message(self, language: str) -> str:
        params = dict(self.params)
        for key in ("label", "lower_label", "higher_label"):
            if key in params:
                params[key] = translate(language, params[key])
        if "metric" in params:
            params["metric"] = metric_label(Metric(params["metric"]), language)
        return translate(language, _PLAN_PROBLEM_MESSAGES[self.code], **params)


class CarePlanError(ValueError):
    """A plan whose thresholds or intervals contradict each other."""

    def __init__(self, problems: list[PlanProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(problem.message("en") for problem in problems))


def _label(name: str) -> str:
    return THRESHOLD_LABELS.get(name, name.replace("_", " "))


def plan_problems(plan: CarePlan) -> list[PlanProblem]:
    """Every inconsistency in `plan`; empty when it is usable."""
    problems: list[PlanProblem] = []
    values = {item.name: getattr(plan.thresholds, item.name) for item in fields(Thresholds)}
    for name, metric in _THRESHOLD_METRIC.items():
        low, high = PHYSIOLOGICAL_LIMITS[metric]
        value = values[name]
        if not (math.isfinite(value) and low <= value <= high):
            problems.append(
                PlanProblem(
                    PlanProblemCode.THRESHOLD_OUTSIDE_LIMITS,
                    {"label": _label(name), "value": f"{value:g}", "low": f"{low:g}",
                     "high": f"{high:g}"},
                )
            )
    for lower, higher in _ORDERED_THRESHOLDS:
        if not values[lower] < values[higher]:
            problems.append(_order_problem(lower, higher, values))
    for lower, higher in _NOT_ABOVE_THRESHOLDS:
        if values[lower] > values[higher]:
            problems.append(_order_problem(lower, higher, values))
    for metric, interval in plan.expected_every.items():
        if interval <= timedelta(0):
            problems.append(
                PlanProblem(PlanProblemCode.NON_POSITIVE_INTERVAL, {"metric": metric.value})
            )
    for metric, delay in plan.missing_after.items():
        expected = plan.expected_every.get(metric)
        if delay <= timedelta(0) or (expected is not None and delay <= expected):
            problems.append(
                PlanProblem(PlanProblemCode.MISSING_AFTER_TOO_SHORT, {"metric": metric.value})
            )
    return problems


def _order_problem(lower: str, higher: str, values: Mapping[str, float]) -> PlanProblem:
    return PlanProblem(
        PlanProblemCode.THRESHOLDS_OUT_OF_ORDER,
        {
            "lower_label": _label(lower),
            "lower": f"{values[lower]:g}",
            "higher_label": _label(higher),
            "higher": f"{values[higher]:g}",
        },
    )


_DAY = timedelta(days=1)
_BLOOD_PRESSURE = (Metric.SYSTOLIC, Metric.DIASTOLIC)


def _plan(
    template: PlanTemplate,
    expected_every: Mapping[Metric, timedelta],
    missing_after: Mapping[Metric, timedelta],
    *,
    uses_cgm: bool = False,
) -> CarePlan:
    return CarePlan(
        template=template,
        monitored_metrics=frozenset(expected_every),
        expected_every=_frozen(expected_every),
        missing_after=_frozen(missing_after),
        uses_cgm=uses_cgm,
    )


def _blood_pressure_daily() -> dict[Metric, timedelta]:
    return {metric: _DAY for metric in (*_BLOOD_PRESSURE, Metric.HEART_RATE)}


def template_plan(template: PlanTemplate) -> CarePlan:
    """The default plan of a template (DOMAIN.md section 4)."""
    if template is PlanTemplate.HYPERTENSION:
        return _plan(template, _blood_pressure_daily(), {Metric.SYSTOLIC: 3 * _DAY})
    if template is PlanTemplate.TYPE1_DIABETES_CGM:
        return _plan(
            template,
            {Metric.GLUCOSE: timedelta(minutes=5)},
            # A sensor change leaves a gap of a few hours; a whole day without data is not that.
            {Metric.GLUCOSE: _DAY},
            uses_cgm=True,
        )
    if template is PlanTemplate.TYPE2_DIABETES:
        return _plan(template, {Metric.GLUCOSE: _DAY}, {Metric.GLUCOSE: 3 * _DAY})
    if template is PlanTemplate.POST_OPERATIVE:
        return _plan(
            template,
            {
                Metric.BODY_TEMPERATURE: timedelta(hours=12),
                Metric.HEART_RATE: timedelta(hours=12),
                Metric.SPO2: _DAY,
                Metric.SYSTOLIC: _DAY,
                Metric.DIASTOLIC: _DAY,
                Metric.WOUND_PHOTO: 2 * _DAY,
            },
            # After surgery a fever must not go unseen for long: two days without a
            # temperature is already an alert.
            {Metric.BODY_TEMPERATURE: 2 * _DAY, Metric.WOUND_PHOTO: 4 * _DAY},
        )
    if template is PlanTemplate.HEART_FAILURE:
        return _plan(
            template,
            {**_blood_pressure_daily(), Metric.BODY_WEIGHT: _DAY, Metric.SPO2: _DAY},
            {Metric.BODY_WEIGHT: 3 * _DAY, Metric.SYSTOLIC: 3 * _DAY},
        )
    raise ValueError(f"unknown care-plan template {template!r}")


TEMPLATES: Mapping[PlanTemplate, CarePlan] = MappingProxyType(
    {template: template_plan(template) for template in PlanTemplate}
)
