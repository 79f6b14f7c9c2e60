"""Slot searches answered from the per-process cache (`jaejin.scheduling.search`): every change
of the practitioner's time or hours is seen by the next search, whoever made it; callers who
may not see the practitioner never get a cached answer; a search never waits for a writer."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from jaejin.core.config import Settings
from jaejin.core.database import read_connection, utcnow
from jaejin.directory.store import Institution, Practitioner
from jaejin.scheduling import search, service
from jaejin.scheduling.model import VisitMode
from jaejin.scheduling.store import bump_calendar
from tests.scheduling.test_booking_fixtures import SEOUL, SchedulingWorld
from tests.support import problem

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)


def _search(client, headers, world: SchedulingWorld, practitioner: int | None = None,
            extra_headers: dict[str, str] | None = None, **params):
    query = {"start": world.day.isoformat(), "end": world.day.isoformat(), "tz": "Asia/Seoul",
             "visit_type": "follow_up", "mode": "video"} | params
    return client.get(f"/api/v1/practitioners/{practitioner or world.practitioner_a}/slots",
                      params=query, headers=headers | (extra_headers or {}))


def _starts(response) -> set[datetime]:
    assert response.status_code == 200, response.text
    return {datetime.fromisoformat(slot["start"]) for slot in response.json()}


def test_every_change_of_the_practitioners_time_is_seen_by_the_next_search(
        client, world, system_a):
    assert world.at("10:00") in _starts(_search(client, system_a, world))  # now cached

    booked = client.post("/api/v1/appointments", json=world.booking("10:00"), headers=system_a)
    assert booked.status_code == 201, booked.text
    assert world.at("10:00") not in _starts(_search(client, system_a, world))

    moved = client.patch(f"/api/v1/appointments/{booked.json()['id']}",
                         json={"start": world.at("14:30").isoformat()}, headers=system_a)
    assert moved.status_code == 200, moved.text
    starts = _starts(_search(client, system_a, world))
    assert world.at("10:00") in starts and world.at("14:30") not in starts

    cancelled = client.delete(f"/api/v1/appointments/{booked.json()['id']}", headers=system_a)
    assert cancelled.status_code == 200, cancelled.text
    assert world.at("14:30") in _starts(_search(client, system_a, world))

    hours = {"weekly": [{"weekday": day, "start": "13:00", "end": "15:00"}
                        for day in range(1, 8)], "exceptions": []}
    saved = client.put(f"/api/v1/practitioners/{world.practitioner_a}/availability",
                       json=hours, headers=system_a)
    assert saved.status_code == 200, saved.text
    starts = _starts(_search(client, system_a, world))
    assert min(starts) == world.at("13:00") and world.at("10:00") not in starts

    closed = {**hours, "exceptions": [{"date": world.day.isoformat(), "kind": "closed"}]}
    assert client.put(f"/api/v1/practitioners/{world.practitioner_a}/availability",
                      json=closed, headers=system_a).status_code == 200
    assert _starts(_search(client, system_a, world)) == set()


def test_a_booking_committed_by_another_process_is_seen(client, world, system_a,
                                                        settings: Settings):
    assert world.at("11:00") in _starts(_search(client, system_a, world))
    booking = f"""
from datetime import datetime
from sqlalchemy.orm import Session
from jaejin.core.accounts import Role
from jaejin.core.authn import Principal
from jaejin.core.config import Settings
from jaejin.core.database import build_engine
from jaejin.scheduling import service
from jaejin.scheduling.model import VisitMode

settings = Settings(environment="test", database_url={settings.database_url!r},
                    secret_key={settings.secret_key!r}, public_base_url="http://testserver",
                    redis_url=None)
principal = Principal(kind="client", subject_id=1, label="client:other", language="en",
                      time_zone="UTC", memberships=frozenset({{({world.a}, Role.SYSTEM_CLIENT)}}),
                      scopes=frozenset({{"scheduling.write"}}))
request = service.BookingRequest(
    patient_id={world.patient_a}, practitioner_id={world.practitioner_a},
    start=datetime.fromisoformat({world.at("11:00").isoformat()!r}), visit_type="follow_up",
    mode=VisitMode.VIDEO)
with Session(build_engine(settings.database_url)) as db:
    service.book(db, principal, request, settings=settings)
    db.commit()
"""
    subprocess.run([sys.executable, "-c", booking], check=True, timeout=120)
    assert world.at("11:00") not in _starts(_search(client, system_a, world))


def test_another_institutions_caller_is_told_the_practitioner_does_not_exist(
        client, world, system_a, system_b):
    assert _search(client, system_a, world).status_code == 200  # cached for A's practitioner
    for params in ({}, {"institution_id": world.a}):
        refused = _search(client, system_b, world, **params)
        assert refused.status_code == 404, refused.text
        assert problem(refused)["code"] == "NOT_FOUND"


def test_bad_input_is_refused_even_when_an_answer_is_cached(client, world, system_a):
    assert _search(client, system_a, world).status_code == 200
    assert problem(_search(client, system_a, world, tz="Mars/Olympus_Mons"))["code"] == \
        "UNKNOWN_TIME_ZONE"
    backwards = _search(client, system_a, world, end=(world.day - timedelta(days=1)).isoformat())
    assert problem(backwards)["code"] == "INVALID_RANGE"
    too_long = _search(client, system_a, world,
                       end=(world.day + timedelta(days=200)).isoformat())
    assert problem(too_long)["code"] == "RANGE_TOO_LONG"
    assert problem(_search(client, system_a, world, visit_type="massage"))["code"] == \
        "UNKNOWN_VISIT_TYPE"
    not_a_date = problem(_search(client, system_a, world, start="24.11.2026"))
    assert not_a_date["code"] == "VALIDATION_FAILED"
    assert [error["field"] for error in not_a_date["errors"]] == ["query.start"]
    missing = problem(client.get(f"/api/v1/practitioners/{world.practitioner_a}/slots",
                                 params={"start": world.day.isoformat()}, headers=system_a))
    assert {error["field"] for error in missing["errors"]} == {"query.end", "query.tz",
                                                               "query.visit_type"}
    unknown_mode = problem(_search(client, system_a, world, mode="telepathy"))
    assert [error["field"] for error in unknown_mode["errors"]] == ["query.mode"]


def test_a_client_holding_the_answer_is_told_it_has_not_changed(client, world, system_a):
    first = _search(client, system_a, world)
    etag = first.headers["ETag"]
    same = _search(client, system_a, world, extra_headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.headers["ETag"] == etag and not same.content

    assert client.post("/api/v1/appointments", json=world.booking("12:00"),
                       headers=system_a).status_code == 201
    changed = _search(client, system_a, world, extra_headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert world.at("12:00") not in _starts(changed)


def test_a_cached_answer_is_not_served_once_one_of_its_slots_has_begun(engine, world):
    def answer(now: datetime) -> set[datetime]:
        with read_connection(engine) as connection:
            found = search.cached_free_slots(
                connection, institutions_seen=[world.a], practitioner_id=world.practitioner_a,
                requested_institution=None, visit_type_code="follow_up", mode=VisitMode.VIDEO,
                start_date=world.day, end_date=world.day, requested_zone=SEOUL, now=now)
        return {datetime.fromisoformat(slot["start"])
                for slot in orjson.loads(found.body)}

    before = answer(world.at("08:00"))
    assert world.at("09:00") in before
    assert answer(world.at("08:59")) == before  # no slot has begun: the same answer
    after = answer(world.at("09:00") + timedelta(seconds=1))
    assert world.at("09:00") not in after and world.at("09:15") in after


def test_a_search_answers_while_another_connection_holds_a_write_transaction(
        client, engine: Engine, world, system_a):
    assert _search(client, system_a, world).status_code == 200
    holding = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with Session(engine) as db:
            # On SQLite the session's BEGIN IMMEDIATE takes the database's write lock; on
            # PostgreSQL the upsert locks the practitioner's version row.
            bump_calendar(db, world.practitioner_a)
            db.execute(text("SELECT 1"))
            holding.set()
            release.wait(30)
            db.rollback()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(30)
        started = time.perf_counter()
        response = _search(client, system_a, world, end=(world.day + timedelta(days=6))
                           .isoformat())  # not cached: computed under the lock
        cached = _search(client, system_a, world)
        elapsed = time.perf_counter() - started
    finally:
        release.set()
        thread.join(30)
    assert response.status_code == 200 and cached.status_code == 200
    assert world.at("09:00") in _starts(cached)
    assert elapsed < 2.0, f"searches waited {elapsed:.1f} s for the writer"


@pytest.fixture(autouse=True)
def _fresh_answers() -> None:
    """Each test starts with nothing cached (answers of earlier tests are keyed by versions
    that no longer exist, but a clean start makes each test say what it means)."""
    search.forget_answers()


@pytest.mark.parametrize(("zone", "days_ahead", "days"), [
    ("Asia/Seoul", 0, 1), ("America/New_York", 0, 10), ("Pacific/Kiritimati", 2, 31)])
def test_a_cached_answer_is_the_search_computed_from_the_records(
        client, engine, world, system_a, zone, days_ahead, days):
    """The cached path answers exactly what the computed one does (busy days, days cut by the
    zone's midnight, today's slots already begun), the first time and from the cache."""
    for clock, later, extra in (("10:00", 0, {}), ("11:30", 0, {}),
                                ("09:00", 1, {"mode": "in_person",
                                              "visit_type": "in_person_follow_up"})):
        body = world.booking(clock, **extra) | {"start": world.at(clock, later).isoformat()}
        assert client.post("/api/v1/appointments", json=body,
                           headers=system_a).status_code == 201
    first = datetime.now(ZoneInfo(zone)).date() + timedelta(days=days_ahead)
    params = {"tz": zone, "start": first.isoformat(),
              "end": (first + timedelta(days=days - 1)).isoformat()}
    computed, cached = (_search(client, system_a, world, **params) for _ in range(2))
    with Session(engine) as db:
        practitioner = db.get(Practitioner, world.practitioner_a)
        institution = db.get(Institution, world.a)
        assert practitioner is not None and institution is not None
        schedule = service.schedule_for(db, practitioner, institution, "follow_up",
                                        VisitMode.VIDEO)
        slots = service.find_slots(db, schedule, first, first + timedelta(days=days - 1),
                                   ZoneInfo(zone), now=utcnow(), interpreter_language=None)
        expected = orjson.loads(service.slots_wire(slots, schedule.zone, ZoneInfo(zone)))
    assert computed.status_code == cached.status_code == 200
    assert computed.json() == cached.json() == expected
    assert cached.headers["ETag"] == computed.headers["ETag"]
