"""Append-only audit trail of every access to health data, chained by hashes.

Each entry stores the hash of the entry before it in its chain and a hash of its own content, so
editing or deleting any entry breaks its chain. There are several chains, each with a head row
(`audit_chain_head`) holding the chain's newest sequence and hash: a writer locks one head until
its transaction ends, so writers in different chains do not wait for each other (one head row
locked until commit had serialised every audited write on PostgreSQL). The heads also reveal a
deleted tail.

On PostgreSQL a writer takes the lowest-numbered head nobody holds (`FOR UPDATE SKIP LOCKED`):
one writer at a time stays in chain 1, concurrent writers spread over chains 2, 3, ... The
`JAEJIN_AUDIT_CHAINS` heads (16 by default) are created together the first time no head is
free, numbered without gaps so that a chain deleted whole is noticed; when every chain is held,
a writer waits for one. A transaction keeps the head it took for all its entries (taking a
second one could deadlock). SQLite has one writer at a time anyway (BEGIN IMMEDIATE), and one
chain.

Entries are ordered globally by (occurred_at, id); `chain` and `sequence` place them in their
chain.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    JSON,
    Connection,
    ForeignKey,
    Index,
    Row,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from jaejin.core.config import get_settings
from jaejin.core.database import Base, utcnow

GENESIS_HASH = "0" * 64


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("chain", "sequence"),
        Index("ix_audit_log_patient_at", "patient_id", "occurred_at"),
        Index("ix_audit_log_actor_at", "actor_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    chain: Mapped[int] = mapped_column(default=1, server_default="1")
    sequence: Mapped[int]
    occurred_at: Mapped[datetime]
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(80))
    actor_label: Mapped[str] = mapped_column(String(200))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id"), index=True)
    action: Mapped[str] = mapped_column(String(40))
    resource_type: Mapped[str] = mapped_column(String(60))
    resource_id: Mapped[str | None] = mapped_column(String(80))
    patient_id: Mapped[int | None]
    purpose: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(20), default="success")
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    previous_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The newest entry of one chain (`id` is the chain's number)."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_sequence: Mapped[int]
    last_hash: Mapped[str] = mapped_column(String(64))


@dataclass(frozen=True, slots=True)
class AuditActor:
    """Who is acting and from where, captured once per request."""

    actor_type: str  # user, client, system, guest
    actor_id: str
    label: str
    ip_address: str | None = None
    user_agent: str | None = None

    @classmethod
    def system(cls, label: str = "jaejin") -> AuditActor:
        return cls("system", label, label)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str  # read, search, create, update, delete, export, login, ...
    resource_type: str
    resource_id: str | None = None
    patient_id: int | None = None
    institution_id: int | None = None
    purpose: str = "treatment"
    outcome: str = "success"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedEntry:
    """Where `record` put the entry."""

    chain: int
    sequence: int
    entry_hash: str


# -- hashing ---------------------------------------------------------------------------------

_HASHED = ("occurred_at", "actor_type", "actor_id", "actor_label", "institution_id", "action",
           "resource_type", "resource_id", "patient_id", "purpose", "outcome", "ip_address",
           "user_agent", "detail")


def _fields(chain: int, sequence: int, values: dict[str, Any]) -> dict[str, Any]:
    fields = {name: values[name] for name in _HASHED}
    fields["occurred_at"] = values["occurred_at"].isoformat(timespec="microseconds")
    fields["sequence"] = sequence
    # Chain 1 hashes exactly as the single chain did before there were several, so entries
    # written then still verify; any other chain's number is part of what is hashed.
    if chain != 1:
        fields["chain"] = chain
    return fields


def _hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    values = {name: getattr(entry, name) for name in _HASHED}
    return _fields(entry.chain or 1, entry.sequence, values)


def _content_hash(fields: dict[str, Any], previous_hash: str) -> str:
    # orjson with sorted keys: deterministic, compact, UTF-8 (the same text json.dumps gave with
    # sort_keys, compact separators and ensure_ascii=False, for the values entries hold).
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(previous_hash.encode() + canonical).hexdigest()


def _legacy_content_hash(fields: dict[str, Any], previous_hash: str) -> str:
    """The hash as entries written before revision 0002 computed it (json.dumps)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((previous_hash + canonical).encode()).hexdigest()


def _hash_matches(fields: dict[str, Any], previous_hash: str, entry_hash: str) -> bool:
    return (_content_hash(fields, previous_hash) == entry_hash
            or _legacy_content_hash(fields, previous_hash) == entry_hash)


def _json_detail(detail: dict[str, Any]) -> dict[str, Any]:
    # What the JSON column gives back (string keys, lists for tuples) is what gets hashed, so
    # the hash recomputed from the stored row matches.
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(detail, option=orjson.OPT_NON_STR_KEYS))
    return loaded


# -- writing ---------------------------------------------------------------------------------

_LOG = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditChainHead.__table__)
_HEAD_COLUMNS = (_HEAD.c.id, _HEAD.c.last_sequence, _HEAD.c.last_hash)
#: The lowest-numbered chain nobody holds (PostgreSQL).
_TAKE_FREE_HEAD = (select(*_HEAD_COLUMNS).order_by(_HEAD.c.id).limit(1)
                   .with_for_update(skip_locked=True))
#: One chain's head, waiting for whoever holds it.
_TAKE_HEAD = select(*_HEAD_COLUMNS).where(_HEAD.c.id == bindparam("chain")).with_for_update()
_INSERT_ENTRY = insert(_LOG)
_ADVANCE_HEAD = (update(_HEAD).where(_HEAD.c.id == bindparam("chain"))
                 .values(last_sequence=bindparam("new_sequence"),
                         last_hash=bindparam("new_hash")))
#: (chain, last_sequence, last_hash) of a locked head.
_Head = tuple[int, int, str]
#: The advisory lock openers of new chains take turns on (any fixed number; "audit" in ASCII).
_OPENERS_LOCK = 0x6175646974
#: session.info key: (the transaction, the chain it holds).
_HELD = "jaejin.audit.held_chain"


def configured_chains(connection: Connection) -> int:
    """How many chains writers may spread over: one on SQLite (one writer at a time)."""
    if connection.dialect.name != "postgresql":
        return 1
    return max(1, get_settings().audit_chains)


def _insert_missing_heads(connection: Connection, chains: int) -> bool:
    """Create heads until `chains` exist; whether any were missing."""
    existing = list(connection.execute(select(_HEAD.c.id)).scalars())
    missing = chains - len(existing)
    if missing <= 0:
        return False
    # Numbered after every head and every entry: a chain whose head was deleted is not
    # restarted (its entries would clash, and verification must still see it broken).
    highest_entry = connection.execute(select(func.max(_LOG.c.chain))).scalar_one() or 0
    first = max(max(existing, default=0), highest_entry) + 1
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" \
        else sqlite.insert
    # Should openers ever race (SQLite: they cannot), one insert wins, the others do nothing.
    connection.execute(dialect_insert(_HEAD).on_conflict_do_nothing(), [
        {"id": number, "last_sequence": 0, "last_hash": GENESIS_HASH}
        for number in range(first, first + missing)])
    return True


def _open_chains(connection: Connection, chains: int) -> bool:
    """Create the missing heads (the first write, or after the setting grew)."""
    if connection.dialect.name != "postgresql":
        # One writer at a time: the heads are created in its own transaction.
        return _insert_missing_heads(connection, chains)
    # Committed at once from a connection of their own: heads created in the writer's
    # transaction would stay invisible to other writers (and make them wait) until it ends.
    # Openers take turns (a transaction-level advisory lock), so each sees the heads the one
    # before it committed and inserts only missing numbers: inserting a number that exists
    # would wait for whichever writer holds that head.
    with connection.engine.connect() as own:
        own.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _OPENERS_LOCK})
        opened = _insert_missing_heads(own, chains)
        own.commit()
    return opened


def _take_any_head(connection: Connection, chains: int) -> _Head:
    """No chain is free (or none exists yet): open the missing ones, or wait for one."""
    while True:
        _open_chains(connection, chains)
        if chains > 1:
            row = connection.execute(_TAKE_FREE_HEAD).first()
            if row is not None:
                return row.id, row.last_sequence, row.last_hash
        numbers = list(connection.execute(select(_HEAD.c.id)).scalars())
        if not numbers:
            continue
        number = random.choice(numbers)  # spreading waiters, not security
        row = connection.execute(_TAKE_HEAD, {"chain": number}).first()
        if row is not None:
            return row.id, row.last_sequence, row.last_hash


def _take_head(session: Session, connection: Connection) -> _Head:
    transaction = session.get_transaction()
    held = session.info.get(_HELD)
    if held is not None and held[0] is transaction:
        row = connection.execute(_TAKE_HEAD, {"chain": held[1]}).first()
        if row is not None:
            return row.id, row.last_sequence, row.last_hash
    chains = configured_chains(connection)
    if chains == 1:
        row = connection.execute(_TAKE_HEAD, {"chain": 1}).first()
    else:
        row = connection.execute(_TAKE_FREE_HEAD).first()
    head = (row.id, row.last_sequence, row.last_hash) if row is not None \
        else _take_any_head(connection, chains)
    session.info[_HELD] = (transaction, head[0])
    return head


def record(session: Session, actor: AuditActor, event: AuditEvent) -> RecordedEntry:
    """Append one entry in the caller's transaction: it commits or rolls back with the change."""
    connection = session.connection()
    chain, last_sequence, last_hash = _take_head(session, connection)
    sequence = last_sequence + 1
    values: dict[str, Any] = {
        # Microseconds survive both databases; anything finer would change the hash on reload.
        "occurred_at": utcnow(),
        "actor_type": actor.actor_type,
        "actor_id": actor.actor_id,
        "actor_label": actor.label[:200],
        "institution_id": event.institution_id,
        "action": event.action,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "patient_id": event.patient_id,
        "purpose": event.purpose,
        "outcome": event.outcome,
        "ip_address": actor.ip_address,
        "user_agent": (actor.user_agent or "")[:300] or None,
        "detail": _json_detail(event.detail),
    }
    entry_hash = _content_hash(_fields(chain, sequence, values), last_hash)
    connection.execute(_INSERT_ENTRY, {**values, "chain": chain, "sequence": sequence,
                                       "previous_hash": last_hash, "entry_hash": entry_hash})
    connection.execute(_ADVANCE_HEAD, {"chain": chain, "new_sequence": sequence,
                                       "new_hash": entry_hash})
    return RecordedEntry(chain, sequence, entry_hash)


# -- verifying -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainProblem:
    sequence: int | None
    problem: str
    chain: int | None = None

    @property
    def where(self) -> str:
        """e.g. 'chain 3, entry 17' or 'chain 3'."""
        parts = []
        if self.chain is not None:
            parts.append(f"chain {self.chain}")
        if self.sequence is not None:
            parts.append(f"entry {self.sequence}")
        return ", ".join(parts) or "audit trail"


@dataclass(slots=True)
class VerificationReport:
    entries_checked: int = 0
    chains_checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


_VERIFIED_COLUMNS = (_LOG.c.chain, _LOG.c.sequence, _LOG.c.previous_hash, _LOG.c.entry_hash,
                     *(_LOG.c[name] for name in _HASHED))


def _entries_in_order(session: Session, batch: int = 5000) -> Iterator[Row[Any]]:
    """Every entry, chain by chain, in sequence order (keyset pages, nothing kept)."""
    after = (0, 0)
    while True:
        rows = session.execute(
            select(*_VERIFIED_COLUMNS)
            .where(tuple_(_LOG.c.chain, _LOG.c.sequence) > tuple_(*after))
            .order_by(_LOG.c.chain, _LOG.c.sequence).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        after = (rows[-1].chain, rows[-1].sequence)


@dataclass(slots=True)
class _ChainState:
    expected_sequence: int = 1
    previous_hash: str = GENESIS_HASH
    entries: int = 0


def verify_chain(session: Session) -> VerificationReport:
    """Recompute every hash of every chain; report edits, deletions (gaps, a cut tail, a missing
    head or a missing chain) and broken links, each naming its chain."""
    report = VerificationReport()
    chains: dict[int, _ChainState] = {}
    for row in _entries_in_order(session):
        state = chains.setdefault(row.chain, _ChainState())
        report.entries_checked += 1
        state.entries += 1
        if row.sequence != state.expected_sequence:
            report.problems.append(ChainProblem(
                row.sequence,
                f"entries {state.expected_sequence}..{row.sequence - 1} are missing (deleted)",
                row.chain))
        if row.previous_hash != state.previous_hash:
            report.problems.append(ChainProblem(
                row.sequence, "link to the previous entry is broken", row.chain))
        values = {name: getattr(row, name) for name in _HASHED}
        if not _hash_matches(_fields(row.chain, row.sequence, values), row.previous_hash,
                             row.entry_hash):
            report.problems.append(ChainProblem(
                row.sequence, "content does not match its hash (edited)", row.chain))
        state.expected_sequence = row.sequence + 1
        state.previous_hash = row.entry_hash
    heads = {row.id: row for row in session.execute(select(*_HEAD_COLUMNS)).all()}
    for number in sorted(set(chains) | set(heads)):
        state = chains.get(number, _ChainState())
        head = heads.get(number)
        if head is None:
            report.problems.append(ChainProblem(
                None, "the chain head is missing (deleted): the newest entries cannot be "
                "vouched for", number))
        elif head.last_sequence != state.expected_sequence - 1 \
                or head.last_hash != state.previous_hash:
            report.problems.append(ChainProblem(
                head.last_sequence,
                f"the chain ends at {state.expected_sequence - 1} but {head.last_sequence} "
                "entries were written (newest entries deleted)", number))
    # Chains are opened in order, without gaps: a number missing below the highest was
    # deleted whole (its head and every entry).
    known = set(chains) | set(heads)
    for number in range(1, max(known, default=0)):
        if number not in known:
            report.problems.append(ChainProblem(
                None, "the whole chain is missing (its head and every entry deleted)", number))
    report.chains_checked = len(known)
    return report

