"""Triage: patients in order of urgency, each with what changed against their own baseline."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.alerts import (
    AlertKind,
    AlertSignal,
    Severity,
    acknowledge,
    episode_key_for,
    open_alert,
    snooze,
)
from jaejin.monitoring.careplans import TEMPLATES, PlanTemplate
from jaejin.monitoring.readings import Metric
from jaejin.monitoring.triage import BaselineChange, PatientStatus, baseline_changes, rank
from tests.monitoring.support import (
    NOW,
    blood_pressure,
    cgm_series,
    reading,
)

FAST = settings(max_examples=200, deadline=None)
HYPERTENSION = TEMPLATES[PlanTemplate.HYPERTENSION]


def pressures(pairs, first_day_ago):
    readings = []
    for offset, (systolic, diastolic) in enumerate(pairs):
        at = NOW - timedelta(days=first_day_ago - offset - 0.5)
        readings.extend(blood_pressure(systolic, diastolic, at))
    return readings


def rising_patient_readings():
    previous = pressures([(138, 88)] * 28, 35)
    week = pressures(
        [(162, 96), (165, 96), (161, 96), (140, 96), (145, 96), (145, 96), (146, 96)], 7
    )
    return previous + week


def test_it_says_what_changed_against_the_patients_own_four_weeks():
    changes = baseline_changes(rising_patient_readings(), HYPERTENSION, NOW)
    blood = [change for change in changes if change.metric is Metric.SYSTOLIC]
    assert blood[0].explain("en") == (
        "7-day mean 152/96, up 14/8 from the previous 4 weeks; 3 readings above 160"
    )
    assert blood[0].explain("ko") == (
        "7일 평균 152/96, 이전 4주보다 14/8 상승; 160 초과 측정 3회"
    )
    assert blood[0].deviation > 3


def test_a_falling_or_mixed_change_reads_as_such():
    previous = pressures([(150, 90)] * 28, 35)
    falling = baseline_changes(previous + pressures([(140, 85)] * 7, 7), HYPERTENSION, NOW)
    assert falling[0].explain("en").startswith("7-day mean 140/85, down 10/5 from")
    mixed = baseline_changes(previous + pressures([(156, 84)] * 7, 7), HYPERTENSION, NOW)
    assert mixed[0].explain("en").startswith("7-day mean 156/84, +6/-6 against")


def test_no_baseline_means_no_change_to_report():
    assert baseline_changes(pressures([(150, 95)] * 7, 7), HYPERTENSION, NOW) == []


def test_other_metrics_and_cgm_time_in_range_are_compared_too():
    heart_failure = TEMPLATES[PlanTemplate.HEART_FAILURE]
    weights = [
        reading(Metric.BODY_WEIGHT, 70.0 if day >= 7 else 72.5,
                NOW - timedelta(days=day, hours=12))
        for day in range(34, -1, -1)
    ]
    changes = baseline_changes(weights, heart_failure, NOW)
    assert [change.explain("en") for change in changes] == [
        "7-day mean Body weight 72.5 kg, +2.5 from the previous 4 weeks"
    ]
    type1 = TEMPLATES[PlanTemplate.TYPE1_DIABETES_CGM]
    earlier = cgm_series([150.0] * (14 * 288), NOW - timedelta(days=14, minutes=5))
    recent = cgm_series([150.0 if i % 2 else 200.0 for i in range(14 * 288)],
                        NOW - timedelta(minutes=5))
    cgm_change = baseline_changes(earlier + recent, type1, NOW)
    assert [change.explain("ko") for change in cgm_change] == [
        "14일 목표범위 내 시간 50 %, 이전 14일 대비 -50%p"
    ]


def make_signal(patient, kind, severity, at):
    return AlertSignal(
        patient_ref=patient, kind=kind, severity=severity,
        episode_key=episode_key_for(patient, kind), detected_at=at, observed_at=at,
        metric=None, message="New wound photo to review",
    )


def test_critical_first_then_long_waiting_then_far_from_baseline():
    crisis = open_alert(make_signal("a", AlertKind.BP_CRISIS, Severity.CRITICAL,
                                    NOW - timedelta(minutes=10)))
    low_oxygen = open_alert(make_signal("b", AlertKind.SPO2_LOW, Severity.HIGH,
                                        NOW - timedelta(hours=10)))
    fever = open_alert(make_signal("c", AlertKind.FEVER, Severity.HIGH,
                                   NOW - timedelta(hours=1)))
    moved = baseline_changes(rising_patient_readings(), HYPERTENSION, NOW)
    ranked = rank(
        [
            PatientStatus("e"),
            PatientStatus("d", changes=moved),
            PatientStatus("c", alerts=[fever]),
            PatientStatus("b", alerts=[low_oxygen]),
            PatientStatus("a", alerts=[crisis]),
        ],
        NOW,
    )
    assert [item.patient_ref for item in ranked] == ["a", "b", "c", "d", "e"]
    assert [item.rank for item in ranked] == [1, 2, 3, 4, 5]
    assert ranked[0].severity is Severity.CRITICAL and ranked[4].severity is None
    assert ranked[3].explain("en") == (
        "No open alert; 7-day mean 152/96, up 14/8 from the previous 4 weeks; "
        "3 readings above 160"
    )
    assert ranked[3].score_parts["deviation"] > 0


def test_acknowledged_and_snoozed_alerts_weigh_less_than_unseen_ones():
    signal = make_signal("a", AlertKind.SPO2_LOW, Severity.HIGH, NOW - timedelta(minutes=5))
    unseen = open_alert(signal)
    seen = acknowledge(open_alert(make_signal("b", AlertKind.SPO2_LOW, Severity.HIGH,
                                              NOW - timedelta(minutes=5))), "dr", NOW)
    hidden = snooze(open_alert(make_signal("c", AlertKind.SPO2_LOW, Severity.HIGH,
                                           NOW - timedelta(minutes=5))),
                    "dr", NOW, NOW + timedelta(hours=4))
    ranked = rank(
        [PatientStatus("c", alerts=[hidden]), PatientStatus("b", alerts=[seen]),
         PatientStatus("a", alerts=[unseen])],
        NOW,
    )
    assert [item.patient_ref for item in ranked] == ["a", "b", "c"]
    assert ranked[2].alerts == () and ranked[2].severity is None


def test_equal_patients_are_ordered_by_reference():
    ranked = rank([PatientStatus("p3"), PatientStatus("p1"), PatientStatus("p2")], NOW)
    assert [item.patient_ref for item in ranked] == ["p1", "p2", "p3"]


severities = st.sampled_from(list(Severity))


@settings(max_examples=100, deadline=None)
@given(
    patients=st.lists(
        st.tuples(
            st.lists(st.tuples(severities, st.integers(0, 72 * 60), st.booleans()), max_size=3),
            st.floats(0, 8),
        ),
        min_size=1,
        max_size=12,
    ),
    shuffle_seed=st.integers(0, 10_000),
)
def test_ranking_is_deterministic_whatever_order_the_patients_come_in(patients, shuffle_seed):
    statuses = []
    for index, (alerts, deviation) in enumerate(patients):
        reference = f"p{index:02d}"
        made = []
        for number, (severity, minutes_ago, acknowledged) in enumerate(alerts):
            kind = list(AlertKind)[number]
            alert = open_alert(
                make_signal(reference, kind, severity, NOW - timedelta(minutes=minutes_ago))
            )
            made.append(acknowledge(alert, "dr", NOW) if acknowledged else alert)
        change = BaselineChange(Metric.SYSTOLIC, "No open alert", {}, deviation)
        statuses.append(PatientStatus(reference, alerts=made, changes=[change]))
    expected = [item.patient_ref for item in rank(statuses, NOW)]
    shuffled = list(statuses)
    random.Random(shuffle_seed).shuffle(shuffled)
    ranked = rank(shuffled, NOW)
    assert [item.patient_ref for item in ranked] == expected
    scores = [item.score for item in ranked]
    assert scores == sorted(scores, reverse=True)

    def unseen_critical(item):
        return any(
            alert.severity is Severity.CRITICAL and alert.acknowledged_at is None
            for alert in item.alerts
        )

    if any(unseen_critical(item) for item in ranked):
        assert unseen_critical(ranked[0])
