"""CGM consensus metrics and the ambulatory glucose profile."""

from __future__ import annotations

import math
import statistics
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.careplans import CgmTargets
from jaejin.monitoring.cgm import (
    CgmTarget,
    ambulatory_glucose_profile,
    cgm_metrics,
    glucose_band_counts,
    gmi_percent,
    metrics_from_values,
    missed_targets,
    percentile,
)
from tests.monitoring.support import NOW, blood_glucose, cgm, cgm_series

FAST = settings(max_examples=200, deadline=None)
FOURTEEN_DAYS = 14 * 288
glucose_values = st.floats(min_value=10, max_value=1000, allow_nan=False)


def test_gmi_follows_the_consensus_formula():
    assert gmi_percent(154) == pytest.approx(6.99, abs=0.005)
    assert gmi_percent(100) == pytest.approx(5.702)


def test_band_edges_follow_the_consensus_ranges():
    assert glucose_band_counts([53.9, 54, 69.9, 70, 180, 180.1, 250, 250.1]) == (1, 2, 2, 2, 1)


def test_a_full_fortnight_of_readings_is_full_sensor_wear():
    series = cgm_series([120.0] * FOURTEEN_DAYS, NOW - timedelta(minutes=5))
    metrics = cgm_metrics(series, NOW)
    assert metrics is not None
    assert metrics.sensor_wear_percent == 100
    assert metrics.percent_in_range == 100
    assert metrics.coefficient_of_variation_percent == 0


def test_sensor_wear_counts_slots_not_duplicate_uploads():
    half = cgm_series([120.0] * (FOURTEEN_DAYS // 2), NOW - timedelta(minutes=5))
    metrics = cgm_metrics(half + half, NOW)
    assert metrics is not None
    assert metrics.sensor_wear_percent == pytest.approx(50)
    assert metrics.reading_count == FOURTEEN_DAYS


def test_only_cgm_readings_inside_the_window_count():
    inside = cgm(100, NOW - timedelta(days=1))
    metrics = cgm_metrics(
        [inside, blood_glucose(40, NOW - timedelta(hours=1)), cgm(300, NOW - timedelta(days=15)),
         cgm(300, NOW)],
        NOW,
    )
    assert metrics is not None and metrics.reading_count == 1 and metrics.mean_mg_dl == 100
    assert cgm_metrics([blood_glucose(120)], NOW) is None


def test_metrics_of_a_mixed_fortnight():
    values = [50.0] * 10 + [65.0] * 30 + [150.0] * 800 + [200.0] * 120 + [300.0] * 40
    metrics = metrics_from_values(values, NOW - timedelta(minutes=5 * len(values)), NOW)
    assert metrics is not None
    assert metrics.sensor_wear_percent == 100
    assert metrics.percent_below_54 == pytest.approx(1.0)
    assert metrics.percent_below_70 == pytest.approx(4.0)
    assert metrics.percent_in_range == pytest.approx(80.0)
    assert metrics.percent_above_180 == pytest.approx(16.0)
    assert metrics.percent_above_250 == pytest.approx(4.0)
    assert metrics.mean_mg_dl == pytest.approx(statistics.fmean(values))
    assert metrics.standard_deviation_mg_dl == pytest.approx(statistics.stdev(values))
    assert metrics.coefficient_of_variation_percent < 36
    # "Below 54 < 1 %" and "below 70 < 4 %" are missed exactly at 1 % and 4 %.
    assert [miss.target for miss in missed_targets(metrics, CgmTargets())] == [
        CgmTarget.BELOW_54, CgmTarget.BELOW_70,
    ]


def test_too_little_wear_reports_only_the_wear():
    metrics = metrics_from_values([40.0] * 100, NOW - timedelta(days=14), NOW)
    assert metrics is not None
    misses = missed_targets(metrics, CgmTargets())
    assert [miss.target for miss in misses] == [CgmTarget.SENSOR_WEAR]


def test_it_refuses_an_empty_or_backwards_period():
    assert metrics_from_values([], NOW - timedelta(days=1), NOW) is None
    with pytest.raises(ValueError):
        metrics_from_values([100.0], NOW, NOW)


@FAST
@given(values=st.lists(glucose_values, min_size=1, max_size=400))
def test_the_five_ranges_always_add_up_to_100_percent(values):
    metrics = metrics_from_values(values, NOW - timedelta(days=14), NOW)
    assert metrics is not None
    total = (
        metrics.percent_below_54 + metrics.percent_54_to_69 + metrics.percent_in_range
        + metrics.percent_181_to_250 + metrics.percent_above_250
    )
    assert total == pytest.approx(100.0)
    assert sum(glucose_band_counts(values)) == len(values)
    assert metrics.percent_below_70 >= metrics.percent_below_54
    assert metrics.percent_above_180 >= metrics.percent_above_250


@FAST
@given(values=st.lists(glucose_values, min_size=1, max_size=200))
def test_gmi_is_always_the_consensus_formula_of_the_mean(values):
    metrics = metrics_from_values(values, NOW - timedelta(days=14), NOW)
    assert metrics is not None
    assert metrics.mean_mg_dl == pytest.approx(math.fsum(values) / len(values))
    assert metrics.gmi_percent == pytest.approx(3.31 + 0.02392 * metrics.mean_mg_dl)


def test_percentile_matches_the_usual_definitions():
    values = sorted([71.0, 80.0, 95.0, 120.0, 180.0, 260.0])
    assert percentile(values, 50) == statistics.median(values)
    assert percentile(values, 0) == 71 and percentile(values, 100) == 260
    assert percentile(values, 25) == statistics.quantiles(values, n=4, method="inclusive")[0]
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_the_profile_bins_readings_by_the_patients_local_time():
    seoul = ZoneInfo("Asia/Seoul")
    # 23:00 UTC is 08:00 the next morning in Seoul.
    morning = NOW.replace(hour=23, minute=0)
    readings = [cgm(100 + day, morning - timedelta(days=day)) for day in range(14)]
    profile = ambulatory_glucose_profile(readings, seoul)
    assert len(profile) == 96
    filled = [item for item in profile if item.reading_count]
    assert [item.start_minute for item in filled] == [8 * 60]
    assert filled[0].p50 == pytest.approx(106.5)
    assert filled[0].p5 is not None and filled[0].p95 is not None
    assert profile[0].p50 is None
    in_utc = ambulatory_glucose_profile(readings, ZoneInfo("UTC"), bin_minutes=5)
    assert len(in_utc) == 288
    assert [item.start_minute for item in in_utc if item.reading_count] == [23 * 60]


def test_the_profile_ignores_fingersticks_and_refuses_odd_bins():
    assert all(item.reading_count == 0
               for item in ambulatory_glucose_profile([blood_glucose(90)], ZoneInfo("UTC")))
    with pytest.raises(ValueError):
        ambulatory_glucose_profile([], ZoneInfo("UTC"), bin_minutes=7)


@FAST
@given(values=st.lists(glucose_values, min_size=1, max_size=120),
       zone=st.sampled_from(["Asia/Seoul", "America/Los_Angeles", "Asia/Kathmandu"]))
def test_profile_percentiles_are_ordered_in_every_bin(values, zone):
    readings = cgm_series(values)
    profile = ambulatory_glucose_profile(readings, ZoneInfo(zone))
    assert sum(item.reading_count for item in profile) == len(values)
    for item in profile:
        if item.reading_count:
            assert item.p5 <= item.p25 <= item.p50 <= item.p75 <= item.p95
