"""The simulated cohort and the evaluation of the alert pipeline against a naive baseline."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from itertools import pairwise

import pytest

from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.evaluation import (
    EvaluationReport,
    evaluate,
    evaluate_patient,
    naive_out_of_range,
    run_evaluation,
)
from jaejin.monitoring.readings import Metric, validate_reading
from jaejin.monitoring.simulation import EventKind, simulate_cohort


@pytest.fixture(scope="module")
def small_report() -> EvaluationReport:
    return run_evaluation(patients=30, days=30, seed=7)


def test_the_pipeline_finds_every_injected_critical_event(small_report):
    critical = small_report.critical_events
    assert critical.total >= 10
    assert critical.detected == critical.total
    assert small_report.critical_sensitivity == 1.0


def test_the_pipeline_finds_every_injected_event_of_every_kind(small_report):
    assert small_report.sensitivity == 1.0
    assert small_report.missed == ()
    assert EventKind.MISSING_DATA in small_report.events


def test_grouping_raises_at_least_five_times_fewer_alerts_than_the_naive_baseline(small_report):
    assert small_report.alerts > 0
    assert small_report.reduction_ratio >= 5
    assert small_report.naive_alerts_per_patient_week >= 5 * small_report.alerts_per_patient_week


def test_the_report_shows_the_volume_per_care_plan_and_without_cgm(small_report):
    assert "hypertension" in small_report.groups
    assert "type1_diabetes_cgm" in small_report.groups
    assert sum(group.patients for group in small_report.groups.values()) == 30
    without_cgm = small_report.reduction_ratio_without_cgm
    assert without_cgm is not None and without_cgm > 1
    assert "Reduction among patients without CGM" in small_report.to_text()


def test_the_naive_baseline_cannot_notice_silence(small_report):
    gaps = small_report.events[EventKind.MISSING_DATA]
    assert gaps.total > 0 and gaps.naive_noticed == 0 and gaps.detected == gaps.total


def test_the_summary_reads_in_english_and_korean(small_report):
    text = small_report.to_text()
    assert text.startswith(
        "Remote-monitoring alert evaluation: 30 simulated patients, 30 days, seed 7"
    )
    assert "Critical events:" in text and "goal 100 %" in text
    assert "fewer alerts than the naive baseline" in text
    korean = small_report.to_text("ko")
    assert korean.startswith("원격 모니터링 알림 평가: 가상 환자 30명, 30일, 시드 7")
    assert "단순 기준선" in korean


def test_the_cohort_is_the_same_for_the_same_seed_and_differs_for_another():
    first = simulate_cohort(patients=12, days=20, seed=3)
    again = simulate_cohort(patients=12, days=20, seed=3)
    other = simulate_cohort(patients=12, days=20, seed=4)
    assert [p.events for p in first.patients] == [p.events for p in again.patients]
    patient = first.patients[0]
    assert first.readings_for(patient) == again.readings_for(again.patients[0])
    assert [p.physiology for p in first.patients] != [p.physiology for p in other.patients]


def test_the_default_cohort_mixes_every_template_and_event():
    cohort = simulate_cohort()
    assert len(cohort.patients) == 200 and cohort.days == 90
    templates = Counter(patient.template for patient in cohort.patients)
    assert set(templates) == set(PlanTemplate)
    assert sum(patient.uses_cgm for patient in cohort.patients) >= 30
    assert {event.kind for _patient, event in cohort.events} == set(EventKind)
    for patient in cohort.patients:
        for event in patient.events:
            assert patient.monitoring_start <= event.start <= event.end
            assert event.end <= patient.monitoring_end


def test_simulated_readings_are_valid_ordered_and_local():
    cohort = simulate_cohort(patients=20, days=10, seed=11)
    for patient in cohort.patients:
        readings = cohort.readings_for(patient)
        assert readings, patient.template
        received = [item.received_at for item in readings]
        assert received == sorted(received)
        for item in readings:
            assert validate_reading(item, item.received_at) == []
            assert item.effective_at.utcoffset() == item.effective_at.astimezone(
                patient.zone).utcoffset()
        if patient.uses_cgm:
            gaps = [b.effective_at - a.effective_at for a, b in pairwise(readings)]
            assert min(gaps) == timedelta(minutes=5)


def test_the_naive_baseline_alerts_on_each_out_of_range_value():
    cohort = simulate_cohort(patients=1, days=5, seed=1)
    plan = cohort.patients[0].plan
    readings = cohort.readings_for(cohort.patients[0])
    systolic = next(item for item in readings if item.metric is Metric.SYSTOLIC)
    assert naive_out_of_range(replace(systolic, value=141.0), plan)
    assert not naive_out_of_range(replace(systolic, value=139.0), plan)
    assert naive_out_of_range(replace(systolic, value=85.0), plan)


def test_one_patient_outcome_adds_up():
    cohort = simulate_cohort(patients=8, days=21, seed=5)
    report = evaluate(cohort)
    outcome = evaluate_patient(cohort, cohort.patients[0])
    assert outcome == report.outcomes[0]
    assert report.readings == sum(item.readings for item in report.outcomes)
    assert report.alerts == sum(sum(item.alerts_by_severity.values()) for item in report.outcomes)
