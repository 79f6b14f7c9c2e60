"""The bulk ingest path against the real database: a large batch that clashes with stored readings
still answers item by item; alert episodes fold as the care team expects; and the number of SQL
statements per request does not grow with the batch (both databases)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, func, select, update

from jaejin.core.database import session_factory
from jaejin.monitoring.ingest import IngestPatient, ItemStatus, ingest_items
from jaejin.monitoring.parsers import parse_batch
from jaejin.monitoring.store import AlertRow, AlertStatus, ReadingRow
from tests.core.helpers import fast_password_hashing
from tests.support import bearer, client_token, make_institution, make_patient

NOW = datetime.now(UTC).replace(microsecond=0)


def _patient(db, mrn: str = "MRN-BULK") -> IngestPatient:
    institution = make_institution(db, "BULK")
    patient = make_patient(db, institution, mrn, preferred_language="en")
    db.commit()
    return IngestPatient.of(patient)


def heart_rate(key: str, value: float, minutes_ago: float) -> dict[str, Any]:
    return {"idempotency_key": key, "metric": "heart_rate", "value": value, "unit": "bpm",
            "effective_at": (NOW - timedelta(minutes=minutes_ago)).isoformat()}


def bp(key: str, systolic: float, diastolic: float, minutes_ago: float) -> dict[str, Any]:
    return {"idempotency_key": key, "metric": "blood_pressure", "systolic": systolic,
            "diastolic": diastolic, "unit": "mmHg",
            "effective_at": (NOW - timedelta(minutes=minutes_ago)).isoformat()}


def send(engine: Engine, patient: IngestPatient, items: list[dict[str, Any]]):
    with session_factory(engine)() as session:
        parsed = parse_batch({"readings": items}, patient.context(NOW))
        result = ingest_items(session, patient, parsed, "json", received_at=NOW)
        session.commit()
        return result


def stored(engine: Engine) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(ReadingRow)) or 0)


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement sent through `engine` inside the block."""
    sent: list[str] = []

    def count(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


# ------------------------------------------------------------------ large batches, clashing


def test_a_large_batch_clashing_with_stored_readings_answers_item_by_item(db, engine):
    patient = _patient(db)
    first = send(engine, patient, [heart_rate(f"k{n}", 60 + n % 30, n) for n in range(0, 80, 2)]
                 + [bp("panel", 130, 85, 200)])
    assert first.readings_created == 42
    # A retry of half of it, an exact copy under a new key, a reused key with other values,
    # and new readings, in one batch large enough to be inserted optimistically first.
    items = ([heart_rate(f"k{n}", 60 + n % 30, n) for n in range(0, 80, 4)]
             + [{**heart_rate("k2", 62, 2), "idempotency_key": "copy"}]
             + [bp("panel", 131, 86, 200)]
             + [heart_rate(f"new{n}", 70, 300 + n) for n in range(30)])
    again = send(engine, patient, items)
    statuses = [item.status for item in again.items]
    assert statuses == [ItemStatus.DUPLICATE] * 22 + [ItemStatus.CREATED] * 30
    first_ids = {item.key: item.reading_ids for item in first.items}
    assert [item.reading_ids for item in again.items[:20]] == [
        first_ids[f"k{n}"] for n in range(0, 80, 4)]
    assert again.items[20].reading_ids == first_ids["k2"]
    assert again.items[21].reading_ids == first_ids["panel"]
    assert again.readings_created == 30
    assert stored(engine) == 72


def test_a_large_new_batch_stores_every_reading_with_its_own_id(db, engine):
    patient = _patient(db)
    result = send(engine, patient, [bp(f"p{n}", 120 + n % 20, 80, n) for n in range(40)])
    ids = [reading_id for item in result.items for reading_id in item.reading_ids]
    assert len(ids) == len(set(ids)) == 80
    with session_factory(engine)() as session:
        rows = dict(session.execute(select(ReadingRow.id, ReadingRow.value)).all())
    for item in result.items:
        assert [rows[one] for one in item.reading_ids] == [
            reading.value for reading in item.readings]


# ------------------------------------------------------------------------- alert episodes


def _alert(engine: Engine) -> AlertRow:
    with session_factory(engine)() as session:
        return session.execute(select(AlertRow)).scalar_one()


def test_a_worse_signal_reopens_an_acknowledged_episode_and_a_like_one_does_not(db, engine):
    patient = _patient(db)
    send(engine, patient, [heart_rate("fast", 135, 30)])  # high heart rate: one episode
    opened = _alert(engine)
    assert (opened.status, opened.signal_count) == (AlertStatus.OPEN, 1)
    with session_factory(engine)() as session:
        session.execute(update(AlertRow).values(
            status=AlertStatus.ACKNOWLEDGED, acknowledged_by="user:1", acknowledged_at=NOW,
            unacknowledged_since=None))
        session.commit()
    send(engine, patient, [heart_rate("faster", 140, 20), heart_rate("fast-again", 138, 40)])
    alike = _alert(engine)
    assert (alike.status, alike.signal_count, alike.acknowledged_by) == (
        AlertStatus.ACKNOWLEDGED, 3, "user:1")
    assert alike.last_observed_at == NOW - timedelta(minutes=20)
    with session_factory(engine)() as session:
        session.execute(update(AlertRow).values(severity="moderate"))
        session.commit()
    send(engine, patient, [heart_rate("fastest", 150, 10)])
    reopened = _alert(engine)
    assert (reopened.status, reopened.severity, reopened.signal_count) == (
        AlertStatus.OPEN, "high", 4)
    assert reopened.acknowledged_by is None and reopened.unacknowledged_since == NOW


def test_signals_of_several_episodes_fold_in_one_request(db, engine):
    patient = _patient(db)
    result = send(engine, patient, [
        heart_rate("hr", 150, 5), bp("crisis", 200, 125, 6), heart_rate("hr2", 30, 7),
        {**heart_rate("spo2", 80, 8), "metric": "spo2", "unit": "%"},
    ])
    kinds = sorted(alert.kind for alert in result.alerts)
    assert kinds == sorted({"HEART_RATE_OUT_OF_RANGE", "BP_CRISIS", "SPO2_LOW"})
    assert all(alert.opened for alert in result.alerts)
    with session_factory(engine)() as session:
        counts = dict(session.execute(select(AlertRow.kind, AlertRow.signal_count)).all())
    assert counts["HEART_RATE_OUT_OF_RANGE"] == 2


# -------------------------------------------------------------------------- query budget


def _mixed_batch(size: int, prefix: str, start: int = 10) -> list[dict[str, Any]]:
    """Blood pressure, heart rate, weight and a high heart rate, repeated to `size`, one a
    minute back from `start` minutes ago."""
    items: list[dict[str, Any]] = []
    for n in range(size):
        minutes = start + n
        if n % 4 == 0:
            items.append(bp(f"{prefix}{n}", 125 + n % 10, 80, minutes))
        elif n % 4 == 1:
            items.append(heart_rate(f"{prefix}{n}", 60 + n % 20, minutes))
        elif n % 4 == 2:
            items.append({**heart_rate(f"{prefix}{n}", 70 + n % 5 / 10, minutes),
                          "metric": "body_weight", "unit": "kg"})
        else:
            items.append(heart_rate(f"{prefix}{n}", 150, minutes))
    return items


def test_statements_per_batch_do_not_grow_with_the_batch(db, engine):
    patient = _patient(db)
    counted: dict[int, int] = {}
    for size, prefix, start in ((8, "s", 10), (64, "m", 20), (400, "l", 90)):
        with statements(engine) as sent:
            result = send(engine, patient, _mixed_batch(size, prefix, start))
        assert result.count(ItemStatus.CREATED) == size
        counted[size] = len(sent)
    # From 32 readings PostgreSQL inserts optimistically, inside a savepoint (two statements).
    savepoint = 2 if engine.dialect.name == "postgresql" else 0
    assert counted[8] == counted[64] - savepoint == counted[400] - savepoint, counted
    # Patient and plan are the caller's; here: insert (+ savepoint and release for a large
    # batch), earlier weights, one alert upsert, the missing-data check, commit.
    assert counted[400] <= 8, counted


def test_a_retried_large_batch_costs_a_fixed_number_of_statements(db, engine):
    patient = _patient(db)
    batch = _mixed_batch(120, "r")
    send(engine, patient, batch)
    with statements(engine) as sent:
        again = send(engine, patient, batch)
    assert again.count(ItemStatus.DUPLICATE) == 120
    assert len(sent) <= 8, sent


def test_a_single_reading_post_stays_within_its_statement_budget(client, actors, engine):
    patient = actors.patients["a"]
    with fast_password_hashing():
        headers = bearer(client_token(client, actors.clients["a"]))
    url = f"/api/v1/monitoring/patients/{patient.id}/readings"
    warm = client.post(url, json={"readings": [heart_rate("warm", 64, 3)]}, headers=headers)
    assert warm.status_code == 200, warm.text
    with statements(engine) as normal:
        answer = client.post(url, json={"readings": [heart_rate("one", 65, 2)]}, headers=headers)
    assert answer.status_code == 200 and answer.json()["counts"]["created"] == 1
    with statements(engine) as critical:
        answer = client.post(url, json={"readings": [bp("crisis", 205, 125, 1)]},
                             headers=headers)
    assert [alert["kind"] for alert in answer.json()["alerts"]] == ["BP_CRISIS"]
    # Who is calling, patient and plan, insert, missing-data check, audit entry, commit;
    # a critical reading adds only its alert upsert.
    assert len(normal) <= 10, normal
    assert len(critical) == len(normal) + 1, (normal, critical)


def test_a_large_answer_comes_gzipped_to_callers_that_accept_it(client, actors):
    patient = actors.patients["a"]
    with fast_password_hashing():
        headers = bearer(client_token(client, actors.clients["a"]))
    url = f"/api/v1/monitoring/patients/{patient.id}/readings"
    body = {"readings": _mixed_batch(80, "z")}
    answer = client.post(url, json=body, headers={**headers, "Accept-Encoding": "gzip"})
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.json()["counts"]["created"] == 80  # httpx undoes the gzip, as clients do
    plain = client.post(url, json=body, headers={**headers, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json()["counts"]["duplicate"] == 80
