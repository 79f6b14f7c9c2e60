"""The demo's schedules and upcoming appointments, booked through the booking service."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin import demo
from jaejin.directory.store import Interpreter, Patient
from jaejin.scheduling.store import Appointment, AvailabilityRow
from tests.core.helpers import fast_password_hashing


def test_the_demo_books_its_stories_with_interpreters_where_needed(clean_database,
                                                                  monkeypatch):
    # The core demo and this capability's part only: the other capabilities test theirs.
    monkeypatch.setattr(demo, "EXTENSIONS", ("jaejin.scheduling.demo",))
    with fast_password_hashing():
        demo.load_demo(clean_database)
    with Session(clean_database) as db:
        rows = db.execute(select(Appointment, Patient.mrn).join(
            Patient, Patient.id == Appointment.patient_id)).all()
        by_patient = {mrn: appointment for appointment, mrn in rows}
        interpreters = {item.id: item for item in db.execute(select(Interpreter)).scalars()}
        hours = db.execute(select(AvailabilityRow)).scalars().all()
    assert set(by_patient) == {"HUH-300219", "SCD-7845", "BIM-20431", "HUH-300188"}
    bat_erdene = by_patient["HUH-300219"]
    assert bat_erdene.interpreter_id is not None
    assert "mn" in interpreters[bat_erdene.interpreter_id].languages
    assert bat_erdene.policy_decision is not None
    assert by_patient["SCD-7845"].interpreter_id is None
    assert by_patient["SCD-7845"].tri_party
    assert by_patient["BIM-20431"].mode == "video"
    lin = by_patient["HUH-300188"]
    assert lin.mode == "in_person" and lin.interpreter_language == "zh-Hant"
    assert lin.interpreter_id is not None
    # Hours for the four clinicians and the six interpreters.
    assert len(hours) == 10
