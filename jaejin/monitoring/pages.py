"""Monitoring pages: the clinician's triage list (live), a patient's monitoring page for the care
team, and the patient's own page (charts, guidance, manual entry, file upload).

Charts are SVG drawn on the server (`jaejin.monitoring.charts`), in the patient's own time zone,
so the page, a printout and a screenshot show the same picture. The triage list is pushed live:
`/monitoring/triage/events` is a server-sent-events stream of the institution's
`triage:<institution_id>` channel, and `static/triage.js` fetches the list again on each event.

`router` also carries the JSON workflow routes (`workflow_api.router`), so the application mounts
monitoring's workflow with one entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEvent
from jaejin.core.authn import DbSession, Principal, audit, requires
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem, not_found, request_language
from jaejin.core.i18n import N_, locale_directory_name, translate, translate_plural
from jaejin.directory.store import Institution, Patient
from jaejin.monitoring import workflow_api
from jaejin.monitoring.alerts import AlertKind, AlertState, Severity
from jaejin.monitoring.api import audit_ingest
from jaejin.monitoring.careplans import (
    CarePlan,
    CarePlanError,
    CarePlanOverrides,
    PlanTemplate,
    template_plan,
)
from jaejin.monitoring.cgm import ambulatory_glucose_profile, cgm_metrics, is_cgm_reading
from jaejin.monitoring.charts import (
    AgpBinDict,
    BloodPressureTarget,
    ValueBand,
    ambulatory_glucose_profile_svg,
    blood_pressure_trend_svg,
    time_in_range_bar_svg,
    weight_trend_svg,
)
from jaejin.monitoring.ingest import IngestPatient, ItemStatus, ingest_items
from jaejin.monitoring.jobs import alert_kind_label
from jaejin.monitoring.parsers import parse_batch
from jaejin.monitoring.photo_api import prepared, read_photo_form, save_photo
from jaejin.monitoring.photo_store import patient_photos
from jaejin.monitoring.photos import UPLOAD_ACCEPT, WOUND_PHOTO_MAX_BYTES
from jaejin.monitoring.readings import Metric, Reading, metric_label
from jaejin.monitoring.store import (
    AlertRow,
    AlertStatus,
    ReadingChannel,
    UploadRow,
    active_plan_row,
    plan_from_row,
    readings_between,
)
from jaejin.monitoring.workflow_api import (
    ALERT_ACTIONS,
    SEVERITY_LABELS,
    STATE_LABELS,
    TEMPLATE_LABELS,
    AlertAction,
    actor_names,
    alert_explanation,
    alert_from_row,
    audit_triage,
    escalation_for,
    guidance_for,
    medical_emergency_number,
    save_escalation,
    set_care_plan,
    take_alert_step,
    triage_channel,
    triage_entries,
)
from jaejin.web import navigation
from jaejin.web.templating import render

page_router = APIRouter(include_in_schema=False)
router = APIRouter()

STAFF = (Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN)
RESPONDERS = (Role.CLINICIAN, Role.COORDINATOR)
Staff = Annotated[Principal, Depends(requires(*STAFF))]
Responder = Annotated[Principal, Depends(requires(*RESPONDERS))]
Clinician = Annotated[Principal, Depends(requires(Role.CLINICIAN))]
PatientUser = Annotated[Principal, Depends(requires(Role.PATIENT))]

navigation.register("/monitoring/triage", N_("Monitoring"),
                    N_("Patients whose readings need a look first, updated as readings arrive."),
                    set(STAFF), order=30)
navigation.register("/monitoring/me", N_("My readings"),
                    N_("Your charts, what your care team advises, and new readings."),
                    {Role.PATIENT}, order=30)

#: Charts show the last month; the CGM profile the consensus 14 days.
CHART_PERIOD = timedelta(days=30)
CGM_PERIOD_DAYS = 14
RECENT_READINGS_SHOWN = 16
#: Seconds between keep-alive comments on the event stream (proxies drop silent connections).
SSE_HEARTBEAT_SECONDS = 15.0
SNOOZE_CHOICES_MINUTES = (60, 240, 24 * 60)

DISPLAY_UNITS = {
    "mm[Hg]": "mmHg", "Cel": "°C", "/min": "/min", "%": "%", "kg": "kg", "mg/dL": "mg/dL",
    "1": "",
}

#: Manual entry: (form choice, English label, unit sent to the batch parser, decimals allowed).
MANUAL_METRICS: tuple[tuple[str, str, str], ...] = (
    ("blood_pressure", N_("Blood pressure"), "mmHg"),
    ("glucose", N_("Blood glucose (finger-stick)"), "mg/dL"),
    ("body_weight", N_("Body weight"), "kg"),
    ("body_temperature", N_("Body temperature"), "Cel"),
    ("heart_rate", N_("Heart rate"), "/min"),
    ("spo2", N_("Oxygen saturation"), "%"),
)
_MANUAL_UNITS = {choice: unit for choice, _label, unit in MANUAL_METRICS}


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Seoul")


def country_name(country_code: str, language: str) -> str:
    try:
        locale = Locale.parse(locale_directory_name(language))
    except (UnknownLocaleError, ValueError):
        return country_code
    return str(locale.territories.get(country_code.upper(), country_code))


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _safe_next(target: str | None, fallback: str) -> str:
    """Only paths of this application: a form must not redirect anywhere else."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return fallback


def interval_text(language: str, minutes: float) -> str:
    """A reading interval as people say it: "5 minutes", "12 hours", "1 day", "3 days"."""
    whole = round(minutes)
    if whole > 0 and whole % (24 * 60) == 0:
        days = whole // (24 * 60)
        return translate_plural(language, "{count} day", "{count} days", days)
    if whole >= 60 and whole % 60 == 0:
        return translate_plural(language, "{count} hour", "{count} hours", whole // 60)
    return translate_plural(language, "{count} minute", "{count} minutes", whole)


def _label_helpers(lang: str) -> dict[str, Any]:
    return {
        "interval": lambda minutes: interval_text(lang, minutes),
        "severity_label": lambda value: translate(lang, SEVERITY_LABELS[Severity(value)]),
        "state_label": lambda value: translate(lang, STATE_LABELS[AlertState(value)]),
        "template_label": lambda value: translate(lang, TEMPLATE_LABELS[PlanTemplate(value)]),
        "kind_label": lambda value: alert_kind_label(lang, value),
        "metric_label": lambda value: metric_label(Metric(value), lang),
    }


# ------------------------------------------------------------------------------ rendering


@dataclass(frozen=True, slots=True)
class ReadingLine:
    """One row of the recent-readings table (a blood-pressure panel is one row)."""

    at: datetime
    label: str
    value: str
    unit: str
    device: str | None


def _format_value(value: float, metric: Metric) -> str:
    if metric in (Metric.BODY_WEIGHT, Metric.BODY_TEMPERATURE):
        return f"{value:.1f}"
    return f"{value:.0f}"


def recent_lines(readings: Sequence[Reading], zone: ZoneInfo, language: str,
                 limit: int = RECENT_READINGS_SHOWN) -> list[ReadingLine]:
    """The newest readings first, blood-pressure halves of one panel joined."""
    lines: list[ReadingLine] = []
    partners: dict[str, Reading] = {
        reading.panel_id: reading for reading in readings
        if reading.panel_id and reading.metric is Metric.DIASTOLIC
    }
    for reading in reversed(readings):
        if len(lines) >= limit:
            break
        at = reading.effective_at.astimezone(zone)
        if reading.metric is Metric.DIASTOLIC and reading.panel_id:
            continue
        if reading.metric is Metric.SYSTOLIC and reading.panel_id in partners:
            diastolic = partners[reading.panel_id]
            lines.append(ReadingLine(
                at, translate(language, "Blood pressure"),
                f"{reading.value:.0f}/{diastolic.value:.0f}", "mmHg", reading.source_device,
            ))
            continue
        lines.append(ReadingLine(
            at, metric_label(reading.metric, language),
            _format_value(reading.value, reading.metric),
            DISPLAY_UNITS.get(reading.unit, reading.unit), reading.source_device,
        ))
    return lines


def _weight_band(readings: Sequence[Reading], plan: CarePlan, now: datetime) -> ValueBand | None:
    """The heart-failure weight band: the patient's own weight before the last week, plus or
    minus the plan's weight-gain limit (the gain that raises an alert)."""
    weights = [reading for reading in readings if reading.metric is Metric.BODY_WEIGHT]
    if not weights:
        return None
    week_ago = now - timedelta(days=7)
    reference = [reading.value for reading in weights if reading.effective_at < week_ago]
    values = reference or [reading.value for reading in weights[:3]]
    centre = median(values)
    gain = plan.thresholds.weight_gain_kg
    return ValueBand(centre - gain, centre + gain)


@dataclass(frozen=True, slots=True)
class ChartSet:
    blood_pressure: str | None = None
    weight: str | None = None
    agp: str | None = None
    time_in_range: str | None = None
    time_in_range_figures: dict[str, float] | None = None

    @property
    def empty(self) -> bool:
        return not (self.blood_pressure or self.weight or self.agp or self.time_in_range)


def build_charts(readings: Sequence[Reading], plan: CarePlan, zone: ZoneInfo, language: str,
                 now: datetime) -> ChartSet:
    """The charts that fit the patient's plan and data (all server-side SVG)."""
    has = {reading.metric for reading in readings}
    has_cgm = any(is_cgm_reading(reading) for reading in readings)
    blood_pressure = weight = agp = tir = None
    tir_figures = None
    if plan.monitors(Metric.SYSTOLIC) or Metric.SYSTOLIC in has:
        limits = plan.thresholds
        blood_pressure = blood_pressure_trend_svg(
            [r for r in readings if r.metric in (Metric.SYSTOLIC, Metric.DIASTOLIC)],
            BloodPressureTarget(limits.bp_target_systolic, limits.bp_target_diastolic),
            zone, language,
        )
    if plan.monitors(Metric.BODY_WEIGHT) or Metric.BODY_WEIGHT in has:
        weight = weight_trend_svg(
            [r for r in readings if r.metric is Metric.BODY_WEIGHT],
            _weight_band(readings, plan, now), zone, language,
        )
    if plan.uses_cgm or has_cgm:
        since = now - timedelta(days=CGM_PERIOD_DAYS)
        recent_cgm = [r for r in readings if is_cgm_reading(r) and r.effective_at >= since]
        bins: list[AgpBinDict] = [
            {"minute_of_day": one.start_minute, "p5": one.p5, "p25": one.p25, "p50": one.p50,
             "p75": one.p75, "p95": one.p95}
            for one in ambulatory_glucose_profile(recent_cgm, zone)
        ]
        agp = ambulatory_glucose_profile_svg(bins, language)
        metrics = cgm_metrics(recent_cgm, now, CGM_PERIOD_DAYS)
        if metrics is not None:
            tir = time_in_range_bar_svg({
                "very_high": metrics.percent_above_250, "high": metrics.percent_181_to_250,
                "in_range": metrics.percent_in_range, "low": metrics.percent_54_to_69,
                "very_low": metrics.percent_below_54,
            }, language)
            tir_figures = {
                "in_range": metrics.percent_in_range, "below_70": metrics.percent_below_70,
                "below_54": metrics.percent_below_54, "above_180": metrics.percent_above_180,
                "above_250": metrics.percent_above_250,
                "cv": metrics.coefficient_of_variation_percent, "gmi": metrics.gmi_percent,
                "wear": metrics.sensor_wear_percent,
            }
        else:
            tir = time_in_range_bar_svg(
                {"very_high": 0, "high": 0, "in_range": 0, "low": 0, "very_low": 0}, language
            )
    return ChartSet(blood_pressure, weight, agp, tir, tir_figures)


def _chart_readings(db: Session, patient: Patient, now: datetime) -> list[Reading]:
    return readings_between(db, patient.id, now - CHART_PERIOD, now + timedelta(minutes=5))


# ---------------------------------------------------------------------------------- triage


def _triage_context(db: Session, principal: Principal, request: Request) -> dict[str, Any]:
    language = request_language(request)
    now = utcnow()
    institution_ids = principal.institutions_where(*STAFF)
    entries = triage_entries(db, institution_ids, now)
    audit_triage(db, principal, entries)
    names = actor_names(db, [row.acknowledged_by for entry in entries
                             for row in entry.alert_rows])
    institutions = list(db.execute(
        select(Institution).where(Institution.id.in_(institution_ids)).order_by(Institution.id)
    ).scalars())
    on_call = []
    for institution in institutions:
        policy = workflow_api.escalation_public(db, escalation_for(db, institution.id))
        on_call.append((institution, policy))
    db.commit()
    return {
        "entries": entries, "now": now, "actor_names": names, "on_call": on_call,
        "can_respond": bool(principal.roles & set(RESPONDERS)),
        "is_clinician": Role.CLINICIAN in principal.roles,
        "me": principal.user_id, "zone": _zone(principal.time_zone),
        "snooze_choices": SNOOZE_CHOICES_MINUTES,
        "explanation": lambda row: alert_explanation(row, language),
        "alert_state": lambda row: alert_from_row(row).state_at(now).value,
        **_label_helpers(language),
    }


@page_router.get("/monitoring/triage", response_class=HTMLResponse)
def triage_page(request: Request, principal: Staff, db: DbSession) -> Response:
    return render(request, "monitoring/triage.html", principal,
                  **_triage_context(db, principal, request))


@page_router.get("/monitoring/triage/list", response_class=HTMLResponse)
def triage_list(request: Request, principal: Staff, db: DbSession) -> Response:
    return render(request, "monitoring/_triage_list.html", principal,
                  **_triage_context(db, principal, request))


async def _event_stream(request: Request, channels: Sequence[str]) -> AsyncIterator[str]:
    """Server-sent events: one `triage` event per bus message, a comment as keep-alive."""
    bus = request.app.state.bus
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def pump(channel: str) -> None:
        async for message in bus.subscribe(channel):
            await inbox.put(message)

    readers = [asyncio.create_task(pump(channel)) for channel in channels]
    try:
        # Let the subscriptions register before telling the page it is live.
        await asyncio.sleep(0)
        yield "retry: 2000\n: connected\n\n"
        while True:
            try:
                message = await asyncio.wait_for(inbox.get(), SSE_HEARTBEAT_SECONDS)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"
                continue
            yield f"event: triage\ndata: {json.dumps(message, separators=(',', ':'))}\n\n"
    finally:
        for reader in readers:
            reader.cancel()
        for reader in readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


@page_router.get("/monitoring/triage/events")
async def triage_events(request: Request, principal: Staff, db: DbSession) -> Response:
    channels = [triage_channel(institution_id)
                for institution_id in sorted(principal.institutions_where(*STAFF))]
    # The stream stays open for hours: end the transaction that found the principal now, or
    # on SQLite its BEGIN IMMEDIATE would hold the write lock for as long as the page is open.
    db.close()
    return StreamingResponse(
        _event_stream(request, channels), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@page_router.post("/monitoring/alerts/{alert_id}/{action}", response_class=HTMLResponse)
def alert_step(
    request: Request, alert_id: int, action: str, principal: Responder, db: DbSession,
    expected_status: Annotated[AlertState | None, Form()] = None,
    minutes: Annotated[int | None, Form(ge=1, le=7 * 24 * 60)] = None,
    note: Annotated[str, Form(max_length=2000)] = "",
    next_page: Annotated[str | None, Form(alias="next", max_length=300)] = None,
) -> Response:
    if action not in ALERT_ACTIONS:
        raise not_found("alert step")
    now = utcnow()
    until = now + timedelta(minutes=minutes or 60) if action == AlertAction.SNOOZE else None
    notice: str | None = None
    status_code = 200
    try:
        take_alert_step(db, principal, alert_id, action, expected_status=expected_status,
                        snooze_until=until, note=note, now=now)
        db.commit()
    except Problem as problem:
        db.rollback()
        if problem.status not in (409, 422) or not _is_htmx(request):
            raise
        notice = translate(request_language(request), problem.message, **problem.params)
        status_code = problem.status
    if not _is_htmx(request):
        return RedirectResponse(_safe_next(next_page, "/monitoring/triage"), status_code=303)
    if next_page and next_page.startswith("/monitoring/patients/"):
        # Taken from the patient's page: answer with that page's alert list.
        row = workflow_api.load_alert(db, principal, alert_id, STAFF)
        return _patient_alerts_fragment(request, principal, db, row.patient_id, notice,
                                        status_code)
    context = _triage_context(db, principal, request)
    return render(request, "monitoring/_triage_list.html", principal, notice=notice,
                  status_code=status_code, **context)


@page_router.post("/monitoring/on-call")
def take_on_call(
    request: Request, principal: Clinician, db: DbSession,
    institution_id: Annotated[int, Form()],
    off: Annotated[bool, Form()] = False,
) -> Response:
    """A clinician takes (or hands back) the on-call duty of one of their institutions."""
    if not principal.can_act_for(institution_id, Role.CLINICIAN) or principal.user_id is None:
        raise not_found("institution")
    save_escalation(db, principal, institution_id,
                    on_call_user_id=None if off else principal.user_id, clear_on_call=off)
    db.commit()
    return RedirectResponse("/monitoring/triage", status_code=303)


# -------------------------------------------------------------- a patient, for the care team


def _plan_form_values(plan: CarePlan) -> dict[str, Any]:
    limits = plan.thresholds
    return {
        "template": plan.template.value,
        "high_risk": plan.high_risk,
        "uses_cgm": plan.uses_cgm,
        **{name: getattr(limits, name) for name in PLAN_FORM_THRESHOLDS},
        "expected_every_hours": {
            metric.value: interval / timedelta(hours=1)
            for metric, interval in plan.expected_every.items()
        },
        "missing_after_days": {
            metric.value: delay / timedelta(days=1) for metric, delay in plan.missing_after.items()
        },
    }


#: Thresholds the care-plan form offers (the API accepts every field of `CarePlanOverrides`).
PLAN_FORM_THRESHOLDS: tuple[str, ...] = (
    "bp_target_systolic", "bp_target_diastolic", "bp_crisis_systolic", "bp_crisis_diastolic",
    "bp_hypotension_systolic", "glucose_level2_low", "glucose_level1_low",
    "glucose_level1_high", "glucose_level2_high", "heart_rate_low", "heart_rate_high",
    "spo2_low", "fever_celsius", "weight_gain_kg", "weight_gain_window_days",
)


def _patient_page_context(db: Session, principal: Principal, patient: Patient,
                          now: datetime, language: str) -> dict[str, Any]:
    plan_row = active_plan_row(db, patient.id)
    plan = plan_from_row(plan_row)
    zone = _zone(patient.time_zone)
    readings = _chart_readings(db, patient, now)
    charts = build_charts(readings, plan, zone, language, now)
    alert_rows = sorted(
        db.execute(
            select(AlertRow).where(AlertRow.patient_id == patient.id)
            .order_by(AlertRow.last_signal_at.desc()).limit(30)
        ).scalars(),
        # Unresolved first, the worst first among them, then the newest.
        key=lambda row: (row.status == AlertStatus.RESOLVED,
                         -Severity(row.severity).rank, -row.last_signal_at.timestamp()),
    )
    return {
        "patient": patient, "plan_row": plan_row, "plan": plan, "charts": charts,
        "readings": recent_lines(readings, zone, language), "alert_rows": alert_rows,
        "zone": zone, "now": now,
        "institution": db.get(Institution, patient.institution_id),
        "templates": list(PlanTemplate),
        "form": _plan_form_values(plan), "threshold_fields": PLAN_FORM_THRESHOLDS,
        "threshold_labels": PLAN_FORM_LABELS,
        "can_plan": principal.can_act_for(patient.institution_id, Role.CLINICIAN),
        "is_clinician": principal.can_act_for(patient.institution_id, Role.CLINICIAN),
        "can_respond": any(principal.can_act_for(patient.institution_id, role)
                           for role in RESPONDERS),
        "actor_names": actor_names(db, [row.acknowledged_by for row in alert_rows]
                                   + [row.resolved_by for row in alert_rows]
                                   + [plan_row.created_by if plan_row else None]),
        "snooze_choices": SNOOZE_CHOICES_MINUTES,
        "explanation": lambda row: alert_explanation(row, language),
        "alert_state": lambda row: alert_from_row(row).state_at(now).value,
        **_photo_context(db, principal, patient, zone, staff=True),
        **_label_helpers(language),
    }


PLAN_FORM_LABELS: dict[str, str] = {
    "bp_target_systolic": N_("Blood-pressure target, systolic below (mmHg)"),
    "bp_target_diastolic": N_("Blood-pressure target, diastolic below (mmHg)"),
    "bp_crisis_systolic": N_("Crisis at systolic (mmHg)"),
    "bp_crisis_diastolic": N_("Crisis at diastolic (mmHg)"),
    "bp_hypotension_systolic": N_("Hypotension below systolic (mmHg)"),
    "glucose_level2_low": N_("Level 2 hypoglycaemia below (mg/dL)"),
    "glucose_level1_low": N_("Level 1 hypoglycaemia below (mg/dL)"),
    "glucose_level1_high": N_("Level 1 hyperglycaemia above (mg/dL)"),
    "glucose_level2_high": N_("Level 2 hyperglycaemia above (mg/dL)"),
    "heart_rate_low": N_("Heart rate below (/min)"),
    "heart_rate_high": N_("Heart rate above (/min)"),
    "spo2_low": N_("Oxygen saturation below (%)"),
    "fever_celsius": N_("Fever from (°C)"),
    "weight_gain_kg": N_("Weight gain above (kg)"),
    "weight_gain_window_days": N_("Weight gain within (days)"),
}


def _patient_alerts_fragment(request: Request, principal: Principal, db: Session,
                             patient_id: int, notice: str | None, status_code: int) -> Response:
    patient = workflow_api.load_patient(db, principal, patient_id, STAFF)
    context = _patient_page_context(db, principal, patient, utcnow(),
                                    request_language(request))
    db.commit()
    return render(request, "monitoring/_patient_alerts.html", principal, notice=notice,
                  status_code=status_code, **context)


@page_router.get("/monitoring/patients/{patient_id}", response_class=HTMLResponse)
def patient_page(request: Request, patient_id: int, principal: Staff,
                 db: DbSession) -> Response:
    patient = workflow_api.load_patient(db, principal, patient_id, STAFF)
    context = _patient_page_context(db, principal, patient, utcnow(),
                                    request_language(request))
    audit(db, principal, AuditEvent("read", "monitoring_patient", str(patient.id), patient.id,
                                    patient.institution_id))
    db.commit()
    return render(request, "monitoring/patient.html", principal, **context)


def _number(raw: object) -> float | None:
    try:
        value = float(str(raw).strip().replace(",", "."))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def plan_overrides(plan: CarePlan) -> dict[str, Any]:
    """The overrides that turn the plan's template into `plan` (what is stored)."""
    template = template_plan(plan.template)
    overrides: dict[str, Any] = {}
    for flag in ("high_risk", "uses_cgm"):
        if getattr(plan, flag) != getattr(template, flag):
            overrides[flag] = getattr(plan, flag)
    # Against the plan the flags alone give: "high risk" moves the target to 130/80, so a
    # high-risk plan that keeps 140/90 must say so.
    base = _plan_form_values(template.with_overrides(dict(overrides)) if overrides else template)
    mine = _plan_form_values(plan)
    for name in PLAN_FORM_THRESHOLDS:
        if mine[name] != base[name]:
            overrides[name] = mine[name]
    for field in ("expected_every_hours", "missing_after_days"):
        changed = {metric: value for metric, value in mine[field].items()
                   if base[field].get(metric) != value}
        if changed:
            overrides[field] = changed
    return overrides


def _changes_from_form(form: Any, shown: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What the clinician changed in the form against what it showed, and fields that were
    not numbers. Frequencies are shown to 3 significant digits (0.0833 h is the CGM's 5
    minutes): a value sent back as shown is no change."""
    changes: dict[str, Any] = {}
    invalid: list[str] = []
    for flag in ("high_risk", "uses_cgm"):
        chosen = form.get(flag) == "on"
        if chosen != shown[flag]:
            changes[flag] = chosen
    for name in PLAN_FORM_THRESHOLDS:
        raw = form.get(name)
        if raw is None or str(raw).strip() == "":
            continue
        value = _number(raw)
        if value is None:
            invalid.append(name)
        elif not math.isclose(value, shown[name], rel_tol=1e-9):
            changes[name] = value
    for field in ("expected_every_hours", "missing_after_days"):
        changed: dict[str, float] = {}
        for metric, before in shown[field].items():
            raw = form.get(f"{field}.{metric}")
            if raw is None or str(raw).strip() == "":
                continue
            value = _number(raw)
            if value is None:
                invalid.append(f"{field}.{metric}")
            elif not math.isclose(value, before, rel_tol=1e-3):
                changed[metric] = value
        if changed:
            changes[field] = changed
    return changes, invalid


def plan_from_form(form: Any, template: PlanTemplate,
                   current: CarePlan | None) -> tuple[CarePlan | None, list[str]]:
    """The plan a submitted form asks for: the current plan (or, for another template, that
    template's defaults) with what the clinician changed. Raises `CarePlanError`."""
    start = current if current is not None and current.template is template else (
        template_plan(template))
    changes, invalid = _changes_from_form(form, _plan_form_values(start))
    if invalid:
        return None, invalid
    return start.with_overrides(changes), []


@page_router.post("/monitoring/patients/{patient_id}/care-plan", response_class=HTMLResponse)
async def patient_care_plan(request: Request, patient_id: int, principal: Clinician,
                            db: DbSession) -> Response:
    form = await request.form()

    def work() -> Response:
        patient = workflow_api.load_patient(db, principal, patient_id, (Role.CLINICIAN,))
        try:
            template = PlanTemplate(str(form.get("template", "")))
        except ValueError:
            return _plan_form_error(request, principal, db, patient, [
                translate(request_language(request), "Choose a care-plan template.")])
        row = active_plan_row(db, patient.id)
        try:
            plan, invalid = plan_from_form(form, template,
                                           plan_from_row(row) if row is not None else None)
        except CarePlanError as error:
            return _plan_form_error(request, principal, db, patient, [
                problem.message(request_language(request)) for problem in error.problems])
        if invalid:
            return _plan_form_error(request, principal, db, patient, [
                translate(request_language(request), "{field} must be a number.",
                          field=translate(request_language(request),
                                          PLAN_FORM_LABELS.get(name, name)))
                for name in invalid])
        assert plan is not None
        try:
            validated = CarePlanOverrides.model_validate(plan_overrides(plan))
            set_care_plan(db, principal, patient, template, validated)
        except Problem as problem:
            db.rollback()
            messages = [error.rendered(request_language(request))["message"]
                        for error in problem.errors] or [
                translate(request_language(request), problem.message, **problem.params)]
            return _plan_form_error(request, principal, db, patient, messages)
        except ValueError as error:
            db.rollback()
            return _plan_form_error(request, principal, db, patient, [str(error)])
        db.commit()
        return RedirectResponse(f"/monitoring/patients/{patient.id}?saved=plan#care-plan",
                                status_code=303)

    return await run_in_threadpool(work)


def _plan_form_error(request: Request, principal: Principal, db: Session, patient: Patient,
                     messages: list[str]) -> Response:
    context = _patient_page_context(db, principal, patient, utcnow(),
                                    request_language(request))
    db.commit()
    return render(request, "monitoring/patient.html", principal, status_code=422,
                  plan_errors=messages, **context)


# ------------------------------------------------------------------------ the patient's own


def _own_patients(db: Session, principal: Principal) -> list[Patient]:
    if principal.user_id is None:
        return []
    return list(db.execute(
        select(Patient).where(Patient.user_id == principal.user_id).order_by(Patient.id)
    ).scalars())


def _own_patient(db: Session, principal: Principal, patient_id: int | None) -> Patient:
    mine = _own_patients(db, principal)
    if not mine:
        raise Problem(404, "NO_PATIENT_RECORD",
                      N_("No patient record is linked to your account yet."))
    if patient_id is None:
        return mine[0]
    for patient in mine:
        if patient.id == patient_id:
            return patient
    raise not_found("patient")


def _own_patient_named(db: Session, principal: Principal, raw_id: str) -> Patient:
    """The caller's record a form names (their first when it names none). A value that is no
    record id names no record of theirs: ASCII digits only, as int() refuses "²"."""
    if raw_id and not (raw_id.isascii() and raw_id.isdigit()):
        raise not_found("patient")
    return _own_patient(db, principal, int(raw_id) if raw_id else None)


@dataclass(frozen=True, slots=True)
class PatientNotice:
    """What the patient reads about one of their open alerts."""

    severity: str
    critical: bool
    text: str
    at: datetime


_PHOTO_WITH_CARE_TEAM = N_("Your care team has your wound photo and will look at it.")


def _notices(db: Session, patient: Patient, language: str) -> list[PatientNotice]:
    rows = db.execute(
        select(AlertRow).where(AlertRow.patient_id == patient.id,
                               AlertRow.status != AlertStatus.RESOLVED)
        .order_by(AlertRow.last_signal_at.desc())
    ).scalars()
    notices: list[PatientNotice] = []
    for row in rows:
        guidance = guidance_for(row, patient, language)
        if guidance is not None:
            text = guidance
        elif row.kind == AlertKind.WOUND_PHOTO_REVIEW.value:
            # The care team's "to review" is not the patient's to-do.
            text = translate(language, _PHOTO_WITH_CARE_TEAM)
        else:
            text = alert_explanation(row, language)
        notices.append(PatientNotice(row.severity, guidance is not None, text,
                                     row.last_signal_at))
    notices.sort(key=lambda notice: (not notice.critical, -notice.at.timestamp()))
    return notices


def _own_page_context(db: Session, principal: Principal, patient: Patient,
                      now: datetime, language: str) -> dict[str, Any]:
    plan_row = active_plan_row(db, patient.id)
    plan = plan_from_row(plan_row)
    zone = _zone(patient.time_zone)
    readings = _chart_readings(db, patient, now)
    uploads = list(db.execute(
        select(UploadRow).where(UploadRow.patient_id == patient.id)
        .order_by(UploadRow.created_at.desc()).limit(5)
    ).scalars())
    notices = _notices(db, patient, language)
    emergency = medical_emergency_number(patient.current_country)
    return {
        "patient": patient, "plan_row": plan_row, "plan": plan,
        "charts": build_charts(readings, plan, zone, language, now),
        "readings": recent_lines(readings, zone, language), "zone": zone, "now": now,
        "notices": notices, "has_critical": any(notice.critical for notice in notices),
        "emergency_number": emergency,
        "current_country_name": country_name(patient.current_country, language),
        "own_patients": _own_patients(db, principal), "uploads": uploads,
        "manual_metrics": MANUAL_METRICS, "entry_key": uuid.uuid4().hex,
        "local_now": now.astimezone(zone).strftime("%Y-%m-%dT%H:%M"),
        "institution": db.get(Institution, patient.institution_id),
        **_photo_context(db, principal, patient, zone, staff=False),
        **_label_helpers(language),
    }


@page_router.get("/monitoring/me", response_class=HTMLResponse)
def own_page(request: Request, principal: PatientUser, db: DbSession,
             patient: Annotated[int | None, Query()] = None,
             saved: Annotated[int | None, Query(ge=0, le=1000)] = None) -> Response:
    record = _own_patient(db, principal, patient)
    context = _own_page_context(db, principal, record, utcnow(), request_language(request))
    audit(db, principal, AuditEvent("read", "monitoring_patient", str(record.id), record.id,
                                    record.institution_id, detail={"own": True}))
    db.commit()
    return render(request, "monitoring/me.html", principal, saved=saved, **context)


def _manual_item(form: Any, zone: ZoneInfo, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON batch item a manual-entry form describes, or the English reason it is not one."""
    metric = str(form.get("metric", ""))
    if metric not in _MANUAL_UNITS:
        return None, N_("Choose what you measured.")
    raw_time = str(form.get("measured_at", "")).strip()
    try:
        local = datetime.fromisoformat(raw_time)
    except ValueError:
        return None, N_("Enter when you measured (date and time).")
    # The form's clock is the patient's own: an offset-less time is read in their zone.
    moment = local if local.tzinfo is not None else local.replace(tzinfo=zone)
    item: dict[str, Any] = {
        "idempotency_key": f"manual-{key}"[:200], "metric": metric,
        "unit": _MANUAL_UNITS[metric], "effective_at": moment.isoformat(),
        "device": "manual entry",
    }
    fields = ("systolic", "diastolic") if metric == "blood_pressure" else ("value",)
    for name in fields:
        raw = str(form.get(name, "")).strip().replace(",", ".")
        try:
            number = float(raw)
        except ValueError:
            return None, N_("Enter the measured values as numbers.")
        if not math.isfinite(number):
            return None, N_("Enter the measured values as numbers.")
        item[name] = number
    return item, None


@page_router.post("/monitoring/me/readings", response_class=HTMLResponse)
async def own_reading(request: Request, principal: PatientUser, db: DbSession) -> Response:
    form = await request.form()

    def work() -> Response:
        record = _own_patient_named(db, principal, str(form.get("patient_id", "")).strip())
        zone = _zone(record.time_zone)
        key = str(form.get("entry_key", "")).strip()[:64] or uuid.uuid4().hex
        item, reason = _manual_item(form, zone, key)
        language = request_language(request)
        if item is None:
            assert reason is not None
            return _own_page_error(request, principal, db, record, [translate(language, reason)])
        patient = IngestPatient.of(record)
        received_at = utcnow()
        parsed = parse_batch({"readings": [item]}, patient.context(received_at))
        result = ingest_items(db, patient, parsed, ReadingChannel.JSON, key_prefix="manual",
                              received_at=received_at)
        refused = [problem.message(language) for outcome in result.items
                   if outcome.status is ItemStatus.REFUSED for problem in outcome.problems]
        if refused:
            db.rollback()
            return _own_page_error(request, principal, db, record, refused)
        audit_ingest(db, principal.audit_actor, patient, ReadingChannel.JSON, result)
        db.commit()
        return RedirectResponse(
            f"/monitoring/me?patient={record.id}&saved={result.readings_created}#latest",
            status_code=303)

    return await run_in_threadpool(work)


def _own_page_error(request: Request, principal: Principal, db: Session, patient: Patient,
                    messages: list[str]) -> Response:
    context = _own_page_context(db, principal, patient, utcnow(),
                                request_language(request))
    db.commit()
    return render(request, "monitoring/me.html", principal, status_code=422,
                  entry_errors=messages, saved=None, **context)


# ---------------------------------------------------------------------------- wound photos

#: Wound photos shown on a page (the API lists more).
PHOTOS_SHOWN = 24
#: Who may send a photo for a patient from the care team's page: a coordinator on the
#: patient's behalf, or a clinician.
PHOTO_SENDERS = (Role.CLINICIAN, Role.COORDINATOR)


def _photo_context(db: Session, principal: Principal, patient: Patient, zone: ZoneInfo, *,
                   staff: bool) -> dict[str, Any]:
    """The photo section of a page: the patient's newest photos (their list audit-logged; each
    image the browser then fetches is logged as it is viewed) and where the form sends."""
    photos = patient_photos(db, patient.id, PHOTOS_SHOWN)
    if photos:
        audit(db, principal, AuditEvent("search", "wound_photo", None, patient.id,
                                        patient.institution_id,
                                        detail={"returned": len(photos), "page": True}))
    if staff:
        may_send = any(principal.can_act_for(patient.institution_id, role)
                       for role in PHOTO_SENDERS)
        action = f"/monitoring/patients/{patient.id}/wound-photos" if may_send else None
    else:
        action = "/monitoring/me/wound-photos"
    return {
        "photos": photos, "photo_patient": patient, "photo_action": action,
        "photo_patient_field": not staff, "zone": zone,
        "photo_limit_mb": WOUND_PHOTO_MAX_BYTES // (1024 * 1024),
        "photo_accept": UPLOAD_ACCEPT,
    }


async def _receive_photo(request: Request, principal: Principal, db: Session,
                         find_patient: Any, staff: bool, page: str) -> Response:
    """Receive, check and store a photo sent from a page: the photo section again for htmx
    (with the reason when refused), a redirect to the page otherwise."""
    # Whose photo it is is settled before the file is received: no transaction meanwhile.
    await run_in_threadpool(find_patient, None)
    await run_in_threadpool(db.rollback)
    htmx = _is_htmx(request)
    language = request_language(request)

    def section(patient: Patient, **extra: Any) -> dict[str, Any]:
        return _photo_context(db, principal, patient, _zone(patient.time_zone), staff=staff) | extra

    try:
        form = await read_photo_form(request)
        photo = await prepared(form)
    except Problem as problem:
        if not htmx:
            raise
        reason = translate(language, problem.message, **problem.params)
        status = problem.status

        def refused() -> Response:
            context = section(find_patient(None), photo_error=reason)
            db.commit()
            return render(request, "monitoring/_wound_photos.html", principal,
                          status_code=status, **context)

        return await run_in_threadpool(refused)

    def work() -> Response:
        patient = find_patient(form.patient_field)
        try:
            stored = save_photo(db, principal, patient, form, photo)
        except Problem as problem:
            db.rollback()
            if not htmx:
                raise
            context = section(patient, photo_error=translate(language, problem.message,
                                                             **problem.params))
            db.commit()
            return render(request, "monitoring/_wound_photos.html", principal,
                          status_code=problem.status, **context)
        db.commit()
        if not htmx:
            return RedirectResponse(page.format(patient_id=patient.id), status_code=303)
        context = section(patient, photo_saved=True, photo_duplicate=not stored.created)
        db.commit()
        return render(request, "monitoring/_wound_photos.html", principal,
                      status_code=201 if stored.created else 200, **context)

    return await run_in_threadpool(work)


@page_router.post("/monitoring/me/wound-photos", response_class=HTMLResponse)
async def own_wound_photo(request: Request, principal: PatientUser, db: DbSession) -> Response:
    """A patient sends a photo of their wound from their own page."""

    def find(patient_field: str | None) -> Patient:
        raw = (patient_field or request.query_params.get("patient") or "").strip()
        return _own_patient_named(db, principal, raw)

    return await _receive_photo(request, principal, db, find, False,
                                "/monitoring/me?patient={patient_id}#wound-photos")


@page_router.post("/monitoring/patients/{patient_id}/wound-photos",
                  response_class=HTMLResponse)
async def staff_wound_photo(request: Request, patient_id: int, principal: Responder,
                            db: DbSession) -> Response:
    """A coordinator (or clinician) sends a photo on the patient's behalf."""

    def find(_patient_field: str | None) -> Patient:
        return workflow_api.load_patient(db, principal, patient_id, PHOTO_SENDERS)

    return await _receive_photo(request, principal, db, find, True,
                                "/monitoring/patients/{patient_id}#wound-photos")


router.include_router(page_router)
router.include_router(workflow_api.router)
