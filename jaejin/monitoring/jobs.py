"""Scheduled monitoring work, run by `jaejin worker` through `jaejin.jobs.SCHEDULED_MODULES`.

Three jobs, each in short transactions so a worker never holds locks for long:

1. **Scheduled checks.** Each active care plan is evaluated once per `EVALUATE_EVERY`
   (`alerts.evaluate_scheduled`: missing data, 7-day blood-pressure trend against the previous
   4 weeks, heart-failure weight gain, glucose patterns, 14-day CGM consensus metrics). Signals
   fold into the patient's open alert of each episode exactly as critical readings do on ingest
   (`ingest.record_signals`), so a condition that lasts stays one item.
2. **Quiet alerts clear themselves** where the rules allow (`alerts.can_auto_clear`): never a
   wound photo, never a critical alert nobody acknowledged.
3. **Escalation.** A critical alert nobody acknowledged within the institution's delay
   (`EscalationPolicyRow`, default 15 minutes) is marked escalated and the on-call clinician is
   notified through the outbox (e-mail, and SMS when the policy has a phone number), and open
   triage pages are told at once.

Several workers may run this at the same time: plans and alerts are claimed with
`FOR UPDATE SKIP LOCKED` on PostgreSQL (SQLite serialises writers with BEGIN IMMEDIATE), and a
claimed plan's `evaluated_at` moves forward in the same transaction, so no plan is evaluated
twice in one period. Each process also paces itself (`PACE`): the worker polls often, these
jobs need not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Membership, Role, User
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.config import get_settings
from jaejin.core.database import session_factory, utcnow
from jaejin.core.events import publish_after_commit
from jaejin.core.i18n import N_, translate
from jaejin.directory.store import Patient
from jaejin.monitoring.alerts import (
    DEFAULT_QUIET_PERIOD,
    AlertKind,
    Severity,
    auto_clear,
    can_auto_clear,
    evaluate_scheduled,
    needs_escalation,
    scheduled_window,
)
from jaejin.monitoring.careplans import CarePlanError
from jaejin.monitoring.ingest import IngestPatient, record_signals
from jaejin.monitoring.readings import Metric
from jaejin.monitoring.store import (
    AlertRow,
    AlertStatus,
    CarePlanRow,
    plan_from_row,
    readings_between,
)
from jaejin.monitoring.workflow_api import (
    Escalation,
    alert_from_row,
    escalation_for,
    is_clinician_of,
    monitoring_since,
    store_alert,
    triage_channel,
)
from jaejin.notify import OutgoingEmail, OutgoingSms, queue_email, queue_sms

log = logging.getLogger(__name__)

#: A process runs these jobs at most this often, however often the worker polls.
PACE: Final = timedelta(minutes=1)
#: How often each care plan's scheduled checks run.
EVALUATE_EVERY: Final = timedelta(hours=1)
#: An alert without a new signal for this long is cleared when the rules allow it.
QUIET_PERIOD: Final = DEFAULT_QUIET_PERIOD
#: Rows claimed per transaction; a run stops after `MAX_BATCHES` so one poll stays short.
BATCH_SIZE: Final = 10
MAX_BATCHES: Final = 100

SYSTEM_ACTOR: Final = AuditActor.system("monitoring-scheduler")

_ESCALATION_SUBJECT = N_("Jaejin: critical alert not acknowledged for {minutes} minutes")
_ESCALATION_TEXT = N_(
    "A critical alert ({kind}) for patient {mrn} has not been acknowledged for {minutes} "
    "minutes. You are on call: please open it now.\n\n{link}\n\nThis message deliberately "
    "leaves out the readings; they are on the page."
)
_ESCALATION_SMS = N_(
    "Jaejin: critical alert for patient {mrn} unacknowledged {minutes} min. {link}"
)

ALERT_KIND_LABELS: Final = {
    AlertKind.BP_CRISIS: N_("blood-pressure crisis"),
    AlertKind.HYPOTENSION: N_("low blood pressure"),
    AlertKind.BP_ABOVE_TARGET: N_("blood pressure above target"),
    AlertKind.GLUCOSE_VERY_LOW: N_("very low glucose"),
    AlertKind.GLUCOSE_LOW: N_("low glucose"),
    AlertKind.GLUCOSE_VERY_HIGH: N_("very high glucose"),
    AlertKind.GLUCOSE_HIGH_PATTERN: N_("high glucose pattern"),
    AlertKind.HEART_RATE_OUT_OF_RANGE: N_("heart rate out of range"),
    AlertKind.SPO2_LOW: N_("low oxygen saturation"),
    AlertKind.FEVER: N_("fever"),
    AlertKind.WEIGHT_GAIN: N_("weight gain"),
    AlertKind.WOUND_PHOTO_REVIEW: N_("wound photo to review"),
    AlertKind.MISSING_DATA: N_("missing data"),
    AlertKind.CGM_OUT_OF_TARGET: N_("CGM targets missed"),
    AlertKind.CGM_LOW_WEAR: N_("low CGM sensor wear"),
}


def alert_kind_label(language: str, kind: str) -> str:
    try:
        return translate(language, ALERT_KIND_LABELS[AlertKind(kind)])
    except ValueError:
        return kind


@dataclass(frozen=True, slots=True)
class JobReport:
    """What one run did (for logs and tests)."""

    plans_evaluated: int
    signals: int
    alerts_cleared: int
    alerts_escalated: int


_pace_lock = threading.Lock()
_last_run: dict[str, float] = {}


def run_scheduled(engine: Engine) -> None:
    """The worker's entry point: run the jobs if this process has not in the last `PACE`."""
    key = engine.url.render_as_string(hide_password=True)
    with _pace_lock:
        last = _last_run.get(key)
        moment = time.monotonic()
        if last is not None and moment - last < PACE.total_seconds():
            return
        _last_run[key] = moment
    report = run_jobs(engine, utcnow())
    if report.plans_evaluated or report.alerts_cleared or report.alerts_escalated:
        log.info("monitoring jobs: %s", report)


def run_jobs(engine: Engine, now: datetime) -> JobReport:
    """Every monitoring job once, as of `now` (tests pass their own clock)."""
    evaluated, signals = evaluate_due_plans(engine, now)
    cleared = clear_quiet_alerts(engine, now)
    escalated = escalate_overdue_alerts(engine, now)
    return JobReport(evaluated, signals, cleared, escalated)


@contextmanager
def _transaction(engine: Engine) -> Iterator[Session]:
    with session_factory(engine)() as db, db.begin():
        yield db


def _skip_locked(db: Session) -> bool:
    return db.get_bind().dialect.name == "postgresql"


# ------------------------------------------------------------------------ scheduled checks


def evaluate_due_plans(engine: Engine, now: datetime) -> tuple[int, int]:
    """Evaluate every active plan whose period has come; returns (plans, signals)."""
    plans = signals = 0
    due_before = now - EVALUATE_EVERY
    for _batch in range(MAX_BATCHES):
        with _transaction(engine) as db:
            query = (
                select(CarePlanRow)
                .where(
                    CarePlanRow.active,
                    or_(CarePlanRow.evaluated_at.is_(None),
                        CarePlanRow.evaluated_at <= due_before),
                )
                .order_by(CarePlanRow.evaluated_at.asc().nulls_first(), CarePlanRow.id)
                .limit(BATCH_SIZE)
            )
            if _skip_locked(db):
                query = query.with_for_update(skip_locked=True)
            claimed = list(db.execute(query).scalars())
            if not claimed:
                break
            for row in claimed:
                try:
                    with db.begin_nested():
                        signals += evaluate_plan(db, row, now)
                except Exception:
                    # One broken plan must not starve the others: it waits for its next period.
                    log.exception("scheduled checks failed for care plan %s", row.id)
                row.evaluated_at = now
                plans += 1
    return plans, signals


def evaluate_plan(db: Session, row: CarePlanRow, now: datetime) -> int:
    """Run the scheduled checks of one plan and fold the signals into alerts."""
    try:
        plan = plan_from_row(row)
    except CarePlanError:
        log.error("care plan %s no longer validates; skipped", row.id)
        return 0
    patient = db.get(Patient, row.patient_id)
    if patient is None:
        return 0
    metrics = set(plan.monitored_metrics) | set(plan.missing_after)
    if plan.uses_cgm:
        metrics.add(Metric.GLUCOSE)
    readings = readings_between(db, patient.id, now - scheduled_window(plan), now, metrics)
    signals = evaluate_scheduled(
        readings, plan, now, patient_ref=str(patient.id),
        monitoring_since=monitoring_since(db, row),
    )
    if signals:
        record_signals(db, IngestPatient.of(patient), signals)
    return len(signals)


# --------------------------------------------------------------------------- auto-clearing


def clear_quiet_alerts(engine: Engine, now: datetime) -> int:
    """Resolve alerts quiet for `QUIET_PERIOD` that the rules let the system close."""
    cleared = 0
    quiet_since = now - QUIET_PERIOD
    last_id = 0
    for _batch in range(MAX_BATCHES):
        with _transaction(engine) as db:
            query = (
                select(AlertRow)
                .where(
                    AlertRow.status != AlertStatus.RESOLVED,
                    AlertRow.last_signal_at <= quiet_since,
                    AlertRow.id > last_id,
                )
                .order_by(AlertRow.id)
                .limit(BATCH_SIZE)
            )
            if _skip_locked(db):
                query = query.with_for_update(skip_locked=True)
            rows = list(db.execute(query).scalars())
            if not rows:
                break
            last_id = rows[-1].id
            for row in rows:
                alert = alert_from_row(row)
                if not can_auto_clear(alert, now, QUIET_PERIOD):
                    continue
                store_alert(row, auto_clear(alert, now, QUIET_PERIOD))
                record(db, SYSTEM_ACTOR, AuditEvent(
                    "update", "monitoring_alert", str(row.id), row.patient_id,
                    row.institution_id, detail={"step": "auto_clear", "kind": row.kind},
                ))
                publish_after_commit(db, triage_channel(row.institution_id), {
                    "type": "monitoring.alert_step", "alert_id": row.id,
                    "patient_id": row.patient_id, "status": row.status, "step": "auto_clear",
                })
                cleared += 1
    return cleared


# ------------------------------------------------------------------------------ escalation


def on_call_recipients(db: Session, row: AlertRow, escalation: Escalation) -> list[User]:
    """Who is told: the institution's on-call clinician, else the clinician who set the
    patient's care plan, else every clinician of the institution (someone must hear it)."""
    institution_id = row.institution_id

    def clinician(user_id: int | None) -> User | None:
        if user_id is None or not is_clinician_of(db, user_id, institution_id):
            return None
        user = db.get(User, user_id)
        return user if user is not None and user.active else None

    chosen = clinician(escalation.on_call_user_id)
    if chosen is not None:
        return [chosen]
    plan_author = db.execute(
        select(CarePlanRow.created_by).where(
            CarePlanRow.patient_id == row.patient_id, CarePlanRow.active
        )
    ).scalar_one_or_none()
    if plan_author and plan_author.startswith("user:") and plan_author[5:].isdigit():
        chosen = clinician(int(plan_author[5:]))
        if chosen is not None:
            return [chosen]
    return list(db.execute(
        select(User).join(Membership, Membership.user_id == User.id).where(
            Membership.institution_id == institution_id,
            Membership.role == Role.CLINICIAN.value,
            User.active,
        ).order_by(User.id)
    ).scalars())


def escalate_overdue_alerts(engine: Engine, now: datetime) -> int:
    """Escalate critical alerts nobody acknowledged within their institution's delay."""
    escalated = 0
    last_id = 0
    policies: dict[int, Escalation] = {}
    for _batch in range(MAX_BATCHES):
        with _transaction(engine) as db:
            query = (
                select(AlertRow)
                .where(
                    AlertRow.status == AlertStatus.OPEN,
                    AlertRow.severity == Severity.CRITICAL.value,
                    AlertRow.unacknowledged_since.is_not(None),
                    # Escalated once per time it went unacknowledged: a worse signal that
                    # reopened an acknowledged alert escalates again.
                    or_(AlertRow.escalated_at.is_(None),
                        AlertRow.escalated_at < AlertRow.unacknowledged_since),
                    AlertRow.id > last_id,
                )
                .order_by(AlertRow.id)
                .limit(BATCH_SIZE)
            )
            if _skip_locked(db):
                query = query.with_for_update(skip_locked=True)
            rows = list(db.execute(query).scalars())
            if not rows:
                break
            last_id = rows[-1].id
            for row in rows:
                policy = policies.get(row.institution_id)
                if policy is None:
                    policy = policies[row.institution_id] = escalation_for(db, row.institution_id)
                if needs_escalation(alert_from_row(row), now, policy.escalate_after):
                    escalate(db, row, policy, now)
                    escalated += 1
    return escalated


def escalate(db: Session, row: AlertRow, policy: Escalation, now: datetime) -> None:
    """Mark `row` escalated, queue the notifications and tell open triage pages."""
    patient = db.get(Patient, row.patient_id)
    mrn = patient.mrn if patient is not None else str(row.patient_id)
    minutes = int((now - (row.unacknowledged_since or row.opened_at)).total_seconds() // 60)
    link = f"{get_settings().public_base_url}/monitoring/patients/{row.patient_id}"
    recipients = on_call_recipients(db, row, policy)
    # One message per recipient and per time the alert went unacknowledged, even if two
    # workers raced to this point: the outbox refuses a second message with the same key.
    episode = (row.unacknowledged_since or row.opened_at).isoformat()
    for user in recipients:
        language = user.language
        queue_email(
            db,
            OutgoingEmail(
                to=user.email,
                subject=translate(language, _ESCALATION_SUBJECT, minutes=minutes),
                text=translate(language, _ESCALATION_TEXT, kind=alert_kind_label(
                    language, row.kind), mrn=mrn, minutes=minutes, link=link),
                language=language,
            ),
            dedupe_key=f"monitoring.escalation:{row.id}:{episode}:user:{user.id}",
        )
    if policy.on_call_phone:
        # The phone belongs to the on-call duty; its holder's language when there is one.
        sms_language = recipients[0].language if len(recipients) == 1 else "ko"
        queue_sms(
            db,
            OutgoingSms(policy.on_call_phone, translate(
                sms_language, _ESCALATION_SMS, mrn=mrn, minutes=minutes, link=link)),
            dedupe_key=f"monitoring.escalation:{row.id}:{episode}:sms",
        )
    row.escalated_at = now
    row.escalated_to = ", ".join(user.display_name for user in recipients)[:200] or None
    record(db, SYSTEM_ACTOR, AuditEvent(
        "update", "monitoring_alert", str(row.id), row.patient_id, row.institution_id,
        detail={"step": "escalate", "recipients": [user.id for user in recipients],
                "sms": bool(policy.on_call_phone), "after_minutes": minutes},
    ))
    publish_after_commit(db, triage_channel(row.institution_id), {
        "type": "monitoring.escalated", "alert_id": row.id, "patient_id": row.patient_id,
        "status": row.status,
    })
