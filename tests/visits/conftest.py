"""Shared pieces for the visit tests: brokers of both kinds, an inbox standing in for a socket."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role, WebSession
from jaejin.core.audit import AuditActor, AuditEntry
from jaejin.core.authn import SESSION_COOKIE
from jaejin.core.config import Settings
from jaejin.core.database import utcnow
from jaejin.core.security import new_token, token_digest
from jaejin.directory.store import Consent, Interpreter, LocalPhysician
from jaejin.scheduling.store import Appointment
from jaejin.visits import service
from jaejin.visits.lifecycle import IdentityVerificationMethod, VisitState
from jaejin.visits.signalling import (
    Broker,
    InProcessBroker,
    ParticipantRole,
    RedisBroker,
    SignallingHub,
)
from jaejin.visits.store import Visit
from tests.core.helpers import fast_password_hashing
from tests.support import Actors

REDIS_TEST_URL = "redis://127.0.0.1:6379/15"
BROKER_KINDS = ("in_process", "redis")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Inbox:
    """Collects what the hub sends to one participant, and waits for the next of a kind."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self._seen = 0
        self._arrived = asyncio.Event()

    async def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._arrived.set()

    async def next(self, kind: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The first event of `kind` (matching `fields`) not returned before."""

        async def wait() -> dict[str, Any]:
            while True:
                for index in range(self._seen, len(self.events)):
                    event = self.events[index]
                    if event.get("type") == kind and all(
                        event.get(key) == value for key, value in fields.items()
                    ):
                        self._seen = index + 1
                        return event
                self._arrived.clear()
                await self._arrived.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name or 'inbox'} got no {kind} {fields or ''} within {timeout}s; "
                f"it has {[event.get('type') for event in self.events]}"
            ) from None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("type") == kind]


def roster_of(members: Mapping[str, ParticipantRole]):
    async def lookup(visit_id: str) -> Mapping[str, ParticipantRole]:
        return members

    return lookup


@asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix unique to one test; only those keys are deleted afterwards."""
    prefix = f"jaejin-test:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        client = Redis.from_url(REDIS_TEST_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@asynccontextmanager
async def workers(
    kind: str,
    roster: Mapping[str, ParticipantRole],
    count: int = 2,
    *,
    presence_ttl: float = 30.0,
    heartbeat_intervals: tuple[float, ...] | None = None,
) -> AsyncIterator[list[SignallingHub]]:
    """`count` hubs standing for `count` server workers serving the same visits.

    In-process they share one broker (one process); with Redis each has its own client and
    subscription, as separate worker processes would.
    """
    async with redis_prefix() as prefix:
        brokers: list[Broker]
        if kind == "redis":
            brokers = [
                RedisBroker.from_url(REDIS_TEST_URL, prefix=prefix, presence_ttl=presence_ttl)
                for _ in range(count)
            ]
        else:
            shared = InProcessBroker(presence_ttl=presence_ttl)
            brokers = [shared] * count
        intervals = heartbeat_intervals or (None,) * count
        hubs = [
            SignallingHub(broker, roster_of(roster), heartbeat_interval=interval)
            for broker, interval in zip(brokers, intervals, strict=True)
        ]
        try:
            yield hubs
        finally:
            for hub in hubs:
                await hub.close()
            for broker in {id(broker): broker for broker in brokers}.values():
                await broker.close()


@pytest.fixture(params=BROKER_KINDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --------------------------------------------------------------------------- visits in the app
#
# Builders for the integration tests (API, pages, WebSocket, browser): appointments written as
# the scheduling capability stores them, and visits opened through the real service.



TEST_ACTOR = AuditActor.system("visits-tests")


def add_interpreter(db: Session, actors: Actors, key: str) -> Interpreter:
    """An Interpreter row for the interpreter person of institution `key`."""
    person = actors.person(key, Role.INTERPRETER)
    institution = actors.a if key == "a" else actors.b
    interpreter = Interpreter(institution_id=institution.id, user_id=person.user.id,
                              name=f"Interpreter {key}", languages=["en", "ko"],
                              time_zone="Asia/Seoul")
    db.add(interpreter)
    db.flush()
    return interpreter


def make_appointment(db: Session, actors: Actors, key: str = "a", *,
                     start: datetime | None = None, minutes: int = 15,
                     interpreter: Interpreter | None = None, condition: str | None = "I10",
                     tri_party: bool = False, mode: str = "video",
                     patient_id: int | None = None) -> Appointment:
    institution = actors.a if key == "a" else actors.b
    begin = (start or utcnow() + timedelta(minutes=10)).astimezone(UTC).replace(microsecond=0)
    appointment = Appointment(
        institution_id=institution.id, patient_id=patient_id or actors.patients[key].id,
        practitioner_id=actors.practitioners[key].id,
        interpreter_id=interpreter.id if interpreter else None,
        interpreter_language="en" if interpreter else None,
        visit_type="follow_up", mode=mode, start_at=begin,
        end_at=begin + timedelta(minutes=minutes),
        occupied_until=begin + timedelta(minutes=minutes),
        status="booked", sequence=0, booked_by="test", condition_code=condition,
        tri_party=tri_party)
    db.add(appointment)
    db.flush()
    return appointment


def make_visit(db: Session, actors: Actors, key: str = "a", *,
               state: VisitState = VisitState.SCHEDULED, consent: bool = False,
               identity: bool = False, **appointment_options: object) -> Visit:
    """A visit opened by the real service, then put straight into `state` (for set-up only)."""
    appointment = make_appointment(db, actors, key, **appointment_options)  # type: ignore[arg-type]
    visit = service.open_visit(db, appointment, TEST_ACTOR)
    visit.state = state.value
    now = utcnow()
    if state is not VisitState.SCHEDULED:
        visit.checked_in_at = now
    if consent:
        record = Consent(institution_id=visit.institution_id, patient_id=visit.patient_id,
                         kind="telemedicine_limits", text_version=service.CONSENT_TEXT_VERSION,
                         language="en", granted_at=now - timedelta(seconds=1))
        db.add(record)
        db.flush()
        visit.consent_id = record.id
    if identity:
        visit.identity_method = IdentityVerificationMethod.ID_DOCUMENT_ON_VIDEO.value
        visit.identity_verified_at = now
    db.flush()
    return visit


def add_local_physician(db: Session, actors: Actors, key: str = "a",
                        languages: tuple[str, ...] = ("ja",)) -> LocalPhysician:
    institution = actors.a if key == "a" else actors.b
    physician = LocalPhysician(institution_id=institution.id, patient_id=actors.patients[key].id,
                               name=f"Dr Local {key}", clinic="Osaka Clinic", country="JP",
                               email=f"local.{key}@clinic.example", languages=list(languages))
    db.add(physician)
    db.flush()
    return physician


@pytest.fixture
def actors(db: Session, settings: Settings) -> Actors:
    """As the suite's `actors`, with cheap password hashing: a visit test signs nobody in by
    password, and hashing a dozen production-strength passwords per test costs seconds."""
    with fast_password_hashing():
        return Actors.create(db, settings)


@dataclass
class Cast:
    """Institution A's and B's people with interpreters on record, for the visit tests."""

    actors: Actors
    interpreters: dict[str, Interpreter]


@pytest.fixture
def cast(db: Session, actors: Actors) -> Cast:
    interpreters = {key: add_interpreter(db, actors, key) for key in ("a", "b")}
    db.commit()
    return Cast(actors, interpreters)


def start_session(db: Session, user_id: int) -> dict[str, str]:
    """Headers of a signed-in browser (second factor passed): the session cookie and its CSRF
    token, as the sign-in pages would have set them. Lets one test client act as several
    people, so their sockets share the client's event loop (and the app's hub)."""
    cookie, csrf = new_token(), new_token(24)
    db.add(WebSession(token_hash=token_digest(cookie), user_id=user_id, csrf_token=csrf,
                      two_factor_passed=True, expires_at=utcnow() + timedelta(hours=1)))
    db.commit()
    return {"cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf}


def audit_entries(db: Session, **fields: object) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id)
    for name, value in fields.items():
        query = query.where(getattr(AuditEntry, name) == value)
    entries = list(db.execute(query).scalars())
    db.commit()
    return entries
