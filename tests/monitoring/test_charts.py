"""SVG charts parsed back as XML: structure, positions that map to values, translated labels."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from xml.etree.ElementTree import Element
from zoneinfo import ZoneInfo

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.cgm import AgpBin as CgmAgpBin
from jaejin.monitoring.charts import (
    TIME_IN_RANGE_COLOURS,
    BloodPressureTarget,
    ValueBand,
    ambulatory_glucose_profile_svg,
    blood_pressure_trend_svg,
    time_in_range_bar_svg,
    weight_trend_svg,
)
from jaejin.monitoring.readings import Metric, Reading

FAST = settings(max_examples=60, deadline=None)
SVG = "{http://www.w3.org/2000/svg}"
SEOUL = ZoneInfo("Asia/Seoul")
RECEIVED = datetime(2024, 6, 1, tzinfo=UTC)
UNITS = {
    Metric.SYSTOLIC: ("mm[Hg]", "8480-6"),
    Metric.DIASTOLIC: ("mm[Hg]", "8462-4"),
    Metric.BODY_WEIGHT: ("kg", "29463-7"),
}


def reading(metric, value, at, panel=None):
    unit, code = UNITS[metric]
    return Reading("pt-1", metric, value, unit, code, at, "Omron", RECEIVED, panel)


def blood_pressure_series(days=10, start=datetime(2024, 5, 1, 7, 0, tzinfo=SEOUL)):
    readings = []
    for day in range(days):
        at = start + timedelta(days=day)
        readings.append(reading(Metric.SYSTOLIC, 130 + day, at, f"p{day}"))
        readings.append(reading(Metric.DIASTOLIC, 80 + day, at, f"p{day}"))
    return readings


def parse(svg: str) -> Element:
    root = fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root, css_class=None):
    return [
        element.text
        for element in root.iter(f"{SVG}text")
        if css_class is None or element.get("class") == css_class
    ]


def by_class(root, tag, css_class):
    return [element for element in root.iter(f"{SVG}{tag}") if element.get("class") == css_class]


def value_scale(root):
    """The y-axis mapping read back from the grid: value -> y, fitted on two tick lines."""
    ticks = by_class(root, "text", "y-tick")
    lines = [
        line for line in root.iter(f"{SVG}line")
        if line.get("y1") == line.get("y2") and line.get("stroke") == "#d9d9d9"
    ]
    values = [float(tick.get("data-value")) for tick in ticks]
    ys = sorted({float(line.get("y1")) for line in lines}, reverse=True)
    low_value, high_value = min(values), max(values)
    low_y, high_y = ys[0], ys[-1]
    return lambda value: low_y + (value - low_value) / (high_value - low_value) * (high_y - low_y)


def series_markers(root, key):
    (group,) = [g for g in root.iter(f"{SVG}g") if g.get("data-series") == key]
    return [child for child in group if child.tag in (f"{SVG}circle", f"{SVG}rect")]


def polyline_points(element):
    return [tuple(map(float, pair.split(","))) for pair in element.get("points").split()]


def test_blood_pressure_chart_is_accessible_svg_with_title_and_description():
    root = parse(
        blood_pressure_trend_svg(blood_pressure_series(), BloodPressureTarget(), SEOUL, "en")
    )
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Blood pressure"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.text == "Blood pressure"
    assert desc is not None and "139/89" in desc.text
    assert root.get("aria-describedby") == desc.get("id")


def test_blood_pressure_chart_draws_one_marker_per_reading_per_series():
    root = parse(
        blood_pressure_trend_svg(blood_pressure_series(12), BloodPressureTarget(), SEOUL, "en")
    )
    assert len(series_markers(root, "systolic")) == 12
    assert len(series_markers(root, "diastolic")) == 12
    systolic_line = [
        child for g in root.iter(f"{SVG}g") if g.get("data-series") == "systolic"
        for child in g if child.tag == f"{SVG}polyline"
    ]
    assert len(polyline_points(systolic_line[0])) == 12


def test_target_bands_and_crisis_line_sit_at_their_values():
    target = BloodPressureTarget(systolic_below=130, diastolic_below=80)
    root = parse(blood_pressure_trend_svg(blood_pressure_series(), target, SEOUL, "en"))
    y_of = value_scale(root)
    (systolic_band,) = by_class(root, "rect", "target-band-systolic")
    top = float(systolic_band.get("y"))
    bottom = top + float(systolic_band.get("height"))
    assert top == pytest.approx(y_of(130), abs=0.05)
    assert bottom == pytest.approx(y_of(90), abs=0.05)
    (diastolic_band,) = by_class(root, "rect", "target-band-diastolic")
    assert float(diastolic_band.get("y")) == pytest.approx(y_of(80), abs=0.05)
    (crisis,) = by_class(root, "line", "crisis-line")
    assert float(crisis.get("y1")) == pytest.approx(y_of(180), abs=0.05)
    assert "Systolic goal <130" in texts(root)


def test_a_reading_is_drawn_at_its_value():
    readings = blood_pressure_series(3)
    root = parse(blood_pressure_trend_svg(readings, BloodPressureTarget(), SEOUL, "en"))
    y_of = value_scale(root)
    circles = series_markers(root, "systolic")
    assert [float(circle.get("cy")) for circle in circles] == pytest.approx(
        [y_of(130), y_of(131), y_of(132)], abs=0.05
    )


def test_the_date_axis_is_in_the_patients_zone():
    # 23:30 UTC is already the next day in Seoul, still the same day in New York.
    start = datetime(2024, 5, 1, 23, 30, tzinfo=UTC)
    readings = blood_pressure_series(4, start)
    seoul = texts(parse(blood_pressure_trend_svg(readings, BloodPressureTarget(), SEOUL, "en")),
                  "x-tick")
    new_york = texts(
        parse(
            blood_pressure_trend_svg(
                readings, BloodPressureTarget(), ZoneInfo("America/New_York"), "en"
            )
        ),
        "x-tick",
    )
    assert seoul[0] == "May 3"
    assert new_york[0] == "May 2"


def test_blood_pressure_labels_are_translated_into_korean():
    root = parse(
        blood_pressure_trend_svg(blood_pressure_series(), BloodPressureTarget(), SEOUL, "ko")
    )
    assert root.get("aria-label") == "혈압"
    assert root.get("lang") == "ko"
    labels = texts(root)
    assert "수축기" in labels
    assert "이완기" in labels
    assert any(re.fullmatch(r"\d+월 \d+일", label or "") for label in texts(root, "x-tick"))
    assert all(not re.search(r"[A-Za-z]{4,}", label) for label in labels if label != "mmHg")


def test_weight_chart_shows_the_target_band_and_every_reading():
    start = datetime(2024, 5, 1, 8, 0, tzinfo=SEOUL)
    readings = [reading(Metric.BODY_WEIGHT, 70 + day * 0.2, start + timedelta(days=day))
                for day in range(8)]
    root = parse(weight_trend_svg(readings, ValueBand(68, 72), SEOUL, "en"))
    y_of = value_scale(root)
    (band,) = by_class(root, "rect", "target-band-weight")
    assert float(band.get("y")) == pytest.approx(y_of(72), abs=0.05)
    assert float(band.get("y")) + float(band.get("height")) == pytest.approx(y_of(68), abs=0.05)
    assert len(series_markers(root, "weight")) == 8


@pytest.mark.parametrize(
    ("lang", "message"),
    [("en", "No readings in this period"), ("ko", "이 기간에 측정값이 없습니다")],
)
def test_empty_data_renders_a_clear_message(lang, message):
    for svg in (
        blood_pressure_trend_svg([], BloodPressureTarget(), SEOUL, lang),
        weight_trend_svg([], None, SEOUL, lang),
        ambulatory_glucose_profile_svg([], lang),
        time_in_range_bar_svg(
            {"very_high": 0, "high": 0, "in_range": 0, "low": 0, "very_low": 0}, lang
        ),
    ):
        root = parse(svg)
        assert message in texts(root, "empty-message")
        assert root.find(f"{SVG}desc").text == message


def agp_bins(count=96, missing=()):
    step = 1440 // count
    return [
        {
            "minute_of_day": index * step,
            **(
                dict.fromkeys(("p5", "p25", "p50", "p75", "p95"))
                if index in missing
                else {"p5": 60.0, "p25": 90.0, "p50": 120.0 + index % 10, "p75": 160.0,
                      "p95": 220.0}
            ),
        }
        for index in range(count)
    ]


def test_agp_draws_the_median_and_both_percentile_bands_over_the_day():
    root = parse(ambulatory_glucose_profile_svg(agp_bins(), "en"))
    (median,) = by_class(root, "polyline", "median")
    assert len(polyline_points(median)) == 96
    (outer,) = by_class(root, "polygon", "band-5-95")
    (inner,) = by_class(root, "polygon", "band-25-75")
    assert len(polyline_points(outer)) == 192
    assert len(polyline_points(inner)) == 192
    y_of = value_scale(root)
    upper_y = [y for _, y in polyline_points(outer)[:96]]
    assert upper_y == pytest.approx([y_of(220)] * 96, abs=0.05)
    (band,) = by_class(root, "rect", "target-band-glucose")
    assert float(band.get("y")) == pytest.approx(y_of(180), abs=0.05)
    assert float(band.get("y")) + float(band.get("height")) == pytest.approx(y_of(70), abs=0.05)
    assert {"00:00", "12:00", "21:00"} <= set(texts(root, "x-tick"))


def test_agp_leaves_a_gap_where_bins_have_no_readings():
    root = parse(ambulatory_glucose_profile_svg(agp_bins(missing={40, 41}), "en"))
    medians = by_class(root, "polyline", "median")
    assert [len(polyline_points(line)) for line in medians] == [40, 54]
    assert len(by_class(root, "polygon", "band-5-95")) == 2


def test_agp_accepts_the_bins_cgm_computes_unchanged():
    bins = [CgmAgpBin(index * 15, 20, 70.0, 95.0, 118.0, 150.0, 200.0) for index in range(96)]
    root = parse(ambulatory_glucose_profile_svg(bins, "ko"))
    assert root.get("aria-label") == "연속혈당 프로파일(AGP)"
    (median,) = by_class(root, "polyline", "median")
    first_x = polyline_points(median)[0][0]
    second_x = polyline_points(median)[1][0]
    assert first_x == pytest.approx((second_x - first_x) / 2 + 70, abs=0.05)


def test_agp_refuses_a_bin_outside_the_day():
    with pytest.raises(ValueError, match="minute_of_day"):
        ambulatory_glucose_profile_svg([{"minute_of_day": 1440, "p50": 100.0}], "en")


SHARES = {"very_high": 3.2, "high": 18.5, "in_range": 72.1, "low": 4.8, "very_low": 1.4}


def test_time_in_range_bar_stacks_five_segments_in_proportion():
    root = parse(time_in_range_bar_svg(SHARES, "en"))
    segments = by_class(root, "rect", "segment")
    assert [segment.get("data-range") for segment in segments] == list(SHARES)
    assert [segment.get("fill") for segment in segments] == [
        TIME_IN_RANGE_COLOURS[key] for key in SHARES
    ]
    heights = [float(segment.get("height")) for segment in segments]
    total = sum(heights)
    assert [height / total * 100 for height in heights] == pytest.approx(
        list(SHARES.values()), abs=0.05
    )
    tops = [float(segment.get("y")) for segment in segments]
    assert tops == sorted(tops)
    assert texts(root, "range-percent") == ["3.2%", "18.5%", "72.1%", "4.8%", "1.4%"]


def test_time_in_range_labels_never_overlap_even_for_tiny_shares():
    shares = {"very_high": 0.2, "high": 0.3, "in_range": 99.0, "low": 0.3, "very_low": 0.2}
    root = parse(time_in_range_bar_svg(shares, "en"))
    rows = [float(text.get("y")) for text in by_class(root, "text", "range-label")]
    assert all(later - earlier >= 40 for earlier, later in pairwise(rows))
    assert all(0 < row < float(root.get("height")) for row in rows)


def test_time_in_range_labels_are_translated_into_korean():
    root = parse(time_in_range_bar_svg(SHARES, "ko"))
    assert root.get("aria-label") == "목표 범위 내 시간(TIR)"
    labels = texts(root, "range-label")
    assert labels[2] == "목표 범위 (70-180 mg/dL)"
    assert all(re.search("[가-힣]", label) for label in labels)


def test_time_in_range_accepts_cgm_metrics_names():
    class Metrics:
        percent_above_250 = 1.0
        percent_181_to_250 = 9.0
        percent_in_range = 85.0
        percent_54_to_69 = 4.0
        percent_below_54 = 1.0

    root = parse(time_in_range_bar_svg(Metrics(), "en"))
    assert texts(root, "range-percent") == ["1%", "9%", "85%", "4%", "1%"]


def test_time_in_range_refuses_negative_shares():
    with pytest.raises(ValueError, match="very_low"):
        time_in_range_bar_svg({**SHARES, "very_low": -1}, "en")


@FAST
@given(
    st.lists(
        st.tuples(
            st.datetimes(
                min_value=datetime(2024, 1, 1),  # noqa: DTZ001 - hypothesis attaches the zone
                max_value=datetime(2024, 12, 31),  # noqa: DTZ001
                timezones=st.sampled_from([UTC, SEOUL, ZoneInfo("America/New_York")]),
            ),
            st.floats(min_value=40, max_value=300),
            st.floats(min_value=20, max_value=200),
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["ko", "en", "ar", "ja"]),
    st.sampled_from(["Asia/Seoul", "Europe/London", "Pacific/Auckland"]),
)
def test_any_blood_pressure_history_renders_valid_svg_with_every_reading(points, lang, zone):
    readings = []
    for index, (at, systolic, diastolic) in enumerate(points):
        readings.append(reading(Metric.SYSTOLIC, systolic, at, str(index)))
        readings.append(reading(Metric.DIASTOLIC, diastolic, at, str(index)))
    root = parse(blood_pressure_trend_svg(readings, BloodPressureTarget(), ZoneInfo(zone), lang))
    assert len(series_markers(root, "systolic")) == len(points)
    width = float(root.get("width"))
    for marker in series_markers(root, "systolic"):
        assert 0 < float(marker.get("cx")) < width
