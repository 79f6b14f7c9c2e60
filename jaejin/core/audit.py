"""Append-only audit trail of every access to health data, sealed into a hash chain.

Writing an entry and chaining it are two steps, as the sequencer and the integrator of a
transparency log (Trillian) are:

* `record` is ONE INSERT in the caller's transaction, so the entry commits or rolls back with
  the change it describes. It reads nothing and locks nothing: the entry is *unsealed* (no
  chain, sequence or hash yet). Chaining at write time cost every audited write a locked read
  and an update of a chain head, held until commit (3 statements instead of 1).
* `seal` (the sealer) takes the committed unsealed entries in the order it finds them (by id),
  gives each the next sequence number of the chain and a hash over its content and the hash
  before it, and advances the chain's head: in batches, one UPDATE per batch, in one
  transaction under a lock (PostgreSQL: an advisory lock; SQLite has one writer anyway), so
  sealers take turns and a sequence is never given twice. The chain's order is the sealing
  order, not the id order: an entry whose transaction committed late is sealed late.

The sealer runs in `jaejin worker` and `jaejin serve` every `JAEJIN_AUDIT_SEAL_SECONDS`
(default 1); `jaejin audit verify` and the auditors' page seal before they read. Until it is
sealed (normally about a second), an entry can be edited or deleted without a trace; once
sealed, editing or deleting it, or cutting the chain's tail, breaks the chain. Verification
also reports how many entries wait to be sealed and since when: one waiting longer than
`JAEJIN_AUDIT_SEAL_OVERDUE_SECONDS` is itself a problem (the sealer is not running).

Chains: before revision 0004 writers chained entries themselves, over up to 16 chains (one on
SQLite). Those chains are kept as they were and keep verifying; the sealer continues the
highest-numbered chain that has a head (chain 1 on a new database). Should that head be
missing (deleted, with the newest entries it vouched for), the sealer opens the next number
rather than restart a chain, and verification reports the missing head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
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
from sqlalchemy.orm import Mapped, Session, mapped_column

from jaejin.core.config import get_settings
from jaejin.core.database import Base, read_connection, session_factory, utcnow

GENESIS_HASH = "0" * 64
#: Entries sealed per transaction (one SELECT, one UPDATE, one head update each).
SEAL_BATCH = 2000
_UNSEALED_CONDITION = "sequence IS NULL"


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("chain", "sequence"),
        Index("ix_audit_log_patient_at", "patient_id", "occurred_at"),
        Index("ix_audit_log_actor_at", "actor_id", "occurred_at"),
        # The sealer's queue: only the few entries not sealed yet are in it.
        Index("ix_audit_log_unsealed", "id", postgresql_where=text(_UNSEALED_CONDITION),
              sqlite_where=text(_UNSEALED_CONDITION)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: chain, sequence, previous_hash and entry_hash stay NULL until the entry is sealed.
    chain: Mapped[int | None]
    sequence: Mapped[int | None]
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
    previous_hash: Mapped[str | None] = mapped_column(String(64))
    entry_hash: Mapped[str | None] = mapped_column(String(64))

    @property
    def sealed(self) -> bool:
        return self.sequence is not None


class AuditChainHead(Base):
    """The newest sealed entry of one chain (`id` is the chain's number)."""

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
    """The entry `record` wrote; its place in the chain is given when it is sealed."""

    id: int


# -- hashing ---------------------------------------------------------------------------------

_HASHED = ("occurred_at", "actor_type", "actor_id", "actor_label", "institution_id", "action",
           "resource_type", "resource_id", "patient_id", "purpose", "outcome", "ip_address",
           "user_agent", "detail")


def _fields(chain: int, sequence: int, values: Mapping[Any, Any]) -> dict[str, Any]:
    fields = {name: values[name] for name in _HASHED}
    fields["occurred_at"] = values["occurred_at"].isoformat(timespec="microseconds")
    fields["sequence"] = sequence
    # Chain 1 hashes exactly as the single chain of revision 0001 did, so entries written then
    # still verify; any other chain's number is part of what is hashed.
    if chain != 1:
        fields["chain"] = chain
    return fields


def _hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    if entry.chain is None or entry.sequence is None:
        raise ValueError(f"audit entry {entry.id} is not sealed yet")
    return _fields(entry.chain, entry.sequence, {name: getattr(entry, name) for name in _HASHED})


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
    # What the JSON column gives back (string keys, lists for tuples) is what gets stored, so
    # the entry reads back as it was written.
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(detail, option=orjson.OPT_NON_STR_KEYS))
    return loaded


# -- writing ---------------------------------------------------------------------------------

_LOG = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditChainHead.__table__)
#: The new id comes as the primary key SQLAlchemy fetches anyway (RETURNING on PostgreSQL, the
#: cursor's lastrowid on SQLite: an explicit RETURNING costs SQLite ~40 us more per entry).
_INSERT_ENTRY = insert(_LOG)


def _values(actor: AuditActor, event: AuditEvent) -> dict[str, Any]:
    return {
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


def record(session: Session, actor: AuditActor, event: AuditEvent) -> RecordedEntry:
    """Write one unsealed entry in the caller's transaction (one INSERT): it commits or rolls
    back with the change; the sealer chains it after commit."""
    result = session.connection().execute(_INSERT_ENTRY, _values(actor, event))
    return RecordedEntry(cast(int, cast(Row[Any], result.inserted_primary_key)[0]))


def record_many(session: Session, actor: AuditActor,
                events: Iterable[AuditEvent]) -> list[RecordedEntry]:
    """Write several entries of one actor in one multi-row INSERT, in the order given."""
    return record_entries(session, ((actor, event) for event in events))


def record_entries(session: Session,
                   entries: Iterable[tuple[AuditActor, AuditEvent]]) -> list[RecordedEntry]:
    """Write entries of any actors (e.g. the requests of one group commit) in one INSERT, in
    the order given."""
    rows = [_values(actor, event) for actor, event in entries]
    if not rows:
        return []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Every entry in one JSON text: orjson writes it in C, where psycopg would dump an
        # array per column in Python (more than the rest of the insert for a few entries).
        ids = connection.execute(_INSERT_ENTRIES_POSTGRESQL,
                                 {"entries": orjson.dumps(rows).decode()}).scalars()
    else:
        # One INSERT with every row in its VALUES, made from the prebuilt statement by
        # SQLAlchemy's "insertmanyvalues" (asked to sort by parameter order, it would send one
        # statement per row on SQLite; the ids are sorted below anyway).
        ids = connection.execute(_INSERT_ENTRIES_RETURNING, rows).scalars()
    # Ids are drawn in the order of the rows; the order RETURNING lists them is not promised.
    return [RecordedEntry(entry_id) for entry_id in sorted(ids)]


#: The columns an entry is written with, and their PostgreSQL types.
_ENTRY_COLUMNS = (
    ("occurred_at", "timestamptz"), ("actor_type", "text"), ("actor_id", "text"),
    ("actor_label", "text"), ("institution_id", "integer"), ("action", "text"),
    ("resource_type", "text"), ("resource_id", "text"), ("patient_id", "integer"),
    ("purpose", "text"), ("outcome", "text"), ("ip_address", "text"), ("user_agent", "text"),
    ("detail", "json"),
)
_ENTRY_NAMES = ", ".join(name for name, _ in _ENTRY_COLUMNS)
#: PostgreSQL: the same statement text whatever the number of entries (psycopg prepares it
#: once; a VALUES list is a new statement to build, send and plan for every count), the entries
#: as one JSON array (times as RFC 3339 text, microseconds kept); ORDER BY their order in it so
#: the ids are drawn in the entries' order.
_INSERT_ENTRIES_POSTGRESQL = text(
    f"INSERT INTO audit_log ({_ENTRY_NAMES}) SELECT {_ENTRY_NAMES} "  # noqa: S608
    "FROM ROWS FROM (json_to_recordset(CAST(:entries AS json)) AS ("
    + ", ".join(f"{name} {kind}" for name, kind in _ENTRY_COLUMNS)
    + f")) WITH ORDINALITY AS entry({_ENTRY_NAMES}, position) ORDER BY position RETURNING id"
)
_INSERT_ENTRIES_RETURNING = insert(_LOG).returning(_LOG.c.id)


# -- one entry written by the caller's own statement (PostgreSQL) ---------------------------
#
# A hot write that is already one statement (data-modifying CTEs) can carry its audit entry
# in that statement instead of paying a round trip and an execution of its own for `record`:
# `entry_json` gives the entry's row, `insert_entry_sql` the INSERT reading it (the caller may
# append a WHERE to write it only when its change succeeded). The row is exactly the one
# `record` would insert (the same values, read by the same JSON path as `record_entries`):
# the sealer chains it like any other.


def entry_json(actor: AuditActor, event: AuditEvent) -> str:
    """The row `record(session, actor, event)` would insert now, as the JSON text
    `insert_entry_sql` reads."""
    return orjson.dumps(_values(actor, event)).decode()


def insert_entry_sql(parameter: str) -> str:
    """PostgreSQL: `INSERT INTO audit_log ... SELECT ...` of the one entry bound as JSON text
    (`entry_json`) to `:parameter`; a WHERE may follow."""
    if not parameter.isidentifier():
        raise ValueError(f"not a bind parameter name: {parameter!r}")
    return (
        f"INSERT INTO {_LOG.name} ({_ENTRY_NAMES}) SELECT {_ENTRY_NAMES} "  # noqa: S608
        f"FROM json_to_record(CAST(:{parameter} AS json)) AS entry("
        + ", ".join(f"{name} {kind}" for name, kind in _ENTRY_COLUMNS) + ")"
    )


# -- sealing ---------------------------------------------------------------------------------

#: The transaction-level advisory lock sealers take turns on (any fixed number; "audit").
_SEALER_LOCK = 0x6175646974
_UNSEALED = _LOG.c.sequence.is_(None)
_UNSEALED_ENTRIES = (select(_LOG.c.id, *(_LOG.c[name] for name in _HASHED))
                     .where(_UNSEALED).order_by(_LOG.c.id).limit(bindparam("limit")))
_ANY_UNSEALED = select(_LOG.c.id).where(_UNSEALED).limit(1)
_NEWEST_HEAD = (select(_HEAD.c.id, _HEAD.c.last_sequence, _HEAD.c.last_hash)
                .order_by(_HEAD.c.id.desc()).limit(1).with_for_update())
_ADVANCE_HEAD = (update(_HEAD).where(_HEAD.c.id == bindparam("chain"))
                 .values(last_sequence=bindparam("new_sequence"),
                         last_hash=bindparam("new_hash")))
#: One UPDATE seals a whole batch: the new values joined in by id.
_SEAL_POSTGRESQL = text(
    "UPDATE audit_log SET chain = :chain, sequence = v.sequence, "
    "previous_hash = v.previous_hash, entry_hash = v.entry_hash "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:sequences AS integer[]), "
    "CAST(:previous AS varchar[]), CAST(:hashes AS varchar[])) "
    "AS v(id, sequence, previous_hash, entry_hash) "
    "WHERE audit_log.id = v.id AND audit_log.sequence IS NULL")
_SEAL_SQLITE = text(
    "UPDATE audit_log SET chain = :chain, sequence = json_extract(v.value, '$[1]'), "
    "previous_hash = json_extract(v.value, '$[2]'), entry_hash = json_extract(v.value, '$[3]') "
    "FROM json_each(:rows) AS v "
    "WHERE audit_log.id = json_extract(v.value, '$[0]') AND audit_log.sequence IS NULL")


@dataclass(frozen=True, slots=True)
class SealReport:
    sealed: int = 0
    chain: int | None = None
    #: When the oldest entry sealed was written.
    oldest_sealed_at: datetime | None = None

    def __add__(self, other: SealReport) -> SealReport:
        oldest = [at for at in (self.oldest_sealed_at, other.oldest_sealed_at) if at is not None]
        return SealReport(self.sealed + other.sealed, other.chain or self.chain,
                          min(oldest, default=None))


def _sealing_head(connection: Connection) -> tuple[int, int, str]:
    """(chain, last_sequence, last_hash) of the chain the sealer continues, locked."""
    head = connection.execute(_NEWEST_HEAD).first()
    newest_chain = connection.execute(select(func.max(_LOG.c.chain))).scalar_one() or 0
    if head is not None and head.id >= newest_chain:
        return head.id, head.last_sequence, head.last_hash
    # No chain yet, or the newest chain's head is gone: a new chain, never a restarted one
    # (restarting would hide the deleted entries, and its sequences would clash).
    number = max(head.id if head is not None else 0, newest_chain) + 1
    connection.execute(insert(_HEAD), {"id": number, "last_sequence": 0,
                                       "last_hash": GENESIS_HASH})
    return number, 0, GENESIS_HASH


def _write_seals(connection: Connection, chain: int, ids: Sequence[int],
                 sequences: Sequence[int], previous: Sequence[str],
                 hashes: Sequence[str]) -> int:
    if connection.dialect.name == "postgresql":
        result = connection.execute(_SEAL_POSTGRESQL, {
            "chain": chain, "ids": list(ids), "sequences": list(sequences),
            "previous": list(previous), "hashes": list(hashes)})
    else:
        rows = orjson.dumps(list(zip(ids, sequences, previous, hashes, strict=True))).decode()
        result = connection.execute(_SEAL_SQLITE, {"chain": chain, "rows": rows})
    return result.rowcount


def seal(session: Session, limit: int = SEAL_BATCH) -> SealReport:
    """Seal up to `limit` unsealed entries in the session's transaction (the caller commits;
    the head update and the entries' seals commit together)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Held until the transaction ends: the next sealer reads the head this one wrote.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SEALER_LOCK})
    rows = connection.execute(_UNSEALED_ENTRIES, {"limit": limit}).all()
    if not rows:
        return SealReport()
    chain, sequence, previous_hash = _sealing_head(connection)
    ids: list[int] = []
    sequences: list[int] = []
    previous: list[str] = []
    hashes: list[str] = []
    for row in rows:
        sequence += 1
        entry_hash = _content_hash(_fields(chain, sequence, row._mapping), previous_hash)
        ids.append(row.id)
        sequences.append(sequence)
        previous.append(previous_hash)
        hashes.append(entry_hash)
        previous_hash = entry_hash
    written = _write_seals(connection, chain, ids, sequences, previous, hashes)
    if written != len(rows):
        # Only if something other than a sealer changed the entries meanwhile: seal nothing.
        raise RuntimeError(f"sealed {written} of {len(rows)} audit entries; rolled back")
    connection.execute(_ADVANCE_HEAD, {"chain": chain, "new_sequence": sequence,
                                       "new_hash": previous_hash})
    return SealReport(len(rows), chain, min(row.occurred_at for row in rows))


def seal_pending(engine: Engine, batch: int = SEAL_BATCH) -> SealReport:
    """Seal every entry committed so far, a batch per transaction; nothing waits when nothing
    is unsealed (one indexed read outside any transaction)."""
    with read_connection(engine) as connection:
        if connection.execute(_ANY_UNSEALED).first() is None:
            return SealReport()
    total = SealReport()
    while True:
        with session_factory(engine)() as session, session.begin():
            report = seal(session, batch)
        total += report
        if report.sealed < batch:
            return total


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


@dataclass(frozen=True, slots=True)
class UnsealedBacklog:
    """Entries waiting for the sealer."""

    entries: int = 0
    oldest_at: datetime | None = None

    def waited(self, now: datetime) -> timedelta:
        return now - self.oldest_at if self.oldest_at is not None else timedelta(0)


@dataclass(slots=True)
class VerificationReport:
    entries_checked: int = 0
    chains_checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)
    #: What was waiting to be sealed when verification began (before `seal_and_verify` sealed).
    unsealed: UnsealedBacklog = field(default_factory=UnsealedBacklog)

    @property
    def intact(self) -> bool:
        return not self.problems


def unsealed_backlog(connection: Connection | Session) -> UnsealedBacklog:
    entries, oldest = connection.execute(
        select(func.count(), func.min(_LOG.c.occurred_at)).where(_UNSEALED)).one()
    return UnsealedBacklog(entries, oldest)


_VERIFIED_COLUMNS = (_LOG.c.chain, _LOG.c.sequence, _LOG.c.previous_hash, _LOG.c.entry_hash,
                     *(_LOG.c[name] for name in _HASHED))
_HEAD_COLUMNS = (_HEAD.c.id, _HEAD.c.last_sequence, _HEAD.c.last_hash)


def _entries_in_order(session: Session, batch: int = 5000) -> Iterator[Row[Any]]:
    """Every sealed entry, chain by chain, in sequence order (keyset pages, nothing kept)."""
    after = (0, 0)
    while True:
        rows = session.execute(
            select(*_VERIFIED_COLUMNS)
            .where(_LOG.c.sequence.is_not(None),
                   tuple_(_LOG.c.chain, _LOG.c.sequence) > tuple_(*after))
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


def verify_chain(session: Session, *, now: datetime | None = None,
                 backlog: UnsealedBacklog | None = None) -> VerificationReport:
    """Recompute every hash of every chain; report edits, deletions (gaps, a cut tail, a missing
    head or a missing chain) and broken links, each naming its chain; and entries that have
    waited too long to be sealed (`backlog`, measured now if not given)."""
    report = VerificationReport(unsealed=backlog or unsealed_backlog(session))
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
    overdue = timedelta(seconds=get_settings().audit_seal_overdue_seconds)
    waited = report.unsealed.waited(now or utcnow())
    if waited > overdue:
        report.problems.append(ChainProblem(
            None, f"{report.unsealed.entries} entries were not sealed, the oldest for "
            f"{waited.total_seconds():,.0f} s (more than {overdue.total_seconds():g} s): "
            "the sealer is not running"))
    return report


def altered_entries(session: Session, entries: Sequence[AuditEntry]) -> set[int]:
    """The ids of those sealed `entries` that no longer match their seal: content changed since,
    or the entry before them in their chain missing or changed (one query for those).

    A cheap check of what a page shows; `verify_chain` checks everything."""
    sealed = [(entry, entry.chain, entry.sequence) for entry in entries
              if entry.chain is not None and entry.sequence is not None]
    wanted = [(chain, sequence - 1) for _, chain, sequence in sealed if sequence > 1]
    before: dict[tuple[int, int], str | None] = {}
    if wanted:
        rows = session.execute(select(_LOG.c.chain, _LOG.c.sequence, _LOG.c.entry_hash).where(
            tuple_(_LOG.c.chain, _LOG.c.sequence).in_(wanted))).all()
        before = {(row.chain, row.sequence): row.entry_hash for row in rows}
    altered: set[int] = set()
    for entry, chain, sequence in sealed:
        previous = GENESIS_HASH if sequence == 1 else before.get((chain, sequence - 1))
        if (previous is None or entry.previous_hash != previous or entry.entry_hash is None
                or not _hash_matches(_fields(chain, sequence, {
                    name: getattr(entry, name) for name in _HASHED}), previous,
                    entry.entry_hash)):
            altered.add(entry.id)
    return altered


def seal_and_verify(engine: Engine, *, now: datetime | None = None) -> VerificationReport:
    """What an operator's check does: note the backlog, seal it, verify every chain."""
    with read_connection(engine) as connection:
        backlog = unsealed_backlog(connection)
    seal_pending(engine)
    with session_factory(engine)() as session:
        return verify_chain(session, now=now, backlog=backlog)
