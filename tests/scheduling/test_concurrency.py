"""No double booking under concurrency: many simultaneous bookings at few slots. Exactly one
booking wins each slot, every other one gets 409 with other times, and afterwards no
practitioner, patient or interpreter holds two overlapping appointments.

Two levels, each on SQLite and, in the second run, PostgreSQL:
- the booking service called from many threads at once, each with its own session and
  connection;
- HTTP requests to the application served by uvicorn, every booking on its own connection.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.authn import Principal
from jaejin.core.config import Settings
from jaejin.core.errors import Problem
from jaejin.directory.store import Encounter, Practitioner, PractitionerRole
from jaejin.scheduling import service
from jaejin.scheduling.model import VisitMode
from jaejin.scheduling.store import ACTIVE_STATUSES, Appointment, OwnerKind, save_availability
from tests.live_server import LiveServer, running_server
from tests.scheduling.test_booking_fixtures import SchedulingWorld, every_day
from tests.support import make_patient

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)

ATTEMPTS_PER_SLOT = 12
SLOTS = ("10:00", "11:00", "12:00", "13:00")


@pytest.fixture
def server(app, client) -> Iterator[LiveServer]:
    with running_server(app) as live:
        yield live


@pytest.fixture
def crowd(db: Session, world: SchedulingWorld) -> dict[str, Any]:
    """Many patients of A (seen in person, so video follow-ups are allowed), Mongolian
    speakers among them, and a second practitioner at A."""
    patients = []
    for number in range(ATTEMPTS_PER_SLOT * len(SLOTS)):
        mongolian = number % 4 == 0
        patient = make_patient(
            db, world.actors.a, f"MRN-CROWD-{number}",
            **({"preferred_language": "mn", "languages": ["mn"], "nationality": "MN",
                "time_zone": "Asia/Ulaanbaatar"} if mongolian else {}))
        db.add(Encounter(institution_id=world.a, patient_id=patient.id, mode="in_person",
                         kind="visit", started_at=world.at("09:00", -40),
                         conditions=["I10"]))
        patients.append(patient.id)
    second = Practitioner(licence_number="LIC-A-2", profession="physician",
                          name_native="의사 둘", name_latin="Doctor Two", languages=["ko"])
    second.roles.append(PractitionerRole(institution_id=world.a))
    db.add(second)
    db.flush()
    save_availability(db, OwnerKind.PRACTITIONER, second.id, world.a,
                      every_day("09:00", "18:00"), updated_by="test")
    db.commit()
    return {"patients": patients, "second_practitioner": second.id}


def _fire(url: str, headers: dict[str, str], bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send every booking at once, each from its own thread and connection."""
    barrier = threading.Barrier(len(bodies))
    responses: list[httpx.Response | None] = [None] * len(bodies)

    def attempt(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as session:
            barrier.wait()
            responses[index] = session.post("/api/v1/appointments", json=bodies[index],
                                            headers=headers)

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(response is not None for response in responses)
    return [response for response in responses if response is not None]


def _overlaps(engine: Engine) -> list[tuple[str, int, int]]:
    """Pairs of active appointments sharing a practitioner, patient or interpreter in time."""
    with Session(engine) as db:
        rows = list(db.execute(select(Appointment).where(
            Appointment.status.in_(ACTIVE_STATUSES))).scalars())
    found = []
    for index, first in enumerate(rows):
        for second in rows[index + 1:]:
            for name in ("practitioner_id", "patient_id", "interpreter_id"):
                same = getattr(first, name) is not None and \
                    getattr(first, name) == getattr(second, name)
                until_first = first.occupied_until if name == "practitioner_id" else first.end_at
                until_second = (second.occupied_until if name == "practitioner_id"
                                else second.end_at)
                if same and first.start_at < until_second and second.start_at < until_first:
                    found.append((name, first.id, second.id))
    return found


def _service_bookings(engine: Engine, settings: Settings, world: SchedulingWorld,
                      bodies: list[dict[str, Any]]) -> list[int]:
    """Book from one thread per body at once through `service.book`; the HTTP-like status."""
    principal = Principal(kind="client", subject_id=1, label="client:matrix", language="en",
                          time_zone="UTC",
                          memberships=frozenset({(world.a, Role.SYSTEM_CLIENT)}),
                          scopes=frozenset({"scheduling.write"}))
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = [0] * len(bodies)

    def attempt(index: int) -> None:
        body = bodies[index]
        request = service.BookingRequest(
            patient_id=body["patient_id"], practitioner_id=body["practitioner_id"],
            start=datetime.fromisoformat(body["start"]), visit_type=body["visit_type"],
            mode=VisitMode(body["mode"]))
        with Session(engine) as db:
            barrier.wait()
            try:
                service.book(db, principal, request, settings=settings)
                db.commit()
                statuses[index] = 201
            except Problem as refusal:
                db.rollback()
                statuses[index] = refusal.status

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return statuses


def _crowd_bookings(world: SchedulingWorld, crowd: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        world.booking(SLOTS[index % len(SLOTS)], patient_id=patient,
                      **({} if index % 3 else {"mode": "in_person",
                                                 "visit_type": "in_person_follow_up"}))
        for index, patient in enumerate(crowd["patients"])]


def test_simultaneous_bookings_through_the_service_take_each_slot_once(
        engine, settings, world, crowd):
    statuses = _service_bookings(engine, settings, world, _crowd_bookings(world, crowd))
    assert Counter(statuses) == {201: len(SLOTS), 409: len(statuses) - len(SLOTS)}
    assert _overlaps(engine) == []
    with Session(engine) as db:
        starts = Counter(db.execute(select(Appointment.start_at)).scalars())
    assert sorted(starts.values()) == [1] * len(SLOTS)


def test_many_simultaneous_bookings_at_few_slots_book_each_slot_once(
        server, engine, world, crowd, system_a):
    responses = _fire(server.url, system_a, _crowd_bookings(world, crowd))
    statuses = Counter(response.status_code for response in responses)
    assert statuses[201] == len(SLOTS), [r.text for r in responses if r.status_code >= 500]
    assert set(statuses) <= {201, 409}, statuses
    won = Counter(response.json()["start"] for response in responses
                  if response.status_code == 201)
    assert sorted(won.values()) == [1] * len(SLOTS)
    for response in responses:
        if response.status_code == 409:
            body = response.json()
            assert body["code"] in {"SLOT_TAKEN", "INTERPRETER_UNAVAILABLE"}
            assert "next_free_slots" in body
    assert _overlaps(engine) == []


def test_one_interpreter_and_one_patient_are_never_booked_twice_at_once(
        server, engine, world, crowd, system_a):
    mongolians = [patient for index, patient in enumerate(crowd["patients"]) if index % 4 == 0]
    # Two practitioners, the same time, every Mongolian speaker: one interpreter between them.
    bodies = [world.booking("16:00", patient_id=patient,
                            practitioner_id=(world.practitioner_a if index % 2
                                             else crowd["second_practitioner"]))
              for index, patient in enumerate(mongolians)]
    # And one patient trying both practitioners at overlapping times.
    lone = crowd["patients"][1]
    bodies += [world.booking("15:00", patient_id=lone, mode="in_person",
                             visit_type="in_person_follow_up"),
               world.booking("15:00", patient_id=lone, mode="in_person",
                             visit_type="in_person_follow_up",
                             practitioner_id=crowd["second_practitioner"])]
    responses = _fire(server.url, system_a, bodies)
    interpreted = [response for response in responses[:-2] if response.status_code == 201]
    assert len(interpreted) == 1, [response.text for response in responses[:-2]]
    assert interpreted[0].json()["interpreter_id"] == world.interpreter.id
    assert sorted(response.status_code for response in responses[-2:]) == [201, 409]
    assert _overlaps(engine) == []
    with Session(engine) as db:
        held = db.execute(select(Appointment.start_at).where(
            Appointment.interpreter_id == world.interpreter.id)).scalars().all()
    assert len(held) == 1
    assert all(start - world.at("16:00") < timedelta(minutes=1) for start in held)
