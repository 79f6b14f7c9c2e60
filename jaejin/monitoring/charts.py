"""Server-side SVG charts of readings: trends, the Ambulatory Glucose Profile, time in range.

Pure functions from data to SVG markup (a `str`), no JavaScript, so a chart is the same in a page,
an e-mail, a PDF and a screenshot. Markup is assembled by hand and every piece of text goes through
`xml.sax.saxutils`, so names and labels can never break out of the document.

Charts keep a left-to-right layout in every language (time runs left to right on clinical charts
as on the AGP report); right-to-left labels are still shaped correctly by the text engine.

Accessibility: each chart has `role="img"`, an `aria-label`, and `<title>`/`<desc>` in the
requested language; the description states the figures a sighted reader takes from the picture.
Colour is never the only channel: series differ by marker shape and dash, and every band and bar
segment is labelled in text.

Shapes accepted from other modules (documented here so producers and this module agree):

* `AgpBin` (Ambulatory Glucose Profile): one per time-of-day bin, `minute_of_day` (0-1439, the
  start of the bin in the patient's local day) and `p5`, `p25`, `p50`, `p75`, `p95` in mg/dL, each
  `None` when the bin has too few readings. Either a mapping with those keys (`AgpBinDict`) or any
  object with those attributes (a dataclass, a NamedTuple) is accepted; `start_minute` is read
  when `minute_of_day` is absent, so `cgm.AgpBin` is accepted as it is. Bins are drawn at their
  centre (start plus half the spacing between bins).
* `TimeInRangeShares`: percentages of CGM time in the five consensus ranges, keys `very_high`
  (>250 mg/dL), `high` (181-250), `in_range` (70-180), `low` (54-69), `very_low` (<54), as a
  mapping or an object with those attributes; an object with `cgm.CgmMetrics`' names
  (`percent_above_250`, `percent_181_to_250`, `percent_in_range`, `percent_54_to_69`,
  `percent_below_54`) is accepted as it is.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from typing import Protocol, TypedDict
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from babel.dates import format_skeleton
from babel.numbers import format_decimal

from jaejin.core.i18n import locale_directory_name, translate
from jaejin.monitoring.readings import Metric, Reading, metric_label

WIDTH = 900
HEIGHT = 460
FONT_FAMILY = "'Noto Sans CJK KR', 'Noto Sans', 'DejaVu Sans', system-ui, sans-serif"
TEXT_COLOUR = "#1a1a1a"
MUTED_TEXT_COLOUR = "#4d4d4d"
GRID_COLOUR = "#d9d9d9"
AXIS_COLOUR = "#595959"
TARGET_BAND_COLOUR = "#cfe8d4"
TARGET_LINE_COLOUR = "#2e7d32"
CRISIS_COLOUR = "#b2182b"

# Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
SYSTOLIC_COLOUR = "#0072b2"
DIASTOLIC_COLOUR = "#d55e00"
WEIGHT_COLOUR = "#0072b2"

AGP_OUTER_BAND_COLOUR = "#c6dbef"
AGP_INNER_BAND_COLOUR = "#6baed6"
AGP_MEDIAN_COLOUR = "#08306b"

# International consensus on time in range (Battelino et al., Diabetes Care 2019): the colours of
# the AGP report, from very high down to very low.
TIME_IN_RANGE_COLOURS: dict[str, str] = {
    "very_high": "#f08a24",
    "high": "#f7c81e",
    "in_range": "#3ba343",
    "low": "#e5322d",
    "very_low": "#8b1a1a",
}

GLUCOSE_TARGET_LOW_MG_DL = 70.0
GLUCOSE_TARGET_HIGH_MG_DL = 180.0
BLOOD_PRESSURE_CRISIS_SYSTOLIC = 180.0
BLOOD_PRESSURE_FLOOR_SYSTOLIC = 90.0
BLOOD_PRESSURE_FLOOR_DIASTOLIC = 60.0

_MARKERS_LIMIT = 120


@dataclass(frozen=True)
class BloodPressureTarget:
    """A patient's blood-pressure goal: both values strictly below these (mmHg)."""

    systolic_below: float = 140.0
    diastolic_below: float = 90.0


@dataclass(frozen=True)
class ValueBand:
    """A target range drawn as a shaded band, in the metric's canonical unit."""

    low: float
    high: float


class AgpBinDict(TypedDict):
    minute_of_day: int
    p5: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p95: float | None


class AgpBinObject(Protocol):
    @property
    def minute_of_day(self) -> int: ...
    @property
    def p5(self) -> float | None: ...
    @property
    def p25(self) -> float | None: ...
    @property
    def p50(self) -> float | None: ...
    @property
    def p75(self) -> float | None: ...
    @property
    def p95(self) -> float | None: ...


AgpBin = AgpBinDict | AgpBinObject


class TimeInRangeDict(TypedDict):
    very_high: float
    high: float
    in_range: float
    low: float
    very_low: float


class TimeInRangeObject(Protocol):
    @property
    def very_high(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def in_range(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def very_low(self) -> float: ...


TimeInRangeShares = TimeInRangeDict | TimeInRangeObject

_AGP_FIELDS = ("p5", "p25", "p50", "p75", "p95")
_TIME_IN_RANGE_KEYS = ("very_high", "high", "in_range", "low", "very_low")
#: The same shares under the names `cgm.CgmMetrics` gives them.
_CGM_METRICS_NAMES: Mapping[str, str] = {
    "very_high": "percent_above_250",
    "high": "percent_181_to_250",
    "in_range": "percent_in_range",
    "low": "percent_54_to_69",
    "very_low": "percent_below_54",
}


# --------------------------------------------------------------------------------------------
# Markup helpers


def _number(value: float) -> str:
    """Coordinates with two decimals at most and no trailing zeros, for compact stable markup."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _attributes(attributes: Mapping[str, object]) -> str:
    parts = []
    for name, value in attributes.items():
        if value is None:
            continue
        rendered = _number(value) if isinstance(value, float) else str(value)
        parts.append(f"{name.rstrip('_').replace('_', '-')}={quoteattr(rendered)}")
    return " ".join(parts)


def _element(tag: str, **attributes: object) -> str:
    return f"<{tag} {_attributes(attributes)}/>"


def _text(content: str, x: float, y: float, **attributes: object) -> str:
    merged: dict[str, object] = {"x": x, "y": y, "fill": TEXT_COLOUR, "font_size": 15}
    merged.update(attributes)
    return f"<text {_attributes(merged)}>{escape(content)}</text>"


def _points(coordinates: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{_number(x)},{_number(y)}" for x, y in coordinates)


def _document(kind: str, title: str, description: str, body: Sequence[str], lang: str) -> str:
    digest = hashlib.sha1(  # noqa: S324 - an element id, not security
        f"{kind}\n{title}\n{description}".encode()
    ).hexdigest()[:10]
    title_id = f"{kind}-title-{digest}"
    desc_id = f"{kind}-desc-{digest}"
    root = _attributes(
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "width": WIDTH,
            "height": HEIGHT,
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "role": "img",
            "aria-label": title,
            "aria-describedby": desc_id,
            "lang": lang,
            "font-family": FONT_FAMILY,
            "class": f"jaejin-chart jaejin-chart-{kind}",
        }
    )
    lines = [
        f"<svg {root}>",
        f"<title id={quoteattr(title_id)}>{escape(title)}</title>",
        f"<desc id={quoteattr(desc_id)}>{escape(description)}</desc>",
        _element("rect", x=0, y=0, width=WIDTH, height=HEIGHT, fill="#ffffff"),
        _text(title, 24, 34, font_size=20, font_weight="bold"),
        *body,
        "</svg>",
    ]
    return "\n".join(lines)


def empty_chart_svg(title: str, lang: str, kind: str = "empty") -> str:
    """A chart frame saying there is nothing to draw, so a page never shows a blank box."""
    message = translate(lang, "No readings in this period")
    body = [
        _element(
            "rect", x=24, y=60, width=WIDTH - 48, height=HEIGHT - 90, fill="#f5f5f5",
            stroke=GRID_COLOUR, rx=8,
        ),
        _text(
            message, WIDTH / 2, HEIGHT / 2 + 10, text_anchor="middle", font_size=20,
            fill=MUTED_TEXT_COLOUR, class_="empty-message",
        ),
    ]
    return _document(kind, title, message, body, lang)


# --------------------------------------------------------------------------------------------
# Formatting


def _babel_locale(lang: str) -> str:
    return locale_directory_name(lang)


def format_value(value: float, lang: str, decimals: int = 0) -> str:
    pattern = "#,##0" + ("." + "#" * decimals if decimals else "")
    return str(format_decimal(value, format=pattern, locale=_babel_locale(lang)))


def _format_day(day: date, lang: str, with_year: bool = False) -> str:
    return str(format_skeleton("yMMMd" if with_year else "MMMd", day, locale=_babel_locale(lang)))


def _format_clock(moment: time, lang: str) -> str:
    return str(format_skeleton("Hm", moment, locale=_babel_locale(lang)))


# --------------------------------------------------------------------------------------------
# Scales and axes


@dataclass(frozen=True)
class _Plot:
    """The drawing area and its linear scales."""

    left: float
    top: float
    right: float
    bottom: float
    x_min: float
    x_max: float
    y_min: float
    y_max: float

    def x(self, value: float) -> float:
        span = self.x_max - self.x_min
        if span <= 0:
            return (self.left + self.right) / 2
        return self.left + (value - self.x_min) / span * (self.right - self.left)

    def y(self, value: float) -> float:
        clamped = min(max(value, self.y_min), self.y_max)
        return self.bottom - (clamped - self.y_min) / (self.y_max - self.y_min) * (
            self.bottom - self.top
        )


def _nice_step(span: float, target_ticks: int = 6) -> float:
    raw = span / max(target_ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= multiple * magnitude:
            return multiple * magnitude
    return 10 * magnitude


def _value_ticks(y_min: float, y_max: float) -> list[float]:
    step = _nice_step(y_max - y_min)
    first = math.ceil(y_min / step) * step
    ticks = []
    value = first
    while value <= y_max + 1e-9:
        ticks.append(round(value, 6))
        value += step
    return ticks


def _value_axis(plot: _Plot, ticks: Iterable[float], lang: str, decimals: int = 0) -> list[str]:
    body = []
    ordered = sorted(ticks, reverse=True)
    # Close ticks (54 and 70 mg/dL on a 0-350 scale) keep their grid line; labels move apart.
    label_rows = _spread_labels([plot.y(tick) for tick in ordered], 16.0, 0.0, HEIGHT)
    for tick, row in zip(ordered, label_rows, strict=True):
        y = plot.y(tick)
        body.append(
            _element("line", x1=plot.left, y1=y, x2=plot.right, y2=y, stroke=GRID_COLOUR)
        )
        body.append(
            _text(
                format_value(tick, lang, decimals), plot.left - 10, row + 5, text_anchor="end",
                font_size=14, fill=MUTED_TEXT_COLOUR, class_="y-tick", data_value=_number(tick),
            )
        )
    body.append(
        _element(
            "line", x1=plot.left, y1=plot.bottom, x2=plot.right, y2=plot.bottom,
            stroke=AXIS_COLOUR,
        )
    )
    return body


def _time_ticks(start: datetime, end: datetime, zone: ZoneInfo, lang: str) -> list[
    tuple[datetime, str]
]:
    """Tick instants at local midnights (or hours for a short span), labelled in the zone."""
    local_start = start.astimezone(zone)
    local_end = end.astimezone(zone)
    span = end - start
    ticks: list[tuple[datetime, str]] = []
    if span <= timedelta(hours=36):
        hour_step = 3 if span <= timedelta(hours=12) else 6
        cursor = local_start.replace(minute=0, second=0, microsecond=0)
        while cursor.hour % hour_step:
            cursor += timedelta(hours=1)
        while cursor <= local_end:
            label = _format_clock(cursor.time(), lang)
            if cursor.hour == 0 or not ticks:
                label = f"{_format_day(cursor.date(), lang)} {label}"
            ticks.append((cursor, label))
            cursor = (cursor + timedelta(hours=hour_step)).astimezone(zone)
        return ticks
    days = (local_end.date() - local_start.date()).days + 1
    with_year = local_start.year != local_end.year
    step = next((candidate for candidate in (1, 2, 7, 14, 28) if days / candidate <= 8), 56)
    day = local_start.date() + timedelta(days=1)
    if step >= 7:
        # Align weekly ticks on Mondays so consecutive charts share the same grid.
        day += timedelta(days=(7 - day.weekday()) % 7)
    while day <= local_end.date():
        midnight = datetime.combine(day, time(0), tzinfo=zone)
        ticks.append((midnight, _format_day(day, lang, with_year)))
        day += timedelta(days=step)
    return ticks


def _time_axis(plot: _Plot, ticks: Sequence[tuple[datetime, str]]) -> list[str]:
    body = []
    for instant, label in ticks:
        x = plot.x(instant.timestamp())
        body.append(
            _element("line", x1=x, y1=plot.top, x2=x, y2=plot.bottom, stroke=GRID_COLOUR)
        )
        body.append(
            _text(
                label, x, plot.bottom + 24, text_anchor="middle", font_size=14,
                fill=MUTED_TEXT_COLOUR, class_="x-tick",
            )
        )
    return body


# --------------------------------------------------------------------------------------------
# Time-series trends


@dataclass(frozen=True)
class _Series:
    key: str
    label: str
    colour: str
    marker: str  # "circle" or "square"
    dash: str | None
    points: tuple[tuple[datetime, float], ...]


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return _element(
            "rect", x=x - 4.5, y=y - 4.5, width=9, height=9, fill=colour, stroke="#ffffff",
            stroke_width=1,
        )
    return _element("circle", cx=x, cy=y, r=5, fill=colour, stroke="#ffffff", stroke_width=1)


def _series_markup(plot: _Plot, series: _Series) -> list[str]:
    coordinates = [(plot.x(moment.timestamp()), plot.y(value)) for moment, value in series.points]
    group = [f"<g class=\"series\" data-series={quoteattr(series.key)}>"]
    if len(coordinates) > 1:
        group.append(
            _element(
                "polyline", points=_points(coordinates), fill="none", stroke=series.colour,
                stroke_width=2.5, stroke_dasharray=series.dash, stroke_linejoin="round",
            )
        )
    if len(coordinates) <= _MARKERS_LIMIT or len(coordinates) == 1:
        group.extend(_marker(series.marker, x, y, series.colour) for x, y in coordinates)
    group.append("</g>")
    return group


def _legend(entries: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    """Legend rows in the right margin: (already-drawn swatch markup at origin, label)."""
    body = ["<g class=\"legend\">"]
    for row, (swatch, label) in enumerate(entries):
        row_y = y + row * 26
        body.append(f"<g transform=\"translate({_number(x)},{_number(row_y)})\">{swatch}</g>")
        body.append(_text(label, x + 30, row_y + 5, font_size=14))
    body.append("</g>")
    return body


def _line_swatch(colour: str, marker: str, dash: str | None) -> str:
    return _element(
        "line", x1=0, y1=0, x2=22, y2=0, stroke=colour, stroke_width=2.5, stroke_dasharray=dash
    ) + _marker(marker, 11, 0, colour)


def _band_swatch(colour: str) -> str:
    return _element("rect", x=0, y=-7, width=22, height=14, fill=colour)


def _time_extent(series: Iterable[_Series]) -> tuple[datetime, datetime]:
    moments = [moment for one in series for moment, _ in one.points]
    start, end = min(moments), max(moments)
    if end - start < timedelta(hours=2):
        start -= timedelta(hours=1)
        end += timedelta(hours=1)
    padding = (end - start) * 0.03
    return start - padding, end + padding


def _trend_plot(series: Sequence[_Series], y_min: float, y_max: float) -> _Plot:
    start, end = _time_extent(series)
    return _Plot(
        left=70, top=70, right=WIDTH - 190, bottom=HEIGHT - 60,
        x_min=start.timestamp(), x_max=end.timestamp(), y_min=y_min, y_max=y_max,
    )


def _horizontal_band(
    plot: _Plot, band: ValueBand, label: str, css_class: str, edges: Sequence[float] = ()
) -> list[str]:
    """A shaded target band; `edges` get a thin line so adjacent bands stay distinguishable."""
    top = plot.y(band.high)
    bottom = plot.y(band.low)
    markup = [
        _element(
            "rect", x=plot.left, y=top, width=plot.right - plot.left, height=bottom - top,
            fill=TARGET_BAND_COLOUR, class_=css_class, data_low=_number(band.low),
            data_high=_number(band.high),
        ),
        _text(
            label, plot.right + 8, (top + bottom) / 2 + 5, font_size=13,
            fill=TARGET_LINE_COLOUR, class_=f"{css_class}-label",
        ),
    ]
    for value in edges:
        y = plot.y(value)
        markup.append(
            _element(
                "line", x1=plot.left, y1=y, x2=plot.right, y2=y, stroke=TARGET_LINE_COLOUR,
                stroke_width=1.5, class_=f"{css_class}-edge", data_value=_number(value),
            )
        )
    return markup


def _reference_line(
    plot: _Plot, value: float, label: str, colour: str, css_class: str
) -> list[str]:
    y = plot.y(value)
    return [
        _element(
            "line", x1=plot.left, y1=y, x2=plot.right, y2=y, stroke=colour, stroke_width=2,
            stroke_dasharray="8 5", class_=css_class, data_value=_number(value),
        ),
        _text(label, plot.right + 8, y + 5, font_size=13, fill=colour, class_=f"{css_class}-label"),
    ]


def _sorted_points(readings: Iterable[Reading], metric: Metric) -> list[tuple[datetime, float]]:
    return sorted(
        (reading.effective_at, reading.value) for reading in readings if reading.metric is metric
    )


def _period_text(series: Sequence[_Series], zone: ZoneInfo, lang: str) -> tuple[str, str]:
    moments = [moment for one in series for moment, _ in one.points]
    first = min(moments).astimezone(zone).date()
    last = max(moments).astimezone(zone).date()
    return _format_day(first, lang, True), _format_day(last, lang, True)


def blood_pressure_trend_svg(
    readings: Iterable[Reading],
    target: BloodPressureTarget,
    zone: ZoneInfo,
    lang: str,
) -> str:
    """Systolic and diastolic lines over time, the patient's target zones and the crisis line.

    `readings` may mix metrics; only systolic and diastolic readings are drawn. The date axis is
    in `zone`, the patient's own time zone.
    """
    readings = list(readings)
    title = translate(lang, "Blood pressure")
    systolic = _sorted_points(readings, Metric.SYSTOLIC)
    diastolic = _sorted_points(readings, Metric.DIASTOLIC)
    if not systolic and not diastolic:
        return empty_chart_svg(title, lang, "blood-pressure")
    series = [
        one
        for one in (
            _Series(
                "systolic", translate(lang, "Systolic"), SYSTOLIC_COLOUR, "circle", None,
                tuple(systolic),
            ),
            _Series(
                "diastolic", translate(lang, "Diastolic"), DIASTOLIC_COLOUR, "square", "7 4",
                tuple(diastolic),
            ),
        )
        if one.points
    ]
    values = [value for one in series for _, value in one.points]
    y_min = min(40.0, math.floor(min(values) / 20) * 20)
    y_max = max(200.0, math.ceil((max(values) + 10) / 20) * 20)
    plot = _trend_plot(series, y_min, y_max)
    body: list[str] = []
    body += _horizontal_band(
        plot, ValueBand(BLOOD_PRESSURE_FLOOR_SYSTOLIC, target.systolic_below),
        translate(lang, "Systolic goal <{value}", value=format_value(target.systolic_below, lang)),
        "target-band-systolic", edges=(target.systolic_below,),
    )
    body += _horizontal_band(
        plot, ValueBand(BLOOD_PRESSURE_FLOOR_DIASTOLIC, target.diastolic_below),
        translate(
            lang, "Diastolic goal <{value}", value=format_value(target.diastolic_below, lang)
        ),
        "target-band-diastolic", edges=(target.diastolic_below,),
    )
    body += _value_axis(plot, _value_ticks(y_min, y_max), lang)
    start, end = _time_extent(series)
    body += _time_axis(plot, _time_ticks(start, end, zone, lang))
    body += _reference_line(
        plot, BLOOD_PRESSURE_CRISIS_SYSTOLIC,
        translate(
            lang, "Crisis ≥{value}", value=format_value(BLOOD_PRESSURE_CRISIS_SYSTOLIC, lang)
        ),
        CRISIS_COLOUR, "crisis-line",
    )
    for one in series:
        body += _series_markup(plot, one)
    body.append(_text("mmHg", 24, 58, font_size=14, fill=MUTED_TEXT_COLOUR, class_="unit"))
    body += _legend(
        [(_line_swatch(one.colour, one.marker, one.dash), one.label) for one in series],
        plot.right + 10, 30,
    )
    first, last = _period_text(series, zone, lang)
    latest_systolic = systolic[-1][1] if systolic else None
    latest_diastolic = diastolic[-1][1] if diastolic else None
    description = translate(
        lang,
        "Blood pressure from {start} to {end}: {count} readings. Latest {systolic}/{diastolic} "
        "mmHg; goal below {goal_systolic}/{goal_diastolic} mmHg.",
        start=first, end=last, count=max(len(systolic), len(diastolic)),
        systolic=format_value(latest_systolic, lang) if latest_systolic is not None else "-",
        diastolic=format_value(latest_diastolic, lang) if latest_diastolic is not None else "-",
        goal_systolic=format_value(target.systolic_below, lang),
        goal_diastolic=format_value(target.diastolic_below, lang),
    )
    return _document("blood-pressure", title, description, body, lang)


def weight_trend_svg(
    readings: Iterable[Reading],
    target: ValueBand | None,
    zone: ZoneInfo,
    lang: str,
) -> str:
    """Body weight (kg) over time with an optional target band, date axis in `zone`."""
    title = metric_label(Metric.BODY_WEIGHT, lang)
    points = _sorted_points(readings, Metric.BODY_WEIGHT)
    if not points:
        return empty_chart_svg(title, lang, "weight")
    series = [
        _Series(
            "weight", translate(lang, "Weight"), WEIGHT_COLOUR, "circle", None, tuple(points)
        )
    ]
    values = [value for _, value in points]
    if target is not None:
        values += [target.low, target.high]
    low, high = min(values), max(values)
    margin = max((high - low) * 0.15, 1.0)
    step = _nice_step(high - low + 2 * margin)
    y_min = math.floor((low - margin) / step) * step
    y_max = math.ceil((high + margin) / step) * step
    plot = _trend_plot(series, y_min, y_max)
    body: list[str] = []
    if target is not None:
        body += _horizontal_band(
            plot, target,
            translate(
                lang, "Goal {low}-{high} kg", low=format_value(target.low, lang, 1),
                high=format_value(target.high, lang, 1),
            ),
            "target-band-weight", edges=(target.low, target.high),
        )
    body += _value_axis(plot, _value_ticks(y_min, y_max), lang, decimals=1)
    start, end = _time_extent(series)
    body += _time_axis(plot, _time_ticks(start, end, zone, lang))
    body += _series_markup(plot, series[0])
    body.append(_text("kg", 24, 58, font_size=14, fill=MUTED_TEXT_COLOUR, class_="unit"))
    body += _legend(
        [(_line_swatch(WEIGHT_COLOUR, "circle", None), series[0].label)], plot.right + 10, 30
    )
    first, last = _period_text(series, zone, lang)
    description = translate(
        lang,
        "Body weight from {start} to {end}: {count} readings, from {first_value} kg to "
        "{last_value} kg.",
        start=first, end=last, count=len(points),
        first_value=format_value(points[0][1], lang, 1),
        last_value=format_value(points[-1][1], lang, 1),
    )
    return _document("weight", title, description, body, lang)


# --------------------------------------------------------------------------------------------
# Ambulatory Glucose Profile


@dataclass(frozen=True)
class _Percentiles:
    minute_of_day: int
    p5: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p95: float | None
    #: Where the bin is drawn, in minutes after midnight.
    centre: float = 0.0


def _read_field(source: object, name: str) -> object:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    raise TypeError(f"expected a number or None, got {value!r}")


def _normalise_bins(bins: Iterable[AgpBin]) -> list[_Percentiles]:
    normalised = []
    for one in bins:
        minute = _read_field(one, "minute_of_day")
        if minute is None:
            minute = _read_field(one, "start_minute")
        if not isinstance(minute, int) or not 0 <= minute < 1440:
            raise ValueError(f"minute_of_day must be an int in 0..1439, got {minute!r}")
        p5, p25, p50, p75, p95 = (
            _optional_float(_read_field(one, field)) for field in _AGP_FIELDS
        )
        normalised.append(_Percentiles(minute, p5, p25, p50, p75, p95))
    normalised.sort(key=lambda item: item.minute_of_day)
    starts = [one.minute_of_day for one in normalised]
    gaps = [later - earlier for earlier, later in pairwise(starts) if later > earlier]
    half_bin = min(gaps) / 2 if gaps else 0.0
    return [replace(one, centre=one.minute_of_day + half_bin) for one in normalised]


def _runs(bins: Sequence[_Percentiles], fields: Sequence[str]) -> list[list[_Percentiles]]:
    """Consecutive bins that have every field in `fields`: a missing bin breaks the shape."""
    runs: list[list[_Percentiles]] = []
    current: list[_Percentiles] = []
    for one in bins:
        if all(getattr(one, field) is not None for field in fields):
            current.append(one)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _value_of(one: _Percentiles, field: str) -> float:
    value = getattr(one, field)
    assert isinstance(value, float)
    return value


def _percentile_band(
    plot: _Plot, bins: Sequence[_Percentiles], low: str, high: str, colour: str, css_class: str
) -> list[str]:
    shapes = []
    for run in _runs(bins, (low, high)):
        upper = [(plot.x(one.centre), plot.y(_value_of(one, high))) for one in run]
        lower = [(plot.x(one.centre), plot.y(_value_of(one, low))) for one in run]
        shapes.append(
            _element(
                "polygon", points=_points(upper + lower[::-1]), fill=colour, stroke=colour,
                stroke_width=1, class_=css_class,
            )
        )
    return shapes


def ambulatory_glucose_profile_svg(bins: Iterable[AgpBin], lang: str) -> str:
    """The standard AGP: median, 25-75 and 5-95 percentile bands over one 24-hour day (mg/dL).

    `bins` are `AgpBin`s (see the module docstring), in any order; a bin whose percentiles are
    `None` leaves a gap rather than an invented line.
    """
    title = translate(lang, "Ambulatory Glucose Profile")
    normalised = _normalise_bins(bins)
    if not any(one.p50 is not None for one in normalised):
        return empty_chart_svg(title, lang, "agp")
    highest = max(
        value for one in normalised for value in (one.p95, one.p75, one.p50) if value is not None
    )
    y_max = max(350.0, math.ceil(highest / 50) * 50)
    plot = _Plot(
        left=70, top=70, right=WIDTH - 190, bottom=HEIGHT - 60,
        x_min=0, x_max=1440, y_min=0, y_max=y_max,
    )
    body: list[str] = []
    body += _horizontal_band(
        plot, ValueBand(GLUCOSE_TARGET_LOW_MG_DL, GLUCOSE_TARGET_HIGH_MG_DL),
        translate(lang, "Target 70-180"), "target-band-glucose",
    )
    ticks = [54.0, 70.0, 180.0, 250.0, *(value for value in (350.0, 400.0) if value <= y_max)]
    body += _value_axis(plot, ticks, lang)
    for hour in range(0, 25, 3):
        x = plot.x(hour * 60)
        body.append(
            _element("line", x1=x, y1=plot.top, x2=x, y2=plot.bottom, stroke=GRID_COLOUR)
        )
        body.append(
            _text(
                _format_clock(time(hour % 24), lang), x, plot.bottom + 24, text_anchor="middle",
                font_size=14, fill=MUTED_TEXT_COLOUR, class_="x-tick",
            )
        )
    body += _percentile_band(plot, normalised, "p5", "p95", AGP_OUTER_BAND_COLOUR, "band-5-95")
    body += _percentile_band(plot, normalised, "p25", "p75", AGP_INNER_BAND_COLOUR, "band-25-75")
    for value in (GLUCOSE_TARGET_LOW_MG_DL, GLUCOSE_TARGET_HIGH_MG_DL):
        y = plot.y(value)
        body.append(
            _element(
                "line", x1=plot.left, y1=y, x2=plot.right, y2=y, stroke=TARGET_LINE_COLOUR,
                stroke_width=2, class_="target-line", data_value=_number(value),
            )
        )
    for run in _runs(normalised, ("p50",)):
        coordinates = [(plot.x(one.centre), plot.y(_value_of(one, "p50"))) for one in run]
        body.append(
            _element(
                "polyline", points=_points(coordinates), fill="none", stroke=AGP_MEDIAN_COLOUR,
                stroke_width=3, stroke_linejoin="round", class_="median",
            )
        )
    body.append(_text("mg/dL", 24, 58, font_size=14, fill=MUTED_TEXT_COLOUR, class_="unit"))
    body += _legend(
        [
            (
                _element(
                    "line", x1=0, y1=0, x2=22, y2=0, stroke=AGP_MEDIAN_COLOUR, stroke_width=3
                ),
                translate(lang, "Median"),
            ),
            (_band_swatch(AGP_INNER_BAND_COLOUR), translate(lang, "25-75th percentile")),
            (_band_swatch(AGP_OUTER_BAND_COLOUR), translate(lang, "5-95th percentile")),
            (_band_swatch(TARGET_BAND_COLOUR), translate(lang, "Target range")),
        ],
        plot.right + 10, 30,
    )
    medians = [one.p50 for one in normalised if one.p50 is not None]
    description = translate(
        lang,
        "Ambulatory Glucose Profile over a 24-hour day: median glucose from {low} to {high} "
        "mg/dL; target range 70-180 mg/dL.",
        low=format_value(min(medians), lang), high=format_value(max(medians), lang),
    )
    return _document("agp", title, description, body, lang)


# --------------------------------------------------------------------------------------------
# Time in range


def _read_shares(percentages: TimeInRangeShares) -> dict[str, float]:
    shares = {}
    for key in _TIME_IN_RANGE_KEYS:
        raw = _read_field(percentages, key)
        if raw is None:
            raw = _read_field(percentages, _CGM_METRICS_NAMES[key])
        value = _optional_float(raw)
        if value is None or value < 0:
            raise ValueError(f"time-in-range share {key!r} must be a number >= 0, got {value!r}")
        shares[key] = value
    return shares


def _spread_labels(centres: Sequence[float], gap: float, low: float, high: float) -> list[float]:
    """Move label rows apart (keeping their order) so none overlaps, within [low, high].

    A forward pass pushes rows down below their predecessor, a backward pass pulls them up above
    their successor; rows stay as close to their own segment as the space allows.
    """
    placed: list[float] = []
    for centre in centres:
        floor = placed[-1] + gap if placed else low
        placed.append(max(centre, floor))
    ceiling = high
    for index in range(len(placed) - 1, -1, -1):
        placed[index] = min(placed[index], ceiling)
        ceiling = placed[index] - gap
    return placed


def time_in_range_bar_svg(percentages: TimeInRangeShares, lang: str) -> str:
    """The consensus stacked bar: very high, high, in range, low, very low, each labelled.

    Shares are drawn in proportion to their sum (rounded inputs need not add to exactly 100) and
    labelled with the given figures and the consensus goal for each range.
    """
    title = translate(lang, "Time in range")
    shares = _read_shares(percentages)
    total = sum(shares.values())
    if total <= 0:
        return empty_chart_svg(title, lang, "time-in-range")
    labels = {
        "very_high": translate(lang, "Very high (>250 mg/dL)"),
        "high": translate(lang, "High (181-250 mg/dL)"),
        "in_range": translate(lang, "In range (70-180 mg/dL)"),
        "low": translate(lang, "Low (54-69 mg/dL)"),
        "very_low": translate(lang, "Very low (<54 mg/dL)"),
    }
    goals = {
        "very_high": translate(lang, "goal <5%"),
        "high": translate(lang, "goal <25% above 180"),
        "in_range": translate(lang, "goal >70%"),
        "low": translate(lang, "goal <4% below 70"),
        "very_low": translate(lang, "goal <1%"),
    }
    bar_left, bar_width = 90.0, 90.0
    bar_top, bar_bottom = 70.0, HEIGHT - 40.0
    bar_height = bar_bottom - bar_top
    body: list[str] = []
    segments: list[tuple[str, float, float]] = []
    cursor = bar_top
    for key in _TIME_IN_RANGE_KEYS:
        height = shares[key] / total * bar_height
        segments.append((key, cursor, height))
        if height > 0:
            body.append(
                _element(
                    "rect", x=bar_left, y=cursor, width=bar_width, height=height,
                    fill=TIME_IN_RANGE_COLOURS[key], stroke="#ffffff", stroke_width=1,
                    class_="segment", data_range=key, data_percent=_number(shares[key]),
                )
            )
        cursor += height
    label_rows = _spread_labels(
        [top + height / 2 for _, top, height in segments], 56.0, bar_top + 14, bar_bottom - 30
    )
    label_x = bar_left + bar_width + 70
    for (key, top, height), row in zip(segments, label_rows, strict=True):
        centre = top + height / 2
        body.append(
            _element(
                "polyline",
                points=_points(
                    [(bar_left + bar_width + 4, centre), (label_x - 20, row), (label_x - 8, row)]
                ),
                fill="none", stroke=AXIS_COLOUR, stroke_width=1,
            )
        )
        body.append(
            _element(
                "rect", x=label_x, y=row - 14, width=14, height=14,
                fill=TIME_IN_RANGE_COLOURS[key], class_="swatch",
            )
        )
        body.append(
            _text(labels[key], label_x + 24, row, font_size=16, class_="range-label",
                  data_range=key)
        )
        body.append(
            _text(
                f"{format_value(shares[key], lang, 1)}%", label_x + 430, row, font_size=18,
                font_weight="bold", text_anchor="end", class_="range-percent", data_range=key,
            )
        )
        body.append(
            _text(goals[key], label_x + 24, row + 20, font_size=13, fill=MUTED_TEXT_COLOUR,
                  class_="range-goal")
        )
    description = translate(
        lang,
        "Time in range: very high {very_high}%, high {high}%, in range {in_range}%, low {low}%, "
        "very low {very_low}%.",
        **{key: format_value(value, lang, 1) for key, value in shares.items()},
    )
    return _document("time-in-range", title, description, body, lang)
