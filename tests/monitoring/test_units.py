from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.readings import CANONICAL_UNITS, Metric
from jaejin.monitoring.units import (
    GLUCOSE_MG_DL_PER_MMOL_L,
    UNIT_CONVERSIONS,
    UnitError,
    from_canonical,
    normalise_unit,
    to_canonical,
    ucum_code,
)

FAST = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("metric", "value", "unit", "expected"),
    [
        (Metric.SYSTOLIC, 128, "mm[Hg]", 128.0),
        (Metric.SYSTOLIC, 128, "mmHg", 128.0),
        (Metric.DIASTOLIC, 82, "mm Hg", 82.0),
        (Metric.GLUCOSE, 110, "mg/dL", 110.0),
        (Metric.GLUCOSE, 110, "mg/dl", 110.0),
        (Metric.GLUCOSE, 5.5, "mmol/L", 5.5 * 18.016),
        (Metric.BODY_WEIGHT, 70, "kg", 70.0),
        (Metric.BODY_WEIGHT, 154.3, "[lb_av]", 154.3 * 0.45359237),
        (Metric.BODY_WEIGHT, 154.3, "lb", 154.3 * 0.45359237),
        (Metric.BODY_WEIGHT, 70500, "g", 70.5),
        (Metric.BODY_TEMPERATURE, 37.2, "Cel", 37.2),
        (Metric.BODY_TEMPERATURE, 100.4, "[degF]", 38.0),
        (Metric.BODY_TEMPERATURE, 98.6, "°F", 37.0),
        (Metric.SPO2, 97, "%", 97.0),
        (Metric.HEART_RATE, 72, "/min", 72.0),
        (Metric.HEART_RATE, 72, "{beats}/min", 72.0),
        (Metric.HEART_RATE, 72, "bpm", 72.0),
        (Metric.HEART_RATE, 72, "count/min", 72.0),
    ],
)
def test_it_converts_every_accepted_unit_to_the_canonical_one(metric, value, unit, expected):
    assert to_canonical(metric, value, unit) == pytest.approx(expected)


def test_it_spells_aliases_as_ucum_codes():
    assert normalise_unit(Metric.SYSTOLIC, " mmHg ") == "mm[Hg]"
    assert normalise_unit(Metric.HEART_RATE, "{beats}/min") == "/min"
    assert normalise_unit(Metric.BODY_WEIGHT, "lbs") == "[lb_av]"
    assert ucum_code("furlongs") is None


def test_every_metric_accepts_its_canonical_unit():
    for metric, unit in CANONICAL_UNITS.items():
        assert unit in UNIT_CONVERSIONS[metric]
        assert to_canonical(metric, 1.0, unit) == 1.0


def test_it_refuses_an_unknown_unit_naming_the_accepted_ones():
    with pytest.raises(UnitError) as raised:
        to_canonical(Metric.GLUCOSE, 100, "grains")
    assert raised.value.code == "UNKNOWN_UNIT"
    assert "mg/dL" in str(raised.value)
    assert "mmol/L" in str(raised.value)


def test_it_refuses_a_real_unit_of_another_metric():
    with pytest.raises(UnitError) as raised:
        to_canonical(Metric.SYSTOLIC, 120, "mg/dL")
    assert raised.value.code == "UNIT_MISMATCH"
    assert raised.value.message("ko") != raised.value.message("en")
    assert "mg/dL" in raised.value.message("ko")


@FAST
@given(st.floats(min_value=0.5, max_value=60, allow_nan=False))
def test_glucose_round_trips_between_mmol_and_mg(mmol):
    mg = to_canonical(Metric.GLUCOSE, mmol, "mmol/L")
    assert mg == pytest.approx(mmol * GLUCOSE_MG_DL_PER_MMOL_L)
    assert from_canonical(Metric.GLUCOSE, mg, "mmol/L") == pytest.approx(mmol, rel=1e-12)


@FAST
@given(
    st.sampled_from(
        [(metric, unit) for metric, units in UNIT_CONVERSIONS.items() for unit in units]
    ),
    st.floats(min_value=-1000, max_value=100_000, allow_nan=False),
)
def test_every_conversion_round_trips(metric_and_unit, value):
    metric, unit = metric_and_unit
    back = from_canonical(metric, to_canonical(metric, value, unit), unit)
    assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-9)


@FAST
@given(
    st.sampled_from(
        [(metric, unit) for metric, units in UNIT_CONVERSIONS.items() for unit in units]
    ),
    st.floats(min_value=-1000, max_value=100_000, allow_nan=False),
    st.floats(min_value=-1000, max_value=100_000, allow_nan=False),
)
def test_conversions_keep_the_order_of_values(metric_and_unit, first, second):
    metric, unit = metric_and_unit
    low, high = sorted((first, second))
    assert to_canonical(metric, low, unit) <= to_canonical(metric, high, unit)
