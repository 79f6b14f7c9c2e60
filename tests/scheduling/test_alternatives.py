"""The held time a 409's next free slots are found in (`alternatives.held_time`) is what
`store.practitioner_and_patient_busy` reads, on either database, with or without an
appointment left out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from jaejin.scheduling.alternatives import held_time
from jaejin.scheduling.model import Interval
from jaejin.scheduling.store import practitioner_and_patient_busy
from tests.scheduling.test_booking_fixtures import SchedulingWorld

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)


def _instants(intervals: list[Interval]) -> list[tuple[object, object]]:
    return sorted((interval.start.timestamp(), interval.end.timestamp())
                  for interval in intervals)


@pytest.mark.parametrize(("first", "last"), [("09:00", "18:00"), ("10:10", "10:20"),
                                             ("11:00", "12:00"), ("06:00", "07:00")])
def test_the_held_time_read_is_the_stores(client, engine, world: SchedulingWorld, system_a,
                                          first, last):
    booked = []
    for clock, extra in (("10:00", {}), ("14:00", {}),
                         ("11:40", {"mode": "in_person", "visit_type": "in_person_follow_up"})):
        response = client.post("/api/v1/appointments", headers=system_a,
                               json=world.booking(clock, **extra))
        assert response.status_code == 201, response.text
        booked.append(response.json()["id"])
    cancelled = client.delete(f"/api/v1/appointments/{booked[1]}", headers=system_a)
    assert cancelled.status_code == 200, cancelled.text
    start, end = world.at(first), world.at(last) + timedelta(minutes=15)
    with Session(engine) as db:
        for excluding in (None, booked[0], booked[2]):
            ours = held_time(db, world.practitioner_a, world.patient_a, start, end,
                             excluding=excluding)
            stores = practitioner_and_patient_busy(db, world.practitioner_a, world.patient_a,
                                                   start, end, excluding=excluding)
            assert [_instants(found) for found in ours] == \
                [_instants(found) for found in stores]
            if excluding is None and first == "09:00":  # the day's appointments are found
                assert len(ours[0]) == len(ours[1]) == 2
