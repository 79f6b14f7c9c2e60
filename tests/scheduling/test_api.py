"""The scheduling API contract: availability, slots in two zones, booking, conflicts with the
next free slots, the policy gate for telemedicine, and clear errors for bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from icalendar import Calendar
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.scheduling.store import Appointment, OccupancyBlock
from tests.scheduling.test_booking_fixtures import NEW_YORK, SEOUL, SchedulingWorld
from tests.support import problem

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)


def _counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as db:
        appointments = db.execute(select(func.count(Appointment.id))).scalar_one()
        blocks = db.execute(select(func.count(OccupancyBlock.id))).scalar_one()
    return appointments, blocks


def _slots(client, headers, world: SchedulingWorld, practitioner: int | None = None,
           **params):
    query = {"start": world.day.isoformat(), "end": world.day.isoformat(), "tz": "Asia/Seoul",
             "visit_type": "follow_up", "mode": "video"} | params
    return client.get(f"/api/v1/practitioners/{practitioner or world.practitioner_a}/slots",
                      params=query, headers=headers)


# --------------------------------------------------------------------------- slots


def test_slots_carry_the_institutions_offset_and_the_requested_zones(client, world, system_a):
    response = _slots(client, system_a, world, tz="America/New_York",
                      start=(world.day - timedelta(days=1)).isoformat())
    assert response.status_code == 200, response.text
    slots = response.json()
    first = next(slot for slot in slots
                 if datetime.fromisoformat(slot["start"]) == world.at("09:00"))
    assert first["start"].endswith("+09:00")
    local = datetime.fromisoformat(first["start_local"])
    assert local.utcoffset() == world.at("09:00").astimezone(NEW_YORK).utcoffset()
    assert local == world.at("09:00")
    assert datetime.fromisoformat(first["end"]) - datetime.fromisoformat(first["start"]) == \
        timedelta(minutes=15)
    assert first["interpreter_available"] is False
    # 09:00-18:00 in Seoul, every 15 minutes, on the dates meant in New York.
    assert set(first) >= {"start", "start_local", "end", "interpreter_available"}


def test_a_search_of_a_day_the_zone_skipped_finds_nothing_on_every_path(client, world,
                                                                         system_a):
    """Pacific/Kiritimati went from 1994-12-30 to 1995-01-01: its 1994-12-31 has no instant.
    The kept answer, the interpreter's and the patient's paths all answer an empty list."""
    for params in ({}, {"interpreter_language": "mn"}, {"patient_id": world.patient_a}):
        response = _slots(client, system_a, world, tz="Pacific/Kiritimati", start="1994-12-31",
                          end="1994-12-31", **params)
        assert response.status_code == 200, (params, response.text)
        assert response.json() == [], params


def test_a_slot_search_needs_a_real_zone_and_an_ordered_range(client, world, system_a):
    unknown = _slots(client, system_a, world, tz="Mars/Olympus_Mons")
    assert unknown.status_code == 422
    assert problem(unknown)["code"] == "UNKNOWN_TIME_ZONE"
    backwards = _slots(client, system_a, world, end=(world.day - timedelta(days=1)).isoformat())
    assert backwards.status_code == 422
    assert problem(backwards)["code"] == "INVALID_RANGE"
    too_long = _slots(client, system_a, world, end=(world.day + timedelta(days=200)).isoformat())
    assert problem(too_long)["code"] == "RANGE_TOO_LONG"
    kind = _slots(client, system_a, world, visit_type="massage")
    assert problem(kind)["code"] == "UNKNOWN_VISIT_TYPE"
    mode = _slots(client, system_a, world, visit_type="in_person_follow_up", mode="video")
    assert problem(mode)["code"] == "MODE_NOT_OFFERED"


def test_another_institutions_practitioner_is_not_found(client, world, system_a):
    response = _slots(client, system_a, world, practitioner=world.practitioner_b)
    assert response.status_code == 404


# --------------------------------------------------------------------------- booking


def test_a_hospital_system_books_a_free_slot(client, engine, world, system_a):
    response = client.post("/api/v1/appointments", json=world.booking("10:00"),
                           headers=system_a)
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/api/v1/appointments/{body['id']}"
    assert datetime.fromisoformat(body["start"]) == world.at("10:00")
    assert body["start"].endswith("+09:00")
    assert body["status"] == "booked" and body["sequence"] == 0
    assert body["policy"]["decision"] in {"allowed", "conditional"}
    assert body["interpreter_id"] is None
    with Session(engine) as db:
        stored = db.get(Appointment, body["id"])
        assert stored is not None and stored.policy_decision is not None
        assert stored.start_at == world.at("10:00").astimezone(UTC)
        entry = db.execute(select(AuditEntry).where(AuditEntry.resource_type == "appointment",
                                                    AuditEntry.action == "create")).scalar_one()
        assert entry.patient_id == world.patient_a
    # The booked slot is gone from the search, its neighbours stay.
    starts = {datetime.fromisoformat(slot["start"])
              for slot in _slots(client, system_a, world).json()}
    assert world.at("10:00") not in starts
    assert {world.at("09:45"), world.at("10:15")} <= starts


def test_a_taken_slot_answers_409_with_the_next_free_slots(client, engine, world, system_a):
    assert client.post("/api/v1/appointments", json=world.booking("10:00"),
                       headers=system_a).status_code == 201
    other = world.actors.patients["a"]
    second = client.post("/api/v1/appointments",
                         json=world.booking("10:00", patient_id=world.mongolian.id,
                                            mode="in_person",
                                            visit_type="in_person_follow_up"),
                         headers=system_a)
    assert second.status_code == 409, second.text
    body = problem(second)
    assert body["code"] == "SLOT_TAKEN"
    offered = [datetime.fromisoformat(slot["start"]) for slot in body["next_free_slots"]]
    assert offered and all(start > world.at("10:00") for start in offered)
    assert offered == sorted(offered)
    assert other.id == world.patient_a
    # The same patient at an overlapping time with another practitioner: refused as well.
    assert _counts(engine)[0] == 1


def test_a_patient_is_never_booked_twice_at_once(client, engine, world, system_a):
    first = client.post("/api/v1/appointments",
                        json=world.booking("10:00", mode="in_person",
                                           visit_type="in_person_follow_up"),
                        headers=system_a)
    assert first.status_code == 201
    # A 15-minute visit at 10:00 and a 30-minute one at 09:40 would overlap for the patient.
    again = client.post("/api/v1/appointments",
                        json=world.booking("10:10", visit_type="in_person_follow_up",
                                           mode="in_person"),
                        headers=system_a)
    assert again.status_code in (409, 422)
    assert _counts(engine)[0] == 1


def test_a_telemedicine_booking_the_rules_deny_is_refused_with_reasons_and_alternatives(
        client, engine, world, system_b):
    # Institution B is a tertiary hospital: video follow-ups of domestic patients are denied.
    body = {"patient_id": world.patient_b, "practitioner_id": world.practitioner_b,
            "start": world.at("10:00").isoformat(), "visit_type": "follow_up",
            "mode": "video"}
    response = client.post("/api/v1/appointments", json=body, headers=system_b)
    assert response.status_code == 422, response.text
    refused = problem(response)
    assert refused["code"] == "POLICY_DENIED"
    assert "INSTITUTION_KIND_NOT_ALLOWED" in {reason["code"] for reason in refused["reasons"]}
    assert "IN_PERSON_VISIT" in {item["code"] for item in refused["alternatives"]}
    assert refused["decision"]["decision"] == "denied"
    assert _counts(engine) == (0, 0)


def test_an_in_person_booking_is_never_blocked_by_the_policy(client, engine, world, system_b):
    body = {"patient_id": world.patient_b, "practitioner_id": world.practitioner_b,
            "start": world.at("10:00").isoformat(), "visit_type": "in_person_follow_up",
            "mode": "in_person"}
    response = client.post("/api/v1/appointments", json=body, headers=system_b)
    assert response.status_code == 201, response.text
    assert response.json()["policy"] is None


def test_bad_bookings_get_clear_errors_and_book_nothing(client, engine, world, system_a):
    cases = {
        "SLOT_NOT_ON_GRID": world.booking("10:07"),
        "OUTSIDE_AVAILABILITY": world.booking("20:00"),
        "SLOT_IN_PAST": world.booking("10:00") | {
            "start": (datetime.now(UTC) - timedelta(days=1)).replace(
                minute=0, second=0, microsecond=0).isoformat()},
        "INTERPRETER_LANGUAGE_UNAVAILABLE": world.booking("10:00", interpreter_language="th"),
        "MODE_NOT_OFFERED": world.booking("10:00", mode="in_person"),
        "UNKNOWN_VISIT_TYPE": world.booking("10:00", visit_type="massage"),
        "VALIDATION_FAILED": world.booking("10:00") | {"start": "2030-01-01T10:00:00"},
    }
    for code, body in cases.items():
        response = client.post("/api/v1/appointments", json=body, headers=system_a)
        assert response.status_code == 422, (code, response.text)
        assert problem(response)["code"] == code, (code, response.text)
    # Bodies that are no booking at all: each field named, nothing booked.
    for raw, field in ((b"", "body"), (b"{not json", "body"), (b"[]", "body"),
                       (orjson.dumps(world.booking("10:00") | {"patient_id": "x"}),
                        "patient_id"),
                       (orjson.dumps(world.booking("10:00") | {"surprise": 1}), "surprise")):
        response = client.post("/api/v1/appointments", content=raw, headers={
            **system_a, "Content-Type": "application/json"})
        assert response.status_code == 422, (raw, response.text)
        assert problem(response)["code"] == "VALIDATION_FAILED", (raw, response.text)
        assert [error["field"] for error in problem(response)["errors"]] == [field], raw
    assert _counts(engine) == (0, 0)


def test_institution_b_cannot_book_or_see_institution_as_records(client, world, system_a,
                                                                  system_b):
    refused = client.post("/api/v1/appointments", json=world.booking("10:00"), headers=system_b)
    assert refused.status_code == 404
    booked = client.post("/api/v1/appointments", json=world.booking("10:00"), headers=system_a)
    identifier = booked.json()["id"]
    for method, path in (("GET", f"/api/v1/appointments/{identifier}"),
                         ("GET", f"/api/v1/appointments/{identifier}.ics"),
                         ("DELETE", f"/api/v1/appointments/{identifier}")):
        assert client.request(method, path, headers=system_b).status_code == 404, path
    listed = client.get("/api/v1/appointments", headers=system_b)
    assert listed.status_code == 200 and listed.json() == []


def test_patients_book_for_themselves_only(client, world, browser_for):
    headers, session = browser_for(world.actors.person("a", Role.PATIENT))
    own = session.post("/api/v1/appointments", json=world.booking("11:00"), headers=headers)
    assert own.status_code == 201, own.text
    someone_else = session.post("/api/v1/appointments",
                                json=world.booking("11:30", patient_id=world.mongolian.id),
                                headers=headers)
    assert someone_else.status_code == 404
    chosen_interpreter = session.post(
        "/api/v1/appointments",
        json=world.booking("12:00", interpreter_id=world.interpreter.id), headers=headers)
    assert chosen_interpreter.status_code == 403
    seen = session.get(f"/api/v1/appointments/{own.json()['id']}", headers=headers)
    assert seen.status_code == 200 and "notifications" not in seen.json()


# --------------------------------------------------------------------------- interpreters


def test_a_patient_the_practitioner_cannot_understand_gets_an_interpreter(client, engine, world,
                                                                         system_a):
    slots = _slots(client, system_a, world, patient_id=world.mongolian.id).json()
    assert slots and all(slot["interpreter_available"] for slot in slots)
    response = client.post("/api/v1/appointments",
                           json=world.booking("10:00", patient_id=world.mongolian.id),
                           headers=system_a)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["interpreter_id"] == world.interpreter.id
    assert body["interpreter_language"] == "mn"
    assert body["start_local"].endswith("+08:00")


def test_slot_search_offers_only_times_an_interpreter_is_free(client, world, system_a):
    hours = {"weekly": [{"weekday": day, "start": "07:00", "end": "19:00"}
                        for day in range(1, 8)],
             "exceptions": [{"date": world.day.isoformat(), "kind": "closed",
                             "start": "07:00", "end": "11:00"}]}
    saved = client.put(f"/api/v1/interpreters/{world.interpreter.id}/availability", json=hours,
                       headers=system_a)
    assert saved.status_code == 200, saved.text
    slots = _slots(client, system_a, world, patient_id=world.mongolian.id).json()
    starts = [datetime.fromisoformat(slot["start"]) for slot in slots]
    # Closed until 11:00 in Ulaanbaatar, which is noon in Seoul.
    assert starts and min(starts) == world.at("12:00")
    unwanted = client.post("/api/v1/appointments",
                           json=world.booking("10:00", patient_id=world.mongolian.id),
                           headers=system_a)
    assert unwanted.status_code == 409
    refused = problem(unwanted)
    assert refused["code"] == "INTERPRETER_UNAVAILABLE"
    assert datetime.fromisoformat(refused["next_free_slots"][0]["start"]) == world.at("12:00")


def test_coordinators_assign_and_reassign_interpreters(client, engine, world, system_a,
                                                       browser_for):
    booked = client.post("/api/v1/appointments",
                         json=world.booking("10:00", mode="in_person",
                                            visit_type="in_person_follow_up"),
                         headers=system_a).json()
    assert booked["interpreter_id"] is None
    clinician, clinician_session = browser_for(world.actors.person("a", Role.CLINICIAN))
    refused = clinician_session.patch(f"/api/v1/appointments/{booked['id']}",
                                      json={"interpreter_id": world.interpreter.id,
                                            "interpreter_language": "ru"},
                                      headers=clinician)
    assert refused.status_code == 403
    coordinator, session = browser_for(world.actors.person("a", Role.COORDINATOR))
    assigned = session.patch(f"/api/v1/appointments/{booked['id']}",
                             json={"interpreter_id": world.interpreter.id,
                                   "interpreter_language": "ru"}, headers=coordinator)
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["interpreter_id"] == world.interpreter.id
    assert assigned.json()["sequence"] == 1
    unsuitable = session.patch(f"/api/v1/appointments/{booked['id']}",
                               json={"interpreter_id": world.interpreter.id,
                                     "interpreter_language": "th"}, headers=coordinator)
    assert problem(unsuitable)["code"] == "INTERPRETER_NOT_SUITABLE"
    removed = session.patch(f"/api/v1/appointments/{booked['id']}",
                            json={"interpreter_id": None}, headers=coordinator)
    assert removed.status_code == 200 and removed.json()["interpreter_id"] is None
    # The interpreter's time is free again: another visit may take it.
    with Session(engine) as db:
        keys = set(db.execute(select(OccupancyBlock.resource_key)).scalars())
    assert f"interpreter:{world.interpreter.id}" not in keys


def test_interpreters_see_the_visits_they_interpret(client, world, system_a, browser_for):
    booked = client.post("/api/v1/appointments",
                         json=world.booking("10:00", patient_id=world.mongolian.id),
                         headers=system_a).json()
    headers, session = browser_for(world.actors.person("a", Role.INTERPRETER))
    listed = session.get("/api/v1/appointments", headers=headers)
    assert [item["id"] for item in listed.json()] == [booked["id"]]
    assert session.get(f"/api/v1/appointments/{booked['id']}", headers=headers).status_code \
        == 200
    assert session.delete(f"/api/v1/appointments/{booked['id']}",
                          headers=headers).status_code == 403


# --------------------------------------------------------------------------- changes


def test_a_reschedule_moves_the_time_and_frees_the_old_slot(client, engine, world, system_a):
    booked = client.post("/api/v1/appointments", json=world.booking("10:00"),
                         headers=system_a).json()
    moved = client.patch(f"/api/v1/appointments/{booked['id']}",
                         json={"start": world.at("14:30").isoformat()}, headers=system_a)
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert datetime.fromisoformat(body["start"]) == world.at("14:30")
    assert body["status"] == "rescheduled" and body["sequence"] == 1
    starts = {datetime.fromisoformat(slot["start"])
              for slot in _slots(client, system_a, world).json()}
    assert world.at("10:00") in starts and world.at("14:30") not in starts
    with Session(engine) as db:
        blocks = sorted(db.execute(select(OccupancyBlock.block_start).where(
            OccupancyBlock.resource_key == f"practitioner:{world.practitioner_a}")).scalars())
    assert blocks[0] == world.at("14:30").astimezone(UTC)
    off_grid = client.patch(f"/api/v1/appointments/{booked['id']}",
                            json={"start": world.at("14:31").isoformat()}, headers=system_a)
    assert problem(off_grid)["code"] == "SLOT_NOT_ON_GRID"


def test_a_reschedule_onto_a_taken_slot_is_409_and_changes_nothing(client, engine, world,
                                                                   system_a):
    first = client.post("/api/v1/appointments", json=world.booking("10:00"),
                        headers=system_a).json()
    client.post("/api/v1/appointments",
                json=world.booking("11:00", patient_id=world.mongolian.id,
                                   mode="in_person", visit_type="in_person_follow_up"),
                headers=system_a)
    clash = client.patch(f"/api/v1/appointments/{first['id']}",
                         json={"start": world.at("11:00").isoformat()}, headers=system_a)
    assert clash.status_code == 409
    assert problem(clash)["next_free_slots"]
    again = client.get(f"/api/v1/appointments/{first['id']}", headers=system_a).json()
    assert again["sequence"] == 0 and datetime.fromisoformat(again["start"]) == world.at("10:00")


def test_patients_cancel_before_the_cut_off_and_staff_after_it(client, engine, world, system_a,
                                                               browser_for):
    headers, session = browser_for(world.actors.person("a", Role.PATIENT))
    booked = session.post("/api/v1/appointments", json=world.booking("10:00"),
                          headers=headers).json()
    cancelled = session.delete(f"/api/v1/appointments/{booked['id']}",
                               params={"reason": "feeling better"}, headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_reason"] == "feeling better"
    assert world.at("10:00") in {datetime.fromisoformat(slot["start"])
                                 for slot in _slots(client, system_a, world).json()}
    twice = session.delete(f"/api/v1/appointments/{booked['id']}", headers=headers)
    assert problem(twice)["code"] == "INVALID_STATUS_TRANSITION"

    # Within 24 hours of the start: the patient must call the clinic; staff may cancel.
    soon = datetime.now(UTC) + timedelta(hours=3)
    late = _book_directly(engine, world, soon)
    refused = session.delete(f"/api/v1/appointments/{late}", headers=headers)
    assert refused.status_code == 409
    assert problem(refused)["code"] == "CANCELLATION_CUTOFF_PASSED"
    assert client.delete(f"/api/v1/appointments/{late}", headers=system_a).status_code == 200


def test_no_shows_are_recorded_once_the_visit_has_started(client, engine, world, system_a):
    future = client.post("/api/v1/appointments", json=world.booking("10:00"),
                         headers=system_a).json()
    early = client.patch(f"/api/v1/appointments/{future['id']}", json={"status": "no_show"},
                         headers=system_a)
    assert problem(early)["code"] == "APPOINTMENT_NOT_STARTED"
    started = _book_directly(engine, world, datetime.now(UTC) - timedelta(minutes=5))
    missed = client.patch(f"/api/v1/appointments/{started}", json={"status": "no_show"},
                          headers=system_a)
    assert missed.status_code == 200 and missed.json()["status"] == "no_show"
    two = client.patch(f"/api/v1/appointments/{started}",
                       json={"status": "no_show", "start": world.at("10:00").isoformat()},
                       headers=system_a)
    assert problem(two)["code"] == "ONE_CHANGE_AT_A_TIME"


def _book_directly(engine: Engine, world: SchedulingWorld, start: datetime) -> int:
    """An appointment at a time the API would refuse (soon, or already started)."""
    from jaejin.scheduling.store import claim_occupancy

    start = start.replace(second=0, microsecond=0)
    start -= timedelta(minutes=start.minute % 5)
    appointment = Appointment(
        institution_id=world.a, patient_id=world.patient_a,
        practitioner_id=world.practitioner_a, visit_type="follow_up", mode="video",
        start_at=start, end_at=start + timedelta(minutes=15),
        occupied_until=start + timedelta(minutes=15), booked_by="test")
    with Session(engine) as db:
        db.add(appointment)
        db.flush()
        claim_occupancy(db, appointment)
        db.commit()
        return appointment.id


# --------------------------------------------------------------------------- calendars


def test_the_calendar_file_is_an_invitation_at_the_right_instant(client, world, system_a,
                                                                 browser_for):
    headers, session = browser_for(world.actors.person("a", Role.PATIENT))
    booked = session.post("/api/v1/appointments", json=world.booking("10:00"),
                          headers=headers).json()
    response = session.get(booked["ics_url"], headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/calendar")
    calendar = Calendar.from_ical(response.content)
    assert str(calendar["METHOD"]) == "REQUEST"
    event = calendar.walk("VEVENT")[0]
    assert event.decoded("DTSTART") == world.at("10:00")
    client.delete(f"/api/v1/appointments/{booked['id']}", headers=system_a)
    cancelled = Calendar.from_ical(session.get(booked["ics_url"], headers=headers).content)
    assert str(cancelled["METHOD"]) == "CANCEL"
    assert int(cancelled.walk("VEVENT")[0]["SEQUENCE"]) == 1


# --------------------------------------------------------------------------- availability


def test_availability_is_replaced_on_five_minute_marks(client, world, system_a, browser_for):
    path = f"/api/v1/practitioners/{world.practitioner_a}/availability"
    odd = {"weekly": [{"weekday": 1, "start": "09:03", "end": "12:00"}]}
    refused = client.put(path, json=odd, headers=system_a)
    assert refused.status_code == 422
    assert problem(refused)["errors"][0]["field"] == "weekly.0.start"
    overlapping = {"weekly": [{"weekday": 1, "start": "09:00", "end": "12:00"},
                              {"weekday": 1, "start": "11:00", "end": "13:00"}]}
    assert client.put(path, json=overlapping, headers=system_a).status_code == 422
    afternoons = {"weekly": [{"weekday": day, "start": "14:00", "end": "16:00"}
                             for day in range(1, 8)]}
    headers, session = browser_for(world.actors.person("a", Role.CLINICIAN))
    saved = session.put(path, json=afternoons, headers=headers)
    assert saved.status_code == 200, saved.text
    assert session.get(path, headers=headers).json()["weekly"][0]["start"] == "14:00"
    starts = [datetime.fromisoformat(slot["start"])
              for slot in _slots(client, system_a, world).json()]
    assert min(starts) == world.at("14:00") and max(starts) == world.at("15:45")
    assert starts[0].astimezone(SEOUL).hour == 14
