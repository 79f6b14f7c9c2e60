"""Storing parsed readings: one multi-row insert, exact duplicates ignored, critical alerts at once.

Every way in (FHIR, the JSON batch, CSV and Apple Health uploads, Nightscout) ends in
`ingest_items`, which for one patient and one request (or `ingest_many` for several requests of
any patients in one transaction: `group_commit`):

1. turns accepted items into rows, each with a fingerprint (exact duplicates) and, for the first
   reading of an item, the sender's idempotency key;
2. inserts them with one `INSERT ... ON CONFLICT DO NOTHING RETURNING` (SQLAlchemy Core, no ORM
   object per reading); an item is created whole or reported as already stored, never half;
3. evaluates `alerts.evaluate_on_ingest` for readings taken in the last `ACUTE_HORIZON`,
   against a window of the patient's recent readings loaded once, and folds the signals into the
   patient's open alert of each episode (an upsert: concurrent requests never open two);
4. queues a `triage:<institution_id>` event per alert, published only after commit.

The caller commits (after its one audit entry), so a failure anywhere stores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, cast, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from sqlalchemy import (
    JSON,
    Engine,
    Table,
    bindparam,
    delete,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from jaejin.core.binary_arrays import BinaryArray, send_binary_arrays
from jaejin.core.database import UTCDateTime, session_factory, utcnow
from jaejin.core.events import publish_after_commit
from jaejin.directory.store import Patient
from jaejin.monitoring.alerts import (
    CGM_EXTENDED_HIGH_WINDOW,
    WEIGHT_TIME_TOLERANCE,
    AlertSignal,
    PatientContext,
    Severity,
    evaluate_on_ingest,
)
from jaejin.monitoring.careplans import CarePlan
from jaejin.monitoring.cgm import is_cgm_reading
from jaejin.monitoring.live import AcceptedReadings, readings_accepted_many
from jaejin.monitoring.parsers import (
    ImportContext,
    ImportProblem,
    ParsedItem,
    UnreadableInputError,
    parse_apple_health_export,
    parse_readings_csv,
    reading_digest,
)
from jaejin.monitoring.parsers.nightscout import api_secret_hashes, verify_api_secret
from jaejin.monitoring.readings import Metric, Reading
from jaejin.monitoring.store import (
    READING_COLUMNS,
    AlertRow,
    AlertStatus,
    NightscoutSecretRow,
    ReadingRow,
    UploadRow,
    UploadStatus,
    active_plan,
    offset_minutes,
    reading_from_values,
)
from jaejin.policy.emergency import emergency_numbers
from jaejin.policy.errors import RequestError

log = logging.getLogger(__name__)

#: A reading taken longer ago than this before it arrived is history, not an emergency: an
#: imported export of last year's readings must not tell the patient to call an ambulance.
#: The scheduled evaluation still sees it (trends, patterns).
ACUTE_HORIZON: Final = timedelta(hours=24)
#: Stored keys stay within the column (220) whatever the sender's key length.
_MAX_KEY_LENGTH: Final = 200
_TRIAGE_CHANNEL: Final = "triage:{institution_id}"


class ItemStatus(StrEnum):
    CREATED = "created"
    #: Already stored: an exact duplicate, or an idempotency key used before.
    DUPLICATE = "duplicate"
    REFUSED = "refused"
    #: Deliberately not a reading (a Nightscout calibration record).
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class IngestPatient:
    """The patient readings are stored for, and whom critical guidance addresses."""

    patient_id: int
    institution_id: int
    language: str
    current_country: str
    time_zone: str

    @classmethod
    def of(cls, patient: Patient) -> IngestPatient:
        return cls(
            patient.id, patient.institution_id, patient.preferred_language,
            patient.current_country, patient.time_zone,
        )

    @property
    def ref(self) -> str:
        """`Reading.patient_ref` of this patient's readings."""
        return str(self.patient_id)

    def zone(self) -> ZoneInfo | None:
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            return None

    def context(self, received_at: datetime, *, default_zone: bool = False) -> ImportContext:
        """What the parsers need; `default_zone` reads offset-less times in the patient's zone."""
        return ImportContext(
            patient_ref=self.ref, received_at=received_at,
            default_zone=self.zone() if default_zone else None,
        )


@dataclass(slots=True)
class ItemResult:
    """What became of one item of a request."""

    index: int
    status: ItemStatus
    key: str | None = None
    readings: tuple[Reading, ...] = ()
    #: Ids of the stored readings: new ones, or for a duplicate the ones already stored.
    reading_ids: tuple[int, ...] = ()
    problems: tuple[ImportProblem, ...] = ()
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    alert_id: int
    episode_key: str
    kind: str
    severity: str
    status: str
    signal_count: int
    #: True when this request opened the episode, False when it joined an open one.
    opened: bool


@dataclass(frozen=True, slots=True)
class Guidance:
    """Patient-facing advice about a critical reading, already in the patient's language."""

    kind: str
    severity: str
    text: str


@dataclass(frozen=True, slots=True)
class EmergencyContact:
    country: str
    medical: str


@dataclass(slots=True)
class IngestResult:
    items: list[ItemResult]
    alerts: list[RaisedAlert] = field(default_factory=list)
    guidance: list[Guidance] = field(default_factory=list)
    #: The emergency number where the patient is now, when a reading was critical.
    emergency: EmergencyContact | None = None
    readings_created: int = 0

    def count(self, status: ItemStatus) -> int:
        return sum(1 for item in self.items if item.status is status)

    def counts(self) -> dict[str, int]:
        totals = {status.value: 0 for status in ItemStatus}
        for item in self.items:
            totals[item.status.value] += 1
        totals["readings_created"] = self.readings_created
        totals["alerts"] = len(self.alerts)
        return totals


# ------------------------------------------------------------------------------ rows


def stored_key(prefix: str, key: str) -> str:
    """The idempotency key as stored: namespaced by channel, hashed when too long."""
    if len(key) > _MAX_KEY_LENGTH:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return f"{prefix}:{key}"


def _fingerprints(readings: Sequence[Reading]) -> list[bytes]:
    """Per reading, the bytes that make an exact duplicate a no-op.

    The halves of a blood-pressure panel mix in each other's fingerprint: a panel is a duplicate
    only as a whole, so a re-sent measurement never stores one half again.
    """
    if len(readings) == 1:
        return [reading_digest(readings[0])]
    own = [reading_digest(reading).hex() for reading in readings]
    item = "|".join(sorted(own))
    return [hashlib.sha256(f"{item}|{mine}".encode()).digest() for mine in own]


@dataclass(slots=True)
class _Pending:
    result: ItemResult
    fingerprints: list[bytes]
    key: str | None


def _row(
    reading: Reading, patient: IngestPatient, channel: str, fingerprint: bytes, key: str | None
) -> dict[str, Any]:
    return {
        "patient_id": patient.patient_id,
        "institution_id": patient.institution_id,
        "metric": _METRIC_TEXT[reading.metric],
        "loinc": reading.loinc,
        # A float whatever the caller built: one array must not mix integers and floats.
        "value": float(reading.value),
        "unit": reading.unit,
        "effective_at": reading.effective_utc,
        "effective_offset_minutes": offset_minutes(reading.effective_at),
        "source_device": reading.source_device,
        "received_at": reading.received_at,
        "channel": channel,
        "panel_id": reading.panel_id,
        "fingerprint": fingerprint,
        "idempotency_key": key,
        "attachment_ref": reading.attachment_ref,
    }


_READINGS = cast(Table, ReadingRow.__table__)
_ALERTS = cast(Table, AlertRow.__table__)


#: Columns that differ between the readings of one request, with their PostgreSQL types.
_VARYING_COLUMNS: Final = (
    ("metric", "text"), ("loinc", "text"), ("value", "double precision"), ("unit", "text"),
    ("effective_at", "timestamptz"), ("effective_offset_minutes", "smallint"),
    ("source_device", "text"), ("received_at", "timestamptz"), ("panel_id", "text"),
    ("fingerprint", "bytea"), ("idempotency_key", "text"), ("attachment_ref", "text"),
)
#: Columns one request writes alike into every reading (one patient, one channel).
_SHARED_COLUMNS: Final = (
    ("patient_id", "integer"), ("institution_id", "integer"), ("channel", "text"),
)


def _unnest_insert(conflicts: str) -> Any:
    """PostgreSQL: one INSERT ... SELECT FROM unnest(arrays) ... RETURNING id, fingerprint.

    Semantically the multi-row VALUES insert, but the statement stays the same few hundred
    bytes whatever the batch size: psycopg parses it once and caches it, and the arrays travel
    in binary (`core.binary_arrays`). What every reading of the request shares is sent once.
    """
    scalars, arrays = _SHARED_COLUMNS, _VARYING_COLUMNS
    return text(
        f"INSERT INTO {ReadingRow.__tablename__} "  # noqa: S608 - names and types are constants
        f"({', '.join(name for name, _ in scalars + arrays)}) "
        "SELECT "
        + "".join(f"CAST(:{name} AS {kind}), " for name, kind in scalars)
        + "incoming.* FROM unnest("
        + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in arrays)
        + f") AS incoming {conflicts}RETURNING id, fingerprint"
    )


#: Skips readings stored before (an exact duplicate, a retried key).
_INSERT_SKIPPING_STORED: Final = _unnest_insert("ON CONFLICT DO NOTHING ")
#: Refuses the whole insert if any reading was stored before. ON CONFLICT probes every unique
#: index before each row goes in, about a third of PostgreSQL's work for a new reading; a batch
#: of new readings, the usual case, is cheaper inserted plainly and tried again the careful
#: way only when it clashes.
_INSERT_ALL_NEW: Final = _unnest_insert("")
#: `_INSERT_SKIPPING_STORED` of readings of several patients (a group commit), from one JSON
#: array of rows (`_json_row`).
_INSERT_GROUP_SKIPPING_STORED: Final = text(
    f"INSERT INTO {ReadingRow.__tablename__} "  # noqa: S608 - names and types are constants
    f"({', '.join(name for name, _ in _SHARED_COLUMNS + _VARYING_COLUMNS)}) "
    f"SELECT {', '.join(name for name, _ in _SHARED_COLUMNS + _VARYING_COLUMNS)} "
    "FROM json_to_recordset(CAST(:readings AS json)) AS incoming("
    + ", ".join(f"{name} {kind}" for name, kind in _SHARED_COLUMNS + _VARYING_COLUMNS)
    + ") ON CONFLICT DO NOTHING RETURNING id, fingerprint"
)


def _json_row(reading: Reading, patient: IngestPatient, channel: str, fingerprint: bytes,
              key: str | None) -> dict[str, Any]:
    """`_row` as JSON takes it: the fingerprint in bytea's hex text form."""
    row = _row(reading, patient, channel, fingerprint, key)
    row["fingerprint"] = "\\x" + fingerprint.hex()
    return row
#: From this many readings a request goes in as arrays, trying `_INSERT_ALL_NEW` first (its
#: savepoint costs two statements, more than the probes of a few rows). Fewer readings go in
#: as one VALUES list of plain parameters, cheaper to send than a dozen one-element arrays.
_BULK_FROM_ROWS: Final = 32


#: A metric's stored text (an enum's `.value` costs a Python-level descriptor call per reading).
_METRIC_TEXT: Final = {metric: metric.value for metric in Metric}
#: Per dialect: INSERT ... VALUES ... ON CONFLICT DO NOTHING RETURNING id, fingerprint.
_VALUES_INSERT: Final = {
    name: insert(_READINGS).on_conflict_do_nothing().returning(
        _READINGS.c.id, _READINGS.c.fingerprint)
    for name, insert in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}


#: A reading to insert: (reading, fingerprint, stored key, its patient, its channel).
_RowToStore = tuple[Reading, bytes, str | None, IngestPatient, str]


def _insert(db: Session, rows: list[_RowToStore]) -> dict[bytes, int]:
    """Insert rows, skipping conflicts; the new rows' ids by fingerprint (a fingerprint
    includes the patient, so it is unique across the patients of a group commit too)."""
    dialect = db.get_bind().dialect.name
    patient, channel = rows[0][3], rows[0][4]
    one_request = all(row[3] is patient and row[4] == channel for row in rows)
    if dialect != "postgresql" or len(rows) == 1 or (
            one_request and len(rows) < _BULK_FROM_ROWS):
        stored = db.execute(_VALUES_INSERT[dialect], [
            _row(reading, owner, owned_channel, fingerprint, key)
            for reading, fingerprint, key, owner, owned_channel in rows
        ])
        return {bytes(fingerprint): reading_id for reading_id, fingerprint in stored}
    if not one_request:
        # A group commit's small requests: one statement of fixed text (psycopg parses a
        # VALUES list anew for every number of rows), conflicts skipped at once; the readings
        # as one JSON text, which orjson writes in C (psycopg dumps each array in Python, more
        # than the rest of the insert for a group of a few readings).
        result = db.execute(_INSERT_GROUP_SKIPPING_STORED, {"readings": orjson.dumps([
            _json_row(reading, owner, owned_channel, fingerprint, key)
            for reading, fingerprint, key, owner, owned_channel in rows]).decode()}).all()
        return {bytes(fingerprint): reading_id for reading_id, fingerprint in result}
    send_binary_arrays(db)
    columns: list[BinaryArray] = [BinaryArray() for _ in _VARYING_COLUMNS]
    (metrics, loincs, values, units, moments, offsets, devices, arrivals, panels, fingerprints,
     keys, attachments) = columns
    for reading, fingerprint, key, _patient, _channel in rows:
        effective_at = reading.effective_at
        metrics.append(_METRIC_TEXT[reading.metric])
        loincs.append(reading.loinc)
        # A float whatever the caller built: one array must not mix integers and floats.
        values.append(float(reading.value))
        units.append(reading.unit)
        moments.append(effective_at)
        offsets.append(offset_minutes(effective_at))
        devices.append(reading.source_device)
        arrivals.append(reading.received_at)
        panels.append(reading.panel_id)
        fingerprints.append(fingerprint)
        keys.append(key)
        attachments.append(reading.attachment_ref)
    parameters: dict[str, Any] = dict(
        zip((name for name, _ in _VARYING_COLUMNS), columns, strict=True))
    parameters |= {"patient_id": patient.patient_id, "institution_id": patient.institution_id,
                   "channel": channel}
    try:
        with db.begin_nested():
            result = db.execute(_INSERT_ALL_NEW, parameters).all()
    except IntegrityError:
        pass  # some reading is stored already (or being stored by a racing sender)
    else:
        return {bytes(fingerprint): reading_id for reading_id, fingerprint in result}
    result = db.execute(_INSERT_SKIPPING_STORED, parameters).all()
    return {bytes(fingerprint): reading_id for reading_id, fingerprint in result}


def _store_rows(
    db: Session, requests: Sequence[tuple[IngestPatient, str, Sequence[_Pending]]]
) -> None:
    """Insert every pending item's readings, of every request in one statement; mark each
    item created or duplicate."""
    rows: list[_RowToStore] = []
    for patient, channel, pending in requests:
        for entry in pending:
            key = entry.key
            for reading, fingerprint in zip(entry.result.readings, entry.fingerprints,
                                            strict=True):
                # The key goes on the item's first reading only: a retried key with different
                # values then conflicts on that reading, and the item is undone below as a
                # whole.
                rows.append((reading, fingerprint, key, patient, channel))
                key = None
    if not rows:
        return
    inserted = _insert(db, rows)
    pending = [entry for _patient, _channel, entries in requests for entry in entries]
    partial: list[int] = []
    for entry in pending:
        ids = [inserted.get(fingerprint) for fingerprint in entry.fingerprints]
        found = [reading_id for reading_id in ids if reading_id is not None]
        if len(found) == len(ids):
            entry.result.status = ItemStatus.CREATED
            entry.result.reading_ids = tuple(found)
        else:
            entry.result.status = ItemStatus.DUPLICATE
            partial.extend(found)
    if partial:
        db.execute(delete(ReadingRow).where(ReadingRow.id.in_(partial)))


def _existing_ids(db: Session, patient: IngestPatient, duplicates: Sequence[_Pending]) -> None:
    """For items already stored, the ids of the readings that were stored before."""
    fingerprints = {fingerprint for entry in duplicates for fingerprint in entry.fingerprints}
    keys = {entry.key for entry in duplicates if entry.key is not None}
    conditions: list[ColumnElement[bool]] = [ReadingRow.fingerprint.in_(fingerprints)]
    if keys:
        conditions.append(ReadingRow.idempotency_key.in_(keys))
    rows = db.execute(
        select(ReadingRow.id, ReadingRow.fingerprint, ReadingRow.idempotency_key,
               ReadingRow.panel_id)
        .where(ReadingRow.patient_id == patient.patient_id, or_(*conditions))
    ).all()
    by_fingerprint = {bytes(row.fingerprint): row.id for row in rows}
    by_key = {row.idempotency_key: row for row in rows if row.idempotency_key is not None}
    panels = {
        row.panel_id for row in by_key.values() if row.panel_id is not None and keys
    }
    panel_ids: dict[str | None, list[int]] = {}
    if panels:
        for reading_id, panel_id in db.execute(
            select(ReadingRow.id, ReadingRow.panel_id)
            .where(ReadingRow.patient_id == patient.patient_id, ReadingRow.panel_id.in_(panels))
            .order_by(ReadingRow.id)
        ):
            panel_ids.setdefault(panel_id, []).append(reading_id)
    for entry in duplicates:
        keyed = by_key.get(entry.key) if entry.key is not None else None
        if keyed is not None:
            entry.result.reading_ids = tuple(
                panel_ids.get(keyed.panel_id, [keyed.id]) if keyed.panel_id else [keyed.id]
            )
            continue
        found = [by_fingerprint.get(fingerprint) for fingerprint in entry.fingerprints]
        entry.result.reading_ids = tuple(one for one in found if one is not None)


# ---------------------------------------------------------------------------- alerts


class _Prefix(Sequence[Reading]):
    """The first `end` readings of a chronological list, without copying it."""

    __slots__ = ("_end", "_items")

    def __init__(self, items: list[Reading], end: int) -> None:
        self._items = items
        self._end = end

    def __len__(self) -> int:
        return self._end

    @overload
    def __getitem__(self, index: int) -> Reading: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Reading]: ...

    def __getitem__(self, index: int | slice) -> Reading | Sequence[Reading]:
        if isinstance(index, slice):
            return self._items[: self._end][index]
        if index < 0:
            index += self._end
        if not 0 <= index < self._end:
            raise IndexError(index)
        return self._items[index]

    def __reversed__(self) -> Iterator[Reading]:
        items = self._items
        for position in range(self._end - 1, -1, -1):
            yield items[position]


def _history_lookback(reading: Reading, plan: CarePlan) -> timedelta | None:
    """How far back `evaluate_on_ingest` looks for this reading, None when it looks at nothing
    but the reading itself and its own panel."""
    limits = plan.thresholds
    if reading.metric is Metric.GLUCOSE and is_cgm_reading(reading) and (
        reading.value < limits.glucose_level1_low or reading.value > limits.glucose_level2_high
    ):
        return CGM_EXTENDED_HIGH_WINDOW
    if reading.metric is Metric.BODY_WEIGHT and plan.monitors(Metric.BODY_WEIGHT):
        return timedelta(days=limits.weight_gain_window_days) + WEIGHT_TIME_TOLERANCE
    return None


def _window(
    db: Session,
    patient: IngestPatient,
    candidates: Sequence[Reading],
    created: Sequence[Reading],
    created_ids: set[int],
    plan: CarePlan,
) -> list[Reading]:
    """The new readings plus, when a check needs them, the patient's stored earlier ones."""
    since: datetime | None = None
    until: datetime | None = None
    metrics: set[str] = set()
    for reading in candidates:
        lookback = _history_lookback(reading, plan)
        if lookback is None:
            continue
        start = reading.effective_utc - lookback
        since = start if since is None or start < since else since
        end = reading.effective_utc
        until = end if until is None or end > until else until
        metrics.add(reading.metric.value)
    window = list(created)
    if since is not None and until is not None:
        rows = db.execute(
            select(ReadingRow.id, *READING_COLUMNS).where(
                ReadingRow.patient_id == patient.patient_id,
                ReadingRow.metric.in_(metrics),
                ReadingRow.effective_at >= since,
                ReadingRow.effective_at <= until,
            )
        )
        # Rows this request inserted are already in `created` as the very objects evaluated:
        # a copy would count a reading as its own predecessor.
        window.extend(reading_from_values(row[1:]) for row in rows if row[0] not in created_ids)
    window.sort(key=lambda reading: reading.effective_ts)
    return window


def _medical_number(country_code: str) -> str:
    try:
        number = emergency_numbers(country_code).medical
    except RequestError as error:
        raise LookupError(country_code) from error
    if number is None:
        raise LookupError(country_code)
    return number


def patient_context(patient: IngestPatient) -> PatientContext:
    return PatientContext(patient.language, patient.current_country, _medical_number)


def evaluate_new_readings(
    db: Session,
    patient: IngestPatient,
    created: Sequence[tuple[int, Reading]],
    received_at: datetime,
    plan: CarePlan | None = None,
) -> list[AlertSignal]:
    """`evaluate_on_ingest` for every newly stored reading taken within `ACUTE_HORIZON`."""
    horizon = (received_at - ACUTE_HORIZON).timestamp()
    candidates = [reading for _, reading in created if reading.effective_ts >= horizon]
    if not candidates:
        return []
    plan = plan if plan is not None else active_plan(db, patient.patient_id)
    window = _window(
        db, patient, candidates, [reading for _, reading in created],
        {reading_id for reading_id, _ in created}, plan,
    )
    moments = [reading.effective_ts for reading in window]
    context = patient_context(patient)
    signals: list[AlertSignal] = []
    for reading in sorted(candidates, key=lambda item: item.effective_ts):
        earlier = _Prefix(window, bisect_right(moments, reading.effective_ts))
        signals.extend(evaluate_on_ingest(reading, plan, earlier, patient=context))
    return signals


def _rank_case(column: str) -> str:
    """A severity's rank in portable SQL, from the same table as `Severity.rank`."""
    ranks = " ".join(
        f"WHEN '{severity.value}' THEN {severity.rank}" for severity in Severity if severity.rank
    )
    return f"CASE {column} {ranks} ELSE 0 END"


#: PostgreSQL: the same order, shorter (keeps the statement under psycopg's cache limit).
_SEVERITY_ARRAY: Final = "{" + ",".join(
    value for _, value in sorted((severity.rank, severity.value) for severity in Severity)
) + "}"


def _rank_array(column: str) -> str:
    return f"array_position('{_SEVERITY_ARRAY}'::text[], {column})"


def _upsert_tail(rank: Callable[[str], str]) -> str:
    """Folding signals into the patient's unresolved alert of their episode, or opening one.

    Literal SQL, built once: the conflict target names the partial index's own predicate
    (PostgreSQL infers a partial index only from a predicate it can read, never from a
    parameter), and the text stays short and free of parameters, so psycopg parses it once
    and caches it (SQLAlchemy's CASE over bound severities sent a new 8 kB statement with a
    hundred parameters every time).
    """
    worse = f"({rank('excluded.severity')} > {rank('alert.severity')})"
    # A worse signal reopens an acknowledged or snoozed alert (as `alerts.merge_signal`).
    reopen = (
        f"({worse} AND alert.status IN ('{AlertStatus.ACKNOWLEDGED}', '{AlertStatus.SNOOZED}'))"
    )
    return (
        f" ON CONFLICT (patient_id, episode_key) WHERE status <> '{AlertStatus.RESOLVED}' "
        "DO UPDATE SET signal_count = alert.signal_count + excluded.signal_count, "
        "last_signal_at = excluded.last_signal_at, "
        "last_observed_at = CASE WHEN excluded.last_observed_at > alert.last_observed_at "
        "THEN excluded.last_observed_at ELSE alert.last_observed_at END, "
        + ", ".join(
            f"{name} = CASE WHEN {worse} THEN excluded.{name} ELSE alert.{name} END"
            for name in ("severity", "kind", "metric", "message", "params")
        )
        + f", status = CASE WHEN {reopen} THEN '{AlertStatus.OPEN}' ELSE alert.status END, "
        f"unacknowledged_since = CASE WHEN {reopen} THEN excluded.last_signal_at "
        "ELSE alert.unacknowledged_since END, "
        + ", ".join(
            f"{name} = CASE WHEN {reopen} THEN NULL ELSE alert.{name} END"
            for name in ("acknowledged_by", "acknowledged_at", "snoozed_until")
        )
        + " RETURNING id, episode_key, signal_count, status, severity, kind"
    )


_ALERT_INSERT_COLUMNS: Final = (
    "patient_id, institution_id, episode_key, kind, severity, status, metric, opened_at, "
    "last_signal_at, last_observed_at, signal_count, message, params, unacknowledged_since, "
    "resolution_note"
)
#: Per episode (SQLite, in process: a statement costs no round trip).
_ALERT_UPSERT_ONE: Final = text(
    f"INSERT INTO {AlertRow.__tablename__} AS alert ({_ALERT_INSERT_COLUMNS}) VALUES ("  # noqa: S608
    ":patient_id, :institution_id, :episode_key, :kind, :severity, "
    f"'{AlertStatus.OPEN}', :metric, :opened_at, :last_signal_at, :last_observed_at, "
    ":signal_count, :message, :params, :opened_at, '')" + _upsert_tail(_rank_case)
).bindparams(
    bindparam("opened_at", type_=UTCDateTime()),
    bindparam("last_signal_at", type_=UTCDateTime()),
    bindparam("last_observed_at", type_=UTCDateTime()),
    bindparam("params", type_=JSON()),
)
#: Every episode of a request in one statement (PostgreSQL).
_ALERT_UPSERT_MANY: Final = text(
    f"INSERT INTO {AlertRow.__tablename__} AS alert ({_ALERT_INSERT_COLUMNS}) "  # noqa: S608
    f"SELECT :patient_id, :institution_id, s.episode_key, s.kind, s.severity, "
    f"'{AlertStatus.OPEN}', s.metric, s.opened_at, s.last_signal_at, s.last_observed_at, "
    "s.signal_count, s.message, CAST(s.params AS json), s.opened_at, '' FROM unnest("
    "CAST(:episode_key AS text[]), CAST(:kind AS text[]), CAST(:severity AS text[]), "
    "CAST(:metric AS text[]), CAST(:opened_at AS timestamptz[]), "
    "CAST(:last_signal_at AS timestamptz[]), CAST(:last_observed_at AS timestamptz[]), "
    "CAST(:signal_count AS integer[]), CAST(:message AS text[]), CAST(:params AS text[])"
    ") AS s(episode_key, kind, severity, metric, opened_at, last_signal_at, last_observed_at, "
    "signal_count, message, params)" + _upsert_tail(_rank_array)
)


def _episode_values(members: Sequence[AlertSignal]) -> dict[str, Any]:
    """What the signals of one episode open an alert with, or fold into an open one."""
    worst = max(members, key=lambda item: item.severity.rank)
    return {
        "episode_key": members[0].episode_key,
        "kind": worst.kind.value,
        "severity": worst.severity.value,
        "metric": worst.metric.value if worst.metric is not None else None,
        "opened_at": members[0].detected_at,
        "last_signal_at": max(item.detected_at for item in members),
        "last_observed_at": max(item.observed_at for item in members),
        "signal_count": len(members),
        "message": worst.message,
        "params": dict(worst.params),
    }


def _upsert_episodes(
    db: Session, patient: IngestPatient, episodes: list[dict[str, Any]]
) -> list[Any]:
    """The alert rows after folding each episode in: one statement on PostgreSQL."""
    shared = {"patient_id": patient.patient_id, "institution_id": patient.institution_id}
    if db.get_bind().dialect.name != "postgresql":
        return [db.execute(_ALERT_UPSERT_ONE, shared | values).one() for values in episodes]
    send_binary_arrays(db)
    columns: dict[str, Any] = {
        name: BinaryArray(values[name] for values in episodes)
        for name in ("episode_key", "kind", "severity", "metric", "opened_at",
                     "last_signal_at", "last_observed_at", "signal_count", "message")
    }
    columns["params"] = BinaryArray(
        orjson.dumps(values["params"]).decode() for values in episodes
    )
    return list(db.execute(_ALERT_UPSERT_MANY, shared | columns))


def record_signals(
    db: Session, patient: IngestPatient, signals: Sequence[AlertSignal]
) -> list[RaisedAlert]:
    """Fold signals into the patient's open alert of each episode; queue the triage events.

    An unresolved alert of the same `episode_key` absorbs the signals (`signal_count`,
    `last_signal_at`, and the explanation when they are worse); otherwise an alert opens.
    """
    groups: dict[str, list[AlertSignal]] = {}
    for signal in signals:
        groups.setdefault(signal.episode_key, []).append(signal)
    if not groups:
        return []
    episodes = [_episode_values(members) for members in groups.values()]
    rows = {row.episode_key: row for row in _upsert_episodes(db, patient, episodes)}
    raised: list[RaisedAlert] = []
    channel = _TRIAGE_CHANNEL.format(institution_id=patient.institution_id)
    for values in episodes:
        row = rows[values["episode_key"]]
        alert = RaisedAlert(
            alert_id=row.id, episode_key=row.episode_key, kind=row.kind, severity=row.severity,
            status=row.status, signal_count=row.signal_count,
            opened=row.signal_count == values["signal_count"],
        )
        raised.append(alert)
        publish_after_commit(
            db,
            channel,
            {
                "type": "monitoring.alert",
                "alert_id": alert.alert_id,
                "patient_id": patient.patient_id,
                "kind": alert.kind,
                "severity": alert.severity,
                "status": alert.status,
                "signal_count": alert.signal_count,
                "opened": alert.opened,
                "at": values["last_signal_at"].isoformat(),
            },
        )
    return raised


def _guidance(signals: Iterable[AlertSignal]) -> list[Guidance]:
    seen: set[str] = set()
    found: list[Guidance] = []
    for signal in signals:
        if signal.patient_guidance is None or signal.patient_guidance in seen:
            continue
        seen.add(signal.patient_guidance)
        found.append(Guidance(signal.kind.value, signal.severity.value, signal.patient_guidance))
    return found


def _emergency(patient: IngestPatient, signals: Iterable[AlertSignal]) -> EmergencyContact | None:
    if not any(signal.severity is Severity.CRITICAL for signal in signals):
        return None
    try:
        return EmergencyContact(
            patient.current_country.upper(), _medical_number(patient.current_country)
        )
    except LookupError:
        return None


# ---------------------------------------------------------------------------- ingest


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """One request's items for one patient, as `ingest_items` takes them."""

    patient: IngestPatient
    items: Sequence[ParsedItem]
    channel: str
    key_prefix: str | None = None
    plan: CarePlan | None = None
    received_at: datetime | None = None
    #: Whether the patient has an open missing-data alert, when the caller read it already;
    #: None: looked up (`live.readings_accepted_many`).
    missing_data_open: bool | None = None


@dataclass(slots=True)
class _Prepared:
    """A request's items sorted out before anything is written."""

    request: IngestRequest
    received_at: datetime
    results: list[ItemResult]
    pending: list[_Pending]
    repeats: list[tuple[_Pending, _Pending]]


def _prepare(
    request: IngestRequest,
    first_by_fingerprint: dict[bytes, _Pending],
    first_by_key: dict[tuple[int, str], _Pending],
) -> _Prepared:
    """Refusals, skips and repeats of an item sent before in the same write (the same request
    or another request of the same group commit): what is left to insert is `pending`."""
    patient_id = request.patient.patient_id
    prefix = request.key_prefix or request.channel
    results: list[ItemResult] = []
    pending: list[_Pending] = []
    repeats: list[tuple[_Pending, _Pending]] = []
    for item in request.items:
        if item.problems:
            results.append(ItemResult(item.index, ItemStatus.REFUSED, item.key,
                                      problems=item.problems))
            continue
        if item.skipped is not None:
            results.append(ItemResult(item.index, ItemStatus.SKIPPED, item.key,
                                      skipped=item.skipped))
            continue
        result = ItemResult(item.index, ItemStatus.CREATED, item.key, readings=item.readings)
        results.append(result)
        key = stored_key(prefix, item.key) if item.key is not None else None
        entry = _Pending(result, _fingerprints(item.readings), key)
        earlier = first_by_key.get((patient_id, key)) if key is not None else None
        if earlier is None:
            earlier = next(
                (first_by_fingerprint[one] for one in entry.fingerprints
                 if one in first_by_fingerprint),
                None,
            )
        if earlier is not None:
            # Sent twice in one write: the same answer as a retry of the first.
            result.status = ItemStatus.DUPLICATE
            repeats.append((entry, earlier))
            continue
        pending.append(entry)
        for fingerprint in entry.fingerprints:
            first_by_fingerprint[fingerprint] = entry
        if key is not None:
            first_by_key[(patient_id, key)] = entry
    return _Prepared(request, request.received_at or utcnow(), results, pending, repeats)


def ingest_many(db: Session, requests: Sequence[IngestRequest]) -> list[IngestResult]:
    """`ingest_items` for several requests (any patients) in the caller's one transaction:
    the readings of all of them in one insert, the missing-data check of all their patients
    in one query. Results in the order of `requests`; the caller audits and commits."""
    first_by_fingerprint: dict[bytes, _Pending] = {}
    first_by_key: dict[tuple[int, str], _Pending] = {}
    prepared = [_prepare(request, first_by_fingerprint, first_by_key) for request in requests]
    _store_rows(db, [(one.request.patient, one.request.channel, one.pending)
                     for one in prepared])
    outcomes: list[IngestResult] = []
    accepted: list[AcceptedReadings] = []
    for one in prepared:
        patient = one.request.patient
        duplicates = [entry for entry in one.pending
                      if entry.result.status is ItemStatus.DUPLICATE]
        if duplicates:
            _existing_ids(db, patient, duplicates)
        for entry, earlier in one.repeats:
            entry.result.reading_ids = earlier.result.reading_ids
        created = [
            (reading_id, reading)
            for entry in one.pending
            if entry.result.status is ItemStatus.CREATED
            for reading_id, reading in zip(
                entry.result.reading_ids, entry.result.readings, strict=True
            )
        ]
        outcome = IngestResult(one.results, readings_created=len(created))
        outcomes.append(outcome)
        if not created:
            continue
        signals = evaluate_new_readings(db, patient, created, one.received_at,
                                        one.request.plan)
        if signals:
            outcome.alerts = record_signals(db, patient, signals)
            outcome.guidance = _guidance(signals)
            outcome.emergency = _emergency(patient, signals)
        # A normal reading still ends missing-data alerts and moves the triage list.
        accepted.append(AcceptedReadings(patient.institution_id, patient.patient_id,
                                         [reading for _, reading in created], one.received_at,
                                         one.request.missing_data_open))
    readings_accepted_many(db, accepted)
    return outcomes


def ingest_items(
    db: Session,
    patient: IngestPatient,
    items: Sequence[ParsedItem],
    channel: str,
    *,
    key_prefix: str | None = None,
    plan: CarePlan | None = None,
    received_at: datetime | None = None,
) -> IngestResult:
    """Store a request's items for one patient and raise the alerts they call for.

    `key_prefix` namespaces the senders' idempotency keys (default: the channel). Items are
    reported in input order. The caller audits and commits.
    """
    return ingest_many(db, [IngestRequest(patient, items, channel, key_prefix, plan,
                                          received_at or utcnow())])[0]


# ------------------------------------------------------------------------- nightscout


def issue_nightscout_secret(
    db: Session, patient: Patient, created_by: str
) -> NightscoutSecretRow:
    """A new API secret for the patient's CGM uploader; the previous one stops working."""
    from jaejin.monitoring.parsers import generate_api_secret

    secret = generate_api_secret()
    sha1, sha512 = api_secret_hashes(secret)
    row = db.execute(
        select(NightscoutSecretRow).where(NightscoutSecretRow.patient_id == patient.id)
    ).scalar_one_or_none()
    if row is None:
        row = NightscoutSecretRow(patient_id=patient.id, institution_id=patient.institution_id)
        db.add(row)
    row.secret = secret
    row.secret_sha1 = sha1
    row.secret_sha512 = sha512
    row.url_token = secrets.token_urlsafe(18)
    row.created_by = created_by
    row.created_at = utcnow()
    row.last_used_at = None
    db.flush()
    return row


def nightscout_secret_for(
    db: Session, header_value: str | None, url_token: str | None = None
) -> NightscoutSecretRow | None:
    """The secret row an uploader's `api-secret` header proves, or None.

    Found by the digest the header carries (SHA-1 or SHA-512, either case), then verified in
    constant time against the stored secret; with `url_token` (the per-patient base URL) the
    token must name the same patient.
    """
    if not header_value:
        return None
    offered = header_value.strip().lower()
    column = NightscoutSecretRow.secret_sha1 if len(offered) == 40 else (
        NightscoutSecretRow.secret_sha512
    )
    row = db.execute(
        select(NightscoutSecretRow).where(column == offered)
    ).scalar_one_or_none()
    if row is None or not verify_api_secret(offered, row.secret):
        return None
    if url_token is not None and not hmac.compare_digest(
        url_token.encode(), row.url_token.encode()
    ):
        return None
    return row


# ---------------------------------------------------------------------------- uploads


class UploadKind:
    CSV: Final = "csv"
    APPLE_HEALTH: Final = "apple_health"


#: Items stored per transaction while importing a file (after the whole file was checked).
UPLOAD_CHUNK_ITEMS: Final = 2000
#: At most this many refused items are kept on the upload row for the page to list.
UPLOAD_PROBLEMS_KEPT: Final = 50
#: Progress is written at most this often (seconds), so polling sees movement cheaply.
_PROGRESS_EVERY: Final = 0.5
_UPLOAD_CHANNEL: Final = "monitoring-upload:{upload_id}"


def upload_channel(upload_id: int) -> str:
    """Event-bus channel of one upload's progress events."""
    return _UPLOAD_CHANNEL.format(upload_id=upload_id)


class _Progress:
    """Writes an upload's progress in short transactions of its own, throttled."""

    def __init__(self, engine: Engine, upload_id: int, phase_weight: tuple[float, float]) -> None:
        self._engine = engine
        self._upload_id = upload_id
        self._offset, self._share = phase_weight
        self._last = 0.0
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if now - self._last < _PROGRESS_EVERY and done < total:
            return
        self._last = now
        self.total = total
        read = int(total * self._offset + done * self._share)
        with session_factory(self._engine)() as session, session.begin():
            session.execute(
                update(UploadRow).where(UploadRow.id == self._upload_id)
                .values(bytes_read=read, bytes_total=total)
            )
            publish_after_commit(
                session, upload_channel(self._upload_id),
                {"type": "monitoring.upload", "upload_id": self._upload_id,
                 "status": UploadStatus.PARSING, "bytes_read": read, "bytes_total": total},
            )


def _items_of_file(
    kind: str, path: Path, context: ImportContext,
    on_progress: Callable[[int, int], None] | None,
) -> Iterator[ParsedItem]:
    if kind == UploadKind.CSV:
        data = path.read_bytes()
        items = parse_readings_csv(data, context)
        if on_progress is not None:
            on_progress(len(data), len(data))
        yield from items
        return
    with path.open("rb") as stream:
        yield from parse_apple_health_export(stream, context, on_progress)


def _problem_summary(result: ItemResult, language: str) -> list[dict[str, Any]]:
    return [
        {"index": result.index, "code": problem.code, "pointer": problem.pointer,
         "message": problem.message(language)}
        for problem in result.problems
    ]


def _chunks(items: Iterable[ParsedItem], size: int) -> Iterator[list[ParsedItem]]:
    chunk: list[ParsedItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def process_upload(engine: Engine, upload_id: int, path: Path) -> None:
    """Import an uploaded file in two passes: check it whole, then store it in chunks.

    A file that turns out unreadable part-way (a cut-off export, a broken zip) fails in the
    first pass, so nothing of it is stored. The second pass stores `UPLOAD_CHUNK_ITEMS` items
    per transaction: a long import never holds the database's write lock for minutes, and an
    import interrupted by a restart is completed by uploading the file again (duplicates are
    ignored). Progress: 0-50 % while checking, 50-100 % while storing.
    """
    try:
        _process_upload(engine, upload_id, path)
    except Exception:
        log.exception("upload %s failed", upload_id)
        _finish_failed(engine, upload_id, "INTERNAL_ERROR",
                       "Something went wrong on our side.", {})
    finally:
        path.unlink(missing_ok=True)


def _finish_failed(
    engine: Engine, upload_id: int, code: str, message: str, params: dict[str, str]
) -> None:
    with session_factory(engine)() as session, session.begin():
        session.execute(
            update(UploadRow).where(UploadRow.id == upload_id).values(
                status=UploadStatus.FAILED, error_code=code, error_message=message,
                error_params=params, finished_at=utcnow(),
            )
        )
        publish_after_commit(
            session, upload_channel(upload_id),
            {"type": "monitoring.upload", "upload_id": upload_id, "status": UploadStatus.FAILED,
             "error_code": code},
        )


def _process_upload(engine: Engine, upload_id: int, path: Path) -> None:
    with session_factory(engine)() as session, session.begin():
        upload = session.get(UploadRow, upload_id)
        if upload is None:
            return
        patient_row = session.get(Patient, upload.patient_id)
        if patient_row is None:
            return
        patient = IngestPatient.of(patient_row)
        kind, language = upload.kind, upload.language
        upload.status = UploadStatus.PARSING
        upload.started_at = utcnow()
        upload.bytes_total = os.path.getsize(path)
    received_at = utcnow()
    context = patient.context(received_at, default_zone=True)
    checked = 0
    try:
        for _item in _items_of_file(kind, path, context, _Progress(engine, upload_id, (0, 0.5))):
            checked += 1
    except UnreadableInputError as error:
        _finish_failed(engine, upload_id, error.code, error.template, dict(error.params))
        return
    channel = (
        "csv" if kind == UploadKind.CSV else "apple_health"
    )
    totals = {status: 0 for status in ItemStatus}
    readings_created = 0
    alerts: set[int] = set()
    problems: list[dict[str, Any]] = []
    progress = _Progress(engine, upload_id, (0.5, 0.5))
    for chunk in _chunks(_items_of_file(kind, path, context, progress), UPLOAD_CHUNK_ITEMS):
        with session_factory(engine)() as session, session.begin():
            result = ingest_items(session, patient, chunk, channel, received_at=received_at)
            for item in result.items:
                totals[item.status] += 1
                if item.status is ItemStatus.REFUSED and len(problems) < UPLOAD_PROBLEMS_KEPT:
                    problems.extend(_problem_summary(item, language))
            readings_created += result.readings_created
            alerts.update(alert.alert_id for alert in result.alerts)
            session.execute(
                update(UploadRow).where(UploadRow.id == upload_id).values(
                    items_seen=sum(totals.values()),
                    items_created=totals[ItemStatus.CREATED],
                    items_duplicate=totals[ItemStatus.DUPLICATE],
                    items_refused=totals[ItemStatus.REFUSED],
                    items_skipped=totals[ItemStatus.SKIPPED],
                    readings_created=readings_created,
                    alerts_raised=len(alerts),
                )
            )
    with session_factory(engine)() as session, session.begin():
        session.execute(
            update(UploadRow).where(UploadRow.id == upload_id).values(
                status=UploadStatus.DONE, bytes_read=UploadRow.bytes_total,
                items_seen=sum(totals.values()),
                items_created=totals[ItemStatus.CREATED],
                items_duplicate=totals[ItemStatus.DUPLICATE],
                items_refused=totals[ItemStatus.REFUSED],
                items_skipped=totals[ItemStatus.SKIPPED],
                readings_created=readings_created, alerts_raised=len(alerts),
                problems=problems[:UPLOAD_PROBLEMS_KEPT], finished_at=utcnow(),
            )
        )
        publish_after_commit(
            session, upload_channel(upload_id),
            {"type": "monitoring.upload", "upload_id": upload_id, "status": UploadStatus.DONE,
             "items_created": totals[ItemStatus.CREATED]},
        )


def save_upload_stream(stream: IO[bytes], directory: Path | None = None) -> tuple[Path, int]:
    """Copy an upload to a private temporary file; returns its path and size."""
    import shutil
    import tempfile

    handle, name = tempfile.mkstemp(prefix="jaejin-upload-", dir=directory)
    with os.fdopen(handle, "wb") as target:
        shutil.copyfileobj(stream, target, 1024 * 1024)
        size = target.tell()
    return Path(name), size


__all__ = [
    "ACUTE_HORIZON", "EmergencyContact", "Guidance", "IngestPatient", "IngestRequest",
    "IngestResult", "ItemResult", "ItemStatus", "RaisedAlert", "UploadKind", "active_plan",
    "evaluate_new_readings", "ingest_items", "ingest_many", "issue_nightscout_secret",
    "nightscout_secret_for",
    "patient_context", "process_upload", "record_signals", "save_upload_stream", "stored_key",
    "upload_channel",
]
