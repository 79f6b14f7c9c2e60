"""Alerts: what raises a signal, how signals become one alert per episode, and its workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.alerts import (
    NEVER_AUTO_CLEARED,
    AlertKind,
    AlertSignal,
    AlertState,
    AlertTransitionError,
    EpisodeGrouper,
    PatientContext,
    Severity,
    acknowledge,
    auto_clear,
    can_auto_clear,
    episode_key_for,
    evaluate_on_ingest,
    evaluate_scheduled,
    needs_escalation,
    open_alert,
    resolve,
    snooze,
)
from jaejin.monitoring.careplans import TEMPLATES, PlanTemplate
from jaejin.monitoring.readings import Metric
from tests.monitoring.support import (
    NOW,
    blood_glucose,
    blood_pressure,
    cgm,
    cgm_series,
    emergency_number_for,
    reading,
)

FAST = settings(max_examples=200, deadline=None)
HYPERTENSION = TEMPLATES[PlanTemplate.HYPERTENSION]
TYPE1 = TEMPLATES[PlanTemplate.TYPE1_DIABETES_CGM]
TYPE2 = TEMPLATES[PlanTemplate.TYPE2_DIABETES]
SURGERY = TEMPLATES[PlanTemplate.POST_OPERATIVE]
HEART_FAILURE = TEMPLATES[PlanTemplate.HEART_FAILURE]
KOREAN_IN_THAILAND = PatientContext("ko", "TH", emergency_number_for)


def ingest_all(readings, plan, patient=None):
    """Feed readings one by one as the ingest path does; returns every signal."""
    signals = []
    for index, item in enumerate(readings):
        signals.extend(evaluate_on_ingest(item, plan, readings[:index], patient=patient))
    return signals


def kinds(signals):
    return [signal.kind for signal in signals]


def test_a_crisis_reading_raises_one_critical_signal_for_the_panel():
    systolic, diastolic = blood_pressure(192, 118)
    assert kinds(ingest_all([systolic, diastolic], HYPERTENSION)) == [AlertKind.BP_CRISIS]
    # The ingest path may store the whole panel before evaluating each half.
    signals = evaluate_on_ingest(systolic, HYPERTENSION, [diastolic])
    signals += evaluate_on_ingest(diastolic, HYPERTENSION, [systolic])
    assert kinds(signals) == [AlertKind.BP_CRISIS]
    assert signals[0].severity is Severity.CRITICAL
    assert signals[0].explain("en") == (
        "Blood pressure 192/118 mmHg reached the crisis threshold (180/120)"
    )
    assert signals[0].explain("ko") == "혈압 192/118 mmHg, 고혈압 위기 기준(180/120)에 도달"


def test_both_halves_in_crisis_raise_one_episode_whichever_arrives_first():
    systolic, diastolic = blood_pressure(200, 125)
    assert kinds(ingest_all([systolic, diastolic], HYPERTENSION)) == [AlertKind.BP_CRISIS]
    reversed_order = ingest_all([diastolic, systolic], HYPERTENSION)
    assert {signal.kind for signal in reversed_order} == {AlertKind.BP_CRISIS}
    grouper = EpisodeGrouper()
    assert len({grouper.add(signal).alert_id for signal in reversed_order}) == 1


def test_a_diastolic_crisis_alone_is_a_crisis():
    signals = ingest_all(list(blood_pressure(170, 124)), HYPERTENSION)
    assert kinds(signals) == [AlertKind.BP_CRISIS]
    assert signals[0].metric is Metric.DIASTOLIC


def test_a_stage_2_reading_alone_raises_nothing_on_ingest():
    assert ingest_all(list(blood_pressure(152, 95)), HYPERTENSION) == []


def test_critical_guidance_speaks_the_patients_language_with_the_number_of_where_they_are():
    systolic, diastolic = blood_pressure(195, 110)
    signals = evaluate_on_ingest(systolic, HYPERTENSION, [diastolic], patient=KOREAN_IN_THAILAND)
    guidance = signals[0].patient_guidance
    assert guidance is not None
    assert "1669" in guidance and "119" not in guidance
    assert guidance.startswith("혈압이 매우 높습니다(195/110 mmHg)")
    in_us = PatientContext("en", "US", emergency_number_for)
    low = evaluate_on_ingest(blood_glucose(45), TYPE2, [], patient=in_us)[0]
    assert low.patient_guidance is not None
    assert low.patient_guidance.startswith("Your glucose is very low (45 mg/dL).")
    assert "call 911" in low.patient_guidance


def test_guidance_names_no_number_for_a_country_the_lookup_does_not_know():
    somewhere = PatientContext("en", "AQ", emergency_number_for)
    signal = evaluate_on_ingest(blood_glucose(40), TYPE2, [], patient=somewhere)[0]
    assert signal.patient_guidance is not None
    assert "your local emergency number" in signal.patient_guidance


def test_non_critical_signals_carry_no_patient_guidance():
    signal = evaluate_on_ingest(blood_glucose(62), TYPE2, [], patient=KOREAN_IN_THAILAND)[0]
    assert signal.severity is Severity.HIGH and signal.patient_guidance is None


def test_hypotension_is_a_high_alert():
    signals = ingest_all(list(blood_pressure(84, 55)), HYPERTENSION)
    assert kinds(signals) == [AlertKind.HYPOTENSION]
    assert signals[0].severity is Severity.HIGH


def test_blood_glucose_levels_map_to_severities():
    assert [(s.kind, s.severity) for s in evaluate_on_ingest(blood_glucose(50), TYPE2, [])] == [
        (AlertKind.GLUCOSE_VERY_LOW, Severity.CRITICAL)
    ]
    assert [(s.kind, s.severity) for s in evaluate_on_ingest(blood_glucose(65), TYPE2, [])] == [
        (AlertKind.GLUCOSE_LOW, Severity.HIGH)
    ]
    assert [(s.kind, s.severity) for s in evaluate_on_ingest(blood_glucose(300), TYPE2, [])] == [
        (AlertKind.GLUCOSE_VERY_HIGH, Severity.MODERATE)
    ]
    assert evaluate_on_ingest(blood_glucose(200), TYPE2, []) == []
    assert evaluate_on_ingest(blood_glucose(70), TYPE2, []) == []


def test_a_single_cgm_value_below_70_waits_for_15_minutes_of_lows():
    series = cgm_series([95, 80, 66, 64, 63])
    signals = ingest_all(series, TYPE1)
    assert kinds(signals) == [AlertKind.GLUCOSE_LOW]
    assert signals[0].observed_at == series[-1].effective_at
    assert ingest_all(cgm_series([95, 66, 88, 64]), TYPE1) == []


def test_a_cgm_value_below_54_is_critical_at_once():
    signals = ingest_all(cgm_series([110, 52]), TYPE1)
    assert [(s.kind, s.severity) for s in signals] == [
        (AlertKind.GLUCOSE_VERY_LOW, Severity.CRITICAL)
    ]


def test_cgm_above_250_alerts_only_when_it_lasts_90_of_120_minutes():
    assert ingest_all(cgm_series([260] * 17), TYPE1) == []
    signals = ingest_all(cgm_series([260] * 18), TYPE1)
    assert kinds(signals) == [AlertKind.GLUCOSE_VERY_HIGH]
    assert "90 of the last 120 minutes" in signals[0].explain("en")


def test_heart_rate_and_oxygen_saturation_out_of_range():
    assert kinds(evaluate_on_ingest(reading(Metric.HEART_RATE, 38), HYPERTENSION, [])) == [
        AlertKind.HEART_RATE_OUT_OF_RANGE
    ]
    assert kinds(evaluate_on_ingest(reading(Metric.HEART_RATE, 131), HYPERTENSION, [])) == [
        AlertKind.HEART_RATE_OUT_OF_RANGE
    ]
    assert evaluate_on_ingest(reading(Metric.HEART_RATE, 130), HYPERTENSION, []) == []
    low = evaluate_on_ingest(reading(Metric.SPO2, 91), HEART_FAILURE, [])
    assert kinds(low) == [AlertKind.SPO2_LOW]
    assert low[0].explain("ko") == "산소포화도 91 %, 92 % 미만"


def test_fever_after_surgery_is_high_and_elsewhere_moderate():
    after_surgery = evaluate_on_ingest(reading(Metric.BODY_TEMPERATURE, 38.0), SURGERY, [])
    assert [(s.kind, s.severity) for s in after_surgery] == [(AlertKind.FEVER, Severity.HIGH)]
    other = evaluate_on_ingest(reading(Metric.BODY_TEMPERATURE, 38.4), HYPERTENSION, [])
    assert [(s.kind, s.severity) for s in other] == [(AlertKind.FEVER, Severity.MODERATE)]
    assert evaluate_on_ingest(reading(Metric.BODY_TEMPERATURE, 37.9), SURGERY, []) == []


def test_heart_failure_weight_gain_over_two_days_alerts_on_ingest():
    two_days_ago = reading(Metric.BODY_WEIGHT, 70.0, NOW - timedelta(days=2, minutes=20))
    yesterday = reading(Metric.BODY_WEIGHT, 71.2, NOW - timedelta(days=1))
    today = reading(Metric.BODY_WEIGHT, 72.3, NOW)
    signals = evaluate_on_ingest(today, HEART_FAILURE, [two_days_ago, yesterday])
    assert kinds(signals) == [AlertKind.WEIGHT_GAIN]
    assert signals[0].explain("en") == "Weight 72.3 kg, up 2.3 kg within 2 days (limit 2.0 kg)"
    exactly_two = reading(Metric.BODY_WEIGHT, 72.0, NOW)
    assert evaluate_on_ingest(exactly_two, HEART_FAILURE, [two_days_ago, yesterday]) == []
    long_ago = reading(Metric.BODY_WEIGHT, 65.0, NOW - timedelta(days=4))
    assert evaluate_on_ingest(today, HEART_FAILURE, [long_ago]) == []
    assert evaluate_on_ingest(today, HYPERTENSION, [two_days_ago, yesterday]) == []


def test_every_wound_photo_is_a_review_item():
    photo = reading(Metric.WOUND_PHOTO, 1)
    signals = evaluate_on_ingest(photo, SURGERY, [])
    assert kinds(signals) == [AlertKind.WOUND_PHOTO_REVIEW]
    assert signals[0].explain("ko") == "검토할 새 상처 사진"


def test_wound_reviews_are_never_cleared_by_the_system():
    grouper = EpisodeGrouper(quiet_period=timedelta(hours=1))
    first = evaluate_on_ingest(reading(Metric.WOUND_PHOTO, 1), SURGERY, [])[0]
    alert = grouper.add(first)
    later = NOW + timedelta(days=30)
    assert AlertKind.WOUND_PHOTO_REVIEW in NEVER_AUTO_CLEARED
    assert not can_auto_clear(alert, later, timedelta(hours=1))
    with pytest.raises(AlertTransitionError):
        auto_clear(alert, later, timedelta(hours=1))
    assert grouper.close_quiet(later) == []
    second = evaluate_on_ingest(reading(Metric.WOUND_PHOTO, 1, later), SURGERY, [])[0]
    assert grouper.add(second).signal_count == 2
    resolved = resolve(grouper.open_alerts()[0], "dr-kim", later, "healing well")
    grouper.update(resolved)
    third = evaluate_on_ingest(
        reading(Metric.WOUND_PHOTO, 1, later + timedelta(hours=2)), SURGERY, []
    )[0]
    assert grouper.add(third).signal_count == 1
    assert [alert.state for alert in grouper.all_alerts()] == [
        AlertState.RESOLVED, AlertState.OPEN,
    ]


def daily_blood_pressure(days, systolic, diastolic, end=NOW):
    readings = []
    for day in range(days, 0, -1):
        readings.extend(blood_pressure(systolic, diastolic, end - timedelta(days=day)))
    return readings


def test_no_reading_for_three_days_is_an_alert():
    readings = daily_blood_pressure(10, 130, 80, end=NOW - timedelta(days=3))
    signals = evaluate_scheduled(readings, HYPERTENSION, NOW)
    missing = [signal for signal in signals if signal.kind is AlertKind.MISSING_DATA]
    assert len(missing) == 1 and missing[0].metric is Metric.SYSTOLIC
    assert missing[0].explain("en") == (
        "No Systolic blood pressure reading for 96 hours (alert after 72 hours)"
    )
    assert missing[0].explain("ko") == "96시간 동안 수축기 혈압 측정값 없음(72시간 후 알림)"
    recent = daily_blood_pressure(10, 130, 80, end=NOW - timedelta(days=1))
    assert [s for s in evaluate_scheduled(recent, HYPERTENSION, NOW)
            if s.kind is AlertKind.MISSING_DATA] == []


def test_missing_data_counts_from_the_start_of_monitoring_when_nothing_came():
    signals = evaluate_scheduled(
        [], HEART_FAILURE, NOW, patient_ref="p9", monitoring_since=NOW - timedelta(days=4)
    )
    assert {s.metric for s in signals if s.kind is AlertKind.MISSING_DATA} == {
        Metric.SYSTOLIC, Metric.BODY_WEIGHT,
    }
    assert evaluate_scheduled(
        [], HEART_FAILURE, NOW, patient_ref="p9", monitoring_since=NOW - timedelta(days=1)
    ) == []
    never = evaluate_scheduled([], TYPE2, NOW, patient_ref="p9")
    assert [s.explain("en") for s in never] == ["No Glucose reading received yet"]
    with pytest.raises(ValueError, match="patient_ref"):
        evaluate_scheduled([], TYPE2, NOW)
    mixed = [blood_glucose(120, patient="p1"), blood_glucose(130, patient="p2")]
    with pytest.raises(ValueError, match="patient_ref"):
        evaluate_scheduled(mixed, TYPE2, NOW)
    with pytest.raises(ValueError, match="another patient"):
        evaluate_scheduled(mixed, TYPE2, NOW, patient_ref="p1")


def test_a_rising_week_above_target_is_compared_with_the_previous_four_weeks():
    earlier = daily_blood_pressure(28, 136, 86, end=NOW - timedelta(days=7))
    week = daily_blood_pressure(7, 152, 96)
    signals = [
        s for s in evaluate_scheduled(earlier + week, HYPERTENSION, NOW)
        if s.kind is AlertKind.BP_ABOVE_TARGET
    ]
    assert len(signals) == 1 and signals[0].severity is Severity.MODERATE
    assert signals[0].explain("en") == (
        "7-day mean blood pressure 152/96 mmHg is above the target 140/90 "
        "(previous 4 weeks 136/86)"
    )
    controlled = daily_blood_pressure(7, 128, 78)
    assert [s for s in evaluate_scheduled(earlier + controlled, HYPERTENSION, NOW)
            if s.kind is AlertKind.BP_ABOVE_TARGET] == []


def test_a_high_risk_patient_above_130_80_but_steady_is_information_only():
    plan = HYPERTENSION.with_overrides({"high_risk": True})
    readings = daily_blood_pressure(35, 134, 82)
    signals = [s for s in evaluate_scheduled(readings, plan, NOW)
               if s.kind is AlertKind.BP_ABOVE_TARGET]
    assert [s.severity for s in signals] == [Severity.INFO]


def test_scheduled_evaluation_finds_heart_failure_weight_gain():
    weights = [
        reading(Metric.BODY_WEIGHT, value, NOW - timedelta(days=days, hours=3))
        for days, value in ((3, 70.1), (2, 70.0), (1, 71.0), (0, 72.6))
    ]
    signals = evaluate_scheduled(weights, HEART_FAILURE, NOW)
    assert [s.kind for s in signals if s.kind is AlertKind.WEIGHT_GAIN] == [
        AlertKind.WEIGHT_GAIN
    ]


def test_fourteen_days_of_cgm_out_of_consensus_targets_raise_one_report_signal():
    values = [60 if index % 10 == 0 else 200 for index in range(14 * 288)]
    series = cgm_series(values, NOW - timedelta(minutes=5))
    signals = [s for s in evaluate_scheduled(series, TYPE1, NOW) if s.metric is Metric.GLUCOSE]
    assert kinds(signals) == [AlertKind.CGM_OUT_OF_TARGET]
    assert signals[0].severity is Severity.HIGH
    text = signals[0].explain("en")
    assert "time in range 0 %" in text and "below 70 10.0 %" in text
    assert text.endswith("missed: time below 70, time in range, time above 180")
    assert signals[0].explain("ko").endswith("미달: 70 미만 시간, 목표범위 내 시간, 180 초과 시간")


def test_cgm_worn_too_little_reports_sensor_wear_instead_of_metrics():
    sparse = cgm_series([120] * (5 * 288), NOW - timedelta(minutes=5))
    signals = [s for s in evaluate_scheduled(sparse, TYPE1, NOW) if s.metric is Metric.GLUCOSE]
    assert [(s.kind, s.severity) for s in signals] == [(AlertKind.CGM_LOW_WEAR, Severity.INFO)]


def test_a_pattern_of_high_fingersticks_is_a_moderate_alert():
    readings = [blood_glucose(value, NOW - timedelta(days=day))
                for day, value in enumerate((210, 190, 150, 240, 230))]
    signals = [s for s in evaluate_scheduled(readings, TYPE2, NOW)
               if s.kind is AlertKind.GLUCOSE_HIGH_PATTERN]
    assert [s.explain("en") for s in signals] == [
        "4 of 5 glucose readings in the last 7 days were above 180 mg/dL"
    ]


def signal(kind=AlertKind.BP_CRISIS, at=NOW, severity=Severity.CRITICAL, patient="p1"):
    return AlertSignal(
        patient_ref=patient, kind=kind, severity=severity,
        episode_key=episode_key_for(patient, kind), detected_at=at, observed_at=at,
        metric=None, message="New wound photo to review",
    )


def test_repeated_signals_of_one_episode_become_one_alert_until_a_quiet_period():
    grouper = EpisodeGrouper(quiet_period=timedelta(hours=6))
    first = grouper.add(signal(at=NOW))
    same = grouper.add(signal(at=NOW + timedelta(hours=5)))
    assert same.alert_id == first.alert_id and same.signal_count == 2
    again = grouper.add(signal(at=NOW + timedelta(hours=12)))
    assert again.alert_id != first.alert_id
    other_patient = grouper.add(signal(at=NOW + timedelta(hours=12), patient="p2"))
    assert other_patient.alert_id != again.alert_id
    assert len(grouper.all_alerts()) == 3


def test_a_low_that_deepens_stays_one_episode_and_takes_the_worse_severity():
    grouper = EpisodeGrouper()
    alert = grouper.add(signal(AlertKind.GLUCOSE_LOW, NOW, Severity.HIGH))
    alert = acknowledge(alert, "nurse-lee", NOW + timedelta(minutes=2))
    grouper.update(alert)
    deeper = grouper.add(
        signal(AlertKind.GLUCOSE_VERY_LOW, NOW + timedelta(minutes=10), Severity.CRITICAL)
    )
    assert deeper.alert_id == alert.alert_id
    assert deeper.severity is Severity.CRITICAL and deeper.kind is AlertKind.GLUCOSE_VERY_LOW
    assert deeper.state is AlertState.OPEN
    assert deeper.unacknowledged_since == NOW + timedelta(minutes=10)


def test_the_workflow_acknowledge_snooze_resolve():
    alert = open_alert(signal(AlertKind.SPO2_LOW, NOW, Severity.HIGH))
    snoozed = snooze(alert, "dr-kim", NOW, NOW + timedelta(hours=2))
    assert snoozed.state_at(NOW + timedelta(hours=1)) is AlertState.SNOOZED
    assert snoozed.state_at(NOW + timedelta(hours=2)) is AlertState.OPEN
    acknowledged = acknowledge(snoozed, "dr-kim", NOW + timedelta(hours=3))
    assert acknowledged.state is AlertState.ACKNOWLEDGED
    with pytest.raises(AlertTransitionError):
        acknowledge(acknowledged, "dr-kim", NOW + timedelta(hours=3))
    done = resolve(acknowledged, "dr-kim", NOW + timedelta(hours=4), "called the patient")
    assert (done.state, done.resolved_by, done.resolution_note) == (
        AlertState.RESOLVED, "dr-kim", "called the patient",
    )
    with pytest.raises(AlertTransitionError):
        resolve(done, "dr-kim", NOW + timedelta(hours=5))
    with pytest.raises(AlertTransitionError):
        snooze(done, "dr-kim", NOW + timedelta(hours=5), NOW + timedelta(hours=6))
    with pytest.raises(AlertTransitionError):
        snooze(alert, "dr-kim", NOW, NOW)


def test_a_critical_alert_cannot_be_snoozed_before_someone_acknowledges_it():
    alert = open_alert(signal())
    with pytest.raises(AlertTransitionError, match="acknowledge"):
        snooze(alert, "dr-kim", NOW, NOW + timedelta(hours=1))
    seen = acknowledge(alert, "dr-kim", NOW)
    assert snooze(seen, "dr-kim", NOW, NOW + timedelta(hours=1)).acknowledged_by == "dr-kim"


def test_an_unacknowledged_critical_alert_escalates_after_the_set_time():
    alert = open_alert(signal())
    wait = timedelta(minutes=15)
    assert not needs_escalation(alert, NOW + timedelta(minutes=14), wait)
    assert needs_escalation(alert, NOW + timedelta(minutes=15), wait)
    assert not needs_escalation(acknowledge(alert, "x", NOW), NOW + timedelta(hours=1), wait)
    assert not needs_escalation(resolve(alert, "x", NOW), NOW + timedelta(hours=1), wait)
    high = open_alert(signal(AlertKind.SPO2_LOW, NOW, Severity.HIGH))
    assert not needs_escalation(high, NOW + timedelta(days=1), wait)


def test_the_system_clears_only_quiet_alerts_it_is_allowed_to():
    quiet = timedelta(hours=48)
    high = open_alert(signal(AlertKind.SPO2_LOW, NOW, Severity.HIGH))
    assert not can_auto_clear(high, NOW + timedelta(hours=47), quiet)
    cleared = auto_clear(high, NOW + timedelta(hours=48), quiet)
    assert cleared.state is AlertState.RESOLVED and cleared.resolved_by is None
    critical = open_alert(signal())
    assert not can_auto_clear(critical, NOW + timedelta(days=9), quiet)
    assert can_auto_clear(acknowledge(critical, "x", NOW), NOW + timedelta(days=9), quiet)


critical_readings = st.one_of(
    st.tuples(st.just("systolic"), st.floats(180, 300), st.floats(20, 179)),
    st.tuples(st.just("diastolic"), st.floats(90, 179), st.floats(120, 200)),
    st.tuples(st.just("blood"), st.floats(10, 53.99), st.just(0.0)),
    st.tuples(st.just("cgm"), st.floats(10, 53.99), st.just(0.0)),
)


@FAST
@given(case=critical_readings, template=st.sampled_from(list(PlanTemplate)),
       diastolic_first=st.booleans())
def test_a_critical_reading_always_yields_a_critical_signal(case, template, diastolic_first):
    plan = TEMPLATES[template]
    kind, first, second = case
    if kind in ("systolic", "diastolic"):
        systolic, diastolic = blood_pressure(first, second)
        order = [diastolic, systolic] if diastolic_first else [systolic, diastolic]
        signals = ingest_all(order, plan)
    else:
        item = blood_glucose(first) if kind == "blood" else cgm(first)
        signals = evaluate_on_ingest(item, plan, [])
    critical = [s for s in signals if s.severity is Severity.CRITICAL]
    assert critical
    # However many halves report it, it is one episode for the care team.
    assert len({s.episode_key for s in critical}) == 1


@FAST
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 24 * 20),
            st.sampled_from(["p1", "p2", "p3"]),
            st.sampled_from([AlertKind.BP_CRISIS, AlertKind.GLUCOSE_LOW,
                             AlertKind.GLUCOSE_VERY_LOW, AlertKind.WOUND_PHOTO_REVIEW]),
            st.sampled_from(list(Severity)),
        ),
        max_size=60,
    ),
    quiet_hours=st.integers(1, 72),
    close_every=st.integers(1, 50),
    resolve_every=st.integers(1, 50),
)
def test_episode_grouping_never_loses_a_signal(events, quiet_hours, close_every,
                                                resolve_every):
    grouper = EpisodeGrouper(quiet_period=timedelta(hours=quiet_hours))
    added = []
    for position, (hour, patient, kind, severity) in enumerate(sorted(events)):
        item = signal(kind, NOW + timedelta(hours=hour), severity, patient)
        alert = grouper.add(item)
        added.append(item)
        assert alert.episode_key == item.episode_key and item in alert.signals
        if position % resolve_every == resolve_every - 1:
            grouper.update(resolve(alert, "dr", item.detected_at))
        if position % close_every == close_every - 1:
            grouper.close_quiet(item.detected_at)
    grouped = [item for alert in grouper.all_alerts() for item in alert.signals]
    assert sorted(grouped, key=id) == sorted(added, key=id)
    for alert in grouper.all_alerts():
        assert {item.episode_key for item in alert.signals} == {alert.episode_key}
        assert alert.severity is max((s.severity for s in alert.signals), key=lambda s: s.rank)
    assert len({alert.alert_id for alert in grouper.all_alerts()}) <= len(grouper.all_alerts())


def test_signals_are_timezone_aware_utc_on_ingest():
    signal_ = evaluate_on_ingest(blood_glucose(45), TYPE2, [])[0]
    assert signal_.detected_at.tzinfo is UTC
    assert signal_.observed_at.utcoffset() == timedelta(hours=9)
    assert isinstance(signal_.detected_at, datetime)
