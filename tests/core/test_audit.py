"""The audit trail: one unbroken hash chain under concurrent writers, and the auditors' page."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from jaejin.core.accounts import Role
from jaejin.core.audit import (
    AuditActor,
    AuditChainHead,
    AuditEntry,
    AuditEvent,
    record,
    verify_chain,
)
from jaejin.core.database import session_factory
from tests.core.helpers import audit_entries, fresh
from tests.support import bearer, client_token, sign_in

THREADS = 6
READS_PER_THREAD = 8


def listed_sequences(page: str) -> list[int]:
    """The sequence numbers of the entries shown in the audit page's table."""
    body = re.search(r"<tbody>(.*?)</tbody>", page, re.S)
    assert body, "the audit page has no table body"
    return [int(number) for number in re.findall(r"<tr><td>(\d+)</td>", body.group(1))]


def assert_contiguous_and_intact(engine) -> list[AuditEntry]:
    entries = audit_entries(engine)
    assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
    with fresh(engine) as session:
        report = verify_chain(session)
    assert report.intact, report.problems
    assert report.entries_checked == len(entries)
    return entries


# ------------------------------------------------------------------------------- concurrency


def test_parallel_api_reads_from_many_threads_keep_one_unbroken_chain(app, client, actors):
    token = client_token(client, actors.clients["a"])
    other_token = client_token(client, actors.clients["b"])
    before = len(audit_entries(client.app.state.engine))
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def read_records(number: int) -> None:
        try:
            caller = TestClient(app)
            which = "a" if number % 2 == 0 else "b"
            headers = bearer(token if which == "a" else other_token)
            patient = actors.patients[which].id
            start.wait(timeout=30)
            for _ in range(READS_PER_THREAD):
                response = caller.get(f"/api/v1/patients/{patient}", headers=headers)
                assert response.status_code == 200, response.text
        except BaseException as error:  # reported to the test thread below
            failures.append(error)

    threads = [threading.Thread(target=read_records, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    entries = assert_contiguous_and_intact(client.app.state.engine)
    reads = [e for e in entries[before:] if e.action == "read"]
    assert len(reads) == THREADS * READS_PER_THREAD
    assert {e.patient_id for e in reads} == {actors.patients["a"].id, actors.patients["b"].id}


def test_the_first_entries_written_at_once_into_an_empty_trail_form_one_chain(clean_database):
    engine = clean_database
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def write_one(number: int) -> None:
        try:
            with session_factory(engine)() as session:
                start.wait(timeout=30)
                record(session, AuditActor.system(f"writer-{number}"),
                       AuditEvent("create", "test", str(number), purpose="operations"))
                session.commit()
        except BaseException as error:  # reported to the test thread below
            failures.append(error)

    threads = [threading.Thread(target=write_one, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    entries = assert_contiguous_and_intact(engine)
    assert sorted(e.resource_id for e in entries) == [str(n) for n in range(THREADS)]


def test_a_long_lived_session_appends_after_entries_other_sessions_wrote(clean_database):
    engine = clean_database
    with session_factory(engine)() as long_lived:
        record(long_lived, AuditActor.system("worker"), AuditEvent("create", "test", "1"))
        long_lived.commit()
        # Something in the session still holds the chain head (sessions keep loaded objects
        # across commits here), as a worker looping over jobs may.
        held = long_lived.get(AuditChainHead, 1)
        long_lived.commit()
        with session_factory(engine)() as other:
            record(other, AuditActor.system("web"), AuditEvent("create", "test", "2"))
            other.commit()
        record(long_lived, AuditActor.system("worker"), AuditEvent("create", "test", "3"))
        long_lived.commit()
        assert held.last_sequence == 3
    entries = assert_contiguous_and_intact(engine)
    assert [e.resource_id for e in entries] == ["1", "2", "3"]


def test_an_entry_rolled_back_with_its_change_leaves_no_gap(clean_database):
    engine = clean_database
    with session_factory(engine)() as session:
        record(session, AuditActor.system(), AuditEvent("create", "test", "kept"))
        session.commit()
        record(session, AuditActor.system(), AuditEvent("create", "test", "rolled back"))
        session.rollback()
        record(session, AuditActor.system(), AuditEvent("create", "test", "kept too"))
        session.commit()
    entries = assert_contiguous_and_intact(engine)
    assert [e.resource_id for e in entries] == ["kept", "kept too"]


def test_non_ascii_details_survive_the_round_trip_through_the_database(clean_database):
    with session_factory(clean_database)() as session:
        record(session, AuditActor("user", "7", "김서연 Kim Seo-yeon", "203.0.113.5"),
               AuditEvent("read", "patient", "1", detail={"query": "홍길동", "n": [1, 2.5]}))
        session.commit()
    assert_contiguous_and_intact(clean_database)


# ----------------------------------------------------------------------------- auditors' page


@pytest.fixture
def trail(client, actors) -> dict[str, list[int]]:
    """Reads of each institution's patient by its own hospital system."""
    sequences: dict[str, list[int]] = {}
    for institution in ("a", "b"):
        token = client_token(client, actors.clients[institution])
        patient = actors.patients[institution].id
        for _ in range(2):
            client.get(f"/api/v1/patients/{patient}", headers=bearer(token))
        sequences[institution] = [e.sequence for e in audit_entries(
            client.app.state.engine, patient_id=patient)]
    client.cookies.clear()
    return sequences


def test_an_auditor_finds_every_access_to_a_patient(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    page = client.get("/audit", params={"patient_id": actors.patients["a"].id})
    assert page.status_code == 200
    assert sorted(listed_sequences(page.text)) == sorted(trail["a"])
    assert "client:his-a" in page.text
    assert "testclient" in page.text  # from where


def test_an_auditor_narrows_the_search_by_date(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    today = datetime.now(UTC).date()
    patient = actors.patients["a"].id
    this_day = client.get("/audit", params={"patient_id": patient, "start": today.isoformat(),
                                            "end": today.isoformat()})
    assert sorted(listed_sequences(this_day.text)) == sorted(trail["a"])
    yesterday = (today - timedelta(days=1)).isoformat()
    before = client.get("/audit", params={"patient_id": patient, "end": yesterday})
    assert listed_sequences(before.text) == []
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert listed_sequences(client.get("/audit", params={"start": tomorrow}).text) == []


def test_an_auditor_searches_by_who_and_by_action(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    by_actor = client.get("/audit", params={"actor": "his-a", "action": "read"})
    expected = [e.sequence for e in audit_entries(client.app.state.engine, action="read",
                                                  institution_id=actors.a.id)]
    assert sorted(listed_sequences(by_actor.text)) == sorted(expected)


def test_the_empty_search_form_shows_everything_of_the_auditors_institution(client, actors,
                                                                           trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    page = client.get("/audit?patient_id=&actor=&action=&start=&end=")
    assert page.status_code == 200, page.text
    shown = set(listed_sequences(page.text))
    assert set(trail["a"]) <= shown
    assert not set(trail["b"]) & shown


def test_auditors_of_one_institution_never_see_anothers_entries(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    page = client.get("/audit", params={"patient_id": actors.patients["b"].id})
    assert listed_sequences(page.text) == []
    everything = client.get("/audit").text
    assert not set(trail["b"]) & set(listed_sequences(everything))
    assert "client:his-b" not in everything


def test_searching_the_trail_is_itself_audited(client, actors, trail):
    auditor = actors.person("a", Role.AUDITOR)
    sign_in(client, auditor)
    client.get("/audit", params={"patient_id": actors.patients["a"].id})
    entry = audit_entries(client.app.state.engine)[-1]
    assert (entry.action, entry.resource_type, entry.purpose) == ("search", "audit_log", "audit")
    assert (entry.actor_id, entry.institution_id) == (str(auditor.user.id), actors.a.id)


def test_an_institution_admin_may_search_the_trail(client, actors, trail):
    sign_in(client, actors.person("a", Role.INSTITUTION_ADMIN))
    page = client.get("/audit", params={"patient_id": actors.patients["a"].id})
    assert sorted(listed_sequences(page.text)) == sorted(trail["a"])


@pytest.mark.parametrize("role", [Role.PATIENT, Role.CLINICIAN, Role.COORDINATOR,
                                  Role.INTERPRETER])
def test_other_roles_are_refused_the_audit_page(client, actors, trail, role):
    sign_in(client, actors.person("a", role))
    page = client.get("/audit", params={"patient_id": actors.patients["a"].id})
    assert page.status_code == 403
    assert "<tbody>" not in page.text
    assert "client:his-a" not in page.text


def test_strangers_are_sent_to_sign_in(client, trail):
    response = client.get("/audit", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


def test_system_clients_cannot_read_the_trail(client, actors, trail):
    token = client_token(client, actors.clients["a"])
    response = client.get("/audit", headers=bearer(token) | {"Accept": "application/json"})
    assert response.status_code == 403


@pytest.mark.parametrize("query", ["start=2026-02-30", "patient_id=abc", "patient_id=-1",
                                   "page=0", "end=yesterday"])
def test_an_impossible_filter_is_refused_with_422(client, actors, query):
    sign_in(client, actors.person("a", Role.AUDITOR))
    response = client.get(f"/audit?{query}")
    assert response.status_code == 422
    assert "VALIDATION_FAILED" in response.text
    assert "<tbody>" not in response.text
