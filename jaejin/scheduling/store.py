"""Scheduling tables: availability, appointments, and the occupancy that forbids double booking.

Double booking is refused by the database itself, identically on SQLite and PostgreSQL: every
active appointment owns one `appointment_occupancy` row per 5-minute block it occupies for each
resource it uses (`practitioner:<id>`, `patient:<id>`, `interpreter:<id>`), and
UNIQUE(resource_key, block_start) lets only one of two overlapping bookings hold a block. The
loser's claim finds a block held (`claim_occupancy` returns False; a plain insert would raise
IntegrityError), which the service answers with 409 SLOT_TAKEN and the next free slots.
Cancelling deletes an appointment's rows; rescheduling moves them, in the same transaction.

Which time a resource holds:
- the practitioner: the visit and the pause after it (`start_at` .. `occupied_until`), as slot
  search (`jaejin.scheduling.slots`) assumes;
- the patient and the interpreter: the visit itself (`start_at` .. `end_at`).

Blocks are exact because availability times are whole multiples of 5 minutes (checked when
availability is saved), visit types last multiples of 5 minutes, and every zone in use today has
an offset that is a multiple of 5 minutes.

Appointments are what a visit belongs to: `jaejin.visits` keeps its `visits` table referencing
`appointments.id`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import (
    Mapped,
    Session,
    load_only,
    make_transient_to_detached,
    mapped_column,
)

from jaejin.core.audit import AuditActor, AuditEvent, entry_json, insert_entry_sql, record
from jaejin.core.database import Base, utcnow
from jaejin.core.events import OutboxMessage
from jaejin.core.i18n import LANGUAGE_TAG_LENGTH
from jaejin.directory.store import Institution, Patient, Practitioner, PractitionerRole
from jaejin.policy.records import VisitRecords, visit_records_columns, visit_records_parameters
from jaejin.scheduling.appointments import AppointmentState, AppointmentStatus
from jaejin.scheduling.model import Availability, Interval, VisitMode
from jaejin.scheduling.schemas import AvailabilityIn

#: The grain of occupancy: every appointment boundary falls on a multiple of it.
BLOCK = timedelta(minutes=5)
BLOCK_MINUTES = 5
#: Statuses whose appointment still holds its time.
ACTIVE_STATUSES: tuple[str, ...] = (AppointmentStatus.BOOKED, AppointmentStatus.RESCHEDULED)
#: Statuses whose time was used (or wasted): the occupancy stays so nobody is booked over it.
HOLDING_STATUSES: tuple[str, ...] = (
    *ACTIVE_STATUSES,
    AppointmentStatus.NO_SHOW,
    AppointmentStatus.COMPLETED,
)


class OwnerKind(StrEnum):
    """Whose weekly hours an availability row holds."""

    PRACTITIONER = "practitioner"
    INTERPRETER = "interpreter"


class ResourceKind(StrEnum):
    """Who an appointment occupies."""

    PRACTITIONER = "practitioner"
    PATIENT = "patient"
    INTERPRETER = "interpreter"


def resource_key(kind: ResourceKind, identifier: int) -> str:
    return f"{kind.value}:{identifier}"


class AvailabilityRow(Base):
    """The weekly hours and exceptions of a practitioner at one institution (in the
    institution's zone) or of an interpreter (in the interpreter's own zone).

    `rules` is the `AvailabilityIn` JSON exactly as accepted by the API.
    """

    __tablename__ = "scheduling_availability"
    __table_args__ = (
        UniqueConstraint("owner_kind", "owner_id", "institution_id",
                         name="uq_scheduling_availability_owner"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_kind: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[int]
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    rules: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(80))

    def availability(self) -> Availability:
        return AvailabilityIn.model_validate(self.rules).to_domain()


class Appointment(Base):
    """A booked time between a patient and a practitioner (and maybe an interpreter)."""

    __tablename__ = "appointments"
    __table_args__ = (
        Index("ix_appointments_practitioner_start", "practitioner_id", "start_at"),
        Index("ix_appointments_patient_start", "patient_id", "start_at"),
        Index("ix_appointments_interpreter_start", "interpreter_id", "start_at"),
        Index("ix_appointments_institution_start", "institution_id", "start_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    interpreter_id: Mapped[int | None] = mapped_column(ForeignKey("interpreters.id"))
    interpreter_language: Mapped[str | None] = mapped_column(String(LANGUAGE_TAG_LENGTH))
    visit_type: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(20))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    #: The end plus the visit type's pause: when the practitioner is free again.
    occupied_until: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20), default=AppointmentStatus.BOOKED.value)
    #: iCalendar SEQUENCE: raised by every reschedule and by the cancellation.
    sequence: Mapped[int] = mapped_column(default=0)
    booked_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    #: Who booked ("user:12", "client:3"), for bookings by system clients too.
    booked_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    cancelled_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(80))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    no_show_at: Mapped[datetime | None]
    condition_code: Mapped[str | None] = mapped_column(String(20))
    tri_party: Mapped[bool] = mapped_column(default=False)
    #: The policy pack and the engine's whole decision when the booking was made (video only).
    policy_pack: Mapped[str | None] = mapped_column(String(80))
    policy_decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    @property
    def visit_mode(self) -> VisitMode:
        return VisitMode(self.mode)

    @property
    def appointment_status(self) -> AppointmentStatus:
        return AppointmentStatus(self.status)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def state(self) -> AppointmentState:
        return AppointmentState(
            status=self.appointment_status,
            start=self.start_at,
            end=self.end_at,
            sequence=self.sequence,
        )

    @property
    def busy_interval(self) -> Interval:
        """The practitioner's busy time: the visit and the pause after it."""
        return Interval(self.start_at, self.occupied_until)

    @property
    def visit_interval(self) -> Interval:
        return Interval(self.start_at, self.end_at)


class OccupancyBlock(Base):
    """One resource held for one 5-minute block by one appointment."""

    __tablename__ = "appointment_occupancy"
    __table_args__ = (
        UniqueConstraint("resource_key", "block_start", name="uq_appointment_occupancy_block"),
    )

    # Dozens of rows per appointment: 64-bit where the server has them.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    appointment_id: Mapped[int] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), index=True
    )
    resource_key: Mapped[str] = mapped_column(String(40))
    block_start: Mapped[datetime]


class CalendarVersion(Base):
    """How many times the time a resource holds has changed (`bump_calendar`).

    Slot searches cache their answers per process under this number (`jaejin.scheduling.search`)
    and read it, in the statement that checks who may search, to know whether an answer is
    still true: every worker sees a booking made through any other at once.
    """

    __tablename__ = "scheduling_calendar_versions"

    resource_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger())


# --------------------------------------------------------------------------- occupancy


def _floor_to_block(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    epoch_seconds = int(moment.timestamp())
    block_seconds = BLOCK_MINUTES * 60
    return datetime.fromtimestamp(epoch_seconds - epoch_seconds % block_seconds, UTC)


def blocks_between(start: datetime, end: datetime) -> list[datetime]:
    """The starts of every block touching [start, end)."""
    blocks: list[datetime] = []
    cursor = _floor_to_block(start)
    while cursor < end:
        blocks.append(cursor)
        cursor += BLOCK
    return blocks


def occupied_resources(appointment: Appointment) -> list[tuple[str, datetime, datetime]]:
    """(resource key, from, until) for every resource the appointment holds."""
    held = [
        (resource_key(ResourceKind.PRACTITIONER, appointment.practitioner_id),
         appointment.start_at, appointment.occupied_until),
        (resource_key(ResourceKind.PATIENT, appointment.patient_id),
         appointment.start_at, appointment.end_at),
    ]
    if appointment.interpreter_id is not None:
        held.append((resource_key(ResourceKind.INTERPRETER, appointment.interpreter_id),
                     appointment.start_at, appointment.end_at))
    return held


def occupancy_rows(appointment: Appointment) -> list[dict[str, Any]]:
    return [
        {"appointment_id": appointment.id, "resource_key": key, "block_start": block}
        for key, start, end in occupied_resources(appointment)
        for block in blocks_between(start, end)
    ]


def claim_blocks(db: Session, appointment: Appointment) -> set[str]:
    """Insert the appointment's blocks in one statement; the resource keys found already held
    (empty: every block was free).

    Blocks already held are skipped (ON CONFLICT DO NOTHING: on PostgreSQL a block another
    transaction is inserting waits for it, then counts as held if it committed), so a clash
    leaves the caller to undo its attempt (`release_occupancy`, and the appointment). The
    appointment must be written (it needs its id).
    """
    rows = occupancy_rows(appointment)
    connection = db.connection()
    statement = _CLAIMS.get(connection.dialect.name)
    if statement is None:
        raise RuntimeError(f"occupancy claims need SQLite or PostgreSQL, "
                           f"not {connection.dialect.name}")
    # Several parameter sets with RETURNING: sent as one multi-row INSERT ("insertmanyvalues"),
    # compiled once per process, through the connection (no ORM bulk-insert bookkeeping).
    return _unclaimed(rows, connection.execute(statement, rows).scalars().all())


def _unclaimed(rows: Sequence[dict[str, Any]], claimed: Sequence[str]) -> set[str]:
    """The resource keys of `rows` (blocks) some of whose blocks are not among `claimed`."""
    if len(claimed) == len(rows):
        return set()
    # Plain counting: Counter's check for a Mapping argument (an ABC look-up) took most of
    # a booking's write time when profiled.
    wanted = [row["resource_key"] for row in rows]
    return {key for key in set(wanted) if claimed.count(key) < wanted.count(key)}


def claim_occupancy(db: Session, appointment: Appointment) -> bool:
    """`claim_blocks`: True when every block was free."""
    return not claim_blocks(db, appointment)


_CLAIMS: dict[str, Any] = {
    name: insert_for(OccupancyBlock).on_conflict_do_nothing(
        index_elements=["resource_key", "block_start"]).returning(OccupancyBlock.resource_key)
    for name, insert_for in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}


_BUMPS: dict[str, Any] = {
    name: insert_for(CalendarVersion).values(resource_key=bindparam("key"), version=1)
    .on_conflict_do_update(index_elements=["resource_key"],
                           set_={"version": CalendarVersion.version + 1})
    for name, insert_for in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}


def bump_calendar(db: Session, practitioner_id: int) -> None:
    """Say, in the transaction that changes it, that the practitioner's held time changed:
    one upsert of their calendar version (searches' cached answers for them are then unused).

    Call it in every transaction that books, moves, cancels or otherwise frees or takes a
    practitioner's time, after the occupancy change and before the audit entry (the same lock
    order everywhere: blocks, version row, audit chain).
    """
    connection = db.connection()
    connection.execute(_BUMPS[connection.dialect.name],
                       {"key": resource_key(ResourceKind.PRACTITIONER, practitioner_id)})


def release_occupancy(db: Session, appointment_id: int) -> None:
    db.execute(delete(OccupancyBlock).where(OccupancyBlock.appointment_id == appointment_id))


def _held_between(key: str, start: str, until: str) -> Any:
    """EXISTS: a block of the resource bound as `key` in [`start`, `until`)."""
    return exists().where(OccupancyBlock.resource_key == bindparam(key),
                          OccupancyBlock.block_start >= bindparam(start),
                          OccupancyBlock.block_start < bindparam(until))


# --------------------------------------------------------------------------- appointments


_INSERT_APPOINTMENT = insert(Appointment).returning(Appointment.id)
_APPOINTMENT_COLUMNS = tuple(column.key for column in Appointment.__table__.columns
                             if column.key != "id")


def add_appointment(db: Session, appointment: Appointment) -> Appointment:
    """Write a new appointment in one INSERT and make it persistent in the session as it is.

    Every column but the id must be set on the transient `appointment` (nothing is left for
    the database to fill in, so nothing is read back): cheaper than the unit of work's flush
    on the booking's hot path.
    """
    values = {name: getattr(appointment, name) for name in _APPOINTMENT_COLUMNS}
    for name in _APPOINTMENT_COLUMNS:
        if name not in appointment.__dict__:
            # Unset (None): set it, or the session would load it back from the database.
            setattr(appointment, name, None)
    appointment.id = db.connection().execute(_INSERT_APPOINTMENT, values).scalar_one()
    make_transient_to_detached(appointment)
    db.add(appointment)
    return appointment


def remove_appointment(db: Session, appointment: Appointment) -> None:
    """Undo `add_appointment` and the blocks it claimed (a clash)."""
    connection = db.connection()
    connection.execute(delete(OccupancyBlock).where(
        OccupancyBlock.appointment_id == appointment.id))
    connection.execute(delete(Appointment).where(Appointment.id == appointment.id))
    db.expunge(appointment)


def _booking_write_statement() -> Any:
    """PostgreSQL: a new appointment, its outbox rows, its occupancy blocks, the
    practitioner's calendar version (`bump_calendar`) and the booking's audit entry
    (`jaejin.core.audit.insert_entry_sql`: the row `record` would write) in ONE statement
    (data-modifying CTEs; the foreign keys are checked at its end), the id taken beforehand
    from the appointments' sequence (`BookingRows.next_appointment_id`). Returns the resource
    keys of the blocks claimed: blocks already held are skipped, as in `claim_blocks`.

    The blocks are claimed first (the outer SELECT reads them; the other CTEs run after it),
    so locks are taken in the order `bump_calendar` asks for: blocks, then the version row.
    The version is raised and the audit entry written only when every block was claimed: a
    clash leaves the version untouched and audits nothing (nothing of the attempt stays)."""
    columns = ("id", *_APPOINTMENT_COLUMNS)
    values = ", ".join(f"CAST(:{name} AS JSON)" if name == "policy_decision" else f":{name}"
                       for name in columns)
    outbox = OutboxMessage.__table__.c
    # Only the models' own table and column names are put in the text; every value is bound.
    versions = CalendarVersion.__tablename__
    sql = f"""
WITH claimed AS (
    INSERT INTO {OccupancyBlock.__tablename__} (appointment_id, resource_key, block_start)
    SELECT :id, block.resource_key, block.block_start
    FROM json_to_recordset(CAST(:blocks AS JSON))
         AS block(resource_key TEXT, block_start TIMESTAMPTZ)
    ON CONFLICT (resource_key, block_start) DO NOTHING
    RETURNING resource_key
), new_appointment AS (
    INSERT INTO {Appointment.__tablename__} ({", ".join(columns)}) VALUES ({values})
), queued AS (
    INSERT INTO {OutboxMessage.__tablename__}
        ({outbox.topic.name}, {outbox.payload.name}, {outbox.dedupe_key.name},
         {outbox.created_at.name}, {outbox.available_at.name}, {outbox.attempts.name},
         {outbox.max_attempts.name})
    SELECT message.topic, message.payload, message.dedupe_key, :created_at,
           message.available_at, 0, :max_attempts
    FROM json_to_recordset(CAST(:messages AS JSON))
         AS message(topic TEXT, payload JSON, dedupe_key TEXT, available_at TIMESTAMPTZ)
), bumped AS (
    INSERT INTO {versions} (resource_key, version)
    SELECT :calendar_key, 1 WHERE (SELECT count(*) FROM claimed) = :block_count
    ON CONFLICT (resource_key) DO UPDATE SET version = {versions}.version + 1
), audited AS (
    {insert_entry_sql("audit_entry")}
    WHERE (SELECT count(*) FROM claimed) = :block_count
)
SELECT resource_key FROM claimed
"""  # noqa: S608
    return text(sql).columns(OccupancyBlock.resource_key)


_BOOKING_WRITE = _booking_write_statement()
_OUTBOX_MAX_ATTEMPTS = OutboxMessage.__table__.c.max_attempts.default.arg
_INSERT_MESSAGES = insert(OutboxMessage).returning(OutboxMessage.id)
_WITHDRAW_MESSAGES = delete(OutboxMessage).where(
    OutboxMessage.dedupe_key.in_(bindparam("keys", expanding=True)))


def write_booking(db: Session, appointment: Appointment,
                  messages_for: Callable[[Appointment], list[dict[str, Any]]],
                  audit_entry: Callable[[Appointment], tuple[AuditActor, AuditEvent]]
                  ) -> set[str]:
    """Write a new appointment (every column set, as for `add_appointment`), claim its blocks,
    queue its outbox messages (`messages_for(appointment)` once its id is known: `topic`,
    `payload`, `available_at`, `dedupe_key` each), raise the practitioner's calendar version
    (`bump_calendar`) and audit it (`audit_entry(appointment)` once its id is known: who and
    what, as `jaejin.core.audit.record` takes them); the resource keys found already held
    (empty: booked). After a clash nothing of the attempt is left in the transaction, and
    nothing is audited.

    On PostgreSQL, with the id already taken from the sequence, one statement; elsewhere one
    statement each (SQLite runs in the process: a statement costs no round trip)."""
    connection = db.connection()
    if connection.dialect.name != "postgresql" or appointment.__dict__.get("id") is None:
        add_appointment(db, appointment)
        clashed = claim_blocks(db, appointment)
        if clashed:
            remove_appointment(db, appointment)
            return clashed
        if messages := messages_for(appointment):
            connection.execute(_INSERT_MESSAGES, messages).close()
        bump_calendar(db, appointment.practitioner_id)
        record(db, *audit_entry(appointment))
        return clashed
    messages = messages_for(appointment)
    blocks = occupancy_rows(appointment)
    values = {name: getattr(appointment, name) for name in _APPOINTMENT_COLUMNS}
    values["id"] = appointment.id
    if values["policy_decision"] is not None:
        values["policy_decision"] = orjson.dumps(values["policy_decision"]).decode()
    # The rows travel as one JSON text each (orjson writes the instants in RFC 3339): far
    # cheaper to send than arrays the driver would adapt item by item.
    values |= {"created_at": appointment.created_at, "max_attempts": _OUTBOX_MAX_ATTEMPTS,
               "messages": orjson.dumps(messages).decode(),
               "blocks": orjson.dumps(blocks).decode(), "block_count": len(blocks),
               "calendar_key": resource_key(ResourceKind.PRACTITIONER,
                                            appointment.practitioner_id),
               "audit_entry": entry_json(*audit_entry(appointment))}
    clashed = _unclaimed(blocks, connection.execute(_BOOKING_WRITE, values).scalars().all())
    if clashed:
        connection.execute(delete(OccupancyBlock).where(
            OccupancyBlock.appointment_id == appointment.id))
        connection.execute(delete(Appointment).where(Appointment.id == appointment.id))
        if messages:
            connection.execute(_WITHDRAW_MESSAGES,
                               {"keys": [message["dedupe_key"] for message in messages]})
        return clashed
    make_transient_to_detached(appointment)
    db.add(appointment)
    return clashed


def holders_of(db: Session, keys: Sequence[str], start: datetime, end: datetime) -> set[int]:
    """Appointments holding any of `keys` somewhere in [start, end)."""
    if not keys:
        return set()
    return set(
        db.execute(
            select(OccupancyBlock.appointment_id).where(
                OccupancyBlock.resource_key.in_(list(keys)),
                OccupancyBlock.block_start >= _floor_to_block(start),
                OccupancyBlock.block_start < end,
            )
        ).scalars()
    )


# --------------------------------------------------------------------------- availability


def get_availability_row(
    db: Session, kind: OwnerKind, owner_id: int, institution_id: int
) -> AvailabilityRow | None:
    return db.execute(
        select(AvailabilityRow).where(
            AvailabilityRow.owner_kind == kind.value,
            AvailabilityRow.owner_id == owner_id,
            AvailabilityRow.institution_id == institution_id,
        )
    ).scalar_one_or_none()


#: Which saved hours a row holds: its id and when it was last saved. Every process reads it
#: with the row (a cheap column), so hours saved through any worker are seen by all at once.
HoursVersion = tuple[int, datetime]
#: Parsed hours by version, with their token: reading a schedule is far more frequent than
#: changing it.
_parsed_hours: dict[HoursVersion, tuple[int, Availability]] = {}
_PARSED_HOURS_LIMIT = 4096
#: One token per distinct set of hours: practitioners keeping the same hours share every
#: cache keyed by it (slot grids, answer pieces), and the hours are hashed only when parsed.
_hours_tokens: dict[Availability, int] = {}
_next_token = itertools.count(1)
NO_HOURS = Availability()
#: The cache key of "no hours saved".
NO_HOURS_KEY: Hashable = ("no hours",)


def load_availability(
    db: Session, kind: OwnerKind, owner_id: int, institution_id: int
) -> Availability:
    """The owner's hours; nobody is available before saving any."""
    return load_hours(db, kind, owner_id, institution_id)[1]


def load_hours(
    db: Session, kind: OwnerKind, owner_id: int, institution_id: int
) -> tuple[Hashable, Availability]:
    """(cache key, hours) of an owner: the key changes whenever the hours are saved."""
    version = db.execute(_HOURS_VERSION, {"kind": kind.value, "owner": owner_id,
                                          "institution": institution_id}).one_or_none()
    if version is None:
        return NO_HOURS_KEY, NO_HOURS
    return hours_of_version(db, (version[0], version[1]))


def hours_of_version(db: Session | Connection, version: HoursVersion | None
                     ) -> tuple[Hashable, Availability]:
    """(cache key, hours) of a version read with another query; the rules themselves are read
    and parsed only the first time this process meets the version."""
    if version is None:
        return NO_HOURS_KEY, NO_HOURS
    parsed = _parsed_hours.get(version)
    if parsed is None:
        rules = db.execute(_HOURS_RULES, {"id": version[0]}).scalar_one()
        hours = AvailabilityIn.model_validate(rules).to_domain()
        if len(_parsed_hours) >= _PARSED_HOURS_LIMIT:
            _parsed_hours.clear()
            _hours_tokens.clear()  # tokens are never reused: old keys simply go unused
        token = _hours_tokens.setdefault(hours, next(_next_token))
        parsed = _parsed_hours[version] = (token, hours)
    return parsed


_HOURS_VERSION = select(AvailabilityRow.id, AvailabilityRow.updated_at).where(
    AvailabilityRow.owner_kind == bindparam("kind"),
    AvailabilityRow.owner_id == bindparam("owner"),
    AvailabilityRow.institution_id == bindparam("institution"))
_HOURS_RULES = select(AvailabilityRow.rules).where(AvailabilityRow.id == bindparam("id"))


def save_availability(
    db: Session,
    kind: OwnerKind,
    owner_id: int,
    institution_id: int,
    rules: AvailabilityIn,
    *,
    updated_by: str | None,
) -> AvailabilityRow:
    row = get_availability_row(db, kind, owner_id, institution_id)
    body = rules.model_dump(mode="json")
    if row is None:
        row = AvailabilityRow(owner_kind=kind.value, owner_id=owner_id,
                              institution_id=institution_id, rules=body, updated_by=updated_by)
        db.add(row)
    else:
        row.rules = body
        row.updated_by = updated_by
        row.updated_at = utcnow()
    db.flush()
    return row


# --------------------------------------------------------------------------- busy time


def _overlapping(column_start: Any, column_end: Any, start: datetime, end: datetime) -> Any:
    return (column_start < end) & (column_end > start)


def practitioner_busy(
    db: Session | Connection, practitioner_id: int, start: datetime, end: datetime,
    *, excluding: int | None = None,
) -> list[Interval]:
    """The practitioner's held time overlapping [start, end), at every institution."""
    query = select(Appointment.start_at, Appointment.occupied_until).where(
        Appointment.practitioner_id == practitioner_id,
        Appointment.status.in_(HOLDING_STATUSES),
        _overlapping(Appointment.start_at, Appointment.occupied_until, start, end),
    )
    if excluding is not None:
        query = query.where(Appointment.id != excluding)
    return [Interval(begin, until) for begin, until in db.execute(query)]


def patient_busy(
    db: Session, patient_id: int, start: datetime, end: datetime,
    *, excluding: int | None = None,
) -> list[Interval]:
    query = select(Appointment.start_at, Appointment.end_at).where(
        Appointment.patient_id == patient_id,
        Appointment.status.in_(HOLDING_STATUSES),
        _overlapping(Appointment.start_at, Appointment.end_at, start, end),
    )
    if excluding is not None:
        query = query.where(Appointment.id != excluding)
    return [Interval(begin, until) for begin, until in db.execute(query)]


def interpreters_busy(
    db: Session, interpreter_ids: Iterable[int], start: datetime, end: datetime,
    *, excluding: int | None = None,
) -> dict[int, list[Interval]]:
    ids = list(interpreter_ids)
    busy: dict[int, list[Interval]] = {identifier: [] for identifier in ids}
    if not ids:
        return busy
    query = select(Appointment.interpreter_id, Appointment.start_at, Appointment.end_at).where(
        Appointment.interpreter_id.in_(ids),
        Appointment.status.in_(HOLDING_STATUSES),
        _overlapping(Appointment.start_at, Appointment.end_at, start, end),
    )
    if excluding is not None:
        query = query.where(Appointment.id != excluding)
    for interpreter_id, begin, until in db.execute(query):
        if interpreter_id is not None:
            busy[interpreter_id].append(Interval(begin, until))
    return busy


def appointments_between(
    db: Session,
    *,
    institution_id: int,
    start: datetime,
    end: datetime,
    practitioner_ids: Sequence[int] | None = None,
    interpreter_ids: Sequence[int] | None = None,
    include_cancelled: bool = False,
) -> list[Appointment]:
    query = select(Appointment).where(
        Appointment.institution_id == institution_id,
        _overlapping(Appointment.start_at, Appointment.end_at, start, end),
    )
    if practitioner_ids is not None:
        query = query.where(Appointment.practitioner_id.in_(list(practitioner_ids)))
    if interpreter_ids is not None:
        query = query.where(Appointment.interpreter_id.in_(list(interpreter_ids)))
    if not include_cancelled:
        query = query.where(Appointment.status != AppointmentStatus.CANCELLED.value)
    return list(db.execute(query.order_by(Appointment.start_at, Appointment.id)).scalars())


def _both_busy_statement(excluding: bool) -> Any:
    query = select(Appointment.practitioner_id, Appointment.patient_id, Appointment.start_at,
                   Appointment.end_at, Appointment.occupied_until).where(
        or_(Appointment.practitioner_id == bindparam("practitioner_id"),
            Appointment.patient_id == bindparam("patient_id")),
        Appointment.status.in_(HOLDING_STATUSES),
        # The practitioner's time runs to occupied_until, never before end_at: a superset.
        Appointment.start_at < bindparam("end", type_=Appointment.start_at.type),
        Appointment.occupied_until > bindparam("start", type_=Appointment.start_at.type),
    )
    if excluding:
        query = query.where(Appointment.id != bindparam("excluding"))
    return query


#: Built once per process: a 409 answers with this read, and a burst answers many 409s.
_BOTH_BUSY = {flag: _both_busy_statement(flag) for flag in (False, True)}


def practitioner_and_patient_busy(
    db: Session, practitioner_id: int, patient_id: int, start: datetime, end: datetime,
    *, excluding: int | None = None,
) -> tuple[list[Interval], list[Interval]]:
    """`practitioner_busy` and `patient_busy` in one query."""
    parameters: dict[str, Any] = {"practitioner_id": practitioner_id, "patient_id": patient_id,
                                  "start": start, "end": end}
    if excluding is not None:
        parameters["excluding"] = excluding
    practitioner: list[Interval] = []
    patient: list[Interval] = []
    for who, whose_patient, begin, finish, until in db.connection().execute(
            _BOTH_BUSY[excluding is not None], parameters):
        if who == practitioner_id:
            practitioner.append(Interval(begin, until))
        if whose_patient == patient_id and begin < end and finish > start:
            patient.append(Interval(begin, finish))
    return practitioner, patient


# --------------------------------------------------------------------------- hot paths
#
# A booking and a slot search each read what they decide on in one statement, built once per
# process (only parameters change), instead of one look-up per row.


@dataclass(frozen=True, slots=True)
class BookingRows:
    """What a booking decides on, read together."""

    patient: Patient
    institution: Institution
    #: None when the practitioner has no active role at the patient's institution.
    practitioner: Practitioner | None
    hours: HoursVersion | None
    #: The patient's records at the institution the telemedicine rules decide on (video).
    records: VisitRecords | None
    #: Whether the practitioner's or the patient's time asked about is already held.
    practitioner_held: bool
    patient_held: bool
    #: PostgreSQL: the id the appointment will have, taken from its sequence by the same read
    #: (`write_booking` then writes everything in one statement). None elsewhere.
    next_appointment_id: int | None = None


#: The next appointment id, read with the booking's rows (a refused booking leaves a gap in the
#: ids, as a rolled-back INSERT would).
_NEXT_APPOINTMENT_ID = literal_column(
    f"nextval(pg_get_serial_sequence('{Appointment.__tablename__}', 'id'))", Integer)


#: What a booking reads of the patient, the institution and the practitioner: what it decides
#: on (who may book, the policy's facts, zones, languages) and answers with. Every other
#: attribute is left unloaded (a column less to send, describe and convert); one used later in
#: the same session is loaded then, by a read of its own.
_BOOKING_ATTRIBUTES = (
    load_only(Patient.id, Patient.institution_id, Patient.user_id, Patient.birth_date,
              Patient.nationality, Patient.residence_country, Patient.residence_region,
              Patient.residence_district, Patient.current_country, Patient.preferred_language,
              Patient.time_zone, Patient.nhi_covered, Patient.flags,
              Patient.long_term_care_grade, Patient.phone),
    load_only(Institution.id, Institution.code, Institution.kind, Institution.region,
              Institution.time_zone, Institution.cancellation_cutoff_hours),
    load_only(Practitioner.id, Practitioner.user_id, Practitioner.languages,
              Practitioner.time_zone),
)


def _booking_statement(with_records: bool, with_next_id: bool = False) -> Any:
    practitioner_id: Any = bindparam("practitioner_id")
    columns: list[Any] = [
        Patient, Institution, Practitioner, AvailabilityRow.id, AvailabilityRow.updated_at,
        _held_between("practitioner_key", "practitioner_from", "practitioner_until"),
        _held_between("patient_key", "patient_from", "patient_until"),
    ]
    if with_records:
        columns.extend(visit_records_columns(Patient.id, Patient.institution_id))
    if with_next_id:
        columns.append(_NEXT_APPOINTMENT_ID)
    return (
        select(*columns)
        .options(*_BOOKING_ATTRIBUTES)
        .join(Institution, Institution.id == Patient.institution_id)
        .outerjoin(PractitionerRole, and_(PractitionerRole.institution_id == Patient.institution_id,
                                          PractitionerRole.practitioner_id == practitioner_id,
                                          PractitionerRole.active))
        .outerjoin(Practitioner, Practitioner.id == PractitionerRole.practitioner_id)
        .outerjoin(AvailabilityRow, and_(
            AvailabilityRow.owner_kind == OwnerKind.PRACTITIONER.value,
            AvailabilityRow.owner_id == PractitionerRole.practitioner_id,
            AvailabilityRow.institution_id == Patient.institution_id))
        .where(Patient.id == bindparam("patient_id"))
        .limit(1)
    )


_BOOKING_ROWS = {(flag, next_id): _booking_statement(flag, next_id)
                 for flag in (False, True) for next_id in (False, True)}


def booking_rows(
    db: Session, *, patient_id: int, practitioner_id: int, practitioner_busy: Interval,
    patient_busy: Interval, records_at: datetime | None = None,
) -> BookingRows | None:
    """The patient (None: no such patient), their institution, the practitioner if active
    there, the practitioner's hours version there, whether the practitioner's time
    `practitioner_busy` or the patient's time `patient_busy` is already held, and with
    `records_at` the patient's records the telemedicine rules decide a visit then on."""
    with_next_id = db.get_bind().dialect.name == "postgresql"
    with_records = records_at is not None
    parameters = visit_records_parameters(db, records_at) if records_at is not None else {}
    row = db.execute(_BOOKING_ROWS[with_records, with_next_id], parameters | {
        "patient_id": patient_id, "practitioner_id": practitioner_id,
        "practitioner_key": resource_key(ResourceKind.PRACTITIONER, practitioner_id),
        "practitioner_from": _floor_to_block(practitioner_busy.start),
        "practitioner_until": practitioner_busy.end,
        "patient_key": resource_key(ResourceKind.PATIENT, patient_id),
        "patient_from": _floor_to_block(patient_busy.start),
        "patient_until": patient_busy.end,
    }).one_or_none()
    if row is None:
        return None
    hours = (row[3], row[4]) if row[3] is not None else None
    records = VisitRecords.of(records_at, *row[7:10]) if records_at is not None else None
    return BookingRows(row[0], row[1], row[2], hours, records, bool(row[5]), bool(row[6]),
                       row[-1] if with_next_id else None)


@dataclass(frozen=True, slots=True)
class SearchRows:
    """A practitioner at one institution, with the version of their hours there."""

    institution: Institution
    practitioner: Practitioner
    hours: HoursVersion | None


_SEARCH_ROWS = (
    select(Institution, Practitioner, AvailabilityRow.id, AvailabilityRow.updated_at)
    .select_from(PractitionerRole)
    .join(Institution, Institution.id == PractitionerRole.institution_id)
    .join(Practitioner, Practitioner.id == PractitionerRole.practitioner_id)
    .outerjoin(AvailabilityRow, and_(
        AvailabilityRow.owner_kind == OwnerKind.PRACTITIONER.value,
        AvailabilityRow.owner_id == PractitionerRole.practitioner_id,
        AvailabilityRow.institution_id == PractitionerRole.institution_id))
    .where(PractitionerRole.practitioner_id == bindparam("practitioner_id"),
           PractitionerRole.active,
           PractitionerRole.institution_id.in_(bindparam("institutions", expanding=True)))
    .order_by(PractitionerRole.institution_id)
)


def practitioner_workplaces(db: Session, practitioner_id: int, institution_ids: Iterable[int]
                            ) -> list[SearchRows]:
    """The institutions among `institution_ids` where the practitioner has an active role,
    each with the practitioner and their hours' version there, in one query."""
    wanted = sorted(set(institution_ids))
    if not wanted:
        return []
    found: dict[int, SearchRows] = {}
    for institution, practitioner, hours_id, updated_at in db.execute(
            _SEARCH_ROWS, {"practitioner_id": practitioner_id, "institutions": wanted}):
        found.setdefault(institution.id, SearchRows(
            institution, practitioner, (hours_id, updated_at) if hours_id is not None else None))
    return list(found.values())


@dataclass(frozen=True, slots=True)
class SearchPlace:
    """Where a practitioner's slots are searched, as plain values: enough to find a cached
    answer (`jaejin.scheduling.search`) without building any ORM object."""

    institution_id: int
    time_zone: str
    #: (availability row id, its `updated_at` as the driver returns it): a version token, to
    #: compare only (None: no hours saved).
    hours: tuple[int, Any] | None
    #: `CalendarVersion.version` of the practitioner (0: their time never changed).
    calendar: int
