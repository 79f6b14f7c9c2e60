"""Append-only audit trail of every access to health data, chained by hashes.

Each entry stores the hash of the entry before it and a hash of its own content, so editing or
deleting any entry breaks the chain. `AuditChainHead` keeps the newest sequence and hash: the
row lock on it orders concurrent writers, and it reveals a deleted tail.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from jaejin.core.database import Base, utcnow

GENESIS_HASH = "0" * 64


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_patient_at", "patient_id", "occurred_at"),
        Index("ix_audit_log_actor_at", "actor_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sequence: Mapped[int] = mapped_column(unique=True)
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


def _content_hash(fields: dict[str, Any], previous_hash: str) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((previous_hash + canonical).encode()).hexdigest()


def _hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    return {
        "sequence": entry.sequence,
        "occurred_at": entry.occurred_at.isoformat(timespec="microseconds"),
        "actor_type": entry.actor_type,
        "actor_id": entry.actor_id,
        "actor_label": entry.actor_label,
        "institution_id": entry.institution_id,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "patient_id": entry.patient_id,
        "purpose": entry.purpose,
        "outcome": entry.outcome,
        "ip_address": entry.ip_address,
        "user_agent": entry.user_agent,
        "detail": entry.detail,
    }


def _read_locked_head(session: Session) -> AuditChainHead | None:
    # populate_existing: the session may still hold the head from an earlier transaction;
    # the locked row, not that copy, says where the chain ends now.
    return session.execute(
        select(AuditChainHead).where(AuditChainHead.id == 1).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _locked_head(session: Session) -> AuditChainHead:
    """The chain head, locked until the transaction ends (writers queue up on it)."""
    head = _read_locked_head(session)
    if head is not None:
        return head
    # The very first entry: concurrent writers may all find no head. One insert wins; the
    # others fail inside their savepoint only, then wait on the winner's row like anyone else.
    try:
        with session.begin_nested():
            session.add(AuditChainHead(id=1, last_sequence=0, last_hash=GENESIS_HASH))
    except IntegrityError:
        pass
    head = _read_locked_head(session)
    assert head is not None
    return head


def record(session: Session, actor: AuditActor, event: AuditEvent) -> AuditEntry:
    """Append one entry in the caller's transaction: it commits or rolls back with the change."""
    head = _locked_head(session)
    # Microseconds survive both databases; anything finer would change the hash on reload.
    occurred_at = utcnow()
    entry = AuditEntry(
        sequence=head.last_sequence + 1,
        occurred_at=occurred_at,
        actor_type=actor.actor_type,
        actor_id=actor.actor_id,
        actor_label=actor.label[:200],
        institution_id=event.institution_id,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        patient_id=event.patient_id,
        purpose=event.purpose,
        outcome=event.outcome,
        ip_address=actor.ip_address,
        user_agent=(actor.user_agent or "")[:300] or None,
        detail=event.detail,
        previous_hash=head.last_hash,
    )
    entry.entry_hash = _content_hash(_hashed_fields(entry), entry.previous_hash)
    session.add(entry)
    head.last_sequence = entry.sequence
    head.last_hash = entry.entry_hash
    session.flush()
    return entry


@dataclass(frozen=True, slots=True)
class ChainProblem:
    sequence: int | None
    problem: str


@dataclass(slots=True)
class VerificationReport:
    entries_checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def _entries_in_order(session: Session, batch: int = 5000) -> Iterator[AuditEntry]:
    last = 0
    while True:
        rows = session.execute(
            select(AuditEntry).where(AuditEntry.sequence > last).order_by(AuditEntry.sequence)
            .limit(batch)
        ).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].sequence
        session.expunge_all()


def verify_chain(session: Session) -> VerificationReport:
    """Recompute every hash; report edits, deletions (gaps or a cut tail) and broken links."""
    report = VerificationReport()
    expected_sequence = 1
    previous_hash = GENESIS_HASH
    for entry in _entries_in_order(session):
        report.entries_checked += 1
        if entry.sequence != expected_sequence:
            report.problems.append(ChainProblem(
                entry.sequence,
                f"entries {expected_sequence}..{entry.sequence - 1} are missing (deleted)",
            ))
        if entry.previous_hash != previous_hash:
            report.problems.append(ChainProblem(
                entry.sequence, "link to the previous entry is broken"
            ))
        if _content_hash(_hashed_fields(entry), entry.previous_hash) != entry.entry_hash:
            report.problems.append(ChainProblem(
                entry.sequence, "content does not match its hash (edited)"
            ))
        expected_sequence = entry.sequence + 1
        previous_hash = entry.entry_hash
    head = session.get(AuditChainHead, 1)
    if head is None and report.entries_checked:
        report.problems.append(ChainProblem(
            None, "the chain head is missing (deleted): the newest entries cannot be vouched for"
        ))
    if head is not None and (
        head.last_sequence != expected_sequence - 1 or head.last_hash != previous_hash
    ):
        report.problems.append(ChainProblem(
            head.last_sequence,
            f"the chain ends at {expected_sequence - 1} but {head.last_sequence} entries were "
            "written (newest entries deleted)",
        ))
    return report
