"""A scheduling world for the integration tests: hours for institution A's and B's
practitioners, a Mongolian interpreter at A, and a patient at A who lives in Ulaanbaatar.

Imported by the other scheduling integration modules (`from tests.scheduling.test_booking_fixtures
import ...`); it holds no tests itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from jaejin.accounts.service import create_user
from jaejin.core.accounts import Role
from jaejin.core.database import utcnow
from jaejin.directory.store import Encounter, Interpreter, Patient
from jaejin.scheduling.public_holidays import KOREAN_PUBLIC_HOLIDAYS
from jaejin.scheduling.schemas import AvailabilityIn
from jaejin.scheduling.store import OwnerKind, save_availability
from tests.core.helpers import fast_password_hashing
from tests.support import PASSWORD, Actors, Person, bearer, client_token, make_patient, sign_in

SEOUL = ZoneInfo("Asia/Seoul")
ULAANBAATAR = ZoneInfo("Asia/Ulaanbaatar")
NEW_YORK = ZoneInfo("America/New_York")


def every_day(start: str, end: str, mode: str = "any") -> AvailabilityIn:
    return AvailabilityIn.model_validate(
        {"weekly": [{"weekday": day, "start": start, "end": end, "mode": mode}
                    for day in range(1, 8)]})


def working_day(days_ahead: int = 3) -> date:
    """A date at least `days_ahead` days ahead in Seoul that is no Korean public holiday."""
    day = utcnow().astimezone(SEOUL).date() + timedelta(days=days_ahead)
    while day in KOREAN_PUBLIC_HOLIDAYS:
        day += timedelta(days=1)
    return day


def seoul(day: date, clock: str) -> datetime:
    hours, minutes = clock.split(":")
    return datetime(day.year, day.month, day.day, int(hours), int(minutes), tzinfo=SEOUL)


@dataclass
class SchedulingWorld:
    actors: Actors
    day: date
    interpreter: Interpreter
    mongolian: Patient
    mongolian_person: Person

    @property
    def a(self) -> int:
        return self.actors.a.id

    @property
    def practitioner_a(self) -> int:
        return self.actors.practitioners["a"].id

    @property
    def practitioner_b(self) -> int:
        return self.actors.practitioners["b"].id

    @property
    def patient_a(self) -> int:
        return self.actors.patients["a"].id

    @property
    def patient_b(self) -> int:
        return self.actors.patients["b"].id

    def at(self, clock: str, days_later: int = 0) -> datetime:
        return seoul(self.day + timedelta(days=days_later), clock)

    def booking(self, clock: str = "10:00", **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "patient_id": self.patient_a, "practitioner_id": self.practitioner_a,
            "start": self.at(clock).isoformat(), "visit_type": "follow_up", "mode": "video",
        }
        body.update(overrides)
        return body


def build_world(db: Session, actors: Actors) -> SchedulingWorld:
    hours = every_day("09:00", "18:00")
    save_availability(db, OwnerKind.PRACTITIONER, actors.practitioners["a"].id, actors.a.id,
                      hours, updated_by="test")
    save_availability(db, OwnerKind.PRACTITIONER, actors.practitioners["b"].id, actors.b.id,
                      hours, updated_by="test")
    interpreter = Interpreter(institution_id=actors.a.id,
                              user_id=actors.person("a", Role.INTERPRETER).user.id,
                              name="Batbayar Dorj", languages=["mn", "ru", "ko"],
                              time_zone="Asia/Ulaanbaatar")
    db.add(interpreter)
    db.flush()
    # 07:00-19:00 in Ulaanbaatar is 08:00-20:00 in Seoul: wider than the practitioner's hours.
    save_availability(db, OwnerKind.INTERPRETER, interpreter.id, actors.a.id,
                      every_day("07:00", "19:00"), updated_by="test")
    mongolian = make_patient(
        db, actors.a, "MRN-A-MN", family_name_native="Ганболд", given_name_native="Бат-Эрдэнэ",
        family_name_latin="Ganbold", given_name_latin="Bat-Erdene", nationality="MN",
        residence_country="MN", residence_region=None, current_country="MN",
        languages=["mn", "ru"], preferred_language="mn", time_zone="Asia/Ulaanbaatar",
        nhi_covered=False, email="baterdene@example.mn", phone="+97699112233")
    user = create_user(db, email="baterdene.user@example.mn", password=PASSWORD,
                       display_name="Bat-Erdene", language="mn", time_zone="Asia/Ulaanbaatar",
                       memberships=[(actors.a.id, Role.PATIENT)])
    mongolian.user_id = user.id
    db.add(Encounter(institution_id=actors.a.id, patient_id=mongolian.id, mode="in_person",
                     kind="surgery", started_at=utcnow() - timedelta(days=14),
                     conditions=["I25.1"]))
    db.commit()
    return SchedulingWorld(actors=actors, day=working_day(), interpreter=interpreter,
                           mongolian=mongolian,
                           mongolian_person=Person(user, Role.PATIENT, actors.a))


PLUGIN = "tests.scheduling.test_booking_fixtures"


@pytest.fixture(autouse=True)
def _cheap_password_hashing(request: pytest.FixtureRequest) -> Iterator[None]:
    """Everyone in the modules using these fixtures has a password: hash them with cheap
    parameters. (A plugin's autouse fixture reaches every test of the session, so modules that
    did not ask for this plugin keep the real parameters.)"""
    if PLUGIN not in getattr(request.module, "pytest_plugins", ()):
        yield
        return
    with fast_password_hashing():
        yield


@pytest.fixture
def world(db: Session, actors: Actors) -> SchedulingWorld:
    return build_world(db, actors)


@pytest.fixture
def system_a(client: TestClient, actors: Actors) -> dict[str, str]:
    """Headers of institution A's hospital system (scheduling.read and .write)."""
    return bearer(client_token(client, actors.clients["a"]))


@pytest.fixture
def system_b(client: TestClient, actors: Actors) -> dict[str, str]:
    return bearer(client_token(client, actors.clients["b"]))


@pytest.fixture
def browser_for(app: FastAPI, client: TestClient) -> Iterator[Any]:
    """Sign a person in on a client of their own: `headers, session = browser_for(person)`."""
    opened: list[TestClient] = []

    def open_for(person: Person) -> tuple[dict[str, str], TestClient]:
        session = TestClient(app, base_url="http://testserver")
        opened.append(session)
        csrf = sign_in(session, person)
        return {"X-CSRF-Token": csrf}, session

    yield open_for
    for session in opened:
        session.close()
