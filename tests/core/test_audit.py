"""The audit trail: unbroken hash chains under concurrent writers (who do not wait for each other
on PostgreSQL), tampering found and named by chain, the migration from one chain, and the
auditors' page."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import JSON, column, table, text

from jaejin.core.accounts import Role
from jaejin.core.audit import (
    AuditActor,
    AuditEntry,
    AuditEvent,
    record,
    verify_chain,
)
from jaejin.core.config import get_settings
from jaejin.core.database import UTCDateTime, build_engine, session_factory
from jaejin.core.migrate import upgrade
from tests.conftest import POSTGRES_URL, _create_postgres_database, _drop_postgres_database
from tests.core.helpers import audit_entries, fresh
from tests.support import bearer, client_token, sign_in

THREADS = 6
READS_PER_THREAD = 8


on_postgresql = pytest.mark.skipif(
    not POSTGRES_URL, reason="SQLite has one writer at a time (BEGIN IMMEDIATE), so one chain")


def listed_ids(page: str) -> list[int]:
    """The numbers (entry ids) of the entries shown in the audit page's table."""
    body = re.search(r"<tbody>(.*?)</tbody>", page, re.S)
    assert body, "the audit page has no table body"
    return [int(number) for number in re.findall(r"<tr><td[^>]*>(\d+)</td>", body.group(1))]


def chains_of(entries: list[AuditEntry]) -> dict[int, list[int]]:
    """Each chain's sequence numbers, in the order written."""
    chains: dict[int, list[int]] = {}
    for entry in entries:
        chains.setdefault(entry.chain, []).append(entry.sequence)
    return chains


def assert_contiguous_and_intact(engine) -> list[AuditEntry]:
    entries = audit_entries(engine)
    chains = chains_of(entries)
    # Chains are numbered from 1 without gaps; each counts 1, 2, 3, ... in the order written.
    assert sorted(chains) == list(range(1, len(chains) + 1))
    for sequences in chains.values():
        assert sequences == list(range(1, len(sequences) + 1))
    with fresh(engine) as session:
        report = verify_chain(session)
    assert report.intact, report.problems
    assert report.entries_checked == len(entries)
    assert report.chains_checked >= len(chains)  # chains are opened before they are needed
    return entries


# ------------------------------------------------------------------------------- concurrency


def test_parallel_api_reads_from_many_threads_leave_every_chain_unbroken(app, client, actors):
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


def test_the_first_entries_written_at_once_into_an_empty_trail_form_unbroken_chains(clean_database):
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
        with session_factory(engine)() as other:
            record(other, AuditActor.system("web"), AuditEvent("create", "test", "2"))
            other.commit()
        record(long_lived, AuditActor.system("worker"), AuditEvent("create", "test", "3"))
        long_lived.commit()
    entries = assert_contiguous_and_intact(engine)
    assert [e.resource_id for e in entries] == ["1", "2", "3"]
    assert {e.chain for e in entries} == {1}  # one writer at a time stays in chain 1


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


# ------------------------------------------------------------------- several chains (PostgreSQL)


def write_while_holding(engine, writers: int, rounds: int = 1, per_transaction: int = 1,
                        before_commit: threading.Barrier | None = None) -> list[BaseException]:
    """`writers` threads, each appending `per_transaction` entries per transaction for `rounds`
    transactions; with `before_commit`, every writer holds its transaction open until all have
    written (so they must be appending to different chains at the same moment)."""
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(number: int) -> None:
        try:
            start.wait(timeout=30)
            with session_factory(engine)() as session:
                for round_ in range(rounds):
                    for item in range(per_transaction):
                        record(session, AuditActor.system(f"writer-{number}"),
                               AuditEvent("create", "test", f"{number}.{round_}.{item}",
                                          purpose="operations"))
                    if before_commit is not None:
                        before_commit.wait(timeout=30)
                    session.commit()
        except BaseException as error:  # reported to the test thread below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return failures


@pytest.fixture
def few_chains(monkeypatch):
    """JAEJIN_AUDIT_CHAINS=3 for the test (the setting is read once per process)."""
    monkeypatch.setenv("JAEJIN_AUDIT_CHAINS", "3")
    get_settings.cache_clear()
    yield 3
    monkeypatch.undo()
    get_settings.cache_clear()


@on_postgresql
def test_concurrent_writers_append_to_different_chains_without_waiting(clean_database):
    writers = 8
    # Every writer holds its transaction (and its chain's head) until all eight have written:
    # with one head row locked until commit, this could never complete.
    holding = threading.Barrier(writers)
    failures = write_while_holding(clean_database, writers, rounds=3, per_transaction=2,
                                   before_commit=holding)
    assert not failures, failures
    entries = assert_contiguous_and_intact(clean_database)
    assert len(entries) == writers * 3 * 2
    assert len(chains_of(entries)) == writers
    # A transaction keeps the chain it took for all its entries.
    for number in range(writers):
        mine = [e for e in entries if e.actor_id == f"writer-{number}"]
        for round_ in range(3):
            pair = [e for e in mine if e.resource_id.startswith(f"{number}.{round_}.")]
            assert len({e.chain for e in pair}) == 1
            assert pair[1].sequence == pair[0].sequence + 1


@on_postgresql
def test_many_writers_at_once_lose_and_duplicate_nothing(clean_database):
    failures = write_while_holding(clean_database, writers=16, rounds=10)
    assert not failures, failures
    entries = assert_contiguous_and_intact(clean_database)
    assert sorted(e.resource_id for e in entries) == sorted(
        f"{number}.{round_}.0" for number in range(16) for round_ in range(10))
    assert len({(e.chain, e.sequence) for e in entries}) == len(entries)


@on_postgresql
def test_writers_wait_for_a_chain_when_every_chain_is_held(clean_database, few_chains):
    failures = write_while_holding(clean_database, writers=8, rounds=6)
    assert not failures, failures
    entries = assert_contiguous_and_intact(clean_database)
    assert len(entries) == 8 * 6
    assert set(chains_of(entries)) <= {1, 2, 3}


@pytest.fixture
def three_chains(clean_database) -> dict[int, list[int]]:
    """Chains 1, 2 and 3 with four entries each (three writers holding their chains at once)."""
    holding = threading.Barrier(3)
    failures = write_while_holding(clean_database, writers=3, rounds=2, per_transaction=2,
                                   before_commit=holding)
    assert not failures, failures
    chains = chains_of(assert_contiguous_and_intact(clean_database))
    assert {number: len(sequences) for number, sequences in chains.items()} == {1: 4, 2: 4, 3: 4}
    return chains


def problems(engine) -> list[str]:
    with fresh(engine) as session:
        return [f"{problem.where}: {problem.problem}" for problem in verify_chain(session).problems]


@on_postgresql
def test_an_edited_entry_is_named_with_its_chain(clean_database, three_chains):
    with clean_database.begin() as connection:
        connection.execute(text("UPDATE audit_log SET purpose = 'research' "
                                "WHERE chain = 2 AND sequence = 3"))
    assert problems(clean_database) == ["chain 2, entry 3: content does not match its hash "
                                        "(edited)"]


@on_postgresql
def test_a_deleted_entry_leaves_a_gap_in_its_chain(clean_database, three_chains):
    with clean_database.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE chain = 3 AND sequence = 2"))
    found = problems(clean_database)
    assert "chain 3, entry 3: entries 2..2 are missing (deleted)" in found
    assert all(line.startswith("chain 3,") for line in found)


@on_postgresql
def test_a_cut_tail_is_found_in_its_chain(clean_database, three_chains):
    with clean_database.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE chain = 2 AND sequence = 4"))
    assert problems(clean_database) == [
        "chain 2, entry 4: the chain ends at 3 but 4 entries were written (newest entries "
        "deleted)"]


@on_postgresql
def test_a_deleted_head_is_found_and_writing_goes_on_elsewhere(clean_database, three_chains):
    with clean_database.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE chain = 3 AND sequence = 4"))
        connection.execute(text("DELETE FROM audit_chain_head WHERE id = 3"))
    expected = ["chain 3: the chain head is missing (deleted): the newest entries cannot be "
                "vouched for"]
    assert problems(clean_database) == expected
    # Auditing does not stop (nor restart chain 3, which would hide the deletion).
    failures = write_while_holding(clean_database, writers=4, rounds=3)
    assert not failures, failures
    assert problems(clean_database) == expected


@on_postgresql
def test_a_chain_deleted_whole_is_found(clean_database, three_chains):
    with clean_database.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE chain = 2"))
        connection.execute(text("DELETE FROM audit_chain_head WHERE id = 2"))
    assert problems(clean_database) == [
        "chain 2: the whole chain is missing (its head and every entry deleted)"]


# ------------------------------------------------------------------------------------ migration


#: audit_log as revision 0001 made it (no chain column).
LOG_BEFORE_0002 = table(
    "audit_log", column("occurred_at", UTCDateTime()), column("detail", JSON()),
    *(column(name) for name in (
        "sequence", "actor_type", "actor_id", "actor_label", "institution_id", "action",
        "resource_type", "resource_id", "patient_id", "purpose", "outcome", "ip_address",
        "user_agent", "previous_hash", "entry_hash")))


@pytest.fixture
def empty_database_url(tmp_path):
    if POSTGRES_URL:
        url, name = _create_postgres_database("migration")
        yield url
        _drop_postgres_database(name)
    else:
        yield f"sqlite:///{tmp_path / 'migration.db'}"


def test_a_single_chain_trail_becomes_chain_1_and_keeps_verifying(empty_database_url):
    """Entries written before revision 0002 (one chain, hashed as then) verify after it, and new
    entries continue their chain."""
    upgrade(empty_database_url, "0001")
    engine = build_engine(empty_database_url)
    try:
        previous = "0" * 64
        occurred = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        with engine.begin() as connection:
            for sequence in (1, 2, 3):
                fields = {"sequence": sequence,
                          "occurred_at": occurred.isoformat(timespec="microseconds"),
                          "actor_type": "user", "actor_id": "7", "actor_label": "김서연",
                          "institution_id": None, "action": "read", "resource_type": "patient",
                          "resource_id": str(sequence), "patient_id": None,
                          "purpose": "treatment", "outcome": "success",
                          "ip_address": "203.0.113.5", "user_agent": None,
                          "detail": {"query": "홍길동", "n": [1, 2.5]}}
                # The hash exactly as revision 0001's code computed it.
                canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False)
                entry_hash = hashlib.sha256((previous + canonical).encode()).hexdigest()
                connection.execute(LOG_BEFORE_0002.insert().values(
                    fields | {"occurred_at": occurred, "previous_hash": previous,
                              "entry_hash": entry_hash}))
                previous = entry_hash
            connection.execute(text("INSERT INTO audit_chain_head (id, last_sequence, last_hash)"
                                    " VALUES (1, 3, :hash)"), {"hash": previous})
        upgrade(empty_database_url)
        with session_factory(engine)() as session:
            record(session, AuditActor.system(), AuditEvent("read", "patient", "4"))
            session.commit()
        entries = assert_contiguous_and_intact(engine)
        assert [(e.chain, e.sequence, e.resource_id) for e in entries] == [
            (1, 1, "1"), (1, 2, "2"), (1, 3, "3"), (1, 4, "4")]
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET actor_label = 'someone' "
                                    "WHERE sequence = 2"))
        with fresh(engine) as session:
            assert [(p.chain, p.sequence) for p in verify_chain(session).problems] == [(1, 2)]
    finally:
        engine.dispose()


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
        sequences[institution] = [e.id for e in audit_entries(
            client.app.state.engine, patient_id=patient)]
    client.cookies.clear()
    return sequences


def test_an_auditor_finds_every_access_to_a_patient(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    page = client.get("/audit", params={"patient_id": actors.patients["a"].id})
    assert page.status_code == 200
    assert sorted(listed_ids(page.text)) == sorted(trail["a"])
    assert "client:his-a" in page.text
    assert "testclient" in page.text  # from where


def test_an_auditor_narrows_the_search_by_date(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    today = datetime.now(UTC).date()
    patient = actors.patients["a"].id
    this_day = client.get("/audit", params={"patient_id": patient, "start": today.isoformat(),
                                            "end": today.isoformat()})
    assert sorted(listed_ids(this_day.text)) == sorted(trail["a"])
    yesterday = (today - timedelta(days=1)).isoformat()
    before = client.get("/audit", params={"patient_id": patient, "end": yesterday})
    assert listed_ids(before.text) == []
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert listed_ids(client.get("/audit", params={"start": tomorrow}).text) == []


def test_an_auditor_searches_by_who_and_by_action(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    by_actor = client.get("/audit", params={"actor": "his-a", "action": "read"})
    expected = [e.id for e in audit_entries(client.app.state.engine, action="read",
                                                  institution_id=actors.a.id)]
    assert sorted(listed_ids(by_actor.text)) == sorted(expected)


def test_the_empty_search_form_shows_everything_of_the_auditors_institution(client, actors,
                                                                           trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    page = client.get("/audit?patient_id=&actor=&action=&start=&end=")
    assert page.status_code == 200, page.text
    shown = set(listed_ids(page.text))
    assert set(trail["a"]) <= shown
    assert not set(trail["b"]) & shown


def test_auditors_of_one_institution_never_see_anothers_entries(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    page = client.get("/audit", params={"patient_id": actors.patients["b"].id})
    assert listed_ids(page.text) == []
    everything = client.get("/audit").text
    assert not set(trail["b"]) & set(listed_ids(everything))
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
    assert sorted(listed_ids(page.text)) == sorted(trail["a"])


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
