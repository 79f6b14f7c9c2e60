"""Readings: shared vocabulary and the checks that keep implausible values out of alerts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.readings import (
    BLOOD_PRESSURE_PANEL_LOINC,
    CANONICAL_UNITS,
    METRIC_SPECS,
    PHYSIOLOGICAL_LIMITS,
    GlucoseSource,
    Metric,
    ProblemCode,
    Reading,
    blood_pressure_pairs,
    glucose_source_for_loinc,
    metric_for_loinc,
    validate_reading,
    validate_readings,
)
from tests.monitoring.support import (
    NOW,
    blood_pressure,
    cgm,
    reading,
)

FAST = settings(max_examples=200, deadline=None)
MEASURED = [metric for metric in Metric if metric in PHYSIOLOGICAL_LIMITS]


def codes(problems):
    return [problem.code for problem in problems]


def test_every_metric_has_its_loinc_codes_and_canonical_unit():
    assert METRIC_SPECS[Metric.SYSTOLIC].loinc_codes == ("8480-6",)
    assert METRIC_SPECS[Metric.DIASTOLIC].loinc_codes == ("8462-4",)
    assert METRIC_SPECS[Metric.HEART_RATE].loinc_codes == ("8867-4",)
    assert set(METRIC_SPECS[Metric.GLUCOSE].loinc_codes) == {"2339-0", "15074-8", "99504-3"}
    assert set(METRIC_SPECS[Metric.SPO2].loinc_codes) == {"59408-5", "2708-6"}
    assert METRIC_SPECS[Metric.BODY_WEIGHT].loinc_codes == ("29463-7",)
    assert METRIC_SPECS[Metric.BODY_TEMPERATURE].loinc_codes == ("8310-5",)
    assert METRIC_SPECS[Metric.WOUND_PHOTO].loinc_codes == ("72170-4",)
    assert BLOOD_PRESSURE_PANEL_LOINC == "85354-9"
    assert CANONICAL_UNITS == {
        Metric.SYSTOLIC: "mm[Hg]", Metric.DIASTOLIC: "mm[Hg]", Metric.HEART_RATE: "/min",
        Metric.GLUCOSE: "mg/dL", Metric.SPO2: "%", Metric.BODY_WEIGHT: "kg",
        Metric.BODY_TEMPERATURE: "Cel", Metric.WOUND_PHOTO: "1",
    }


def test_the_loinc_code_decides_whether_glucose_came_from_blood_or_a_cgm():
    assert glucose_source_for_loinc("2339-0") is GlucoseSource.BLOOD
    assert glucose_source_for_loinc("15074-8") is GlucoseSource.BLOOD
    assert glucose_source_for_loinc("99504-3") is GlucoseSource.CGM
    assert glucose_source_for_loinc("8480-6") is None
    assert cgm(120).glucose_source is GlucoseSource.CGM
    assert reading(Metric.HEART_RATE, 60).glucose_source is None
    assert metric_for_loinc(" 8310-5 ") is Metric.BODY_TEMPERATURE
    assert metric_for_loinc("0000-0") is None


def test_it_accepts_a_plausible_blood_pressure_pair():
    systolic, diastolic = blood_pressure(128, 82)
    assert validate_readings([systolic, diastolic], NOW) == {}


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        (Metric.SYSTOLIC, 39), (Metric.SYSTOLIC, 301), (Metric.DIASTOLIC, 19),
        (Metric.DIASTOLIC, 201), (Metric.HEART_RATE, 0), (Metric.HEART_RATE, 350),
        (Metric.GLUCOSE, 9), (Metric.GLUCOSE, 1200), (Metric.SPO2, 101), (Metric.SPO2, 12),
        (Metric.BODY_WEIGHT, 0.5), (Metric.BODY_WEIGHT, 450), (Metric.BODY_TEMPERATURE, 29.9),
        (Metric.BODY_TEMPERATURE, 98.6), (Metric.GLUCOSE, math.nan),
        (Metric.SYSTOLIC, math.inf),
    ],
)
def test_it_rejects_values_no_living_patient_can_have(metric, value):
    problems = validate_reading(reading(metric, value), NOW)
    assert codes(problems) == [ProblemCode.IMPOSSIBLE_VALUE]


def test_it_rejects_a_measurement_time_in_the_future_beyond_the_clock_skew():
    ahead = reading(Metric.HEART_RATE, 70, NOW + timedelta(minutes=6))
    assert codes(validate_reading(ahead, NOW)) == [ProblemCode.FUTURE_TIMESTAMP]
    slightly_ahead = reading(Metric.HEART_RATE, 70, NOW + timedelta(minutes=4))
    assert validate_reading(slightly_ahead, NOW) == []
    assert codes(validate_reading(slightly_ahead, NOW, clock_skew=timedelta(0))) == [
        ProblemCode.FUTURE_TIMESTAMP
    ]


def test_it_rejects_a_code_that_does_not_measure_the_metric():
    wrong = reading(Metric.SYSTOLIC, 120, loinc="8462-4")
    assert codes(validate_reading(wrong, NOW)) == [ProblemCode.UNKNOWN_CODE]


def test_it_rejects_a_value_that_was_not_converted_to_the_canonical_unit():
    in_mmol = reading(Metric.GLUCOSE, 6.2, unit="mmol/L")
    assert codes(validate_reading(in_mmol, NOW)) == [ProblemCode.UNIT_MISMATCH]


def test_it_reports_every_problem_of_one_reading_at_once():
    bad = reading(Metric.BODY_WEIGHT, 900, NOW + timedelta(days=1), loinc="3141-9")
    assert set(codes(validate_reading(bad, NOW))) == {
        ProblemCode.UNKNOWN_CODE, ProblemCode.IMPOSSIBLE_VALUE, ProblemCode.FUTURE_TIMESTAMP,
    }
    in_pounds = reading(Metric.BODY_WEIGHT, 900, NOW + timedelta(days=1), unit="[lb_av]")
    assert set(codes(validate_reading(in_pounds, NOW))) == {
        ProblemCode.UNIT_MISMATCH, ProblemCode.FUTURE_TIMESTAMP,
    }


def test_it_flags_a_diastolic_pressure_not_below_the_systolic_one_in_either_order():
    systolic, diastolic = blood_pressure(95, 110)
    found = validate_readings([diastolic, systolic], NOW)
    assert list(found) == [0]
    assert codes(found[0]) == [ProblemCode.DIASTOLIC_ABOVE_SYSTOLIC]
    assert codes(validate_reading(systolic, NOW, paired_with=diastolic)) == [
        ProblemCode.DIASTOLIC_ABOVE_SYSTOLIC
    ]
    equal_systolic, equal_diastolic = blood_pressure(100, 100)
    assert codes(validate_reading(equal_diastolic, NOW, paired_with=equal_systolic)) == [
        ProblemCode.DIASTOLIC_ABOVE_SYSTOLIC
    ]


def test_blood_pressure_halves_pair_up_only_within_their_panel():
    first = blood_pressure(130, 85)
    second = blood_pressure(150, 95)
    pairs = blood_pressure_pairs([first[1], second[0], first[0], second[1]])
    assert pairs == [(second[0], second[1]), (first[0], first[1])]


def test_it_refuses_naive_datetimes():
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        Reading("p", Metric.HEART_RATE, 60, "/min", "8867-4", naive, None, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        Reading("p", Metric.HEART_RATE, 60, "/min", "8867-4", NOW, None, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_reading(reading(Metric.HEART_RATE, 60), naive)


class _NoOffset(tzinfo):
    """A zone that names no offset: a datetime in it is naive for Python."""

    def utcoffset(self, moment: datetime | None) -> timedelta | None:
        return None


def test_it_refuses_a_zone_without_an_offset_and_accepts_any_zone_with_one():
    no_offset = NOW.replace(tzinfo=_NoOffset())
    with pytest.raises(ValueError, match="timezone-aware"):
        Reading("p", Metric.HEART_RATE, 60, "/min", "8867-4", no_offset, None, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        Reading("p", Metric.HEART_RATE, 60, "/min", "8867-4", NOW, None, no_offset)
    seoul = ZoneInfo("Asia/Seoul")
    for zone in (seoul, timezone(timedelta(hours=-3, minutes=-30)), UTC):
        moment = NOW.astimezone(zone)
        stored = Reading("p", Metric.HEART_RATE, 60, "/min", "8867-4", moment, None, moment)
        assert stored.effective_at.tzinfo is zone
        assert stored.received_at == NOW and stored.received_at.tzinfo is UTC
        assert stored.effective_ts == NOW.timestamp()


def test_it_keeps_the_device_offset_and_stores_reception_in_utc():
    tokyo = timezone(timedelta(hours=9))
    measured = datetime(2026, 3, 1, 8, 0, tzinfo=tokyo)
    received = datetime(2026, 3, 1, 9, 5, tzinfo=tokyo)
    item = Reading("p", Metric.HEART_RATE, 61, "/min", "8867-4", measured, "watch", received)
    assert item.effective_at.utcoffset() == timedelta(hours=9)
    assert item.received_at.tzinfo is UTC
    assert item.received_at == received
    assert item.effective_ts == measured.timestamp()


def test_problems_are_explained_in_korean_and_english():
    problem = validate_reading(reading(Metric.SYSTOLIC, 350), NOW)[0]
    assert problem.message("en") == (
        "Systolic blood pressure of 350 mm[Hg] is outside what a person can have (40–300)"
    )
    assert problem.message("ko") == (
        "수축기 혈압 350 mm[Hg]은(는) 사람에게 가능한 범위(40–300)를 벗어났습니다"
    )


@FAST
@given(metric=st.sampled_from(MEASURED), share=st.floats(0, 1))
def test_any_value_within_the_limits_is_accepted(metric, share):
    low, high = PHYSIOLOGICAL_LIMITS[metric]
    value = low + (high - low) * share
    assert validate_reading(reading(metric, value), NOW) == []


@FAST
@given(
    metric=st.sampled_from(MEASURED),
    beyond=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    below=st.booleans(),
)
def test_any_value_outside_the_limits_is_impossible(metric, beyond, below):
    low, high = PHYSIOLOGICAL_LIMITS[metric]
    value = low - beyond if below else high + beyond
    assert ProblemCode.IMPOSSIBLE_VALUE in codes(validate_reading(reading(metric, value), NOW))


@FAST
@given(
    ahead=st.timedeltas(min_value=timedelta(minutes=5, microseconds=1),
                        max_value=timedelta(days=400)),
    offset_hours=st.integers(-12, 14),
)
def test_a_future_time_is_caught_whatever_offset_the_device_reports(ahead, offset_hours):
    zone = timezone(timedelta(hours=offset_hours))
    item = Reading("p", Metric.SPO2, 97, "%", "59408-5", (NOW + ahead).astimezone(zone), None,
                   NOW)
    assert codes(validate_reading(item, NOW)) == [ProblemCode.FUTURE_TIMESTAMP]
