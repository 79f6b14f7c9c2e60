"""A booking holds SQLite's write turn only while it writes (`jaejin.scheduling.api`).

On SQLite one writer at a time holds the database: the booking route reads and decides first,
each statement its own read, and opens its write transaction (BEGIN IMMEDIATE) only for the
writes and the commit. A time taken between the read and the write is the occupancy
constraint's to refuse: 409 with the next free slots, nothing of the attempt left (on both
databases).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.core.authn import Principal
from jaejin.core.config import Settings
from jaejin.core.database import session_factory
from jaejin.core.events import OutboxMessage
from jaejin.scheduling import service
from jaejin.scheduling.model import VisitMode
from jaejin.scheduling.store import Appointment
from tests.scheduling.test_booking_fixtures import SchedulingWorld
from tests.support import make_patient, statements_sent

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)


def _sqlite_only(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL reads in the transaction it writes in, under no lock")


def test_a_booking_on_sqlite_reads_before_it_takes_the_write_turn(client, engine, world,
                                                                  system_a):
    _sqlite_only(engine)
    with statements_sent(engine) as sent:
        response = client.post("/api/v1/appointments", json=world.booking("11:00"),
                               headers=system_a)
    assert response.status_code == 201, response.text
    begins = [index for index, statement in enumerate(sent)
              if statement.upper().startswith("BEGIN")]
    assert len(begins) == 1, sent
    assert sent[begins[0]] == "BEGIN IMMEDIATE"
    booking_read = next(index for index, statement in enumerate(sent)
                        if "FROM patients" in statement)
    assert booking_read < begins[0], sent
    in_write_turn = sent[begins[0] + 1:]
    assert in_write_turn and all(statement.startswith("INSERT") for statement in in_write_turn), \
        in_write_turn


def test_a_taken_slot_is_answered_while_another_writer_holds_the_database(
        client, engine, world, system_a):
    _sqlite_only(engine)
    assert client.post("/api/v1/appointments", json=world.booking("10:00"),
                       headers=system_a).status_code == 201
    with engine.connect() as other_writer, other_writer.begin():  # holds the write turn
        response = client.post(
            "/api/v1/appointments", headers=system_a,
            json=world.booking("10:00", mode="in_person", visit_type="in_person_follow_up"))
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "SLOT_TAKEN"
    assert response.json()["next_free_slots"]


def _rows(engine: Engine) -> dict[str, Any]:
    with session_factory(engine)() as db:
        return {
            "appointments": db.scalars(select(Appointment.id).order_by(Appointment.id)).all(),
            "audited": db.scalar(select(func.count()).select_from(AuditEntry).where(
                AuditEntry.action == "create", AuditEntry.resource_type == "appointment")),
            "outbox": db.scalar(select(func.count()).select_from(OutboxMessage)),
        }


def test_a_slot_taken_between_the_read_and_the_write_is_refused_and_leaves_nothing(
        client, engine, db: Session, world: SchedulingWorld, system_a, settings: Settings,
        monkeypatch: pytest.MonkeyPatch):
    rival = make_patient(db, world.actors.a, "MRN-RIVAL")
    db.commit()
    other_client = Principal(
        kind="client", subject_id=1, label="client:other", language="en", time_zone="UTC",
        memberships=frozenset({(world.a, Role.SYSTEM_CLIENT)}),
        scopes=frozenset({"scheduling.write"}))
    planned_then_taken: list[dict[str, Any]] = []
    plan_booking = service.plan_booking

    def taken_after_the_read(*args: Any, **kwargs: Any) -> service.PlannedBooking:
        planned = plan_booking(*args, **kwargs)
        if planned_then_taken:
            return planned  # the rival's own booking
        planned_then_taken.append({})
        with session_factory(engine)() as other:
            service.book(other, other_client, service.BookingRequest(
                patient_id=rival.id, practitioner_id=world.practitioner_a,
                start=world.at("10:00"), visit_type="in_person_follow_up",
                mode=VisitMode.IN_PERSON), settings=settings)
            other.commit()
        planned_then_taken[0] = _rows(engine)
        return planned

    monkeypatch.setattr(service, "plan_booking", taken_after_the_read)
    response = client.post("/api/v1/appointments", json=world.booking("10:00"),
                           headers=system_a)

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "SLOT_TAKEN"
    assert response.json()["next_free_slots"]
    assert world.at("10:00").isoformat() not in {
        slot["start"] for slot in response.json()["next_free_slots"]}
    # Only the rival's appointment, audit entry and messages are there.
    assert len(planned_then_taken) == 1
    assert len(planned_then_taken[0]["appointments"]) == 1
    assert planned_then_taken[0]["audited"] == 1
    assert _rows(engine) == planned_then_taken[0]


def test_a_process_runs_one_sqlite_booking_at_a_time_and_postgresql_bookings_together(
        client, engine, world, system_a, monkeypatch):
    """On SQLite the bookings of one process queue before they start (`SQLITE_BOOKINGS_AT_ONCE`:
    a thread holding the write turn would otherwise share the GIL with all the others); on
    PostgreSQL they run side by side."""
    from jaejin.scheduling import api

    running = 0
    most = 0
    guard = threading.Lock()
    plan_booking = service.plan_booking

    def slow_plan(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return plan_booking(*args, **kwargs)
        finally:
            with guard:
                running -= 1

    monkeypatch.setattr(service, "plan_booking", slow_plan)
    clocks = ["10:00", "10:30", "11:00", "11:30"]
    with ThreadPoolExecutor(len(clocks)) as pool:
        statuses = list(pool.map(lambda clock: client.post(
            "/api/v1/appointments", json=world.booking(clock), headers=system_a).status_code,
            clocks))
    assert statuses == [201] * len(clocks)
    if engine.dialect.name == "sqlite":
        assert most == api.SQLITE_BOOKINGS_AT_ONCE == 1
    else:
        assert most > 1
