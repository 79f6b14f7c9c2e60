"""Slot searches answered without a statement (`search.answer_from_memory`,
`search.free_slots_answer`, `jaejin.scheduling.place_watch`): a change made through this
process is seen by the next search at once, even before the thread reads again; a change not
yet committed is neither trusted nor kept; a change through another process is seen once the
places are read again, and never served later than TRUST_SECONDS after it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.authn import Principal
from jaejin.core.database import build_engine, read_connection, utcnow
from jaejin.core.errors import Problem
from jaejin.scheduling import place_watch, search, service
from jaejin.scheduling.model import VisitMode
from jaejin.scheduling.place_watch import EVERYONE, practitioners_written, watch_of
from jaejin.scheduling.store import bump_calendar
from tests.scheduling.test_booking_fixtures import SEOUL, SchedulingWorld
from tests.scheduling.test_query_budget import scheduling_statements

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)


@pytest.fixture(autouse=True)
def _nothing_kept(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Trusted for an hour unless a test says otherwise: what a test sees is then the work of
    # the invalidation it checks, not of entries expiring.
    monkeypatch.setattr(place_watch, "TRUST_SECONDS", 3600.0)
    monkeypatch.setattr(place_watch, "REFRESH_SECONDS", 0.01)
    search.forget_answers()
    yield
    search.forget_answers()


@pytest.fixture
def no_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread that reads the places again never starts: only invalidation changes them."""
    monkeypatch.setattr(place_watch.PlaceWatch, "_keep_reading", lambda self: None)


def _query(world: SchedulingWorld, institutions: list[int] | None = None) -> dict[str, Any]:
    return {"institutions_seen": institutions or [world.a],
            "practitioner_id": world.practitioner_a, "requested_institution": None,
            "visit_type_code": "follow_up", "mode": VisitMode.VIDEO, "start_date": world.day,
            "end_date": world.day, "requested_zone": SEOUL, "now": utcnow()}


def _memory(engine: Engine, world: SchedulingWorld, **overrides: Any) -> search.Answer | None:
    return search.answer_from_memory(engine, **_query(world, **overrides))


def _answer(engine: Engine, world: SchedulingWorld) -> search.Answer:
    return search.free_slots_answer(engine, **_query(world))


def _starts(answer: search.Answer) -> set[datetime]:
    return {datetime.fromisoformat(slot["start"]) for slot in orjson.loads(answer.body)}


def test_a_kept_answer_is_served_without_any_statement_and_equals_the_cached_search(
        engine, world, no_refresh):
    first = _answer(engine, world)
    with read_connection(engine) as connection:
        cached = search.cached_free_slots(connection, **_query(world))
    with scheduling_statements(engine) as seen:
        again = _memory(engine, world)
        also = _answer(engine, world)
    assert again is not None
    assert again.body == first.body == cached.body == also.body
    assert again.etag == first.etag == cached.etag
    assert seen == []


def test_nothing_is_answered_from_memory_before_the_places_are_read(engine, world, no_refresh):
    assert _memory(engine, world) is None
    _answer(engine, world)
    assert _memory(engine, world) is not None


def test_a_booking_through_this_process_is_seen_by_the_next_search_at_once(
        client, engine, world, system_a, no_refresh):
    assert world.at("10:00") in _starts(_answer(engine, world))
    booked = client.post("/api/v1/appointments", json=world.booking("10:00"), headers=system_a)
    assert booked.status_code == 201, booked.text
    assert _memory(engine, world) is None
    assert world.at("10:00") not in _starts(_answer(engine, world))
    assert _memory(engine, world) is not None  # kept again, at the new calendar version

    cancelled = client.delete(f"/api/v1/appointments/{booked.json()['id']}", headers=system_a)
    assert cancelled.status_code == 200, cancelled.text
    assert _memory(engine, world) is None
    assert world.at("10:00") in _starts(_answer(engine, world))


def test_hours_saved_through_this_process_are_seen_by_the_next_search(
        client, engine, world, system_a, no_refresh):
    assert world.at("09:00") in _starts(_answer(engine, world))
    hours = {"weekly": [{"weekday": day, "start": "13:00", "end": "15:00"}
                        for day in range(1, 8)], "exceptions": []}
    saved = client.put(f"/api/v1/practitioners/{world.practitioner_a}/availability",
                       json=hours, headers=system_a)
    assert saved.status_code == 200, saved.text
    assert _memory(engine, world) is None
    starts = _starts(_answer(engine, world))
    assert min(starts) == world.at("13:00") and world.at("09:00") not in starts


def test_a_change_not_yet_committed_is_neither_trusted_nor_kept(engine, world, no_refresh):
    _answer(engine, world)
    with Session(engine) as db:
        bump_calendar(db, world.practitioner_a)
        assert _memory(engine, world) is None
        _answer(engine, world)  # read meanwhile: what is committed, not kept
        assert _memory(engine, world) is None
        db.rollback()
    assert _memory(engine, world) is None
    _answer(engine, world)
    assert _memory(engine, world) is not None


def test_a_change_through_another_process_is_seen_when_the_places_are_read_again(
        engine, world, settings):
    assert world.at("11:00") in _starts(_answer(engine, world))
    watch = watch_of(engine)
    other = build_engine(settings.database_url)  # not watched: as another process's
    try:
        with Session(other) as db:
            service.book(db, _other_client(world), service.BookingRequest(
                patient_id=world.patient_a, practitioner_id=world.practitioner_a,
                start=world.at("11:00"), visit_type="follow_up", mode=VisitMode.VIDEO),
                settings=settings)
            db.commit()
    finally:
        other.dispose()
    read_before = watch.refreshes
    while watch.refreshes < read_before + 2:  # one read begun after the commit has ended
        _memory(engine, world)  # keeps the practitioner asked for
    assert _memory(engine, world) is None  # kept under the new calendar version: recompute
    assert world.at("11:00") not in _starts(_answer(engine, world))


def _other_client(world: SchedulingWorld) -> Principal:
    return Principal(kind="client", subject_id=1, label="client:other", language="en",
                     time_zone="UTC", memberships=frozenset({(world.a, Role.SYSTEM_CLIENT)}),
                     scopes=frozenset({"scheduling.write"}))


def test_places_older_than_the_trust_window_are_read_again(engine, world, no_refresh,
                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(place_watch, "TRUST_SECONDS", 0.05)
    _answer(engine, world)
    clock = place_watch.time.monotonic() + 0.051
    monkeypatch.setattr(place_watch.time, "monotonic", lambda: clock)
    assert _memory(engine, world) is None


def test_another_institutions_caller_is_told_the_practitioner_does_not_exist(
        engine, world, no_refresh):
    _answer(engine, world)
    with pytest.raises(Problem) as refused:
        _memory(engine, world, institutions=[world.actors.b.id])
    assert refused.value.status == 404


@pytest.mark.parametrize(("statement", "parameters", "written"), [
    ("SELECT version FROM scheduling_calendar_versions", {"key": "practitioner:1"}, None),
    ("INSERT INTO scheduling_calendar_versions (resource_key, version) VALUES (%(key)s, 1) "
     "ON CONFLICT (resource_key) DO UPDATE SET version = version + 1",
     {"key": "practitioner:17"}, {17}),
    ("WITH a AS (INSERT INTO appointments ...), b AS (INSERT INTO scheduling_occupancy ...) "
     "INSERT INTO scheduling_calendar_versions ...",
     {"k1": "practitioner:4", "k2": "patient:9", "k3": "practitioner:4"}, {4}),
    ("INSERT INTO scheduling_calendar_versions (resource_key, version) VALUES (?, 1)",
     ("practitioner:8",), {8}),
    ("UPDATE scheduling_calendar_versions SET version = 0", {}, {EVERYONE}),
    ("UPDATE scheduling_calendar_versions SET version = 0 WHERE resource_key = %(k)s",
     {"k": "practitioner:²"}, {EVERYONE}),
    ("UPDATE scheduling_availability SET rules = %(rules)s", {"rules": "{}"}, {EVERYONE}),
    ("DELETE FROM practitioner_roles WHERE id = %(id)s", {"id": 3}, {EVERYONE}),
    ("UPDATE institutions SET time_zone = %(zone)s", {"zone": "UTC"}, {EVERYONE}),
    ("INSERT INTO audit_log (action) VALUES (%(action)s)", {"action": "read"}, None),
    ("  select 1 from institutions", [], None),
])
def test_the_writes_that_change_places_are_recognised(statement, parameters, written):
    assert practitioners_written(statement, parameters) == written


@pytest.mark.parametrize("practitioner_id", [-1, 2**40, 2**63, 10**30])
def test_an_id_naming_nobody_is_not_found_whatever_its_size(engine, world, practitioner_id):
    query = _query(world) | {"practitioner_id": practitioner_id}
    # Read (and kept) by the first, answered from memory by the second.
    for answer in (search.free_slots_answer, search.answer_from_memory):
        with pytest.raises(Problem) as refused:
            answer(engine, **query)
        assert refused.value.status == 404


def test_disposing_the_engine_ends_the_thread_and_nothing_more_is_read(world, settings):
    other = build_engine(settings.database_url)
    watch = watch_of(other)
    try:
        _answer(other, world)
        assert _memory(other, world) is not None  # asked for: the thread reads again
        deadline = time.monotonic() + 10
        while watch.refreshes == 0:
            assert time.monotonic() < deadline, "the places were never read again"
            time.sleep(0.01)
        thread = watch._thread
        assert thread is not None
        sent: list[str] = []
        event.listen(other, "before_cursor_execute", lambda *args: sent.append(args[2]))
        other.dispose()
        assert not thread.is_alive()
        time.sleep(place_watch.REFRESH_SECONDS * 5)
        assert sent == []
    finally:
        other.dispose()
