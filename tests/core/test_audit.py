"""The audit trail: one INSERT per audited write, entries sealed afterwards into one unbroken
hash chain (by one sealer at a time, in the order it finds them), tampering found and named by
chain, unsealed entries reported when they wait too long, the migrations from the chains
writers made themselves, and the auditors' page."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Engine, column, select, table, text

from jaejin.core.accounts import Role
from jaejin.core.audit import (
    AuditActor,
    AuditEntry,
    AuditEvent,
    RecordedEntry,
    record,
    record_many,
    seal_and_verify,
    seal_pending,
    verify_chain,
)
from jaejin.core.config import get_settings
from jaejin.core.database import UTCDateTime, build_engine, read_connection, session_factory
from jaejin.core.migrate import upgrade
from jaejin.jobs import start_audit_sealer
from tests.conftest import POSTGRES_URL, _create_postgres_database, _drop_postgres_database
from tests.core.helpers import audit_entries, empty_database, fresh
from tests.support import bearer, client_token, sign_in, statements_sent

THREADS = 6
READS_PER_THREAD = 8

on_postgresql = pytest.mark.skipif(
    not POSTGRES_URL, reason="SQLite has one writer at a time (BEGIN IMMEDIATE)")


def listed_ids(page: str) -> list[int]:
    """The numbers (entry ids) of the entries shown in the audit page's table."""
    body = re.search(r"<tbody>(.*?)</tbody>", page, re.S)
    assert body, "the audit page has no table body"
    return [int(number) for number in re.findall(r"<tr><td[^>]*>(\d+)</td>", body.group(1))]


def chains_of(entries: list[AuditEntry]) -> dict[int | None, list[int | None]]:
    """Each chain's sequence numbers, in sealing order."""
    chains: dict[int | None, list[int | None]] = {}
    for entry in sorted(entries, key=lambda e: (e.chain or 0, e.sequence or 0)):
        chains.setdefault(entry.chain, []).append(entry.sequence)
    return chains


def sealed_and_intact(engine: Engine) -> list[AuditEntry]:
    """Seal what waits; every entry is then in chain 1, numbered 1, 2, 3, ... without gaps,
    and the chain verifies. The entries in sealing order."""
    seal_pending(engine)
    entries = sorted(audit_entries(engine), key=lambda e: e.sequence or 0)
    assert chains_of(entries) == ({1: list(range(1, len(entries) + 1))} if entries else {})
    with fresh(engine) as session:
        report = verify_chain(session)
    assert report.intact, report.problems
    assert report.entries_checked == len(entries)
    assert report.unsealed.entries == 0
    return entries


def write(engine: Engine, *resource_ids: str, actor: str = "writer") -> list[RecordedEntry]:
    """One committed transaction recording one entry per id."""
    with session_factory(engine)() as session:
        written = [record(session, AuditActor.system(actor),
                          AuditEvent("create", "test", resource_id, purpose="operations"))
                   for resource_id in resource_ids]
        session.commit()
    return written


def problems(engine: Engine, now: datetime | None = None) -> list[str]:
    with fresh(engine) as session:
        report = verify_chain(session, now=now)
    return [f"{problem.where}: {problem.problem}" for problem in report.problems]


def entry_content(entry: AuditEntry) -> tuple[Any, ...]:
    """What an entry says, without its place in the chain (id, time, hashes)."""
    return tuple(getattr(entry, name) for name in (
        "actor_type", "actor_id", "actor_label", "institution_id", "action",
        "resource_type", "resource_id", "patient_id", "purpose", "outcome", "ip_address",
        "user_agent", "detail"))


def statements(engine: Engine) -> AbstractContextManager[list[str]]:
    """The statements this thread sends while the block runs, transaction control left out
    (other threads share the session's engine: a sealer, the place watch)."""
    return statements_sent(engine, this_thread_only=True, transaction_control=False)


# ------------------------------------------------------------------------------ the write


def test_recording_an_entry_is_one_insert_that_reads_and_locks_nothing(clean_database):
    with session_factory(clean_database)() as session:
        session.connection()  # the transaction is begun before counting
        with statements(clean_database) as sent:
            written = record(session, AuditActor.system(), AuditEvent("read", "patient", "1"))
        session.commit()
    assert len(sent) == 1, sent
    assert sent[0].startswith("INSERT INTO audit_log")
    assert "FOR UPDATE" not in sent[0] and "audit_chain_head" not in sent[0]
    entry = audit_entries(clean_database)[0]
    assert entry.id == written.id
    assert (entry.chain, entry.sequence, entry.previous_hash, entry.entry_hash) == (
        None, None, None, None)
    assert not entry.sealed


def test_a_count_leaves_out_what_other_threads_send_on_the_engine_meanwhile(clean_database):
    # As the place watch's re-reads or a sealer do, between or during other tests' counts.
    stop = threading.Event()

    def keep_reading() -> None:
        while not stop.is_set():
            with read_connection(clean_database) as connection:  # as the place watch does
                connection.execute(text("SELECT 1"))

    reader = threading.Thread(target=keep_reading)
    reader.start()
    try:
        with session_factory(clean_database)() as session:
            session.connection()
            with statements(clean_database) as sent:
                record(session, AuditActor.system(), AuditEvent("read", "patient", "1"))
                time.sleep(0.05)
            session.commit()
    finally:
        stop.set()
        reader.join()
    assert [statement.split(" (")[0] for statement in sent] == ["INSERT INTO audit_log"]


def test_recording_several_entries_at_once_is_one_insert(clean_database):
    events = [AuditEvent("read", "patient", str(number), number) for number in range(1, 6)]
    with session_factory(clean_database)() as session:
        session.connection()
        with statements(clean_database) as sent:
            written = record_many(session, AuditActor.system(), events)
        session.commit()
    assert len(sent) == 1, sent
    entries = audit_entries(clean_database)
    assert [e.id for e in entries] == [w.id for w in written]
    assert [e.resource_id for e in entries] == ["1", "2", "3", "4", "5"]
    with session_factory(clean_database)() as session:
        assert record_many(session, AuditActor.system(), []) == []


def test_entries_of_several_actors_are_one_insert_too(clean_database):
    from jaejin.core.audit import record_entries

    entries = [(AuditActor.system(f"gateway-{number}"), AuditEvent("create", "reading", None,
                                                                   number))
               for number in range(1, 4)]
    with session_factory(clean_database)() as session:
        session.connection()
        with statements(clean_database) as sent:
            written = record_entries(session, entries)
        session.commit()
    assert len(sent) == 1, sent
    stored = audit_entries(clean_database)
    assert [e.id for e in stored] == [w.id for w in written]
    assert [(e.actor_id, e.patient_id) for e in stored] == [
        ("gateway-1", 1), ("gateway-2", 2), ("gateway-3", 3)]
    assert [e.resource_id for e in sealed_and_intact(clean_database)] == [None] * 3


def test_entries_written_together_read_back_as_entries_written_one_by_one(clean_database):
    from jaejin.core.audit import record_entries

    actors = [AuditActor("client", "gw-1", "게이트웨이", "10.0.0.1", "sensor/1.0"),
              AuditActor("user", "7", "Dr. Kim"), AuditActor.system()]
    events = [AuditEvent("create", "reading", None, 3, None,
                         detail={"channel": "json", "note": "혈압 ✓", "ids": {"first": 1}}),
              AuditEvent("read", "patient", "42", None, None, purpose="payment",
                         outcome="denied", detail={}),
              AuditEvent("export", "report", "r-1", 9, None, detail={1: [1.5, None, True]})]
    with session_factory(clean_database)() as session:
        for actor, event in zip(actors, events, strict=True):
            record(session, actor, event)
        record_entries(session, list(zip(actors, events, strict=True)))
        session.commit()

    entries = sealed_and_intact(clean_database)
    assert [entry_content(entry) for entry in entries[3:]] == [
        entry_content(entry) for entry in entries[:3]]
    assert entries[5].detail == {"1": [1.5, None, True]}


def test_an_entry_written_by_the_callers_own_statement_reads_back_as_recorded(clean_database):
    """`insert_entry_sql` (PostgreSQL): a hot write carries its entry in its own statement;
    the entry is the one `record` writes, sealed into the same chain; its WHERE may skip it."""
    from jaejin.core.audit import entry_json, insert_entry_sql

    if clean_database.dialect.name != "postgresql":
        pytest.skip("json_to_record is PostgreSQL's")
    actor = AuditActor("client", "gw-1", "게이트웨이 \"1\"", "10.0.0.1", "sensor/1.0 " * 40)
    event = AuditEvent("create", "appointment", "17", 3, None, purpose="treatment",
                       detail={"start": "2026-03-02T01:00:00+00:00", "note": "혈압 ✓",
                               "ids": {"first": 1}, 2: [1.5, None, True]})
    with session_factory(clean_database)() as session:
        record(session, actor, event)
        session.execute(text(insert_entry_sql("entry")), {"entry": entry_json(actor, event)})
        skipped = session.execute(text(insert_entry_sql("entry") + " WHERE false"),
                                  {"entry": entry_json(actor, event)})
        assert skipped.rowcount == 0
        session.commit()

    recorded, carried = sealed_and_intact(clean_database)
    assert entry_content(carried) == entry_content(recorded)
    assert len(carried.user_agent or "") == 300
    assert carried.occurred_at >= recorded.occurred_at


def test_an_entry_statement_takes_only_a_bind_parameter_name():
    from jaejin.core.audit import insert_entry_sql

    with pytest.raises(ValueError, match="bind parameter"):
        insert_entry_sql("entry) AS x; DROP TABLE audit_log; --")


def test_an_entry_rolled_back_with_its_change_leaves_nothing_to_seal(clean_database):
    engine = clean_database
    with session_factory(engine)() as session:
        record(session, AuditActor.system(), AuditEvent("create", "test", "kept"))
        session.commit()
        record(session, AuditActor.system(), AuditEvent("create", "test", "rolled back"))
        session.rollback()
        record(session, AuditActor.system(), AuditEvent("create", "test", "kept too"))
        session.commit()
    entries = sealed_and_intact(engine)
    assert [e.resource_id for e in entries] == ["kept", "kept too"]


def test_non_ascii_details_survive_the_round_trip_through_the_database(clean_database):
    with session_factory(clean_database)() as session:
        record(session, AuditActor("user", "7", "김서연 Kim Seo-yeon", "203.0.113.5"),
               AuditEvent("read", "patient", "1", detail={"query": "홍길동", "n": [1, 2.5],
                                                          3: ("a", "b")}))
        session.commit()
    [entry] = sealed_and_intact(clean_database)
    assert entry.detail == {"query": "홍길동", "n": [1, 2.5], "3": ["a", "b"]}


# ---------------------------------------------------------------------------------- sealing


def expected_hash(entry: AuditEntry, previous_hash: str) -> str:
    """The entry's hash as documented: SHA-256 of the previous hash followed by the entry's
    fields (its sequence, and its chain unless 1) as compact JSON with sorted keys."""
    fields = {name: getattr(entry, name) for name in (
        "actor_type", "actor_id", "actor_label", "institution_id", "action", "resource_type",
        "resource_id", "patient_id", "purpose", "outcome", "ip_address", "user_agent",
        "detail")}
    fields["occurred_at"] = entry.occurred_at.isoformat(timespec="microseconds")
    fields["sequence"] = entry.sequence
    if entry.chain != 1:
        fields["chain"] = entry.chain
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((previous_hash + canonical).encode()).hexdigest()


def test_sealing_numbers_and_hashes_entries_in_the_order_written(clean_database):
    write(clean_database, "1", "2")
    write(clean_database, "3")
    with fresh(clean_database) as session:
        assert verify_chain(session).unsealed.entries == 3
    report = seal_pending(clean_database)
    assert (report.sealed, report.chain) == (3, 1)
    entries = sealed_and_intact(clean_database)
    assert [(e.resource_id, e.sequence) for e in entries] == [("1", 1), ("2", 2), ("3", 3)]
    previous = "0" * 64
    for entry in entries:
        assert entry.previous_hash == previous
        assert entry.entry_hash == expected_hash(entry, previous)
        previous = entry.entry_hash
    # Sealing again finds nothing; later entries continue the chain.
    assert seal_pending(clean_database).sealed == 0
    write(clean_database, "4")
    assert [e.resource_id for e in sealed_and_intact(clean_database)] == ["1", "2", "3", "4"]


def test_sealing_goes_in_batches_of_one_update_each(clean_database):
    write(clean_database, *(str(number) for number in range(7)))
    with statements(clean_database) as sent:
        report = seal_pending(clean_database, batch=3)
    assert report.sealed == 7
    updates = [s for s in sent if s.startswith("UPDATE audit_log")]
    assert len(updates) == 3  # 3 + 3 + 1 entries
    assert [e.resource_id for e in sealed_and_intact(clean_database)] == [
        str(number) for number in range(7)]


@on_postgresql
def test_an_entry_committed_late_is_sealed_after_those_committed_before_it(clean_database):
    engine = clean_database
    with session_factory(engine)() as late:
        late_written = record(late, AuditActor.system(), AuditEvent("create", "test", "late"))
        write(engine, "early")  # a higher id, committed first
        assert seal_pending(engine).sealed == 1
        late.commit()
    assert seal_pending(engine).sealed == 1
    entries = sealed_and_intact(engine)
    assert [(e.resource_id, e.sequence) for e in entries] == [("early", 1), ("late", 2)]
    assert entries[1].id == late_written.id < entries[0].id


def test_an_uncommitted_entry_is_not_sealed_by_another_transaction(clean_database):
    engine = clean_database
    with session_factory(engine)() as writer:
        record(writer, AuditActor.system(), AuditEvent("create", "test", "pending"))
        if engine.dialect.name == "postgresql":
            # (On SQLite the sealer could not even begin while the writer holds the lock.)
            assert seal_pending(engine).sealed == 0
        writer.rollback()
    assert seal_pending(engine).sealed == 0
    assert audit_entries(engine) == []


def test_the_worker_seal_thread_seals_within_its_interval(clean_database):
    sealer = start_audit_sealer(clean_database, seconds=0.05)
    try:
        write(clean_database, "1")
        deadline = time.monotonic() + 10
        while not all(e.sealed for e in audit_entries(clean_database)):
            assert time.monotonic() < deadline, "the sealer thread sealed nothing"
            time.sleep(0.05)
    finally:
        # Ended, not just asked to: the next test shares the engine and the database.
        assert sealer.stop(), "the sealer thread did not end when stopped"
    sealed_and_intact(clean_database)


def test_a_stopped_sealer_thread_has_ended_and_seals_nothing_more(clean_database):
    sealer = start_audit_sealer(clean_database, seconds=0.01)
    assert sealer.stop()
    assert not sealer.thread.is_alive()
    write(clean_database, "after the stop")
    time.sleep(0.1)  # ten of its intervals
    assert [e.sealed for e in audit_entries(clean_database)] == [False]


@given(st.lists(st.sampled_from(["write", "write two", "roll back", "seal"]), max_size=12))
@hypothesis_settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_mix_of_writes_rollbacks_and_seals_ends_in_one_unbroken_chain(engine, steps):
    empty_database(engine)
    committed: list[str] = []
    for number, step in enumerate(steps):
        if step == "seal":
            seal_pending(engine, batch=2)
            continue
        with session_factory(engine)() as session:
            ids = [f"{number}.a", f"{number}.b"] if step == "write two" else [f"{number}"]
            for resource_id in ids:
                record(session, AuditActor.system(), AuditEvent("create", "test", resource_id))
            if step == "roll back":
                session.rollback()
            else:
                session.commit()
                committed += ids
    # Single writer and sealer here: the chain's order is the order written.
    assert [e.resource_id for e in sealed_and_intact(engine)] == committed


# ------------------------------------------------------------------------------ concurrency


def write_while_holding(engine: Engine, writers: int, rounds: int = 1, per_transaction: int = 1,
                        before_commit: threading.Barrier | None = None) -> list[BaseException]:
    """`writers` threads, each recording `per_transaction` entries per transaction for `rounds`
    transactions; with `before_commit`, every writer holds its transaction open until all have
    written (so they must not wait for each other)."""
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write_rounds(number: int) -> None:
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

    threads = [threading.Thread(target=write_rounds, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return failures


def test_parallel_api_reads_from_many_threads_are_all_sealed_into_one_chain(app, client,
                                                                            actors):
    token = client_token(client, actors.clients["a"])
    other_token = client_token(client, actors.clients["b"])
    before = {e.id for e in audit_entries(client.app.state.engine)}
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
    entries = sealed_and_intact(client.app.state.engine)
    reads = [e for e in entries if e.id not in before and e.action == "read"]
    assert len(reads) == THREADS * READS_PER_THREAD
    assert {e.patient_id for e in reads} == {actors.patients["a"].id, actors.patients["b"].id}


@on_postgresql
def test_concurrent_writers_do_not_wait_for_each_other(clean_database):
    writers = 8
    # Every writer holds its transaction until all eight have written: any lock held by a
    # writer until commit would make this wait forever.
    holding = threading.Barrier(writers)
    failures = write_while_holding(clean_database, writers, rounds=3, per_transaction=2,
                                   before_commit=holding)
    assert not failures, failures
    assert len(sealed_and_intact(clean_database)) == writers * 3 * 2


@on_postgresql
def test_sealers_racing_writers_never_give_one_sequence_twice(clean_database):
    engine = clean_database
    done = threading.Event()
    failures: list[BaseException] = []

    def keep_sealing() -> None:
        try:
            while not done.is_set():
                seal_pending(engine, batch=5)
        except BaseException as error:  # reported to the test thread below
            failures.append(error)

    sealers = [threading.Thread(target=keep_sealing) for _ in range(3)]
    for sealer in sealers:
        sealer.start()
    try:
        failures += write_while_holding(engine, writers=12, rounds=10)
    finally:
        done.set()
        for sealer in sealers:
            sealer.join(timeout=60)
    assert not failures, failures
    entries = sealed_and_intact(engine)
    assert sorted(e.resource_id for e in entries) == sorted(
        f"{number}.{round_}.0" for number in range(12) for round_ in range(10))
    assert len({e.sequence for e in entries}) == len(entries)


# -------------------------------------------------------------------------------- tampering


@pytest.fixture
def sealed_trail(clean_database) -> list[AuditEntry]:
    """Five entries, sealed: chain 1, entries 1..5."""
    write(clean_database, "1", "2", "3")
    write(clean_database, "4", "5")
    entries = sealed_and_intact(clean_database)
    assert len(entries) == 5
    return entries


def tamper(engine: Engine, *statements_: str) -> None:
    with engine.begin() as connection:
        for statement in statements_:
            connection.execute(text(statement))


def test_an_edited_entry_is_named_with_its_chain(clean_database, sealed_trail):
    tamper(clean_database, "UPDATE audit_log SET purpose = 'research' WHERE sequence = 3")
    assert problems(clean_database) == ["chain 1, entry 3: content does not match its hash "
                                        "(edited)"]


def test_an_edit_rehashed_by_the_forger_breaks_the_next_link(clean_database, sealed_trail):
    from jaejin.core.audit import _content_hash, _hashed_fields

    with fresh(clean_database) as session:
        entry = session.get(AuditEntry, sealed_trail[1].id)
        assert entry is not None and entry.previous_hash is not None
        entry.purpose = "research"
        entry.entry_hash = _content_hash(_hashed_fields(entry), entry.previous_hash)
        session.commit()
    assert problems(clean_database) == ["chain 1, entry 3: link to the previous entry is broken"]


def test_a_deleted_entry_leaves_a_gap(clean_database, sealed_trail):
    tamper(clean_database, "DELETE FROM audit_log WHERE sequence = 2")
    assert problems(clean_database) == [
        "chain 1, entry 3: entries 2..2 are missing (deleted)",
        "chain 1, entry 3: link to the previous entry is broken"]


def test_an_entry_unsealed_again_leaves_a_gap_even_after_it_is_sealed_anew(clean_database,
                                                                           sealed_trail):
    tamper(clean_database, "UPDATE audit_log SET chain = NULL, sequence = NULL, "
                           "previous_hash = NULL, entry_hash = NULL WHERE sequence = 2")
    assert "chain 1, entry 3: entries 2..2 are missing (deleted)" in problems(clean_database)
    seal_pending(clean_database)
    assert "chain 1, entry 3: entries 2..2 are missing (deleted)" in problems(clean_database)


def test_a_cut_tail_is_found(clean_database, sealed_trail):
    tamper(clean_database, "DELETE FROM audit_log WHERE sequence = 5")
    assert problems(clean_database) == [
        "chain 1, entry 5: the chain ends at 4 but 5 entries were written (newest entries "
        "deleted)"]


def test_a_deleted_head_is_found_and_sealing_goes_on_in_a_new_chain(clean_database,
                                                                    sealed_trail):
    tamper(clean_database, "DELETE FROM audit_log WHERE sequence = 5",
           "DELETE FROM audit_chain_head WHERE id = 1")
    expected = ["chain 1: the chain head is missing (deleted): the newest entries cannot be "
                "vouched for"]
    assert problems(clean_database) == expected
    # Auditing goes on, without restarting chain 1 (which would hide the deletion).
    write(clean_database, "6", "7")
    assert seal_pending(clean_database).chain == 2
    assert problems(clean_database) == expected
    assert [(e.chain, e.sequence) for e in audit_entries(clean_database, resource_id="7")] == [
        (2, 2)]


def test_a_chain_deleted_whole_is_found(clean_database, sealed_trail):
    tamper(clean_database, "DELETE FROM audit_chain_head WHERE id = 1")
    write(clean_database, "6")
    seal_pending(clean_database)  # into chain 2
    tamper(clean_database, "DELETE FROM audit_log WHERE chain = 1")
    assert problems(clean_database) == [
        "chain 1: the whole chain is missing (its head and every entry deleted)"]


def test_verification_after_sealing_finds_an_edit_made_before_it(clean_database, sealed_trail):
    tamper(clean_database, "UPDATE audit_log SET actor_label = 'someone' WHERE sequence = 4")
    write(clean_database, "6")
    report = seal_and_verify(clean_database)
    assert [(p.chain, p.sequence) for p in report.problems] == [(1, 4)]
    assert report.entries_checked == 6
    assert report.unsealed.entries == 1  # what the check found waiting, and sealed


# ------------------------------------------------------------------------- unsealed entries


def test_unsealed_entries_are_counted_with_the_age_of_the_oldest(clean_database):
    write(clean_database, "1")
    write(clean_database, "2")
    with fresh(clean_database) as session:
        report = verify_chain(session)
    assert report.intact
    assert report.unsealed.entries == 2
    oldest = audit_entries(clean_database)[0].occurred_at
    assert report.unsealed.oldest_at == oldest
    assert report.unsealed.waited(oldest + timedelta(seconds=3)) == timedelta(seconds=3)


def test_an_entry_left_unsealed_too_long_means_the_sealer_is_not_running(clean_database):
    write(clean_database, "1")
    overdue = get_settings().audit_seal_overdue_seconds
    written = audit_entries(clean_database)[0].occurred_at
    assert problems(clean_database, now=written + timedelta(seconds=overdue - 1)) == []
    late = problems(clean_database, now=written + timedelta(seconds=overdue + 60))
    assert late == [f"audit trail: 1 entries were not sealed, the oldest for {overdue + 60:,.0f}"
                    f" s (more than {overdue:g} s): the sealer is not running"]
    seal_pending(clean_database)
    assert problems(clean_database, now=written + timedelta(seconds=overdue + 60)) == []


def test_an_operators_check_reports_the_overdue_backlog_it_sealed(clean_database):
    write(clean_database, "1")
    written = audit_entries(clean_database)[0].occurred_at
    report = seal_and_verify(clean_database, now=written + timedelta(days=1))
    assert [p.problem.endswith("the sealer is not running") for p in report.problems] == [True]
    assert report.entries_checked == 1  # sealed all the same
    with fresh(clean_database) as session:
        assert verify_chain(session, now=written + timedelta(days=1)).intact


# ------------------------------------------------------------------------------------ migration


#: audit_log as revision 0001 made it (no chain column).
LOG_BEFORE_0002 = table(
    "audit_log", column("occurred_at", UTCDateTime()), column("detail", JSON()),
    *(column(name) for name in (
        "sequence", "actor_type", "actor_id", "actor_label", "institution_id", "action",
        "resource_type", "resource_id", "patient_id", "purpose", "outcome", "ip_address",
        "user_agent", "previous_hash", "entry_hash")))
#: audit_log as revisions 0002 and 0003 had it: entries chained by their writers.
LOG_BEFORE_0004 = table(LOG_BEFORE_0002.name, *(column(c.name, c.type)
                                                for c in LOG_BEFORE_0002.columns),
                        column("chain"))


@pytest.fixture
def empty_database_url(tmp_path):
    if POSTGRES_URL:
        url, name = _create_postgres_database("migration")
        yield url
        _drop_postgres_database(name)
    else:
        yield f"sqlite:///{tmp_path / 'migration.db'}"


def legacy_fields(sequence: int, occurred: datetime) -> dict[str, object]:
    return {"sequence": sequence, "occurred_at": occurred.isoformat(timespec="microseconds"),
            "actor_type": "user", "actor_id": "7", "actor_label": "김서연",
            "institution_id": None, "action": "read", "resource_type": "patient",
            "resource_id": str(sequence), "patient_id": None, "purpose": "treatment",
            "outcome": "success", "ip_address": "203.0.113.5", "user_agent": None,
            "detail": {"query": "홍길동", "n": [1, 2.5]}}


def test_a_single_chain_trail_of_revision_0001_keeps_verifying_and_is_continued(
        empty_database_url):
    """Entries written before revision 0002 (one chain, hashed as then) verify after every
    revision, and the sealer continues their chain."""
    upgrade(empty_database_url, "0001")
    engine = build_engine(empty_database_url)
    try:
        previous = "0" * 64
        occurred = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        with engine.begin() as connection:
            for sequence in (1, 2, 3):
                fields = legacy_fields(sequence, occurred)
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
        write(engine, "4")
        entries = sealed_and_intact(engine)
        assert [(e.chain, e.sequence, e.resource_id) for e in entries] == [
            (1, 1, "1"), (1, 2, "2"), (1, 3, "3"), (1, 4, "4")]
        tamper(engine, "UPDATE audit_log SET actor_label = 'someone' WHERE sequence = 2")
        with fresh(engine) as session:
            assert [(p.chain, p.sequence) for p in verify_chain(session).problems] == [(1, 2)]
    finally:
        engine.dispose()


def test_the_chains_writers_made_keep_verifying_and_the_newest_is_continued(
        empty_database_url):
    """Revision 0003's trail (chains 1 and 2, chained by their writers) verifies after revision
    0004; the sealer continues chain 2, and leaves chain 1 as it was."""
    from jaejin.core.audit import _content_hash, _fields

    upgrade(empty_database_url, "0003")
    engine = build_engine(empty_database_url)
    try:
        occurred = datetime(2026, 9, 1, 9, 30, tzinfo=UTC)
        with engine.begin() as connection:
            for chain in (1, 2):
                previous = "0" * 64
                for sequence in (1, 2):
                    fields = legacy_fields(sequence, occurred)
                    entry_hash = _content_hash(_fields(chain, sequence, fields | {
                        "occurred_at": occurred}), previous)
                    connection.execute(LOG_BEFORE_0004.insert().values(
                        fields | {"chain": chain, "occurred_at": occurred,
                                  "previous_hash": previous, "entry_hash": entry_hash}))
                    previous = entry_hash
                connection.execute(text("INSERT INTO audit_chain_head (id, last_sequence, "
                                        "last_hash) VALUES (:chain, 2, :hash)"),
                                   {"chain": chain, "hash": previous})
        upgrade(empty_database_url)
        write(engine, "new")
        seal_pending(engine)
        assert problems(engine) == []
        assert [(e.chain, e.sequence) for e in audit_entries(engine, resource_id="new")] == [
            (2, 3)]
        tamper(engine, "DELETE FROM audit_log WHERE chain = 1 AND sequence = 2")
        assert problems(engine) == [
            "chain 1, entry 2: the chain ends at 1 but 2 entries were written (newest entries "
            "deleted)"]
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- auditors' page


@pytest.fixture
def trail(client, actors) -> dict[str, list[int]]:
    """Reads of each institution's patient by its own hospital system."""
    ids: dict[str, list[int]] = {}
    for institution in ("a", "b"):
        token = client_token(client, actors.clients[institution])
        patient = actors.patients[institution].id
        for _ in range(2):
            client.get(f"/api/v1/patients/{patient}", headers=bearer(token))
        ids[institution] = [e.id for e in audit_entries(
            client.app.state.engine, patient_id=patient)]
    client.cookies.clear()
    return ids


def test_an_auditor_finds_every_access_to_a_patient(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    page = client.get("/audit", params={"patient_id": actors.patients["a"].id})
    assert page.status_code == 200
    assert sorted(listed_ids(page.text)) == sorted(trail["a"])
    assert "client:his-a" in page.text
    assert "testclient" in page.text  # from where


def test_the_page_seals_what_waits_before_listing_it(client, actors, trail):
    engine = client.app.state.engine
    assert not any(e.sealed for e in audit_entries(engine, patient_id=actors.patients["a"].id))
    sign_in(client, actors.person("a", Role.AUDITOR))
    page = client.get("/audit", params={"patient_id": actors.patients["a"].id})
    shown = [e for e in audit_entries(engine) if e.id in trail["a"]]
    assert len(shown) == len(trail["a"]) and all(e.sealed for e in shown)
    for entry in shown:
        assert f'<td title="{entry.chain}:{entry.sequence}">{entry.id}</td>' in page.text


def test_the_page_marks_an_entry_altered_since_it_was_sealed(client, actors, trail):
    sign_in(client, actors.person("a", Role.AUDITOR))
    patient = actors.patients["a"].id
    first = client.get("/audit", params={"patient_id": patient})  # seals the trail
    assert "Altered since it was sealed" not in first.text
    edited, intact = trail["a"]
    with client.app.state.engine.begin() as connection:
        connection.execute(text("UPDATE audit_log SET purpose = 'research' WHERE id = :id"),
                           {"id": edited})
    page = client.get("/audit", params={"patient_id": patient}).text
    rows = dict(re.findall(r"<tr><td[^>]*>(\d+)</td>(.*?)</tr>", page, re.S))
    assert "Altered since it was sealed" in rows[str(edited)]
    assert "Altered since it was sealed" not in rows[str(intact)]


def test_the_check_of_shown_entries_finds_edits_and_missing_predecessors(clean_database,
                                                                         sealed_trail):
    from jaejin.core.audit import altered_entries

    by_sequence = {e.sequence: e.id for e in sealed_trail}
    tamper(clean_database, "UPDATE audit_log SET outcome = 'failure' WHERE sequence = 2",
           "DELETE FROM audit_log WHERE sequence = 4")
    # Entry 2 was edited; entry 5's predecessor is gone. Unsealed entries are not judged.
    write(clean_database, "unsealed")
    with fresh(clean_database) as session:
        shown = list(session.execute(select(AuditEntry)).scalars())
        assert len(shown) == 5
        assert altered_entries(session, shown) == {by_sequence[2], by_sequence[5]}


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
