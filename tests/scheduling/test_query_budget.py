"""How many SQL statements the scheduling hot paths send, so a regression is caught.

Counted on the application's engine while the request runs, on whichever database the suite
runs (SQLite and PostgreSQL). Statements of the platform's own machinery are left out of the
count, because they are not scheduling's to spend: finding who is asking (sessions, clients,
users, memberships), the audit entry (audit_log, audit_chain_head), and transaction control
(BEGIN, SAVEPOINT). The policy engine's reads for a video visit are counted.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event

from jaejin.scheduling import place_watch
from tests.scheduling.test_booking_fixtures import SchedulingWorld
from tests.support import TRANSACTION_CONTROL, statements_sent

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)

PLATFORM_TABLES = frozenset({"api_clients", "user_sessions", "sessions", "users", "memberships",
                             "audit_log", "audit_chain_head", "audit_chains"})
#: The table a statement is about: the first one it reads or writes (a statement of the
#: booking's own that also writes its audit entry is the booking's).
FIRST_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.I)

#: The writes of a booking: its appointment, occupancy blocks, outbox rows and the upsert of the
#: practitioner's calendar version are one statement on PostgreSQL (the id read beforehand),
#: one each on SQLite.
BOOKING_WRITES = {"postgresql": 1, "sqlite": 3 + 1}
#: One read of everything the booking decides on, then its writes.
IN_PERSON_BOOKING = {database: 1 + writes for database, writes in BOOKING_WRITES.items()}
#: The same: what the policy engine decides on (history, consents, the institution's share)
#: is read by the booking's one read.
VIDEO_BOOKING = IN_PERSON_BOOKING
#: The booking's one read, then the busy times the next free slots are found in.
TAKEN_SLOT = 2
#: A search answered from the cache: none, the practitioner's places (where the caller may
#: look, the versions of their hours and calendar) being kept in memory
#: (`jaejin.scheduling.place_watch`).
CACHED_SLOT_SEARCH = 0
#: A search computed: that statement, then the practitioner's busy times.
SLOT_SEARCH = 2


@contextmanager
def scheduling_statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_connection, _cursor, statement, _parameters, _context, _many):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == place_watch.THREAD_NAME:
            return  # re-reading places for every search, not this request's
        first_table = FIRST_TABLE.search(statement)
        if not TRANSACTION_CONTROL.match(statement) and not (
                first_table and first_table.group(1) in PLATFORM_TABLES):
            words = " ".join(statement.split())
            seen.append(f"{words[:40]} ... {words[words.find(' FROM '):][:80]}")

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def all_statements(engine: Engine) -> AbstractContextManager[list[str]]:
    """Every statement sent by the request's threads, the platform's too."""
    return statements_sent(engine)


def _book(client, headers, world: SchedulingWorld, clock: str, **overrides):
    return client.post("/api/v1/appointments", json=world.booking(clock, **overrides),
                       headers=headers)


def test_a_booking_reads_once_and_writes_three_rows_kinds(client, engine, world, system_a):
    assert _book(client, system_a, world, "09:00").status_code == 201  # warm caches
    with scheduling_statements(engine) as video:
        response = _book(client, system_a, world, "11:00")
    assert response.status_code == 201, response.text
    assert len(video) <= VIDEO_BOOKING[engine.dialect.name], video

    with scheduling_statements(engine) as in_person:
        response = _book(client, system_a, world, "13:00", patient_id=world.patient_a,
                         mode="in_person", visit_type="in_person_follow_up")
    assert response.status_code == 201, response.text
    assert len(in_person) <= IN_PERSON_BOOKING[engine.dialect.name], in_person


def test_a_booking_on_postgresql_writes_its_audit_entry_with_everything_else(
        client, engine, world, system_a):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite writes the entry with a statement of its own (no round trip)")
    assert _book(client, system_a, world, "09:00").status_code == 201  # warm caches
    with all_statements(engine) as sent:
        response = _book(client, system_a, world, "11:00")
    assert response.status_code == 201, response.text
    audited = [statement for statement in sent if "INSERT INTO audit_log" in statement]
    assert len(audited) == 1, sent
    assert audited[0].startswith("WITH claimed AS")


def test_a_taken_slot_is_answered_without_writing(client, engine, world, system_a):
    assert _book(client, system_a, world, "10:00").status_code == 201
    with scheduling_statements(engine) as taken:
        response = _book(client, system_a, world, "10:00", mode="in_person",
                         visit_type="in_person_follow_up")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "SLOT_TAKEN"
    assert response.json()["next_free_slots"]
    assert len(taken) <= TAKEN_SLOT, taken
    assert not any(statement.startswith(("INSERT", "UPDATE", "DELETE")) for statement in taken)


def _search(client, headers, world: SchedulingWorld, **extra):
    query = {"start": world.day.isoformat(),
             "end": (world.day + timedelta(days=59)).isoformat(), "tz": "America/New_York",
             "visit_type": "follow_up", "mode": "video", **extra}
    return client.get(f"/api/v1/practitioners/{world.practitioner_a}/slots", params=query,
                      headers=headers)


def test_a_slot_search_is_two_statements_then_one_while_nothing_changes(
        client, engine, world, system_a):
    assert _search(client, system_a, world, institution_id=world.a).status_code == 200
    # The hours are parsed now; a booking changes the calendar: the next search computes.
    assert _book(client, system_a, world, "09:00").status_code == 201
    with scheduling_statements(engine) as computed:
        response = _search(client, system_a, world)
    assert response.status_code == 200, response.text
    assert len(response.json()) > 1000
    assert len(computed) <= SLOT_SEARCH, computed

    with scheduling_statements(engine) as cached:
        again = _search(client, system_a, world)
    assert again.status_code == 200
    assert again.content == response.content
    assert len(cached) == CACHED_SLOT_SEARCH, cached
