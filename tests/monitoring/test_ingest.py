"""Storing readings (`monitoring.ingest`) against the real database: duplicates, idempotency keys,
whole items, alerts that need earlier readings, care plans, and concurrent senders."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from jaejin.core.database import session_factory
from jaejin.directory.store import Patient
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.ingest import (
    ACUTE_HORIZON,
    IngestPatient,
    ItemStatus,
    ingest_items,
    stored_key,
)
from jaejin.monitoring.parsers import parse_batch
from jaejin.monitoring.readings import Metric
from jaejin.monitoring.store import (
    UNENROLLED_PLAN,
    AlertRow,
    CarePlanRow,
    ReadingRow,
    active_plan,
    readings_between,
    trend_points,
)
from tests.support import make_institution, make_patient

NOW = datetime.now(UTC).replace(microsecond=0)


def _setup(db) -> IngestPatient:
    institution = make_institution(db, "INGEST")
    patient = make_patient(db, institution, "MRN-INGEST", current_country="JP",
                           preferred_language="en")
    db.commit()
    return IngestPatient.of(patient)


def item(key: str, metric: str, value: float, minutes_ago: float, unit: str, **extra: Any):
    return {"idempotency_key": key, "metric": metric, "value": value, "unit": unit,
            "effective_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(), **extra}


def bp(key: str, systolic: float, diastolic: float, minutes_ago: float):
    return {"idempotency_key": key, "metric": "blood_pressure", "systolic": systolic,
            "diastolic": diastolic, "unit": "mmHg",
            "effective_at": (NOW - timedelta(minutes=minutes_ago)).isoformat()}


def send(engine, patient: IngestPatient, *items: dict[str, Any], received_at=NOW):
    with session_factory(engine)() as session:
        parsed = parse_batch({"readings": list(items)}, patient.context(received_at))
        result = ingest_items(session, patient, parsed, "json", received_at=received_at)
        session.commit()
        return result


def count(engine, model=ReadingRow) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_panel_is_stored_as_two_readings_sharing_one_panel_and_one_key(db, engine):
    patient = _setup(db)
    result = send(engine, patient, bp("p-1", 128, 82, 5))
    [outcome] = result.items
    assert outcome.status is ItemStatus.CREATED and len(outcome.reading_ids) == 2
    with session_factory(engine)() as session:
        rows = list(session.scalars(select(ReadingRow).order_by(ReadingRow.id)))
    assert [row.metric for row in rows] == ["systolic", "diastolic"]
    assert rows[0].panel_id == rows[1].panel_id is not None
    assert [row.idempotency_key for row in rows] == [stored_key("json", "p-1"), None]


def test_the_same_measurement_sent_with_another_offset_is_the_same_reading(db, engine):
    patient = _setup(db)
    moment = NOW - timedelta(hours=1)
    seoul = {"idempotency_key": "a", "metric": "heart_rate", "value": 61, "unit": "bpm",
             "effective_at": moment.astimezone(datetime.now(UTC).astimezone().tzinfo)
             .isoformat()}
    utc = {**seoul, "idempotency_key": "b", "effective_at": moment.isoformat()}
    send(engine, patient, seoul)
    again = send(engine, patient, utc)
    assert again.items[0].status is ItemStatus.DUPLICATE
    assert count(engine) == 1


def test_an_item_repeated_inside_one_batch_is_stored_once(db, engine):
    patient = _setup(db)
    reading = item("k", "spo2", 96, 10, "%")
    result = send(engine, patient, reading, {**reading, "idempotency_key": "other"})
    assert [one.status for one in result.items] == [ItemStatus.CREATED, ItemStatus.DUPLICATE]
    assert result.items[1].reading_ids == result.items[0].reading_ids
    assert count(engine) == 1


def test_a_very_long_key_is_stored_hashed_and_still_recognised(db, engine):
    patient = _setup(db)
    key = "k" * 200
    assert len(stored_key("fhir", "x" * 5000)) < 220
    send(engine, patient, item(key, "heart_rate", 70, 3, "bpm"))
    again = send(engine, patient, item(key, "heart_rate", 71, 3, "bpm"))
    assert again.items[0].status is ItemStatus.DUPLICATE
    assert count(engine) == 1


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=12),
       st.integers(1, 3))
def test_however_items_are_repeated_and_split_each_is_stored_exactly_once(
    db, engine, picks, splits
):
    """Any mix of new items, retried keys and exact duplicates, over several requests."""
    with session_factory(engine)() as session:
        session.execute(ReadingRow.__table__.delete())
        session.commit()
    patient = _cached_patient(db)
    catalogue = [bp(f"h-{n}", 120 + n, 80, 30 + n) if n % 2 else
                 item(f"h-{n}", "heart_rate", 60 + n, 30 + n, "bpm") for n in range(6)]
    chosen = [catalogue[n] if same_key else {**catalogue[n], "idempotency_key": f"x-{i}"}
              for i, (n, same_key) in enumerate(picks)]
    size = -(-len(chosen) // splits)
    statuses = []
    for start in range(0, len(chosen), size):
        statuses += [one.status for one in send(engine, patient, *chosen[start:start + size])
                     .items]
    distinct = {n for n, _ in picks}
    expected = sum(2 if n % 2 else 1 for n in distinct)
    assert count(engine) == expected
    assert statuses.count(ItemStatus.CREATED) == len(distinct)


_PATIENTS: dict[int, IngestPatient] = {}


def _cached_patient(db) -> IngestPatient:
    """One patient for every example of a property (the database is emptied per test)."""
    found = db.execute(select(Patient).where(Patient.mrn == "MRN-INGEST")).scalar_one_or_none()
    db.commit()
    if found is None:
        return _setup(db)
    return IngestPatient.of(found)


def test_three_low_cgm_readings_sent_one_by_one_raise_a_low_from_the_stored_ones(db, engine):
    patient = _setup(db)
    for minutes, key in ((10, "c1"), (5, "c2")):
        result = send(engine, patient, item(key, "cgm_glucose", 65, minutes, "mg/dL"))
        assert result.alerts == []
    third = send(engine, patient, item("c3", "cgm_glucose", 64, 0, "mg/dL"))
    assert [alert.kind for alert in third.alerts] == ["GLUCOSE_LOW"]
    assert third.emergency is None


def test_a_weight_gain_is_measured_against_the_weight_stored_two_days_ago(db, engine):
    patient = _setup(db)
    with session_factory(engine)() as session:
        session.add(CarePlanRow(patient_id=patient.patient_id,
                                institution_id=patient.institution_id,
                                template=PlanTemplate.HEART_FAILURE.value, overrides={},
                                created_by="user:1"))
        session.commit()
    send(engine, patient, item("w1", "body_weight", 70.0, 60 * 40, "kg"))
    result = send(engine, patient, item("w2", "body_weight", 72.6, 5, "kg"))
    assert [alert.kind for alert in result.alerts] == ["WEIGHT_GAIN"]


def test_a_critical_reading_names_the_emergency_number_where_the_patient_is_now(db, engine):
    patient = _setup(db)
    result = send(engine, patient, item("low", "glucose", 40, 1, "mg/dL"))
    assert result.emergency is not None
    assert (result.emergency.country, result.emergency.medical) == ("JP", "119")
    assert "119" in result.guidance[0].text


def test_the_guidance_names_no_number_when_the_country_has_none_on_file(db, engine):
    institution = make_institution(db, "NOWHERE")
    patient = IngestPatient.of(make_patient(db, institution, "MRN-X", current_country="XX",
                                             preferred_language="en"))
    db.commit()
    result = send(engine, patient, item("low", "glucose", 40, 1, "mg/dL"))
    assert result.emergency is None
    assert "local emergency number" in result.guidance[0].text


def test_readings_older_than_the_acute_horizon_are_stored_without_alerting(db, engine):
    patient = _setup(db)
    old = ACUTE_HORIZON.total_seconds() / 60 + 30
    result = send(engine, patient, bp("old", 200, 130, old))
    assert result.readings_created == 2 and result.alerts == []


def test_a_care_plan_override_changes_what_is_critical(db, engine):
    patient = _setup(db)
    unenrolled = active_plan(db, patient.patient_id)
    db.rollback()
    assert unenrolled == UNENROLLED_PLAN
    with session_factory(engine)() as session:
        session.add(CarePlanRow(patient_id=patient.patient_id,
                                institution_id=patient.institution_id,
                                template="hypertension",
                                overrides={"bp_stage2_systolic": 150,
                                           "bp_crisis_systolic": 170}, created_by="user:1"))
        session.commit()
    plan = active_plan(db, patient.patient_id)
    db.rollback()
    assert plan.template is PlanTemplate.HYPERTENSION
    assert plan.thresholds.bp_crisis_systolic == 170
    result = send(engine, patient, bp("b", 172, 95, 2))
    assert [alert.kind for alert in result.alerts] == ["BP_CRISIS"]


def test_signals_of_one_request_fold_into_one_alert_per_episode(db, engine):
    patient = _setup(db)
    result = send(engine, patient, *(item(f"g{n}", "glucose", 50 - n, 30 - n, "mg/dL")
                                     for n in range(4)))
    assert len(result.alerts) == 1 and result.alerts[0].signal_count == 4
    assert count(engine, AlertRow) == 1


def test_stored_readings_read_back_with_their_offset_and_as_trend_points(db, engine):
    patient = _setup(db)
    sent = item("t", "heart_rate", 66, 90, "bpm")
    sent["effective_at"] = (NOW - timedelta(minutes=90)).astimezone(
        datetime.now(UTC).astimezone().tzinfo).isoformat()
    send(engine, patient, sent, item("u", "spo2", 97, 80, "%"))
    with session_factory(engine)() as session:
        readings = readings_between(session, patient.patient_id, NOW - timedelta(days=1),
                                    metrics=[Metric.HEART_RATE])
        points = trend_points(session, patient.patient_id, Metric.SPO2,
                              NOW - timedelta(days=1), NOW)
    assert [reading.value for reading in readings] == [66.0]
    assert readings[0].effective_at.isoformat() == sent["effective_at"]
    assert [value for _, value in points] == [97.0]


def test_two_senders_racing_with_the_same_key_store_the_reading_once(db, engine):
    patient = _setup(db)
    barrier = threading.Barrier(4)
    statuses: list[ItemStatus] = []
    lock = threading.Lock()

    def sender(value: int) -> None:
        barrier.wait()
        result = send(engine, patient, bp("race", 130 + value, 85, 1))
        with lock:
            statuses.append(result.items[0].status)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [ItemStatus.CREATED] + [ItemStatus.DUPLICATE] * 3
    assert count(engine) == 2
