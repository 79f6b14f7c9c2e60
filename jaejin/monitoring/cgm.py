"""Continuous glucose monitoring: the international consensus metrics and the AGP percentiles.

Ranges partition every reading into exactly one band: <54, 54–69, 70–180, 181–250, >250 mg/dL
(for non-integer values: v < 54, 54 <= v < 70, 70 <= v <= 180, 180 < v <= 250, v > 250), so the
five percentages always add up to 100.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from jaejin.monitoring.careplans import CgmTargets
from jaejin.monitoring.readings import (
    GlucoseSource,
    Metric,
    Reading,
    glucose_codes,
)

#: CGM devices report every 5 minutes; sensor wear is judged against that.
CGM_INTERVAL = timedelta(minutes=5)

CGM_GLUCOSE_LOINC_CODES: frozenset[str] = glucose_codes(GlucoseSource.CGM)

GMI_INTERCEPT = 3.31
GMI_SLOPE_PER_MG_DL = 0.02392

AGP_PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)


def gmi_percent(mean_mg_dl: float) -> float:
    """Glucose management indicator (%) = 3.31 + 0.02392 × mean glucose (mg/dL)."""
    return GMI_INTERCEPT + GMI_SLOPE_PER_MG_DL * mean_mg_dl


@dataclass(frozen=True, slots=True)
class CgmMetrics:
    """Consensus metrics of one period. Percentages are of the readings present."""

    period_start: datetime
    period_end: datetime
    reading_count: int
    expected_count: int
    sensor_wear_percent: float
    mean_mg_dl: float
    standard_deviation_mg_dl: float
    coefficient_of_variation_percent: float
    gmi_percent: float
    percent_below_54: float
    percent_54_to_69: float
    percent_in_range: float
    percent_181_to_250: float
    percent_above_250: float

    @property
    def percent_below_70(self) -> float:
        return self.percent_below_54 + self.percent_54_to_69

    @property
    def percent_above_180(self) -> float:
        return self.percent_181_to_250 + self.percent_above_250


def glucose_band_counts(values: Iterable[float]) -> tuple[int, int, int, int, int]:
    """Counts in the five consensus bands: <54, 54–69, 70–180, 181–250, >250."""
    very_low = low = in_range = high = very_high = 0
    for value in values:
        if value < 54.0:
            very_low += 1
        elif value < 70.0:
            low += 1
        elif value <= 180.0:
            in_range += 1
        elif value <= 250.0:
            high += 1
        else:
            very_high += 1
    return very_low, low, in_range, high, very_high


def metrics_from_values(
    values: Sequence[float],
    period_start: datetime,
    period_end: datetime,
    *,
    slots_with_data: int | None = None,
    interval: timedelta = CGM_INTERVAL,
) -> CgmMetrics | None:
    """Metrics of glucose values (mg/dL) measured in [period_start, period_end); None if empty.

    `slots_with_data` is how many distinct `interval` slots held a reading (duplicates sent
    twice by a phone must not raise sensor wear); defaults to the number of values.
    """
    if period_end <= period_start:
        raise ValueError("period_end must be after period_start")
    count = len(values)
    if count == 0:
        return None
    total = math.fsum(values)
    mean = total / count
    squares = math.fsum((value - mean) ** 2 for value in values)
    variance = squares / (count - 1) if count > 1 else 0.0
    deviation = math.sqrt(variance)
    expected = max(1, int((period_end - period_start) / interval))
    present = count if slots_with_data is None else slots_with_data
    very_low, low, in_range, high, very_high = glucose_band_counts(values)
    scale = 100.0 / count
    return CgmMetrics(
        period_start=period_start,
        period_end=period_end,
        reading_count=count,
        expected_count=expected,
        sensor_wear_percent=min(100.0, 100.0 * present / expected),
        mean_mg_dl=mean,
        standard_deviation_mg_dl=deviation,
        coefficient_of_variation_percent=100.0 * deviation / mean,
        gmi_percent=gmi_percent(mean),
        percent_below_54=very_low * scale,
        percent_54_to_69=low * scale,
        percent_in_range=in_range * scale,
        percent_181_to_250=high * scale,
        percent_above_250=very_high * scale,
    )


def is_cgm_reading(reading: Reading) -> bool:
    return reading.metric is Metric.GLUCOSE and reading.loinc in CGM_GLUCOSE_LOINC_CODES


def cgm_metrics(
    readings: Iterable[Reading],
    period_end: datetime,
    days: int = 14,
    *,
    interval: timedelta = CGM_INTERVAL,
) -> CgmMetrics | None:
    """Consensus metrics of the CGM readings in the `days` before `period_end`.

    Only glucose readings with a CGM LOINC code count; None when there are none.
    """
    period_start = period_end - timedelta(days=days)
    # Plain timestamps: comparing aware datetimes of many zones reading by reading costs
    # more than the whole metric arithmetic.
    start_ts = period_start.timestamp()
    end_ts = period_end.timestamp()
    values: list[float] = []
    slots: set[int] = set()
    step = interval.total_seconds()
    glucose = Metric.GLUCOSE
    for reading in readings:
        if reading.metric is not glucose or reading.loinc not in CGM_GLUCOSE_LOINC_CODES:
            continue
        moment = reading.effective_ts
        if start_ts <= moment < end_ts:
            values.append(reading.value)
            slots.add(int((moment - start_ts) // step))
    return metrics_from_values(
        values, period_start, period_end, slots_with_data=len(slots), interval=interval
    )


class CgmTarget(StrEnum):
    SENSOR_WEAR = "sensor_wear"
    TIME_IN_RANGE = "time_in_range"
    BELOW_70 = "below_70"
    BELOW_54 = "below_54"
    ABOVE_180 = "above_180"
    ABOVE_250 = "above_250"
    VARIABILITY = "variability"


@dataclass(frozen=True, slots=True)
class CgmTargetMiss:
    target: CgmTarget
    value_percent: float
    goal_percent: float
    #: True when the goal is a minimum (time in range, sensor wear), False for a maximum.
    goal_is_minimum: bool


def missed_targets(metrics: CgmMetrics, targets: CgmTargets) -> list[CgmTargetMiss]:
    """Consensus targets the period missed, lows first (they matter most).

    With too little sensor wear only the wear itself is reported: the other figures would
    describe an unrepresentative sample.
    """
    if metrics.sensor_wear_percent < targets.minimum_sensor_wear_percent:
        return [
            CgmTargetMiss(
                CgmTarget.SENSOR_WEAR, metrics.sensor_wear_percent,
                targets.minimum_sensor_wear_percent, True,
            )
        ]
    misses: list[CgmTargetMiss] = []
    maxima = (
        (CgmTarget.BELOW_54, metrics.percent_below_54, targets.below_54_max_percent),
        (CgmTarget.BELOW_70, metrics.percent_below_70, targets.below_70_max_percent),
    )
    for target, value, goal in maxima:
        if value >= goal:
            misses.append(CgmTargetMiss(target, value, goal, False))
    if metrics.percent_in_range <= targets.time_in_range_min_percent:
        misses.append(
            CgmTargetMiss(
                CgmTarget.TIME_IN_RANGE, metrics.percent_in_range,
                targets.time_in_range_min_percent, True,
            )
        )
    upper = (
        (CgmTarget.ABOVE_250, metrics.percent_above_250, targets.above_250_max_percent),
        (CgmTarget.ABOVE_180, metrics.percent_above_180, targets.above_180_max_percent),
    )
    for target, value, goal in upper:
        if value >= goal:
            misses.append(CgmTargetMiss(target, value, goal, False))
    if metrics.coefficient_of_variation_percent > targets.coefficient_of_variation_max_percent:
        misses.append(
            CgmTargetMiss(
                CgmTarget.VARIABILITY, metrics.coefficient_of_variation_percent,
                targets.coefficient_of_variation_max_percent, False,
            )
        )
    return misses


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Linear-interpolation percentile of already sorted values (numpy's default method)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= percent <= 100.0:
        raise ValueError("percent must be within 0–100")
    position = (len(sorted_values) - 1) * percent / 100.0
    below = math.floor(position)
    above = min(below + 1, len(sorted_values) - 1)
    fraction = position - below
    return sorted_values[below] + (sorted_values[above] - sorted_values[below]) * fraction


@dataclass(frozen=True, slots=True)
class AgpBin:
    """One time-of-day bin of the ambulatory glucose profile, in the patient's local time."""

    #: Minutes after local midnight where the bin starts.
    start_minute: int
    reading_count: int
    p5: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p95: float | None


def ambulatory_glucose_profile(
    readings: Iterable[Reading],
    zone: ZoneInfo,
    bin_minutes: int = 15,
) -> list[AgpBin]:
    """Percentiles (5/25/50/75/95) of CGM glucose per time-of-day bin in `zone`.

    Returns 1440 / `bin_minutes` bins from local midnight (96 for 15 minutes, 288 for 5);
    a bin without readings has None percentiles so a chart can leave a gap rather than draw
    an invented line.
    """
    if bin_minutes <= 0 or 1440 % bin_minutes:
        raise ValueError("bin_minutes must divide a day (1440 minutes)")
    bin_count = 1440 // bin_minutes
    buckets: list[list[float]] = [[] for _ in range(bin_count)]
    for reading in readings:
        if not is_cgm_reading(reading):
            continue
        local = reading.effective_at.astimezone(zone)
        minute_of_day = local.hour * 60 + local.minute
        buckets[minute_of_day // bin_minutes].append(reading.value)
    profile: list[AgpBin] = []
    for index, bucket in enumerate(buckets):
        if not bucket:
            profile.append(AgpBin(index * bin_minutes, 0, None, None, None, None, None))
            continue
        bucket.sort()
        p5, p25, p50, p75, p95 = (percentile(bucket, share) for share in AGP_PERCENTILES)
        profile.append(AgpBin(index * bin_minutes, len(bucket), p5, p25, p50, p75, p95))
    return profile
