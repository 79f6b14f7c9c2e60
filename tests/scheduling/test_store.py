"""The scheduling tables: the database itself refuses overlapping holds, occupancy follows an
appointment's resources, and saved hours are read back (and re-read when they change)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jaejin.core.audit import AuditActor, AuditEntry, AuditEvent, record
from jaejin.core.config import Settings
from jaejin.core.database import utcnow
from jaejin.core.events import OutboxMessage
from jaejin.scheduling import notifications
from jaejin.scheduling.model import Interval
from jaejin.scheduling.store import (
    BLOCK,
    Appointment,
    CalendarVersion,
    OccupancyBlock,
    OwnerKind,
    blocks_between,
    booking_rows,
    claim_occupancy,
    holders_of,
    load_availability,
    occupied_resources,
    release_occupancy,
    save_availability,
    write_booking,
)
from tests.scheduling.test_booking_fixtures import SchedulingWorld, every_day

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
#: An audit entry's columns but its id and its seal.
AUDITED_CONTENT = ("occurred_at", "actor_type", "actor_id", "actor_label", "institution_id",
                   "action", "resource_type", "resource_id", "patient_id", "purpose", "outcome",
                   "ip_address", "user_agent", "detail")


@settings(max_examples=200, deadline=None)
@given(start_block=st.integers(0, 10_000), length=st.integers(1, 48))
def test_blocks_cover_exactly_an_aligned_stretch(start_block: int, length: int) -> None:
    start = EPOCH + BLOCK * start_block
    end = start + BLOCK * length
    blocks = blocks_between(start, end)
    assert len(blocks) == length
    assert blocks[0] == start and blocks[-1] + BLOCK == end
    # Two stretches overlap exactly when they share a block.
    other = blocks_between(end, end + BLOCK)
    assert not set(blocks) & set(other)


def _appointment(world: SchedulingWorld, start: datetime, **values: object) -> Appointment:
    fields: dict[str, object] = {
        "institution_id": world.a, "patient_id": world.patient_a,
        "practitioner_id": world.practitioner_a, "visit_type": "international_follow_up",
        "mode": "video", "start_at": start, "end_at": start + timedelta(minutes=30),
        "occupied_until": start + timedelta(minutes=40), "booked_by": "test"}
    fields.update(values)
    return Appointment(**fields)


def test_an_appointment_holds_its_practitioner_with_the_pause_and_others_for_the_visit(
        world: SchedulingWorld) -> None:
    start = world.at("10:00")
    appointment = _appointment(world, start, interpreter_id=world.interpreter.id)
    held = {key: (begin, until) for key, begin, until in occupied_resources(appointment)}
    assert held[f"practitioner:{world.practitioner_a}"] == (start, start + timedelta(minutes=40))
    assert held[f"patient:{world.patient_a}"] == (start, start + timedelta(minutes=30))
    assert held[f"interpreter:{world.interpreter.id}"] == (start,
                                                            start + timedelta(minutes=30))


def test_the_database_refuses_a_second_hold_of_a_block(engine: Engine,
                                                       world: SchedulingWorld) -> None:
    with Session(engine) as db:
        first = _appointment(world, world.at("10:00"))
        db.add(first)
        db.flush()
        assert claim_occupancy(db, first)
        db.commit()
        block = db.execute(select(OccupancyBlock)).scalars().first()
        assert block is not None
        # Whatever the code above does, a plain insert of a held block fails.
        with pytest.raises(IntegrityError):
            db.execute(insert(OccupancyBlock).values(
                appointment_id=first.id, resource_key=block.resource_key,
                block_start=block.block_start))
        db.rollback()


def test_a_clashing_claim_reports_it_and_release_frees_the_time(engine: Engine,
                                                                world: SchedulingWorld) -> None:
    with Session(engine) as db:
        first = _appointment(world, world.at("10:00"))
        db.add(first)
        db.flush()
        assert claim_occupancy(db, first)
        # Another patient with the same practitioner, starting inside the first one's pause.
        second = _appointment(world, world.at("10:35"), patient_id=world.mongolian.id)
        db.add(second)
        db.flush()
        assert not claim_occupancy(db, second)
        release_occupancy(db, second.id)
        key = f"practitioner:{world.practitioner_a}"
        assert holders_of(db, [key], world.at("10:00"), world.at("11:00")) == {first.id}
        release_occupancy(db, first.id)
        assert holders_of(db, [key], world.at("10:00"), world.at("11:00")) == set()
        third = _appointment(world, world.at("10:20"), patient_id=world.mongolian.id)
        db.add(third)
        db.flush()
        assert claim_occupancy(db, third)
        db.rollback()


def test_saved_hours_are_read_back_and_changes_are_seen(engine: Engine,
                                                        world: SchedulingWorld) -> None:
    with Session(engine) as db:
        morning = every_day("09:00", "12:00")
        save_availability(db, OwnerKind.PRACTITIONER, world.practitioner_b, world.actors.b.id,
                          morning, updated_by="test")
        db.commit()
        assert load_availability(db, OwnerKind.PRACTITIONER, world.practitioner_b,
                                 world.actors.b.id) == morning.to_domain()
        evening = every_day("17:00", "20:00")
        save_availability(db, OwnerKind.PRACTITIONER, world.practitioner_b, world.actors.b.id,
                          evening, updated_by="test")
        db.commit()
        assert load_availability(db, OwnerKind.PRACTITIONER, world.practitioner_b,
                                 world.actors.b.id) == evening.to_domain()
        # Nobody is available before hours are saved.
        assert load_availability(db, OwnerKind.INTERPRETER, 999_999, world.a).weekly == ()


def _booked(db: Session, world: SchedulingWorld, start: datetime, patient_id: int) -> Appointment:
    """A new appointment as a booking writes it: every column set, and on PostgreSQL the id
    taken from the sequence by the booking's own read."""
    rows = booking_rows(db, patient_id=patient_id, practitioner_id=world.practitioner_a,
                        practitioner_busy=Interval(start, start + timedelta(minutes=40)),
                        patient_busy=Interval(start, start + timedelta(minutes=30)),
                        )
    assert rows is not None
    now = utcnow()
    return _appointment(
        world, start, id=rows.next_appointment_id, patient_id=patient_id, interpreter_id=None,
        interpreter_language=None, status="booked", sequence=0, booked_by_user_id=None,
        created_at=now, updated_at=now, cancelled_at=None, cancelled_by=None,
        cancel_reason=None, no_show_at=None, condition_code="I10", tri_party=False,
        policy_pack="kr", policy_decision={"decision": "allowed"})


def test_a_booking_written_whole_or_not_at_all(engine: Engine, world: SchedulingWorld,
                                              settings: Settings) -> None:
    def messages(appointment: Appointment) -> list[dict[str, Any]]:
        return notifications.messages_for_change(
            appointment, notifications.Change.BOOKED, settings=settings, now=utcnow(),
            texts_patient=True)

    actor = AuditActor("client", "3", "Booking desk", "10.0.0.9", "desk/2.0")

    def audit_entry(appointment: Appointment) -> tuple[AuditActor, AuditEvent]:
        return actor, AuditEvent("create", "appointment", str(appointment.id),
                                 appointment.patient_id, appointment.institution_id,
                                 detail={"start": appointment.start_at.isoformat(), "장소": "화상"})

    with Session(engine) as db:
        audited_before = db.execute(select(func.coalesce(func.max(AuditEntry.id), 0))
                                    ).scalar_one()
        first = _booked(db, world, world.at("10:00"), world.patient_a)
        assert write_booking(db, first, messages, audit_entry) == set()
        # Another patient with the same practitioner, starting inside the first one's pause.
        second = _booked(db, world, world.at("10:35"), world.mongolian.id)
        assert write_booking(db, second, messages, audit_entry) == {
            f"practitioner:{world.practitioner_a}"}

        assert db.execute(select(Appointment.id, Appointment.policy_decision)).all() == [
            (first.id, {"decision": "allowed"})]
        # Every column reads back as the appointment held it.
        written = db.execute(select(Appointment.__table__)).one()._asdict()
        assert written == {name: getattr(first, name) for name in written}
        key = f"practitioner:{world.practitioner_a}"
        # The booking raised the practitioner's calendar version; the clash left it alone.
        assert db.execute(select(CalendarVersion.resource_key, CalendarVersion.version)).all() \
            == [(key, 1)]
        assert holders_of(db, [key], world.at("10:00"), world.at("12:00")) == {first.id}
        queued = db.execute(select(OutboxMessage.dedupe_key, OutboxMessage.payload)).all()
        assert len(queued) == len(messages(first)) > 0
        assert all(payload["appointment_id"] == first.id
                   and dedupe_key.startswith(f"scheduling:appointment:{first.id}:")
                   for dedupe_key, payload in queued)
        # One audit entry, the booking's, holding what `record` writes; the clash audits
        # nothing.
        record(db, *audit_entry(first))
        audited = [row._asdict() for row in db.execute(
            select(*(AuditEntry.__table__.c[name] for name in AUDITED_CONTENT))
            .where(AuditEntry.id > audited_before).order_by(AuditEntry.id))]
        assert len(audited) == 2
        assert audited[0] == {**audited[1], "occurred_at": audited[0]["occurred_at"]}
        assert audited[0]["resource_id"] == str(first.id)
        assert audited[0]["detail"]["장소"] == "화상"
        db.rollback()


def test_what_a_booking_does_not_read_is_still_there_when_asked(engine: Engine,
                                                                world: SchedulingWorld) -> None:
    """The booking's read leaves names and addresses unread; asked for later in the same
    session, they are read then, as stored."""
    start = world.at("10:00")
    with Session(engine) as db:
        rows = booking_rows(db, patient_id=world.mongolian.id,
                            practitioner_id=world.practitioner_a,
                            practitioner_busy=Interval(start, start + timedelta(minutes=40)),
                            patient_busy=Interval(start, start + timedelta(minutes=30)))
        assert rows is not None and rows.practitioner is not None
        assert "family_name_native" not in rows.patient.__dict__
        assert rows.patient.time_zone == world.mongolian.time_zone
        assert rows.patient.family_name_native == world.mongolian.family_name_native
        assert rows.patient.email == world.mongolian.email
        assert rows.institution.name_en
        assert rows.practitioner.licence_number
