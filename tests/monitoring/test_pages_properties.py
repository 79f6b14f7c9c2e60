"""Properties of the page forms: a care plan shown in the form and sent back unchanged is the
same plan, and a manual reading is stored at the wall-clock time the patient typed, in their
own time zone, whatever the zone and the season."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaejin.monitoring.careplans import CarePlanError, PlanTemplate, template_plan
from jaejin.monitoring.pages import (
    PLAN_FORM_THRESHOLDS,
    _manual_item,
    _plan_form_values,
    interval_text,
    plan_from_form,
    plan_overrides,
)

ZONES = ("Asia/Seoul", "America/Los_Angeles", "Europe/London", "Asia/Kolkata",
         "Australia/Lord_Howe", "Pacific/Chatham", "America/St_Johns", "UTC")


def _as_form(values: dict[str, Any]) -> dict[str, str]:
    """What the browser sends back for the form the template renders from `values`."""
    form: dict[str, str] = {"template": values["template"]}
    for name in PLAN_FORM_THRESHOLDS:
        form[name] = f"{values[name]:g}"
    for flag in ("high_risk", "uses_cgm"):
        if values[flag]:
            form[flag] = "on"
    for metric, hours in values["expected_every_hours"].items():
        form[f"expected_every_hours.{metric}"] = f"{hours:.3g}"
    for metric, days in values["missing_after_days"].items():
        form[f"missing_after_days.{metric}"] = f"{days:g}"
    return form


overrides = st.fixed_dictionaries({}, optional={
    "high_risk": st.booleans(),
    "bp_crisis_systolic": st.integers(160, 220).map(float),
    "bp_target_systolic": st.integers(110, 140).map(float),
    "glucose_level1_high": st.integers(160, 240).map(float),
    "spo2_low": st.integers(85, 95).map(float),
    "fever_celsius": st.sampled_from([37.5, 37.8, 38.0, 38.3, 38.5]),
    "weight_gain_kg": st.sampled_from([1.0, 1.5, 2.0, 2.5, 3.0]),
})


@settings(max_examples=200, deadline=None)
@given(template=st.sampled_from(list(PlanTemplate)), changes=overrides,
       frequency=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_a_plan_sent_back_unchanged_from_its_form_is_the_same_plan(template, changes,
                                                                   frequency):
    base = template_plan(template)
    if base.expected_every:
        metric, interval = sorted(base.expected_every.items())[0]
        changes = {**changes, "expected_every_hours": {
            metric.value: interval / timedelta(hours=1) * frequency}}
    try:
        plan = base.with_overrides(changes)
    except CarePlanError:
        assume(False)
    # What is stored rebuilds the plan exactly from its template.
    assert base.with_overrides(plan_overrides(plan)) == plan
    # The form shows the plan; sent back untouched, it asks for the same plan.
    again, invalid = plan_from_form(_as_form(_plan_form_values(plan)), template, plan)
    assert invalid == [] and again is not None
    assert again.thresholds == plan.thresholds
    assert again.high_risk == plan.high_risk and again.uses_cgm == plan.uses_cgm
    assert again.missing_after == plan.missing_after
    for metric, interval in plan.expected_every.items():
        assert math.isclose(again.expected_every[metric] / interval, 1.0, rel_tol=2e-3)


@settings(max_examples=50, deadline=None)
@given(template=st.sampled_from(list(PlanTemplate)))
def test_ticking_high_risk_on_a_new_plan_moves_the_blood_pressure_target(template):
    shown = _as_form(_plan_form_values(template_plan(template)))
    plan, invalid = plan_from_form({**shown, "high_risk": "on"}, template, None)
    assert invalid == [] and plan is not None
    assert (plan.thresholds.bp_target_systolic, plan.thresholds.bp_target_diastolic) == (
        130.0, 80.0)


#: A datetime-local field sends the wall-clock time the patient typed, without an offset.
WALL_CLOCK_FROM = datetime(2024, 1, 1)  # noqa: DTZ001
WALL_CLOCK_TO = datetime(2027, 12, 31)  # noqa: DTZ001


@settings(max_examples=200, deadline=None)
@given(zone_name=st.sampled_from(ZONES),
       local=st.datetimes(min_value=WALL_CLOCK_FROM, max_value=WALL_CLOCK_TO))
def test_a_manual_reading_keeps_the_wall_clock_time_the_patient_typed(zone_name, local):
    zone = ZoneInfo(zone_name)
    local = local.replace(second=0, microsecond=0)
    # A time skipped by a clock change does not exist on the patient's wall clock.
    assume(local.replace(tzinfo=zone).astimezone(ZoneInfo("UTC")).astimezone(zone)
           .replace(tzinfo=None) == local)
    form = {"metric": "heart_rate", "value": "72",
            "measured_at": local.strftime("%Y-%m-%dT%H:%M")}
    item, reason = _manual_item(form, zone, "key")
    assert reason is None and item is not None
    stored = datetime.fromisoformat(item["effective_at"])
    assert stored.utcoffset() is not None
    assert stored.astimezone(zone).replace(tzinfo=None) == local


@settings(max_examples=200, deadline=None)
@given(minutes=st.integers(1, 60 * 24 * 30))
def test_an_interval_is_said_in_the_largest_whole_unit(minutes):
    text = interval_text("en", minutes)
    count, unit = text.split(" ")
    factor = {"minute": 1, "minutes": 1, "hour": 60, "hours": 60, "day": 1440, "days": 1440}
    assert int(count) * factor[unit] == minutes
    assert (unit in ("minute", "day", "hour")) == (int(count) == 1)
