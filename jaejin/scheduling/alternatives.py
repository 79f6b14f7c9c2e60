"""The held time a 409's next free slots are found in (`service.next_free`), read cheaply.

A burst on one slot answers every loser a 409 with the next free slots, so this read runs once
per refusal. On PostgreSQL it is sent as the driver's SQL, compiled once (the engine's events
still see it): SQLAlchemy's per-call work and its result processing were most of its cost
(timestamps are only compared here, so the driver's aware datetimes serve as they are).
Elsewhere it is `store.practitioner_and_patient_busy`: on SQLite the timestamps' stored text
form is SQLAlchemy's to make and read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, literal_column, or_, select
from sqlalchemy.orm import Session

from jaejin.scheduling.model import Interval
from jaejin.scheduling.store import HOLDING_STATUSES, Appointment, practitioner_and_patient_busy

#: By whether an appointment is left out: compiled at the first use (any PostgreSQL dialect
#: writes the same text).
_postgresql_sql: dict[bool, str] = {}


def _postgresql_statement(excluding: bool) -> Any:
    moment = Appointment.start_at.type
    query = select(Appointment.practitioner_id, Appointment.patient_id, Appointment.start_at,
                   Appointment.end_at, Appointment.occupied_until).where(
        or_(Appointment.practitioner_id == bindparam("practitioner_id"),
            Appointment.patient_id == bindparam("patient_id")),
        # Constants of this module, written into the text: no list to expand per call.
        Appointment.status.in_([literal_column(f"'{status}'") for status in HOLDING_STATUSES]),
        # The practitioner's time runs to occupied_until, never before end_at: a superset.
        Appointment.start_at < bindparam("end", type_=moment),
        Appointment.occupied_until > bindparam("start", type_=moment),
    )
    if excluding:
        query = query.where(Appointment.id != bindparam("excluding"))
    return query


def held_time(db: Session, practitioner_id: int, patient_id: int, start: datetime,
              end: datetime, *, excluding: int | None = None
              ) -> tuple[list[Interval], list[Interval]]:
    """(the practitioner's held time, the patient's appointments) overlapping [start, end),
    as `store.practitioner_and_patient_busy`."""
    connection = db.connection()
    if connection.dialect.name != "postgresql":
        return practitioner_and_patient_busy(db, practitioner_id, patient_id, start, end,
                                             excluding=excluding)
    parameters = {"practitioner_id": practitioner_id, "patient_id": patient_id,
                  "start": start, "end": end, "excluding": excluding}
    practitioner: list[Interval] = []
    patient: list[Interval] = []
    sql = _postgresql_sql.get(excluding is not None)
    if sql is None:
        sql = _postgresql_sql[excluding is not None] = str(
            _postgresql_statement(excluding is not None).compile(dialect=connection.dialect))
    for who, whose_patient, begin, finish, until in connection.exec_driver_sql(
            sql, parameters).all():
        if who == practitioner_id:
            practitioner.append(Interval(begin, until))
        if whose_patient == patient_id and begin < end and finish > start:
            patient.append(Interval(begin, finish))
    return practitioner, patient
