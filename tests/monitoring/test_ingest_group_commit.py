"""The readings route's group commit: small batches arriving together are written in one
transaction, each still answered as if written alone, and only once its transaction committed.

The batches are handed to `GroupCommit.submit` together in one event loop, as the route does
when requests arrive while a group is being written."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.core.authn import Principal
from jaejin.core.database import session_factory
from jaejin.core.errors import Problem
from jaejin.directory.store import Patient
from jaejin.monitoring import group_commit
from jaejin.monitoring.alerts import AlertKind
from jaejin.monitoring.api import GROUP_COMMIT_MAX_BYTES, SmallBatch, write_small_batches
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.group_commit import GroupCommit, Refused
from jaejin.monitoring.jobs import run_jobs
from jaejin.monitoring.parsers import ImportContext, UnreadableInputError, parse_batch
from jaejin.monitoring.store import ReadingRow
from tests.monitoring.test_workflow_builders import add_plan, alerts_of, now_utc
from tests.support import bearer, client_token, make_patient


def gateway_of(institution_id: int) -> Principal:
    """A system client of the institution allowed to write readings."""
    return Principal("client", 7001, "gateway", "en", "Asia/Seoul",
                     frozenset({(institution_id, Role.SYSTEM_CLIENT)}),
                     frozenset({"monitoring.write"}))


def heart_rate(key: str, value: float = 72, minutes_ago: float = 5) -> dict[str, Any]:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"idempotency_key": key, "metric": "heart_rate", "value": value, "unit": "bpm",
            "effective_at": moment.isoformat()}


def batch(patient: Patient | int, principal: Principal, body: Any) -> SmallBatch:
    """A batch as the route hands it over: parsed, or with the problem of its body."""
    patient_id = patient if isinstance(patient, int) else patient.id
    received_at = datetime.now(UTC)
    try:
        items = parse_batch(body, ImportContext(patient_ref=str(patient_id),
                                                received_at=received_at))
    except UnreadableInputError as error:
        return SmallBatch(patient_id, principal, [],
                          Problem(400, error.code, error.template), received_at)
    return SmallBatch(patient_id, principal, items, None, received_at)


def write_together(committer: GroupCommit[SmallBatch, bytes],
                   batches: Sequence[SmallBatch]) -> list[Any]:
    """Every batch submitted in the same turn of the loop; answers (parsed) or exceptions."""

    async def submit_all() -> list[Any]:
        return await asyncio.gather(*(committer.submit(one) for one in batches),
                                    return_exceptions=True)

    return [orjson.loads(one) if isinstance(one, bytes) else one
            for one in asyncio.run(submit_all())]


@contextmanager
def statements_seen(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


@contextmanager
def commits_counted(engine: Engine) -> Iterator[list[int]]:
    commits = [0]

    def note(_connection: Any) -> None:
        commits[0] += 1

    event.listen(engine, "commit", note)
    try:
        yield commits
    finally:
        event.remove(engine, "commit", note)


def stored_keys(db: Session) -> list[str]:
    db.rollback()
    return sorted(db.scalars(select(ReadingRow.idempotency_key)
                             .where(ReadingRow.idempotency_key.is_not(None))))


def audit_entries(db: Session) -> int:
    db.rollback()
    return int(db.scalar(select(func.count()).select_from(AuditEntry)
                         .where(AuditEntry.resource_type == "monitoring_reading")) or 0)


@pytest.fixture
def patients(actors, db: Session) -> list[Patient]:
    """Six patients of institution A."""
    more = [make_patient(db, actors.a, f"MRN-GROUP-{index}") for index in range(5)]
    db.commit()
    return [actors.patients["a"], *more]


def test_batches_for_several_patients_share_one_transaction_and_a_fixed_number_of_statements(
    engine, actors, db, patients
):
    gateway = gateway_of(actors.a.id)
    committer = GroupCommit(engine, write_small_batches)
    batches = [batch(patient, gateway, {"readings": [heart_rate(f"hr-{patient.id}")]})
               for patient in patients]
    with statements_seen(engine) as statements, commits_counted(engine) as commits:
        answers = write_together(committer, batches)

    assert [answer["counts"]["created"] for answer in answers] == [1] * len(patients)
    assert [answer["patient_id"] for answer in answers] == [one.id for one in patients]
    assert (committer.groups_written, committer.jobs_written) == (1, len(patients))
    assert commits[0] == 1
    # The patients, their plans and whether they have an open missing-data alert read
    # together, the readings inserted, the audit entries (one per request) inserted: three
    # statements whatever the number of requests in the group (SQLite's BEGIN IMMEDIATE is a
    # statement of its own).
    own = [one for one in statements if not one.startswith("BEGIN")]
    assert len(own) == 3, own
    assert sum("audit_log" in one for one in own) == 1, own
    assert stored_keys(db) == sorted(f"json:hr-{patient.id}" for patient in patients)
    # Each request's own entry: its patient, its institution, its reading.
    db.rollback()
    entries = db.scalars(select(AuditEntry).where(
        AuditEntry.resource_type == "monitoring_reading").order_by(AuditEntry.id)).all()
    assert [(entry.patient_id, entry.institution_id, entry.actor_type, entry.action)
            for entry in entries] == [(patient.id, patient.institution_id, "client", "create")
                                      for patient in patients]
    for entry, answer in zip(entries, answers, strict=True):
        reading_id = answer["items"][0]["reading_ids"][0]
        assert entry.detail == {"channel": "json", **answer["counts"],
                                "reading_ids": {"first": reading_id, "last": reading_id}}


def test_a_refused_request_takes_nothing_from_the_others_of_its_group(engine, actors, db):
    gateway = gateway_of(actors.a.id)
    committer = GroupCommit(engine, write_small_batches)
    answers = write_together(committer, [
        batch(actors.patients["a"], gateway, {"readings": [heart_rate("kept")]}),
        batch(actors.patients["b"], gateway, {"readings": [heart_rate("elsewhere")]}),
        batch(actors.patients["a"], gateway, {"not": "a batch"}),
        batch(actors.patients["a"], gateway, {"readings": [heart_rate("impossible", 900)]}),
    ])

    assert answers[0]["counts"]["created"] == 1
    assert isinstance(answers[1], Problem) and answers[1].status == 404
    assert isinstance(answers[2], Problem) and answers[2].status == 400
    assert answers[3]["items"][0]["status"] == "refused"
    assert committer.groups_written == 1
    assert stored_keys(db) == ["json:kept"]
    # Refused before anything was written: no audit entry; the refused item's request is
    # audited, as every request that reached the readings.
    assert audit_entries(db) == 2


def test_when_the_shared_transaction_fails_every_request_is_written_again_alone(
    engine, actors, db, patients
):
    gateway = gateway_of(actors.a.id)
    poisoned = patients[1].id

    def write_or_fail(session: Session, batches: Sequence[SmallBatch]) -> list[bytes | Refused]:
        outcomes = write_small_batches(session, batches)
        if any(one.patient_id == poisoned for one in batches):
            session.execute(text("SELECT * FROM no_such_table"))  # a real database error
        return outcomes

    committer = GroupCommit(engine, write_or_fail)
    answers = write_together(committer, [
        batch(patient, gateway, {"readings": [heart_rate(f"alone-{patient.id}")]})
        for patient in patients[:3]
    ])

    assert answers[0]["counts"]["created"] == 1
    assert isinstance(answers[1], DBAPIError)
    assert answers[2]["counts"]["created"] == 1
    assert (committer.groups_written, committer.jobs_written) == (1, 3)
    assert stored_keys(db) == sorted([f"json:alone-{patients[0].id}",
                                      f"json:alone-{patients[2].id}"])
    assert audit_entries(db) == 2


def test_no_request_is_answered_when_its_transaction_does_not_commit(engine, actors, db):
    gateway = gateway_of(actors.a.id)
    committer = GroupCommit(engine, write_small_batches)

    def refuse_commit(_session: Session) -> None:
        raise RuntimeError("the disk is full")

    event.listen(Session, "before_commit", refuse_commit)
    try:
        answers = write_together(committer, [
            batch(actors.patients["a"], gateway, {"readings": [heart_rate("lost-1")]}),
            batch(actors.patients["a"], gateway, {"readings": [heart_rate("lost-2")]}),
        ])
    finally:
        event.remove(Session, "before_commit", refuse_commit)

    assert all(isinstance(answer, RuntimeError) for answer in answers), answers
    assert stored_keys(db) == []
    assert audit_entries(db) == 0


def test_the_same_reading_sent_twice_in_one_group_is_stored_once(engine, actors, db):
    gateway = gateway_of(actors.a.id)
    committer = GroupCommit(engine, write_small_batches)
    sent = {"readings": [heart_rate("twice")]}
    same_values_new_key = {"readings": [{**sent["readings"][0], "idempotency_key": "other"}]}
    answers = write_together(committer, [
        batch(actors.patients["a"], gateway, sent),
        batch(actors.patients["a"], gateway, sent),
        batch(actors.patients["a"], gateway, same_values_new_key),
    ])

    assert committer.groups_written == 1
    first, retry, copy = (answer["items"][0] for answer in answers)
    assert first["status"] == "created"
    assert retry["status"] == copy["status"] == "duplicate"
    assert retry["reading_ids"] == copy["reading_ids"] == first["reading_ids"]
    assert stored_keys(db) == ["json:twice"]


def test_a_critical_reading_in_a_group_raises_its_alert_with_guidance(engine, actors, db,
                                                                      patients):
    gateway = gateway_of(actors.a.id)
    committer = GroupCommit(engine, write_small_batches)
    crisis = {"readings": [{"idempotency_key": "crisis", "metric": "blood_pressure",
                            "systolic": 190, "diastolic": 125, "unit": "mmHg",
                            "effective_at": datetime.now(UTC).isoformat()}]}
    answers = write_together(committer, [
        batch(patients[0], gateway, {"readings": [heart_rate("calm")]}),
        batch(patients[1], gateway, crisis),
    ])

    assert answers[0]["alerts"] == [] and answers[0]["emergency"] is None
    assert answers[1]["alerts"][0]["severity"] == "critical"
    assert answers[1]["guidance"] and answers[1]["emergency"]["medical"] == "119"


# ---------------------------------------------------------------------------- over HTTP


def _committer_of(app: Any) -> GroupCommit[SmallBatch, bytes]:
    committers = getattr(app.state, group_commit.APP_STATE_KEY)
    return next(iter(committers.values()))


def test_the_route_writes_small_bodies_by_the_group_commit_and_large_ones_alone(
    app, client, actors, db
):
    headers = bearer(client_token(client, actors.clients["a"]))
    url = f"/api/v1/monitoring/patients/{actors.patients['a'].id}/readings"
    small = client.post(url, json={"readings": [heart_rate("small")]}, headers=headers)
    committer = _committer_of(app)
    written = committer.jobs_written
    large_body = {"readings": [heart_rate(f"large-{index}", minutes_ago=10 + index)
                               for index in range(80)]}
    assert len(orjson.dumps(large_body)) > GROUP_COMMIT_MAX_BYTES
    large = client.post(url, json=large_body, headers=headers)

    assert small.status_code == large.status_code == 200, (small.text, large.text)
    assert small.json()["counts"]["created"] == 1
    assert large.json()["counts"]["created"] == 80
    assert committer.jobs_written == written  # the large batch went in a transaction alone
    assert len(stored_keys(db)) == 81
    assert audit_entries(db) == 2


def test_concurrent_requests_over_http_are_each_answered_with_their_own_readings(
    client, actors, db, patients
):
    """Requests arriving together (grouped or not, as they happen to arrive) each get the answer
    for their own patient; a reading sent four times at once under one key is stored once."""
    headers = bearer(client_token(client, actors.clients["a"]))
    client.post(f"/api/v1/monitoring/patients/{patients[0].id}/readings",
                json={"readings": [heart_rate("first")]}, headers=headers)

    def send(patient: Patient) -> Any:
        return client.post(f"/api/v1/monitoring/patients/{patient.id}/readings",
                           json={"readings": [heart_rate(f"together-{patient.id}")]},
                           headers=headers)

    with ThreadPoolExecutor(len(patients)) as pool:
        answers = list(pool.map(send, patients * 4))

    assert all(answer.status_code == 200 for answer in answers)
    by_patient = {answer.json()["patient_id"] for answer in answers}
    assert by_patient == {patient.id for patient in patients}
    created = sum(answer.json()["counts"]["created"] for answer in answers)
    assert created == len(patients)  # each patient's reading four times: stored once
    assert len(stored_keys(db)) == len(patients) + 1


def test_a_reading_in_a_group_ends_its_own_patients_missing_data_alert_only(
    engine, actors, db, patients
):
    patient, other = patients[0], patients[1]
    # Enrolled 5 days ago, nothing sent since: the scheduled checks raised the alert.
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now_utc() - timedelta(days=5))
    run_jobs(engine, now_utc())
    (missing,) = [row for row in alerts_of(engine, patient)
                  if row.kind == AlertKind.MISSING_DATA.value and row.status == "open"]
    gateway = gateway_of(actors.a.id)
    blood_pressure = {"readings": [{"idempotency_key": "ends-gap", "metric": "blood_pressure",
                                    "systolic": 128, "diastolic": 82, "unit": "mmHg",
                                    "effective_at": datetime.now(UTC).isoformat()}]}
    committer = GroupCommit(engine, write_small_batches)
    answers = write_together(committer, [
        batch(other, gateway, {"readings": [heart_rate("unrelated")]}),
        batch(patient, gateway, blood_pressure),
    ])

    assert [answer["counts"]["created"] for answer in answers] == [1, 1]
    assert committer.groups_written == 1
    (row,) = [one for one in alerts_of(engine, patient) if one.id == missing.id]
    assert row.status == "resolved"
    assert alerts_of(engine, other) == []


@pytest.mark.parametrize("processes", [2, 1], ids=["two processes", "one process"])
def test_the_same_key_in_two_groups_written_at_once_is_stored_once(engine, actors, db,
                                                                  processes):
    """On PostgreSQL a second group is written while the first has yet to commit (by another
    worker process, or by the same one: two groups in flight): the reading both send is stored
    once (the unique constraint waits for the first), the second request answered as a retry,
    not with an error."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite writes one transaction at a time")
    gateway = gateway_of(actors.a.id)
    sent = {"readings": [heart_rate("raced")]}
    first_written = threading.Event()
    second_started = threading.Event()

    def write_slowly(session: Session, batches: Sequence[SmallBatch]) -> list[bytes | Refused]:
        if first_written.is_set():
            second_started.set()
            return write_small_batches(session, batches)
        outcomes = write_small_batches(session, batches)
        first_written.set()
        # Uncommitted until the second group has begun its own insert (which then waits).
        second_started.wait(timeout=10)
        time.sleep(0.2)
        return outcomes

    first_committer = GroupCommit(engine, write_slowly)
    second_committer = (GroupCommit(engine, write_slowly) if processes == 2
                        else first_committer)
    assert first_committer.in_flight == 2

    async def race() -> list[Any]:
        async def second() -> bytes:
            while not first_written.is_set():
                await asyncio.sleep(0.01)
            return await second_committer.submit(batch(actors.patients["a"], gateway, sent))

        return await asyncio.gather(
            first_committer.submit(batch(actors.patients["a"], gateway, sent)), second())

    first, retry = (orjson.loads(one)["items"][0] for one in asyncio.run(race()))

    assert second_started.is_set()
    assert first_committer.jobs_written + (
        second_committer.jobs_written if processes == 2 else 0) == 2
    assert first["status"] == "created"
    assert retry["status"] == "duplicate"
    assert retry["reading_ids"] == first["reading_ids"]
    assert stored_keys(db) == ["json:raced"]


def test_readings_written_in_a_group_are_stored_as_when_written_alone(engine, actors, db,
                                                                      patients):
    gateway = gateway_of(actors.a.id)
    seoul = (datetime.now(UTC) - timedelta(minutes=7)).astimezone(
        timezone(timedelta(hours=9))).isoformat()
    bodies = [{"readings": [{"idempotency_key": f"odd-{patient.id}", "metric": "body_weight",
                             "value": 61.35, "unit": "kg", "effective_at": seoul,
                             "device": "체중계 \\ \"v2\""},
                            bp_panel(f"panel-{patient.id}")]}
              for patient in patients[:3]]
    grouped = write_together(GroupCommit(engine, write_small_batches),
                             [batch(patient, gateway, body)
                              for patient, body in zip(patients, bodies, strict=False)])
    assert [answer["counts"]["created"] for answer in grouped] == [2, 2, 2]
    with session_factory(engine)() as reading:  # closed at once: SQLite's write lock
        stored = [(row.value, row.unit, row.effective_offset_minutes, row.source_device,
                   row.effective_at) for row in reading.scalars(
            select(ReadingRow).where(ReadingRow.metric == "body_weight")
            .order_by(ReadingRow.id))]
    assert stored == [(61.35, "kg", 540, "체중계 \\ \"v2\"", datetime.fromisoformat(seoul))] * 3

    # Sent again one by one (a group of one is written with plain parameters): every reading
    # is found stored, by its fingerprint and its key, with the ids the group gave it.
    for patient, body, answer in zip(patients, bodies, grouped, strict=False):
        [again] = write_together(GroupCommit(engine, write_small_batches),
                                 [batch(patient, gateway, body)])
        assert not isinstance(again, Exception), again
        assert again["counts"]["duplicate"] == 2
        assert [item["reading_ids"] for item in again["items"]] == [
            item["reading_ids"] for item in answer["items"]]


def bp_panel(key: str) -> dict[str, Any]:
    moment = datetime.now(UTC) - timedelta(minutes=3)
    return {"idempotency_key": key, "metric": "blood_pressure", "systolic": 128,
            "diastolic": 82, "unit": "mmHg", "effective_at": moment.isoformat()}
