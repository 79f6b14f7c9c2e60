"""The visit's WebSocket, `/visits/{visit_id}/ws`: who may enter the room, then the signalling hub.

Before the handshake completes the route checks, in the database:
- the Origin header names this site (a page elsewhere cannot use the visitor's cookies);
- the caller is signed in (the session cookie, two-factor passed) or holds the local physician's
  guest cookie for this very visit;
- the caller is one of THIS visit's participants: its patient, its practitioner, its assigned
  interpreter, or the local physician invited by a guest link;
- the room is open to them now (`service.room_is_open_for`).
A caller failing the first three is refused before the handshake (close 4401 not signed in,
4403 not a participant or wrong origin, 4404 no such visit), logged and audited. A participant
arriving when the room is not open is let in only to be told so (an `error` event with code
ROOM_NOT_OPEN, then close 4409), so the page can say why.

Frames are then pumped through one `SignallingHub` per app and event loop. Its broker comes from
the settings: Redis pub/sub when JAEJIN_REDIS_URL is set (several server workers), in-process
otherwise. `JAEJIN_VISITS_REDIS_PREFIX` and `JAEJIN_VISITS_PRESENCE_TTL_SECONDS` tune it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, FastAPI, Path, WebSocket
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request

from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.authn import client_address, resolve_principal
from jaejin.core.config import Settings
from jaejin.core.database import session_factory, utcnow
from jaejin.core.errors import Problem
from jaejin.directory.model import MAX_RECORD_ID
from jaejin.visits import service, store
from jaejin.visits.signalling import (
    Broker,
    InProcessBroker,
    ParticipantRole,
    RedisBroker,
    SignallingHub,
    SignallingRefused,
)

log = logging.getLogger(__name__)

GUEST_COOKIE = "jaejin_guest"
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_ROOM_NOT_OPEN = 4409
CLOSE_REPLACED = 4409
ROOM_NOT_OPEN = "ROOM_NOT_OPEN"


class SignallingSettings(BaseSettings):
    """Signalling knobs beyond `jaejin.core.config.Settings` (`JAEJIN_VISITS_*`)."""

    model_config = SettingsConfigDict(env_prefix="JAEJIN_VISITS_", env_file=".env",
                                      env_file_encoding="utf-8", extra="ignore")

    #: Key prefix of the rooms' channels and presence in Redis (one per deployment sharing it).
    redis_prefix: str = "jaejin:visits:"
    #: How long a participant whose socket dropped keeps their seat (their page reconnects).
    presence_ttl_seconds: float = 30.0


# --------------------------------------------------------------------------- the hub


def _settings_of(app: Any) -> Settings:
    settings: Settings = app.state.settings
    return settings


def _engine_of(app: Any) -> Engine:
    engine: Engine = app.state.engine
    return engine


def _roster_from_database(engine: Engine, visit_id: str) -> dict[str, ParticipantRole]:
    if not visit_id.isdigit():
        return {}
    with session_factory(engine)() as db:
        return service.roster(db, int(visit_id))


def hub_for(app: Any) -> SignallingHub:
    """This app's hub on the running event loop, created on first use.

    One per loop, because the hub's locks and tasks belong to a loop: a server worker has one,
    while a test client may run each connection on a loop of its own.
    """
    loop = asyncio.get_running_loop()
    hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SignallingHub] | None = getattr(
        app.state, "visit_hubs", None)
    if hubs is None:
        hubs = weakref.WeakKeyDictionary()
        app.state.visit_hubs = hubs
    hub = hubs.get(loop)
    if hub is None:
        engine = _engine_of(app)
        tuning = SignallingSettings()
        redis_url = _settings_of(app).redis_url
        broker: Broker = (
            RedisBroker.from_url(redis_url, prefix=tuning.redis_prefix,
                                 presence_ttl=tuning.presence_ttl_seconds)
            if redis_url else InProcessBroker(presence_ttl=tuning.presence_ttl_seconds)
        )

        async def lookup(visit_id: str) -> Mapping[str, ParticipantRole]:
            return await run_in_threadpool(_roster_from_database, engine, visit_id)

        hub = SignallingHub(broker, lookup)
        hubs[loop] = hub
    return hub


async def local_physician_connected(app: Any, visit_id: int) -> bool:
    """Is the visit's local physician in the room, on any worker?"""
    present = await hub_for(app).roles_present(str(visit_id))
    return ParticipantRole.LOCAL_PHYSICIAN in present


@asynccontextmanager
async def close_hubs(app: FastAPI) -> AsyncIterator[None]:
    """On shutdown, close this loop's hub: seats are kept, so pages rejoin another worker."""
    yield
    hubs = getattr(app.state, "visit_hubs", None)
    hub = hubs.pop(asyncio.get_running_loop(), None) if hubs is not None else None
    if hub is not None:
        await hub.close()
        await hub.broker.close()


router = APIRouter(include_in_schema=False, lifespan=close_hubs)


# --------------------------------------------------------------------------- admission


@dataclass(frozen=True, slots=True)
class Admission:
    participant_id: str
    role: ParticipantRole


@dataclass(frozen=True, slots=True)
class Rejection:
    close_code: int
    reason: str
    #: Let the participant in just long enough to say why (the room is not open yet or any more).
    explain: bool = False


def origin_allowed(connection: HTTPConnection, settings: Settings) -> bool:
    """A browser always sends Origin: it must be this site (as addressed, or its public URL)."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    public = urlsplit(settings.public_base_url)
    host = connection.headers.get("host", "")
    return parts.netloc.lower() in {host.lower(), public.netloc.lower()} and (
        parts.scheme in ("http", "https"))


def _refuse(db: Any, visit: store.Visit | None, actor: AuditActor, visit_id: int,
            rejection: Rejection) -> Rejection:
    log.warning("visit %s: refused WebSocket of %s (%s)", visit_id, actor.label,
                rejection.reason)
    record(db, actor, AuditEvent(
        "join", "visit_room", str(visit_id), visit.patient_id if visit else None,
        visit.institution_id if visit else None, outcome="refused",
        detail={"reason": rejection.reason, "close_code": rejection.close_code}))
    db.commit()
    return rejection


def admit(websocket: WebSocket, visit_id: int) -> Admission | Rejection:
    """Who is connecting, and may they be in this visit's room now? (Runs in a thread.)"""
    app = websocket.app
    settings = _settings_of(app)
    # The opening handshake is an HTTP GET: authenticate it as one, with the platform's rules.
    request = Request({**websocket.scope, "type": "http", "method": "GET"})
    anonymous = AuditActor("anonymous", "-", "anonymous", client_address(request),
                           websocket.headers.get("user-agent"))
    with session_factory(_engine_of(app))() as db:
        visit = store.get_visit(db, visit_id)
        if not origin_allowed(websocket, settings):
            return _refuse(db, visit, anonymous, visit_id,
                           Rejection(CLOSE_FORBIDDEN, "origin_not_allowed"))
        try:
            principal = resolve_principal(request, db)
        except Problem:
            principal = None
        if principal is not None and principal.needs_two_factor and (
                not principal.two_factor_passed):
            principal = None
        guest_token = websocket.cookies.get(GUEST_COOKIE)
        if principal is None and not guest_token:
            return _refuse(db, visit, anonymous, visit_id,
                           Rejection(CLOSE_UNAUTHENTICATED, "not_signed_in"))
        if visit is None:
            return _refuse(db, None, principal.audit_actor if principal else anonymous,
                           visit_id, Rejection(CLOSE_NOT_FOUND, "no_such_visit"))
        try:
            if principal is not None:
                context, actor = service.visit_for_principal(db, principal, visit_id)
            else:
                context, actor, _link = service.guest_for_token(
                    db, visit_id, guest_token, audit_actor=anonymous)
        except service.Refusal as refusal:
            # Audited already; another institution's visit looks absent (404 -> 4404).
            db.commit()
            status = refusal.problem.status
            return Rejection(CLOSE_FORBIDDEN if status == 403 else CLOSE_NOT_FOUND,
                             refusal.problem.code.lower())
        except Problem as problem:
            return _refuse(db, visit, anonymous, visit_id,
                           Rejection(CLOSE_FORBIDDEN, problem.code.lower()))
        if actor.role is None or actor.participant_id is None:
            return _refuse(db, visit, actor.audit_actor, visit_id,
                           Rejection(CLOSE_FORBIDDEN, "not_a_participant"))
        if not service.room_is_open_for(context, actor.role):
            return _refuse(db, visit, actor.audit_actor, visit_id,
                           Rejection(CLOSE_ROOM_NOT_OPEN, f"room_not_open:{context.state}",
                                     explain=True))
        record(db, actor.audit_actor, AuditEvent(
            "join", "visit_room", str(visit_id), visit.patient_id, visit.institution_id,
            detail={"role": actor.role.value, "state": context.state.value,
                    "at": utcnow().isoformat()}))
        db.commit()
        return Admission(actor.participant_id, actor.role)


# --------------------------------------------------------------------------- the route


def _event_text(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode("utf-8")


#: Bounded like the API's ids: one beyond any record is refused before the handshake (1008,
#: as any malformed path), not looked up (SQLite cannot compare it, PostgreSQL's audit of the
#: refusal could not store it).
VisitId = Annotated[int, Path(ge=1, le=MAX_RECORD_ID)]


@router.websocket("/visits/{visit_id}/ws")
async def visit_socket(websocket: WebSocket, visit_id: VisitId) -> None:
    verdict = await run_in_threadpool(admit, websocket, visit_id)
    if isinstance(verdict, Rejection):
        if verdict.explain:
            await websocket.accept()
            await websocket.send_text(_event_text({
                "type": "error", "code": ROOM_NOT_OPEN, "refused_type": "join",
                "message": "The visit's room is not open to you now."}))
        await websocket.close(code=verdict.close_code)
        return
    await websocket.accept()

    async def send(event: dict[str, Any]) -> None:
        await websocket.send_text(_event_text(event))

    hub = hub_for(websocket.app)
    try:
        connection = await hub.connect(str(visit_id), verdict.participant_id, send)
    except SignallingRefused:
        await websocket.close(code=CLOSE_FORBIDDEN)
        return

    async def close_when_the_hub_does() -> None:
        # The hub closes a connection replaced by a newer one of the same participant.
        await connection.wait_closed()
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=CLOSE_REPLACED)

    watcher = asyncio.create_task(close_when_the_hub_does())
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            await connection.receive(frame)
    except RuntimeError:
        # Receiving after the watcher closed the socket.
        pass
    finally:
        watcher.cancel()
        await connection.close()

