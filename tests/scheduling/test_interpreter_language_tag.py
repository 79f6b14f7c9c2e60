"""An appointment keeps its interpreter language whole, however long the BCP 47 tag the API
accepts (up to 35 characters; PostgreSQL enforces the column's length, SQLite does not)."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jaejin.core.i18n import LANGUAGE_TAG_LENGTH
from jaejin.scheduling.store import Appointment
from tests.scheduling.test_booking_fixtures import SchedulingWorld

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)

#: Mongolian in Cyrillic as spoken in Mongolia, with a variant: 34 characters, which Babel
#: reads as Mongolian (the interpreter's "mn") and which did not fit the former 20.
LONG_MONGOLIAN_TAG = "mn-Cyrl-MN-abcdefghijklmnopqrstuvw"


def test_a_booking_keeps_a_long_interpreter_language_tag_whole(client, engine: Engine,
                                                                world: SchedulingWorld,
                                                                system_a):
    assert 20 < len(LONG_MONGOLIAN_TAG) <= LANGUAGE_TAG_LENGTH
    response = client.post("/api/v1/appointments",
                           json=world.booking("10:00", patient_id=world.mongolian.id,
                                              interpreter_language=LONG_MONGOLIAN_TAG),
                           headers=system_a)
    assert response.status_code == 201, response.text
    assert response.json()["interpreter_language"] == LONG_MONGOLIAN_TAG
    with Session(engine) as db:
        stored = db.execute(select(Appointment.interpreter_language)).scalar_one()
    assert stored == LONG_MONGOLIAN_TAG
