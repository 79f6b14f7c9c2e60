"""Scheduled monitoring jobs: missing data, trends and CGM reports become alerts (one per
episode), quiet alerts clear where allowed, and an unacknowledged critical alert escalates to
the on-call clinician through the outbox. Each job is safe to run twice and from two workers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.core.database import session_factory
from jaejin.core.events import OutboxMessage
from jaejin.monitoring import jobs
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.jobs import run_jobs
from jaejin.monitoring.readings import Metric
from jaejin.monitoring.store import AlertRow, CarePlanRow, EscalationPolicyRow
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    add_plan,
    alerts_of,
    blood_pressure,
    cgm,
    cheap_password_hashing,
    now_utc,
    raise_alert,
    reading,
    store_readings,
)
from tests.support import make_patient


def outbox(engine, topic: str | None = None) -> list[OutboxMessage]:
    with session_factory(engine)() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if topic is not None:
            query = query.where(OutboxMessage.topic == topic)
        return list(session.execute(query).scalars())


def daily_blood_pressure(patient, now, first_day: int, last_day: int, systolic=132, diastolic=82):
    """One morning measurement a day, `first_day` to `last_day` days ago."""
    return [blood_pressure(patient, systolic + day % 3, diastolic, now - timedelta(days=day))
            for day in range(first_day, last_day - 1, -1)]


def clinician_ref(actors, key: str = "a") -> str:
    return f"user:{actors.person(key, Role.CLINICIAN).user.id}"


# --------------------------------------------------------------------------- scheduled checks


def test_three_days_without_blood_pressure_raise_a_missing_data_alert(actors, db, engine):
    patient = actors.patients["a"]
    now = now_utc()
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=20))
    store_readings(db, patient, daily_blood_pressure(patient, now, 15, 4))
    report = run_jobs(engine, now)
    assert report.plans_evaluated == 1
    rows = alerts_of(engine, patient)
    assert [(row.kind, row.metric, row.severity) for row in rows] == [
        ("MISSING_DATA", "systolic", "moderate")]
    assert "No Systolic blood pressure reading for" in rows[0].message.format(
        metric="Systolic blood pressure", hours="x", limit_hours="72")


def test_a_patient_measuring_as_agreed_raises_nothing(actors, db, engine):
    patient = actors.patients["a"]
    now = now_utc()
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=40))
    store_readings(db, patient, daily_blood_pressure(patient, now, 35, 0))
    run_jobs(engine, now)
    assert alerts_of(engine, patient) == []


def test_a_rising_week_of_blood_pressure_raises_a_trend_alert(actors, db, engine):
    patient = actors.patients["a"]
    now = now_utc()
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=40))
    store_readings(db, patient, daily_blood_pressure(patient, now, 35, 8)
                   + daily_blood_pressure(patient, now, 7, 0, systolic=152, diastolic=96))
    run_jobs(engine, now)
    rows = alerts_of(engine, patient)
    assert [(row.kind, row.severity) for row in rows] == [("BP_ABOVE_TARGET", "moderate")]
    assert rows[0].params["systolic"] == "153"


def test_fourteen_days_of_cgm_with_lows_raise_the_consensus_report(actors, db, engine):
    patient = actors.patients["a"]
    now = now_utc().replace(second=0)
    add_plan(db, patient, PlanTemplate.TYPE1_DIABETES_CGM, created_at=now - timedelta(days=20))
    values = []
    for step in range(14 * 288):
        at = now - timedelta(minutes=5 * (14 * 288 - step))
        # Every fourth hour runs low: about 8 % of the time below 70.
        values.append([cgm(patient, 62.0 if step % 48 < 4 else 140.0 + step % 30, at)])
    store_readings(db, patient, values)
    run_jobs(engine, now)
    # The last day's lows were already raised on ingest; the 14-day report is its own item.
    [report] = [row for row in alerts_of(engine, patient) if row.kind == "CGM_OUT_OF_TARGET"]
    assert report.severity == "high"
    assert "below_70" in report.params["missed"]


def test_running_twice_changes_nothing_and_a_later_run_joins_the_same_episode(actors, db, engine):
    patient = actors.patients["a"]
    now = now_utc()
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=20))
    store_readings(db, patient, daily_blood_pressure(patient, now, 15, 4))
    first = run_jobs(engine, now)
    second = run_jobs(engine, now)
    assert (first.plans_evaluated, second.plans_evaluated) == (1, 0)
    assert second.signals == 0
    [alert] = alerts_of(engine, patient)
    assert alert.signal_count == 1
    # The next period finds the data still missing: the same alert grows, none is added.
    run_jobs(engine, now + jobs.EVALUATE_EVERY)
    [again] = alerts_of(engine, patient)
    assert again.id == alert.id
    assert again.signal_count == 2


def test_two_workers_never_evaluate_one_plan_twice(actors, db, engine):
    now = now_utc()
    patients = [actors.patients["a"]] + [
        make_patient(db, actors.a, f"MRN-A-{index}") for index in range(2, 7)]
    db.commit()
    for patient in patients:
        add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=20))
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        barrier.wait()
        counts.append(jobs.evaluate_due_plans(engine, now)[0])

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts) == len(patients)
    for patient in patients:
        assert len(alerts_of(engine, patient)) == 1


def test_the_worker_entry_point_paces_itself(actors, db, engine, monkeypatch):
    monkeypatch.setattr(jobs, "_last_run", {})
    patient = actors.patients["a"]
    now = now_utc()
    jobs.run_scheduled(engine)
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=20))
    jobs.run_scheduled(engine)
    with session_factory(engine)() as session:
        plan = session.execute(select(CarePlanRow)).scalar_one()
    assert plan.evaluated_at is None
    monkeypatch.setattr(jobs, "_last_run", {})
    jobs.run_scheduled(engine)
    with session_factory(engine)() as session:
        assert session.execute(select(CarePlanRow)).scalar_one().evaluated_at is not None


def test_a_plan_that_no_longer_validates_is_skipped_not_fatal(actors, db, engine):
    broken, fine = actors.patients["a"], make_patient(db, actors.a, "MRN-A-2")
    db.commit()
    now = now_utc()
    add_plan(db, broken, PlanTemplate.HYPERTENSION, {"bp_crisis_systolic": 100},
             created_at=now - timedelta(days=20))
    add_plan(db, fine, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=20))
    report = run_jobs(engine, now)
    assert report.plans_evaluated == 2
    assert alerts_of(engine, broken) == []
    assert [row.kind for row in alerts_of(engine, fine)] == ["MISSING_DATA"]


# ------------------------------------------------------------------------------ auto-clear


def test_a_quiet_moderate_alert_clears_but_an_unacknowledged_critical_one_stays(actors, db,
                                                                             engine):
    patient = actors.patients["a"]
    now = now_utc()
    fever = raise_alert(db, patient, [reading(patient, Metric.HEART_RATE, 142, now)])
    crisis = raise_alert(db, patient, blood_pressure(patient, 188, 100, now))
    assert run_jobs(engine, now + timedelta(hours=47)).alerts_cleared == 0
    report = run_jobs(engine, now + jobs.QUIET_PERIOD + timedelta(minutes=5))
    assert report.alerts_cleared == 1
    by_id = {row.id: row for row in alerts_of(engine, patient)}
    assert by_id[fever.id].status == "resolved"
    assert by_id[fever.id].resolved_by is None
    assert by_id[crisis.id].status == "open"


# ------------------------------------------------------------------------------ escalation


def test_an_unacknowledged_critical_alert_escalates_to_the_on_call_clinician(actors, db, engine):
    patient = actors.patients["a"]
    on_call = actors.person("a", Role.CLINICIAN).user
    db.add(EscalationPolicyRow(institution_id=actors.a.id, escalate_after_minutes=10,
                               on_call_user_id=on_call.id, on_call_phone="+821055501234",
                               updated_by="user:1"))
    db.commit()
    now = now_utc()
    row = raise_alert(db, patient, blood_pressure(patient, 190, 110, now))
    opened = row.unacknowledged_since
    assert run_jobs(engine, opened + timedelta(minutes=9)).alerts_escalated == 0
    assert outbox(engine) == []
    assert run_jobs(engine, opened + timedelta(minutes=10)).alerts_escalated == 1
    [email] = outbox(engine, "notify.email")
    assert email.payload["to"] == on_call.email
    assert "MRN-A-1" in email.payload["text"]
    assert f"/monitoring/patients/{patient.id}" in email.payload["text"]
    assert "190" not in email.payload["text"]
    [sms] = outbox(engine, "notify.sms")
    assert sms.payload["to"] == "+821055501234"
    [escalated] = alerts_of(engine, patient)
    assert escalated.escalated_at is not None
    assert escalated.escalated_to == on_call.display_name
    # Running again, even much later, sends nothing more.
    assert run_jobs(engine, opened + timedelta(hours=1)).alerts_escalated == 0
    assert len(outbox(engine)) == 2


def test_without_an_on_call_clinician_the_care_plan_author_is_told(actors, db, engine):
    patient = actors.patients["a"]
    now = now_utc()
    author = actors.person("a", Role.CLINICIAN).user
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_by=clinician_ref(actors),
             created_at=now - timedelta(days=1))
    row = raise_alert(db, patient, blood_pressure(patient, 185, 100, now))
    run_jobs(engine, row.unacknowledged_since + timedelta(minutes=15))
    assert [message.payload["to"] for message in outbox(engine, "notify.email")] == [author.email]
    assert outbox(engine, "notify.sms") == []


def test_an_acknowledged_critical_alert_does_not_escalate(actors, db, engine):
    patient = actors.patients["a"]
    now = now_utc()
    row = raise_alert(db, patient, blood_pressure(patient, 185, 100, now))
    with session_factory(engine)() as session:
        stored = session.get(AlertRow, row.id)
        assert stored is not None
        stored.status, stored.unacknowledged_since = "acknowledged", None
        stored.acknowledged_at, stored.acknowledged_by = now, clinician_ref(actors)
        session.commit()
    assert run_jobs(engine, now + timedelta(hours=1)).alerts_escalated == 0
    assert outbox(engine) == []


def test_escalation_stays_inside_the_institution(actors, db, engine):
    patient = actors.patients["b"]
    now = now_utc()
    row = raise_alert(db, patient, blood_pressure(patient, 185, 100, now))
    run_jobs(engine, row.unacknowledged_since + timedelta(minutes=20))
    recipients = {message.payload["to"] for message in outbox(engine, "notify.email")}
    assert recipients == {actors.person("b", Role.CLINICIAN).email}


@pytest.mark.parametrize("minutes", [5, 30])
def test_the_institutions_delay_decides_when_to_escalate(actors, db, engine, minutes):
    db.add(EscalationPolicyRow(institution_id=actors.a.id, escalate_after_minutes=minutes,
                               updated_by="user:1"))
    db.commit()
    patient = actors.patients["a"]
    row = raise_alert(db, patient, blood_pressure(patient, 185, 100, now_utc()))
    before = row.unacknowledged_since + timedelta(minutes=minutes - 1)
    assert run_jobs(engine, before).alerts_escalated == 0
    assert run_jobs(engine, before + timedelta(minutes=1)).alerts_escalated == 1
