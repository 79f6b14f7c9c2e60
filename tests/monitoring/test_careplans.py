"""Care plans: DOMAIN.md defaults per template and clinician overrides that must stay coherent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from jaejin.monitoring.careplans import (
    TEMPLATES,
    CarePlanError,
    CarePlanOverrides,
    PlanProblemCode,
    PlanTemplate,
    plan_problems,
)
from jaejin.monitoring.readings import Metric

FAST = settings(max_examples=200, deadline=None)


def test_defaults_follow_the_domain_thresholds():
    limits = TEMPLATES[PlanTemplate.HYPERTENSION].thresholds
    assert (limits.bp_crisis_systolic, limits.bp_crisis_diastolic) == (180, 120)
    assert (limits.bp_stage2_systolic, limits.bp_stage2_diastolic) == (140, 90)
    assert (limits.bp_target_systolic, limits.bp_target_diastolic) == (140, 90)
    assert limits.bp_hypotension_systolic == 90
    assert (limits.glucose_level2_low, limits.glucose_level1_low) == (54, 70)
    assert (limits.glucose_level1_high, limits.glucose_level2_high) == (180, 250)
    assert (limits.heart_rate_low, limits.heart_rate_high) == (40, 130)
    assert limits.spo2_low == 92
    assert limits.fever_celsius == 38.0
    assert (limits.weight_gain_kg, limits.weight_gain_window_days) == (2.0, 2.0)
    targets = TEMPLATES[PlanTemplate.TYPE1_DIABETES_CGM].cgm_targets
    assert (targets.window_days, targets.minimum_sensor_wear_percent) == (14, 70)
    assert (targets.time_in_range_min_percent, targets.below_70_max_percent) == (70, 4)
    assert (targets.below_54_max_percent, targets.above_180_max_percent) == (1, 25)
    assert (targets.above_250_max_percent, targets.coefficient_of_variation_max_percent) == (
        5, 36,
    )


def test_each_template_asks_for_what_its_condition_needs():
    hypertension = TEMPLATES[PlanTemplate.HYPERTENSION]
    assert hypertension.monitors(Metric.SYSTOLIC) and hypertension.monitors(Metric.DIASTOLIC)
    assert hypertension.expected_every[Metric.SYSTOLIC] == timedelta(days=1)
    assert hypertension.missing_after[Metric.SYSTOLIC] == timedelta(days=3)
    type1 = TEMPLATES[PlanTemplate.TYPE1_DIABETES_CGM]
    assert type1.uses_cgm and type1.expected_every[Metric.GLUCOSE] == timedelta(minutes=5)
    type2 = TEMPLATES[PlanTemplate.TYPE2_DIABETES]
    assert not type2.uses_cgm and type2.missing_after[Metric.GLUCOSE] == timedelta(days=3)
    surgery = TEMPLATES[PlanTemplate.POST_OPERATIVE]
    assert surgery.monitors(Metric.BODY_TEMPERATURE) and surgery.monitors(Metric.WOUND_PHOTO)
    heart_failure = TEMPLATES[PlanTemplate.HEART_FAILURE]
    assert heart_failure.monitors(Metric.BODY_WEIGHT)
    assert heart_failure.missing_after[Metric.BODY_WEIGHT] == timedelta(days=3)
    for plan in TEMPLATES.values():
        assert plan_problems(plan) == []


def test_a_high_risk_patient_gets_the_130_80_target():
    plan = TEMPLATES[PlanTemplate.HYPERTENSION].with_overrides({"high_risk": True})
    assert plan.high_risk
    assert (plan.thresholds.bp_target_systolic, plan.thresholds.bp_target_diastolic) == (130, 80)
    explicit = TEMPLATES[PlanTemplate.HYPERTENSION].with_overrides(
        CarePlanOverrides(high_risk=True, bp_target_systolic=125)
    )
    assert explicit.thresholds.bp_target_systolic == 125
    assert explicit.thresholds.bp_target_diastolic == 80


def test_overrides_change_only_what_they_name():
    base = TEMPLATES[PlanTemplate.TYPE2_DIABETES]
    plan = base.with_overrides(
        {
            "uses_cgm": True,
            "expected_every_hours": {"glucose": 5 / 60},
            "missing_after_days": {"glucose": 1},
            "cgm_time_in_range_min_percent": 50,
            "glucose_level1_low": 75,
        }
    )
    assert plan.uses_cgm
    assert plan.expected_every[Metric.GLUCOSE] == timedelta(minutes=5)
    assert plan.missing_after[Metric.GLUCOSE] == timedelta(days=1)
    assert plan.cgm_targets.time_in_range_min_percent == 50
    assert plan.thresholds.glucose_level1_low == 75
    assert plan.thresholds.glucose_level2_low == base.thresholds.glucose_level2_low
    assert base.thresholds.glucose_level1_low == 70


def test_it_refuses_a_crisis_threshold_that_does_not_exceed_stage_2():
    with pytest.raises(CarePlanError) as raised:
        TEMPLATES[PlanTemplate.HYPERTENSION].with_overrides({"bp_crisis_systolic": 135})
    problem = raised.value.problems[0]
    assert problem.code is PlanProblemCode.THRESHOLDS_OUT_OF_ORDER
    assert problem.message("en") == (
        "The crisis systolic threshold (135) must be above the stage 2 systolic threshold (140)"
    )
    assert problem.message("ko") == (
        "위기 수축기 기준(135)은(는) 2기 수축기 기준(140)보다 높아야 합니다"
    )


def test_it_refuses_hypoglycaemia_levels_in_the_wrong_order():
    with pytest.raises(CarePlanError) as raised:
        TEMPLATES[PlanTemplate.TYPE1_DIABETES_CGM].with_overrides({"glucose_level2_low": 72})
    assert [item.code for item in raised.value.problems] == [
        PlanProblemCode.THRESHOLDS_OUT_OF_ORDER
    ]


def test_it_refuses_a_missing_data_delay_shorter_than_the_expected_interval():
    with pytest.raises(CarePlanError) as raised:
        TEMPLATES[PlanTemplate.HYPERTENSION].with_overrides(
            {"missing_after_days": {"systolic": 0.5}}
        )
    assert raised.value.problems[0].code is PlanProblemCode.MISSING_AFTER_TOO_SHORT
    assert "Systolic blood pressure" in raised.value.problems[0].message("en")


def test_the_override_schema_rejects_unknown_fields_and_impossible_values():
    with pytest.raises(ValidationError):
        CarePlanOverrides.model_validate({"bp_crisis": 170})
    with pytest.raises(ValidationError):
        CarePlanOverrides.model_validate({"spo2_low": 120})
    with pytest.raises(ValidationError):
        CarePlanOverrides.model_validate({"missing_after_days": {"pulse": 2}})
    with pytest.raises(ValidationError):
        TEMPLATES[PlanTemplate.HYPERTENSION].with_overrides({"weight_gain_kg": 0})


thresholds = st.floats(min_value=40, max_value=300, allow_nan=False)


@FAST
@given(crisis=thresholds, stage2=thresholds, target=thresholds, hypotension=thresholds)
def test_an_accepted_plan_always_keeps_its_blood_pressure_thresholds_in_order(
    crisis, stage2, target, hypotension
):
    try:
        plan = TEMPLATES[PlanTemplate.HYPERTENSION].with_overrides(
            {
                "bp_crisis_systolic": crisis,
                "bp_stage2_systolic": stage2,
                "bp_target_systolic": target,
                "bp_hypotension_systolic": hypotension,
            }
        )
    except CarePlanError as error:
        assert error.problems
        return
    limits = plan.thresholds
    assert limits.bp_hypotension_systolic < limits.bp_target_systolic
    assert limits.bp_target_systolic <= limits.bp_stage2_systolic < limits.bp_crisis_systolic
