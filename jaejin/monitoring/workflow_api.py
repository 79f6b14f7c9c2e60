"""The care team's monitoring workflow as JSON: care plans, alerts and their steps, the triage list.

Every route is scoped to the caller's institutions (another institution's patient or alert
answers 404), every read or change of patient data is audit-logged in the same transaction, and
every change queues a `triage:<institution_id>` event that open triage pages receive after
commit. The functions above the routes are shared with the pages (`jaejin.monitoring.pages`)
and the scheduled jobs (`jaejin.monitoring.jobs`), so a step taken from a button and one taken
through the API follow one rule.

Alert steps are optimistic: a step the alert's current state does not allow (acknowledging a
resolved alert, resolving it twice) answers 409 with the state it is in, and a caller that
passes `expected_status` gets 409 as soon as someone else changed the alert since it looked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Membership, Role, User
from jaejin.core.audit import AuditEvent
from jaejin.core.authn import DbSession, Principal, audit, requires
from jaejin.core.database import utcnow
from jaejin.core.errors import FieldError, Problem, not_found
from jaejin.core.events import publish_after_commit
from jaejin.core.i18n import N_, translate
from jaejin.directory.model import AwareDatetime, PhoneNumber
from jaejin.directory.store import Patient
from jaejin.monitoring.alerts import (
    NEVER_AUTO_CLEARED,
    Alert,
    AlertKind,
    AlertSignal,
    AlertState,
    AlertTransitionError,
    PatientContext,
    Severity,
    acknowledge,
    patient_guidance,
    resolve,
    snooze,
)
from jaejin.monitoring.careplans import (
    CarePlan,
    CarePlanError,
    CarePlanOverrides,
    PlanTemplate,
    template_plan,
)
from jaejin.monitoring.readings import Metric, Reading
from jaejin.monitoring.store import (
    AlertRow,
    AlertStatus,
    CarePlanRow,
    EscalationPolicyRow,
    active_plan_row,
    actor_ref,
    plan_from_row,
    readings_between,
)
from jaejin.monitoring.triage import (
    BASELINE_WINDOW,
    RECENT_WINDOW,
    PatientStatus,
    TriageItem,
    baseline_changes,
    rank,
)
from jaejin.policy.emergency import emergency_numbers
from jaejin.policy.errors import RequestError

router = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"])

#: Who may read monitoring data of their institution's patients.
READERS = (Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN, Role.SYSTEM_CLIENT)
#: Who may set a patient's care plan: a clinical decision.
PLANNERS = (Role.CLINICIAN, Role.SYSTEM_CLIENT)
#: Who may acknowledge, snooze and resolve alerts.
RESPONDERS = (Role.CLINICIAN, Role.COORDINATOR, Role.SYSTEM_CLIENT)
#: Who may change an institution's escalation policy.
POLICY_EDITORS = (Role.CLINICIAN, Role.INSTITUTION_ADMIN)

Reader = Annotated[Principal, Depends(requires(*READERS, scope="monitoring.read"))]
Planner = Annotated[Principal, Depends(requires(*PLANNERS, scope="monitoring.write"))]
Responder = Annotated[Principal, Depends(requires(*RESPONDERS, scope="monitoring.write"))]
PolicyEditor = Annotated[Principal, Depends(requires(*POLICY_EDITORS))]

TRIAGE_CHANNEL = "triage:{institution_id}"
#: The default wait before an unacknowledged critical alert goes to the on-call clinician.
DEFAULT_ESCALATE_AFTER = timedelta(minutes=15)
#: The triage list looks at the last week against the four weeks before (CGM: 2 x 14 days).
TRIAGE_LOOKBACK = RECENT_WINDOW + BASELINE_WINDOW
MAXIMUM_SNOOZE = timedelta(days=7)


STATE_LABELS = {
    AlertState.OPEN: N_("open"),
    AlertState.ACKNOWLEDGED: N_("acknowledged"),
    AlertState.SNOOZED: N_("snoozed"),
    AlertState.RESOLVED: N_("resolved"),
}
SEVERITY_LABELS = {
    Severity.CRITICAL: N_("Critical"),
    Severity.HIGH: N_("High"),
    Severity.MODERATE: N_("Moderate"),
    Severity.INFO: N_("Info"),
}
TEMPLATE_LABELS = {
    PlanTemplate.HYPERTENSION: N_("Hypertension"),
    PlanTemplate.TYPE1_DIABETES_CGM: N_("Type 1 diabetes with CGM"),
    PlanTemplate.TYPE2_DIABETES: N_("Type 2 diabetes"),
    PlanTemplate.POST_OPERATIVE: N_("Post-operative recovery"),
    PlanTemplate.HEART_FAILURE: N_("Heart failure"),
}


def state_label(language: str, state: AlertState) -> str:
    return translate(language, STATE_LABELS[state])


def triage_channel(institution_id: int) -> str:
    return TRIAGE_CHANNEL.format(institution_id=institution_id)


def principal_ref(principal: Principal) -> str:
    return actor_ref(principal.kind, principal.subject_id)


# ------------------------------------------------------------------------ rows <-> pure alerts


def alert_from_row(row: AlertRow) -> Alert:
    """The pure `Alert` a stored row describes (its worst signal stands for the episode)."""
    signal = AlertSignal(
        patient_ref=str(row.patient_id),
        kind=AlertKind(row.kind),
        severity=Severity(row.severity),
        episode_key=row.episode_key,
        detected_at=row.last_signal_at,
        observed_at=row.last_observed_at,
        metric=Metric(row.metric) if row.metric else None,
        message=row.message,
        params=dict(row.params),
    )
    return Alert(
        alert_id=str(row.id),
        episode_key=row.episode_key,
        patient_ref=str(row.patient_id),
        kind=AlertKind(row.kind),
        severity=Severity(row.severity),
        opened_at=row.opened_at,
        last_signal_at=row.last_signal_at,
        signals=(signal,),
        state=AlertState(row.status),
        unacknowledged_since=row.unacknowledged_since,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        snoozed_until=row.snoozed_until,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution_note=row.resolution_note,
    )


def store_alert(row: AlertRow, alert: Alert) -> None:
    """Write a workflow step taken on the pure alert back to its row."""
    row.status = alert.state.value
    row.unacknowledged_since = alert.unacknowledged_since
    row.acknowledged_at = alert.acknowledged_at
    row.acknowledged_by = alert.acknowledged_by
    row.snoozed_until = alert.snoozed_until
    row.resolved_at = alert.resolved_at
    row.resolved_by = alert.resolved_by
    row.resolution_note = alert.resolution_note


def alert_explanation(row: AlertRow, language: str) -> str:
    return alert_from_row(row).explain(language)


def _guidance_value(row: AlertRow) -> str:
    params = row.params
    if "systolic" in params and "diastolic" in params:
        return f"{params['systolic']}/{params['diastolic']}"
    return str(params.get("value", ""))


def medical_emergency_number(country_code: str) -> str | None:
    """The medical emergency number of the country the patient is in now, None if unknown."""
    try:
        return emergency_numbers(country_code).medical
    except (RequestError, LookupError):
        return None


def _number_or_lookup_error(country_code: str) -> str:
    number = medical_emergency_number(country_code)
    if number is None:
        raise LookupError(country_code)
    return number


def guidance_for(row: AlertRow, patient: Patient, language: str | None = None) -> str | None:
    """Guidance for the patient about a critical alert, in their language (the one they read
    the page in, else their preferred one), naming the emergency number of the country they are
    in now (not where they were when the reading came)."""
    if row.severity != Severity.CRITICAL.value:
        return None
    context = PatientContext(
        language or patient.preferred_language, patient.current_country,
        _number_or_lookup_error,
    )
    return patient_guidance(AlertKind(row.kind), _guidance_value(row), context)


# ---------------------------------------------------------------------------------- lookups


def load_patient(db: Session, principal: Principal, patient_id: int,
                 roles: Sequence[Role] = READERS) -> Patient:
    patient = db.get(Patient, patient_id)
    if patient is None or not principal.can_act_for(patient.institution_id, *roles):
        raise not_found("patient")
    return patient


def load_alert(db: Session, principal: Principal, alert_id: int,
               roles: Sequence[Role] = READERS, *, for_update: bool = False) -> AlertRow:
    query = select(AlertRow).where(AlertRow.id == alert_id)
    if for_update:
        query = query.with_for_update()
    row = db.execute(query).scalar_one_or_none()
    if row is None or not principal.can_act_for(row.institution_id, *roles):
        raise not_found("alert")
    return row


def actor_names(db: Session, refs: Iterable[str | None]) -> dict[str, str]:
    """Display names of `user:<id>` actor references (clients keep their reference)."""
    user_ids = {
        int(ref.split(":", 1)[1]) for ref in refs
        if ref and ref.startswith("user:") and ref.split(":", 1)[1].isdigit()
    }
    if not user_ids:
        return {}
    users = db.execute(select(User.id, User.display_name).where(User.id.in_(user_ids)))
    return {f"user:{user_id}": name for user_id, name in users}


# ------------------------------------------------------------------------------- care plans


class PlanSummary(BaseModel):
    """A care plan with every figure in force (template defaults plus overrides)."""

    template: PlanTemplate
    monitored_metrics: list[Metric]
    expected_every_hours: dict[Metric, float]
    missing_after_days: dict[Metric, float]
    uses_cgm: bool
    high_risk: bool
    thresholds: dict[str, float]
    cgm_targets: dict[str, float]

    @classmethod
    def of(cls, plan: CarePlan) -> PlanSummary:
        return cls(
            template=plan.template,
            monitored_metrics=sorted(plan.monitored_metrics),
            expected_every_hours={
                metric: interval / timedelta(hours=1)
                for metric, interval in sorted(plan.expected_every.items())
            },
            missing_after_days={
                metric: delay / timedelta(days=1)
                for metric, delay in sorted(plan.missing_after.items())
            },
            uses_cgm=plan.uses_cgm,
            high_risk=plan.high_risk,
            thresholds=asdict(plan.thresholds),
            cgm_targets={name: float(value) for name, value in asdict(plan.cgm_targets).items()},
        )


class CarePlanPublic(BaseModel):
    patient_id: int
    #: False when nobody enrolled the patient: default thresholds still guard critical readings.
    enrolled: bool
    id: int | None = None
    template: PlanTemplate | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    created_by: str | None = None
    created_at: datetime | None = None
    plan: PlanSummary | None = None


class CarePlanIn(BaseModel):
    """A plan from a template, with the clinician's overrides (empty: the template's defaults)."""

    model_config = ConfigDict(extra="forbid")

    template: PlanTemplate
    overrides: CarePlanOverrides = Field(default_factory=CarePlanOverrides)


def care_plan_public(patient: Patient, row: CarePlanRow | None) -> CarePlanPublic:
    if row is None:
        return CarePlanPublic(patient_id=patient.id, enrolled=False)
    return CarePlanPublic(
        patient_id=patient.id, enrolled=True, id=row.id, template=PlanTemplate(row.template),
        overrides=row.overrides, created_by=row.created_by, created_at=row.created_at,
        plan=PlanSummary.of(plan_from_row(row)),
    )


def plan_problem(error: CarePlanError, language: str) -> Problem:
    return Problem(
        422, "CARE_PLAN_INCONSISTENT", N_("The care plan contradicts itself."),
        errors=[
            # The problem's own message translates its labels; the field error only carries it.
            FieldError("overrides", problem.code.value, "{explanation}",
                       {"explanation": problem.message(language)})
            for problem in error.problems
        ],
    )


def set_care_plan(db: Session, principal: Principal, patient: Patient, template: PlanTemplate,
                  overrides: CarePlanOverrides) -> CarePlanRow:
    """Replace the patient's active plan; refuses (422) a plan whose figures contradict."""
    try:
        template_plan(template).with_overrides(overrides)
    except CarePlanError as error:
        raise plan_problem(error, principal.language) from None
    now = utcnow()
    previous = active_plan_row(db, patient.id)
    if previous is not None:
        previous.active = False
        previous.deactivated_at = now
        # The partial unique index allows one active plan: the old one steps down first.
        db.flush()
    row = CarePlanRow(
        patient_id=patient.id, institution_id=patient.institution_id, template=template.value,
        overrides=overrides.model_dump(mode="json", exclude_none=True),
        created_by=principal_ref(principal), active=True, created_at=now,
    )
    db.add(row)
    db.flush()
    audit(db, principal, AuditEvent(
        "update", "monitoring_care_plan", str(row.id), patient.id, patient.institution_id,
        detail={"template": template.value, "overrides": sorted(row.overrides),
                "replaced": previous.id if previous is not None else None},
    ))
    publish_after_commit(db, triage_channel(patient.institution_id),
                         {"type": "monitoring.care_plan", "patient_id": patient.id})
    return row


def monitoring_since(db: Session, row: CarePlanRow) -> datetime:
    """Since when the patient is monitored under this template: changing a threshold does not
    restart the clock of missing data or of the 14-day CGM report."""
    earliest = db.execute(
        select(func.min(CarePlanRow.created_at)).where(
            CarePlanRow.patient_id == row.patient_id, CarePlanRow.template == row.template
        )
    ).scalar_one_or_none()
    return earliest if earliest is not None else row.created_at


# ----------------------------------------------------------------------------------- alerts


class AlertPublic(BaseModel):
    id: int
    patient_id: int
    kind: AlertKind
    severity: Severity
    #: The state in force now: a snooze that ran out reads as open.
    status: AlertState
    metric: Metric | None
    explanation: str
    signal_count: int
    opened_at: datetime
    last_signal_at: datetime
    last_observed_at: datetime
    unacknowledged_since: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    snoozed_until: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_note: str
    escalated_at: datetime | None


def alert_public(row: AlertRow, language: str, now: datetime) -> AlertPublic:
    alert = alert_from_row(row)
    return AlertPublic(
        id=row.id, patient_id=row.patient_id, kind=alert.kind, severity=alert.severity,
        status=alert.state_at(now), metric=Metric(row.metric) if row.metric else None,
        explanation=alert.explain(language), signal_count=row.signal_count,
        opened_at=row.opened_at, last_signal_at=row.last_signal_at,
        last_observed_at=row.last_observed_at, unacknowledged_since=row.unacknowledged_since,
        acknowledged_by=row.acknowledged_by, acknowledged_at=row.acknowledged_at,
        snoozed_until=row.snoozed_until, resolved_by=row.resolved_by,
        resolved_at=row.resolved_at, resolution_note=row.resolution_note,
        escalated_at=row.escalated_at,
    )


class AlertAction:
    ACKNOWLEDGE = "acknowledge"
    SNOOZE = "snooze"
    RESOLVE = "resolve"


ALERT_ACTIONS = (AlertAction.ACKNOWLEDGE, AlertAction.SNOOZE, AlertAction.RESOLVE)


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The status the caller saw; the step is refused (409) if the alert has changed since.
    expected_status: AlertState | None = None


class SnoozeIn(StepIn):
    #: Either how long, or until when.
    minutes: int | None = Field(default=None, ge=1, le=int(MAXIMUM_SNOOZE.total_seconds() // 60))
    until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_end(self) -> SnoozeIn:
        if (self.minutes is None) == (self.until is None):
            raise ValueError("give either minutes or until")
        return self


class ResolveIn(StepIn):
    note: str = Field(default="", max_length=2000)


def _conflict(principal: Principal, row: AlertRow, now: datetime) -> Problem:
    current = alert_from_row(row).state_at(now)
    return Problem(
        409, "ALERT_STATE_CONFLICT",
        N_("This alert is {status} now; the step was not taken. Reload to see its state."),
        params={"status": state_label(principal.language, current)},
        extra={"status": current.value},
    )


def take_alert_step(
    db: Session,
    principal: Principal,
    alert_id: int,
    action: str,
    *,
    expected_status: AlertState | None = None,
    snooze_until: datetime | None = None,
    note: str = "",
    now: datetime | None = None,
) -> AlertRow:
    """Acknowledge, snooze or resolve one alert under a row lock; 409 on a stale or refused step.

    The caller commits.
    """
    now = now or utcnow()
    row = load_alert(db, principal, alert_id, RESPONDERS, for_update=True)
    alert = alert_from_row(row)
    if expected_status is not None and alert.state_at(now) is not expected_status:
        raise _conflict(principal, row, now)
    state = alert.state_at(now)
    if action == AlertAction.SNOOZE:
        if snooze_until is None or snooze_until <= now:
            raise Problem(422, "SNOOZE_IN_THE_PAST", N_("A snooze must end in the future."))
        if snooze_until - now > MAXIMUM_SNOOZE:
            raise Problem(422, "SNOOZE_TOO_LONG",
                          N_("An alert can be snoozed for at most {days} days."),
                          params={"days": MAXIMUM_SNOOZE.days})
        if alert.severity is Severity.CRITICAL and state is AlertState.OPEN:
            raise Problem(409, "ACKNOWLEDGE_FIRST",
                          N_("Acknowledge a critical alert before snoozing it."),
                          extra={"status": state.value})
    if (action == AlertAction.RESOLVE and alert.kind in NEVER_AUTO_CLEARED
            and not principal.can_act_for(row.institution_id, Role.CLINICIAN)):
        # A wound photo is judged by a clinician looking at it (DOMAIN.md 4): a coordinator or
        # a system may acknowledge that it arrived, not close the review.
        raise Problem(403, "CLINICIAN_REVIEW_REQUIRED",
                      N_("Only a clinician can resolve a wound-photo review, after looking at "
                         "the photo."))
    by = principal_ref(principal)
    try:
        if action == AlertAction.ACKNOWLEDGE:
            changed = acknowledge(alert, by, now)
        elif action == AlertAction.SNOOZE:
            assert snooze_until is not None
            changed = snooze(alert, by, now, snooze_until)
        elif action == AlertAction.RESOLVE:
            changed = resolve(alert, by, now, note.strip())
        else:
            raise not_found("alert step")
    except AlertTransitionError:
        # What remains refused is a step someone else's step made stale (resolved twice,
        # acknowledged twice).
        raise _conflict(principal, row, now) from None
    store_alert(row, changed)
    audit(db, principal, AuditEvent(
        "update", "monitoring_alert", str(row.id), row.patient_id, row.institution_id,
        detail={"step": action, "status": row.status, "kind": row.kind,
                "severity": row.severity},
    ))
    publish_after_commit(db, triage_channel(row.institution_id), {
        "type": "monitoring.alert_step", "alert_id": row.id, "patient_id": row.patient_id,
        "status": row.status, "step": action,
    })
    return row


# ----------------------------------------------------------------------------------- triage


@dataclass(frozen=True, slots=True)
class TriageEntry:
    """One ranked patient of the triage list, with what a page or the API shows of them."""

    item: TriageItem
    patient: Patient
    alert_rows: tuple[AlertRow, ...]
    plan_template: PlanTemplate | None


def _unresolved_alerts(db: Session, institution_ids: set[int]) -> list[AlertRow]:
    return list(db.execute(
        select(AlertRow).where(
            AlertRow.institution_id.in_(institution_ids),
            AlertRow.status != AlertStatus.RESOLVED,
        )
    ).scalars())


def triage_entries(db: Session, institution_ids: set[int], now: datetime,
                   limit: int = 200) -> list[TriageEntry]:
    """Monitored patients of these institutions, most urgent first.

    A patient counts when enrolled in a care plan or when they have an unresolved alert (a
    critical reading from a patient nobody enrolled still reaches the list).
    """
    if not institution_ids:
        return []
    plans = {
        row.patient_id: row
        for row in db.execute(
            select(CarePlanRow).where(
                CarePlanRow.institution_id.in_(institution_ids), CarePlanRow.active
            )
        ).scalars()
    }
    alerts_by_patient: dict[int, list[AlertRow]] = {}
    for row in _unresolved_alerts(db, institution_ids):
        alerts_by_patient.setdefault(row.patient_id, []).append(row)
    patient_ids = set(plans) | set(alerts_by_patient)
    if not patient_ids:
        return []
    patients = {
        patient.id: patient
        for patient in db.execute(select(Patient).where(Patient.id.in_(patient_ids))).scalars()
    }
    statuses: list[PatientStatus] = []
    for patient_id in sorted(patients):
        plan_row = plans.get(patient_id)
        changes = []
        if plan_row is not None:
            plan = plan_from_row(plan_row)
            readings: list[Reading] = readings_between(
                db, patient_id, now - TRIAGE_LOOKBACK, now, plan.monitored_metrics
            )
            changes = baseline_changes(readings, plan, now)
        statuses.append(PatientStatus(
            str(patient_id),
            tuple(alert_from_row(row) for row in alerts_by_patient.get(patient_id, [])),
            tuple(changes),
        ))
    entries: list[TriageEntry] = []
    for item in rank(statuses, now)[:limit]:
        patient_id = int(item.patient_ref)
        rows_by_id = {str(row.id): row for row in alerts_by_patient.get(patient_id, [])}
        shown = tuple(rows_by_id[alert.alert_id] for alert in item.alerts)
        # Snoozed alerts do not rank, but the clinician still sees them under the patient.
        snoozed = tuple(
            row for row in alerts_by_patient.get(patient_id, [])
            if str(row.id) not in {alert.alert_id for alert in item.alerts}
        )
        plan_row = plans.get(patient_id)
        entries.append(TriageEntry(
            item, patients[patient_id], shown + snoozed,
            PlanTemplate(plan_row.template) if plan_row is not None else None,
        ))
    return entries


class TriageAlertPublic(BaseModel):
    id: int
    kind: AlertKind
    severity: Severity
    status: AlertState
    explanation: str
    signal_count: int
    last_signal_at: datetime


class TriageItemPublic(BaseModel):
    rank: int
    patient_id: int
    patient_name: str
    care_plan: PlanTemplate | None
    severity: Severity | None
    score: float
    score_parts: dict[str, float]
    #: The worst alert, then what changed against the patient's own baseline.
    explanation: str
    changes: list[str]
    alerts: list[TriageAlertPublic]


def triage_public(entry: TriageEntry, language: str, now: datetime) -> TriageItemPublic:
    item = entry.item
    return TriageItemPublic(
        rank=item.rank, patient_id=entry.patient.id, patient_name=entry.patient.display_name,
        care_plan=entry.plan_template, severity=item.severity, score=item.score,
        score_parts={name: round(value, 3) for name, value in item.score_parts.items()},
        explanation=item.explain(language),
        changes=[change.explain(language) for change in item.changes],
        alerts=[
            TriageAlertPublic(
                id=row.id, kind=AlertKind(row.kind), severity=Severity(row.severity),
                status=alert_from_row(row).state_at(now), explanation=alert_explanation(
                    row, language), signal_count=row.signal_count,
                last_signal_at=row.last_signal_at,
            )
            for row in entry.alert_rows
        ],
    )


def audit_triage(db: Session, principal: Principal, entries: Sequence[TriageEntry]) -> None:
    """One read entry per patient shown: each patient's access history lists the triage view."""
    for entry in entries:
        audit(db, principal, AuditEvent(
            "read", "monitoring_triage", None, entry.patient.id, entry.patient.institution_id,
            detail={"rank": entry.item.rank, "alerts": len(entry.alert_rows)},
        ))


# ------------------------------------------------------------------------ escalation policy


@dataclass(frozen=True, slots=True)
class Escalation:
    """An institution's escalation rule in force (its row, or the defaults)."""

    institution_id: int
    escalate_after: timedelta
    on_call_user_id: int | None
    on_call_phone: str | None


def escalation_for(db: Session, institution_id: int) -> Escalation:
    row = db.execute(
        select(EscalationPolicyRow).where(EscalationPolicyRow.institution_id == institution_id)
    ).scalar_one_or_none()
    if row is None:
        return Escalation(institution_id, DEFAULT_ESCALATE_AFTER, None, None)
    return Escalation(institution_id, timedelta(minutes=row.escalate_after_minutes),
                      row.on_call_user_id, row.on_call_phone)


def is_clinician_of(db: Session, user_id: int, institution_id: int) -> bool:
    return db.execute(
        select(Membership.id).where(
            Membership.user_id == user_id, Membership.institution_id == institution_id,
            Membership.role == Role.CLINICIAN.value,
        )
    ).first() is not None


def save_escalation(db: Session, principal: Principal, institution_id: int, *,
                    escalate_after_minutes: int | None = None,
                    on_call_user_id: int | None = None, clear_on_call: bool = False,
                    on_call_phone: str | None = None, clear_phone: bool = False,
                    ) -> EscalationPolicyRow:
    if on_call_user_id is not None and not is_clinician_of(db, on_call_user_id, institution_id):
        raise Problem(422, "NOT_A_CLINICIAN",
                      N_("The on-call person must be a clinician of this institution."),
                      errors=[FieldError("on_call_user_id", "NOT_A_CLINICIAN",
                                         N_("Not a clinician of this institution."))])
    row = db.execute(
        select(EscalationPolicyRow).where(EscalationPolicyRow.institution_id == institution_id)
        .with_for_update()
    ).scalar_one_or_none()
    if row is None:
        row = EscalationPolicyRow(
            institution_id=institution_id,
            escalate_after_minutes=int(DEFAULT_ESCALATE_AFTER.total_seconds() // 60),
            updated_by=principal_ref(principal),
        )
        db.add(row)
    if escalate_after_minutes is not None:
        row.escalate_after_minutes = escalate_after_minutes
    if on_call_user_id is not None or clear_on_call:
        row.on_call_user_id = on_call_user_id
    if on_call_phone is not None or clear_phone:
        row.on_call_phone = on_call_phone
    row.updated_by = principal_ref(principal)
    row.updated_at = utcnow()
    db.flush()
    audit(db, principal, AuditEvent(
        "update", "monitoring_escalation_policy", str(row.id), None, institution_id,
        purpose="operations",
        detail={"escalate_after_minutes": row.escalate_after_minutes,
                "on_call_user_id": row.on_call_user_id},
    ))
    publish_after_commit(db, triage_channel(institution_id),
                         {"type": "monitoring.escalation_policy"})
    return row


class EscalationPublic(BaseModel):
    institution_id: int
    escalate_after_minutes: int
    on_call_user_id: int | None
    on_call_name: str | None
    on_call_phone: str | None


class EscalationIn(BaseModel):
    """Fields left out keep their value; `null` clears the on-call person or phone."""

    model_config = ConfigDict(extra="forbid")

    escalate_after_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    on_call_user_id: int | None = None
    on_call_phone: PhoneNumber | None = None


def escalation_public(db: Session, escalation: Escalation) -> EscalationPublic:
    name = None
    if escalation.on_call_user_id is not None:
        user = db.get(User, escalation.on_call_user_id)
        name = user.display_name if user is not None else None
    return EscalationPublic(
        institution_id=escalation.institution_id,
        escalate_after_minutes=math.ceil(escalation.escalate_after.total_seconds() / 60),
        on_call_user_id=escalation.on_call_user_id, on_call_name=name,
        on_call_phone=escalation.on_call_phone,
    )


# ----------------------------------------------------------------------------------- routes


@router.get("/patients/{patient_id}/care-plan", response_model=CarePlanPublic,
            summary="A patient's care plan, with every figure in force")
def get_care_plan(patient_id: int, principal: Reader, db: DbSession) -> CarePlanPublic:
    patient = load_patient(db, principal, patient_id)
    row = active_plan_row(db, patient.id)
    audit(db, principal, AuditEvent("read", "monitoring_care_plan",
                                    str(row.id) if row else None, patient.id,
                                    patient.institution_id))
    db.commit()
    return care_plan_public(patient, row)


@router.put("/patients/{patient_id}/care-plan", response_model=CarePlanPublic,
            summary="Set a patient's care plan from a template, with overrides")
def put_care_plan(patient_id: int, body: CarePlanIn, principal: Planner,
                  db: DbSession) -> CarePlanPublic:
    patient = load_patient(db, principal, patient_id, PLANNERS)
    row = set_care_plan(db, principal, patient, body.template, body.overrides)
    db.commit()
    return care_plan_public(patient, row)


@router.get("/alerts", response_model=list[AlertPublic],
            summary="Alerts of your institutions' patients, newest signal first")
def list_alerts(
    principal: Reader, db: DbSession,
    patient_id: int | None = None,
    status: Annotated[list[AlertState] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AlertPublic]:
    """Unresolved alerts unless `status` says otherwise (`status=resolved` for history)."""
    scope = principal.institutions_where(*READERS)
    query = select(AlertRow).where(AlertRow.institution_id.in_(scope))
    if patient_id is not None:
        load_patient(db, principal, patient_id)
        query = query.where(AlertRow.patient_id == patient_id)
    wanted = status or [AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.SNOOZED]
    query = query.where(AlertRow.status.in_([state.value for state in wanted]))
    if severity:
        query = query.where(AlertRow.severity.in_([level.value for level in severity]))
    rows = list(db.execute(
        query.order_by(AlertRow.last_signal_at.desc(), AlertRow.id.desc())
        .limit(limit).offset(offset)
    ).scalars())
    for seen_patient in sorted({(row.patient_id, row.institution_id) for row in rows}):
        audit(db, principal, AuditEvent("read", "monitoring_alert", None, seen_patient[0],
                                        seen_patient[1], detail={"list": True}))
    db.commit()
    now = utcnow()
    return [alert_public(row, principal.language, now) for row in rows]


@router.get("/alerts/{alert_id}", response_model=AlertPublic)
def get_alert(alert_id: int, principal: Reader, db: DbSession) -> AlertPublic:
    row = load_alert(db, principal, alert_id)
    audit(db, principal, AuditEvent("read", "monitoring_alert", str(row.id), row.patient_id,
                                    row.institution_id))
    db.commit()
    return alert_public(row, principal.language, utcnow())


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertPublic,
             summary="Acknowledge an alert: someone is on it")
def acknowledge_alert(alert_id: int, principal: Responder, db: DbSession,
                      body: StepIn | None = None) -> AlertPublic:
    row = take_alert_step(db, principal, alert_id, AlertAction.ACKNOWLEDGE,
                          expected_status=body.expected_status if body else None)
    db.commit()
    return alert_public(row, principal.language, utcnow())


@router.post("/alerts/{alert_id}/snooze", response_model=AlertPublic,
             summary="Hide an alert until a time (a critical one must be acknowledged first)")
def snooze_alert(alert_id: int, body: SnoozeIn, principal: Responder,
                 db: DbSession) -> AlertPublic:
    now = utcnow()
    until = body.until if body.until is not None else now + timedelta(minutes=body.minutes or 0)
    row = take_alert_step(db, principal, alert_id, AlertAction.SNOOZE,
                          expected_status=body.expected_status, snooze_until=until, now=now)
    db.commit()
    return alert_public(row, principal.language, utcnow())


@router.post("/alerts/{alert_id}/resolve", response_model=AlertPublic,
             summary="Resolve an alert, with an optional note")
def resolve_alert(alert_id: int, principal: Responder, db: DbSession,
                  body: ResolveIn | None = None) -> AlertPublic:
    row = take_alert_step(db, principal, alert_id, AlertAction.RESOLVE,
                          expected_status=body.expected_status if body else None,
                          note=body.note if body else "")
    db.commit()
    return alert_public(row, principal.language, utcnow())


@router.get("/triage", response_model=list[TriageItemPublic],
            summary="Your institutions' monitored patients, most urgent first")
def get_triage(principal: Reader, db: DbSession,
               limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[TriageItemPublic]:
    now = utcnow()
    entries = triage_entries(db, principal.institutions_where(*READERS), now, limit)
    audit_triage(db, principal, entries)
    db.commit()
    return [triage_public(entry, principal.language, now) for entry in entries]


@router.get("/institutions/{institution_id}/escalation", response_model=EscalationPublic,
            summary="How long a critical alert waits before it goes to the on-call clinician")
def get_escalation(institution_id: int, principal: Reader, db: DbSession) -> EscalationPublic:
    if not principal.can_act_for(institution_id, *READERS):
        raise not_found("institution")
    return escalation_public(db, escalation_for(db, institution_id))


@router.put("/institutions/{institution_id}/escalation", response_model=EscalationPublic,
            summary="Change the escalation delay or the on-call clinician")
def put_escalation(institution_id: int, body: EscalationIn, principal: PolicyEditor,
                   db: DbSession) -> EscalationPublic:
    if not principal.can_act_for(institution_id, *POLICY_EDITORS):
        raise not_found("institution")
    given = body.model_fields_set
    save_escalation(
        db, principal, institution_id,
        escalate_after_minutes=body.escalate_after_minutes,
        on_call_user_id=body.on_call_user_id,
        clear_on_call="on_call_user_id" in given and body.on_call_user_id is None,
        on_call_phone=body.on_call_phone,
        clear_phone="on_call_phone" in given and body.on_call_phone is None,
    )
    db.commit()
    return escalation_public(db, escalation_for(db, institution_id))
