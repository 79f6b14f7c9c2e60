"""WebRTC signalling for video visits: one room per visit, relayed between browsers.

The hub knows nothing of HTTP or WebSockets. The route that owns the socket authenticates the
user, then hands every text frame to `Connection.receive` and gives the hub a `send` coroutine for
the way back:

    try:
        connection = await hub.connect(visit_id, participant_id, websocket.send_json)
    except SignallingRefused:
        await websocket.close(code=4403)
        return
    try:
        async for frame in websocket.iter_text():
            await connection.receive(frame)
    finally:
        await connection.close()

`close()` means the socket went away: the seat is kept for the presence TTL so a reconnecting
page rejoins its call (the others restart ICE). A `leave` message frees the seat at once. When the
hub closes a connection itself (the participant joined again elsewhere), `wait_closed()` returns
after the error saying why was sent, and the route should then close the socket.

Rooms span server workers through a `Broker`: `InProcessBroker` when there is one process,
`RedisBroker` (pub/sub channel per visit, presence in a Redis hash) when there are several, so two
participants connected to different workers still meet.

Messages from the browser (JSON objects, `type` tells which):
  join {session, media?}        enter the room; `session` is random per page load, so the others
                                 can tell a reconnection of the same page (ICE restart is enough)
                                 from a new page (a fresh peer connection is needed)
  offer {to, sdp} / answer {to, sdp} / ice-candidate {to, candidate|null} / ice-restart-request {to}
  chat {text}  media-state {audio_muted, camera_off, screen_sharing}  presence {}  leave {}
Messages to the browser: the relayed ones above with `from` added, and
  presence {event: snapshot|joined|rejoined|left, participant?, participants, restart?}
  file-shared {from, attachment_id, filename, size_bytes, content_type, url}
  error {code, message, refused_type}   (only ever sent to the participant who caused it)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

MAX_PARTICIPANTS = 4
#: An SDP offer with audio, video and screen share is around 10 KB; 64 KiB leaves room for
#: candidates and codecs while keeping a flood from costing much.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_PRESENCE_TTL_SECONDS = 30.0
DEFAULT_HEARTBEAT_SECONDS = 10.0
#: Events waiting for a slow browser before it is disconnected rather than slowing the room.
OUTBOX_LIMIT = 512
MAX_CHAT_CHARACTERS = 4000

VISIT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
PARTICIPANT_ID_PATTERN = r"^[A-Za-z0-9_.@-]{1,128}$"
SESSION_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"


class ParticipantRole(StrEnum):
    CLINICIAN = "clinician"
    PATIENT = "patient"
    INTERPRETER = "interpreter"
    LOCAL_PHYSICIAN = "local_physician"


#: Only the clinician may share a screen (test results, images) with the room.
SCREEN_SHARING_ROLES = frozenset({ParticipantRole.CLINICIAN})


class SignallingErrorCode(StrEnum):
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    MALFORMED_JSON = "MALFORMED_JSON"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
    NOT_JOINED = "NOT_JOINED"
    ALREADY_JOINED = "ALREADY_JOINED"
    NOT_PERMITTED = "NOT_PERMITTED"
    ROOM_FULL = "ROOM_FULL"
    PEER_NOT_IN_ROOM = "PEER_NOT_IN_ROOM"
    UNEXPECTED_ANSWER = "UNEXPECTED_ANSWER"
    SCREEN_SHARE_NOT_PERMITTED = "SCREEN_SHARE_NOT_PERMITTED"
    CONNECTION_REPLACED = "CONNECTION_REPLACED"
    SIGNALLING_UNAVAILABLE = "SIGNALLING_UNAVAILABLE"


_ERROR_MESSAGES: Mapping[SignallingErrorCode, str] = {
    SignallingErrorCode.MESSAGE_TOO_LARGE: "Message is larger than {limit} bytes.",
    SignallingErrorCode.MALFORMED_JSON: "Message is not valid JSON.",
    SignallingErrorCode.INVALID_MESSAGE: "Message does not match the signalling schema.",
    SignallingErrorCode.UNKNOWN_MESSAGE_TYPE: "Unknown message type.",
    SignallingErrorCode.NOT_JOINED: "Join the room before sending this message.",
    SignallingErrorCode.ALREADY_JOINED: "This connection has already joined the room.",
    SignallingErrorCode.NOT_PERMITTED: "You are not a participant of this visit.",
    SignallingErrorCode.ROOM_FULL: "The visit room already has {capacity} participants.",
    SignallingErrorCode.PEER_NOT_IN_ROOM: "The addressed participant is not in the room.",
    SignallingErrorCode.UNEXPECTED_ANSWER: "Answer sent without a pending offer from that peer.",
    SignallingErrorCode.SCREEN_SHARE_NOT_PERMITTED: "Only the clinician can share a screen.",
    SignallingErrorCode.CONNECTION_REPLACED: "This participant joined again from a newer "
    "connection.",
    SignallingErrorCode.SIGNALLING_UNAVAILABLE: "Signalling is temporarily unavailable.",
}


def error_event(
    code: SignallingErrorCode, refused_type: str | None = None, detail: str | None = None,
    **params: object,
) -> dict[str, Any]:
    """The `error` event; `message` is for developers and logs, the page words it by `code`."""
    event: dict[str, Any] = {
        "type": "error",
        "code": code.value,
        "message": _ERROR_MESSAGES[code].format(**params),
        "refused_type": refused_type,
    }
    if detail:
        event["detail"] = detail
    return event


class SignallingRefused(Exception):
    """`connect` refused the participant; the route should close the socket (e.g. code 4403)."""

    def __init__(self, code: SignallingErrorCode) -> None:
        super().__init__(f"{code.value}: {_ERROR_MESSAGES[code]}")
        self.code = code


# --------------------------------------------------------------------------- message schema

PeerId = Annotated[str, Field(pattern=PARTICIPANT_ID_PATTERN)]
SessionDescription = Annotated[str, Field(min_length=1, max_length=DEFAULT_MAX_MESSAGE_BYTES)]


class _Strict(BaseModel):
    # Unknown fields are refused, so a browser cannot slip in a forged `from` or role.
    model_config = ConfigDict(extra="forbid", frozen=True)


class MediaState(_Strict):
    audio_muted: bool = False
    camera_off: bool = False
    screen_sharing: bool = False


class IceCandidate(_Strict):
    """An RTCIceCandidateInit, as `candidate.toJSON()` gives it."""

    candidate: Annotated[str, Field(max_length=2048)]
    sdpMid: Annotated[str, Field(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=1024)] | None = None
    usernameFragment: Annotated[str, Field(max_length=256)] | None = None


class JoinMessage(_Strict):
    type: Literal["join"]
    session: Annotated[str, Field(pattern=SESSION_PATTERN)]
    media: MediaState = MediaState()


class OfferMessage(_Strict):
    type: Literal["offer"]
    to: PeerId
    sdp: SessionDescription


class AnswerMessage(_Strict):
    type: Literal["answer"]
    to: PeerId
    sdp: SessionDescription


class IceCandidateMessage(_Strict):
    type: Literal["ice-candidate"]
    to: PeerId
    #: None is the end-of-candidates marker.
    candidate: IceCandidate | None


class IceRestartRequestMessage(_Strict):
    type: Literal["ice-restart-request"]
    to: PeerId


class LeaveMessage(_Strict):
    type: Literal["leave"]


class ChatMessage(_Strict):
    type: Literal["chat"]
    text: Annotated[str, Field(min_length=1, max_length=MAX_CHAT_CHARACTERS)]


class MediaStateMessage(_Strict):
    type: Literal["media-state"]
    audio_muted: bool
    camera_off: bool
    screen_sharing: bool


class PresenceRequestMessage(_Strict):
    type: Literal["presence"]


InboundMessage = Annotated[
    JoinMessage
    | OfferMessage
    | AnswerMessage
    | IceCandidateMessage
    | IceRestartRequestMessage
    | LeaveMessage
    | ChatMessage
    | MediaStateMessage
    | PresenceRequestMessage,
    Field(discriminator="type"),
]
INBOUND_MESSAGE: TypeAdapter[InboundMessage] = TypeAdapter(InboundMessage)

DirectedMessage = OfferMessage | AnswerMessage | IceCandidateMessage | IceRestartRequestMessage


@dataclass(frozen=True, slots=True)
class SharedFile:
    """A file a participant uploaded during the call, already stored as a visit attachment."""

    attachment_id: str
    filename: str
    size_bytes: int
    content_type: str
    url: str


# --------------------------------------------------------------------------- presence


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One participant in a room, as every worker sees it."""

    participant_id: str
    role: ParticipantRole
    session: str
    connection_id: str
    origin: str
    media: MediaState
    joined_at: datetime

    def public(self) -> dict[str, Any]:
        """What the other browsers are told (no connection or worker ids)."""
        return {
            "id": self.participant_id,
            "role": self.role.value,
            "session": self.session,
            "media": self.media.model_dump(),
            "joined_at": self.joined_at.isoformat(),
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id,
            "role": self.role.value,
            "session": self.session,
            "connection_id": self.connection_id,
            "origin": self.origin,
            "media": self.media.model_dump(),
            "joined_at": self.joined_at.isoformat(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PresenceEntry:
        return cls(
            participant_id=str(record["participant_id"]),
            role=ParticipantRole(record["role"]),
            session=str(record["session"]),
            connection_id=str(record["connection_id"]),
            origin=str(record["origin"]),
            media=MediaState.model_validate(record["media"]),
            joined_at=datetime.fromisoformat(str(record["joined_at"])),
        )


class SeatOutcome(StrEnum):
    TAKEN = "taken"
    REPLACED = "replaced"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class SeatClaim:
    outcome: SeatOutcome
    #: The entry this claim replaced (the same participant's earlier connection), if any.
    previous: PresenceEntry | None = None


class SeatStatus(StrEnum):
    REFRESHED = "refreshed"
    #: The same participant joined again from a newer connection.
    REPLACED = "replaced"
    #: The seat expired (no heartbeat in time) and was swept.
    MISSING = "missing"


# --------------------------------------------------------------------------- brokers

Envelope = dict[str, Any]
Deliver = Callable[[Envelope], None]


class Broker(ABC):
    """Relays envelopes between the hubs serving one visit, and keeps the room's presence.

    Presence entries expire when their heartbeat is older than `presence_ttl` seconds, so a
    worker that died without saying goodbye does not hold seats for ever.
    """

    presence_ttl: float

    @abstractmethod
    async def publish(self, visit_id: str, envelope: Envelope) -> None: ...

    @abstractmethod
    async def subscribe(self, visit_id: str, deliver: Deliver) -> None:
        """Deliver every envelope published for `visit_id` from now on (returns once active)."""

    @abstractmethod
    async def unsubscribe(self, visit_id: str, deliver: Deliver) -> None: ...

    @abstractmethod
    async def claim_seat(self, visit_id: str, entry: PresenceEntry, capacity: int) -> SeatClaim:
        """Atomically take a seat, replacing the same participant's older entry if there is one."""

    @abstractmethod
    async def refresh_seat(self, visit_id: str, entry: PresenceEntry) -> SeatStatus:
        """Heartbeat (and store `entry`'s media state) if the seat is still this connection's."""

    @abstractmethod
    async def release_seat(self, visit_id: str, participant_id: str, connection_id: str) -> bool:
        """Free the seat if it still belongs to `connection_id`; False if it did not."""

    @abstractmethod
    async def presence(self, visit_id: str) -> list[PresenceEntry]:
        """Everyone in the room whose heartbeat is fresh."""

    @abstractmethod
    async def sweep(self, visit_id: str) -> list[PresenceEntry]:
        """Remove and return the entries whose heartbeat expired."""

    async def close(self) -> None:
        return None


class InProcessBroker(Broker):
    """All participants are served by this one process."""

    def __init__(
        self,
        *,
        presence_ttl: float = DEFAULT_PRESENCE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.presence_ttl = presence_ttl
        self._clock = clock
        self._subscribers: dict[str, list[Deliver]] = {}
        self._seats: dict[str, dict[str, tuple[PresenceEntry, float]]] = {}

    async def publish(self, visit_id: str, envelope: Envelope) -> None:
        for deliver in list(self._subscribers.get(visit_id, ())):
            try:
                deliver(envelope)
            except Exception:
                log.exception("visit %s: a subscriber failed to take an envelope", visit_id)

    async def subscribe(self, visit_id: str, deliver: Deliver) -> None:
        self._subscribers.setdefault(visit_id, []).append(deliver)

    async def unsubscribe(self, visit_id: str, deliver: Deliver) -> None:
        subscribers = self._subscribers.get(visit_id, [])
        if deliver in subscribers:
            subscribers.remove(deliver)
        if not subscribers:
            self._subscribers.pop(visit_id, None)

    def _fresh(self, seen: float) -> bool:
        return self._clock() - seen < self.presence_ttl

    async def claim_seat(self, visit_id: str, entry: PresenceEntry, capacity: int) -> SeatClaim:
        seats = self._seats.setdefault(visit_id, {})
        others = sum(
            1 for pid, (_, seen) in seats.items()
            if pid != entry.participant_id and self._fresh(seen)
        )
        if others >= capacity:
            return SeatClaim(SeatOutcome.FULL)
        previous = seats.get(entry.participant_id)
        seats[entry.participant_id] = (entry, self._clock())
        if previous is None:
            return SeatClaim(SeatOutcome.TAKEN)
        return SeatClaim(SeatOutcome.REPLACED, previous[0])

    async def refresh_seat(self, visit_id: str, entry: PresenceEntry) -> SeatStatus:
        seats = self._seats.get(visit_id, {})
        current = seats.get(entry.participant_id)
        if current is None:
            return SeatStatus.MISSING
        if current[0].connection_id != entry.connection_id:
            return SeatStatus.REPLACED
        seats[entry.participant_id] = (entry, self._clock())
        return SeatStatus.REFRESHED

    async def release_seat(self, visit_id: str, participant_id: str, connection_id: str) -> bool:
        seats = self._seats.get(visit_id, {})
        current = seats.get(participant_id)
        if current is None or current[0].connection_id != connection_id:
            return False
        del seats[participant_id]
        if not seats:
            self._seats.pop(visit_id, None)
        return True

    async def presence(self, visit_id: str) -> list[PresenceEntry]:
        seats = self._seats.get(visit_id, {})
        fresh = [entry for entry, seen in seats.values() if self._fresh(seen)]
        if seats and not fresh:
            # Nobody is left to tell; forget the room, as Redis expires an unrefreshed hash.
            del self._seats[visit_id]
        return fresh

    async def sweep(self, visit_id: str) -> list[PresenceEntry]:
        seats = self._seats.get(visit_id, {})
        expired = [pid for pid, (_, seen) in seats.items() if not self._fresh(seen)]
        return [seats.pop(pid)[0] for pid in expired]


# Presence values are "<heartbeat-ms>|<connection-id>|<entry json>" so the scripts can judge
# freshness and ownership without decoding JSON. Time comes from the Redis server, so workers
# with skewed clocks still agree on who is stale.
_LUA_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_CLAIM_SCRIPT = _LUA_NOW + """
local ttl = tonumber(ARGV[4])
local capacity = tonumber(ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
local others = 0
local previous = ''
for i = 1, #fields, 2 do
  if fields[i] == ARGV[1] then
    previous = fields[i + 1]
  else
    local seen = tonumber(string.match(fields[i + 1], '^(%d+)|'))
    if seen and now - seen < ttl then others = others + 1 end
  end
end
if others >= capacity then return {'full', ''} end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now) .. '|' .. ARGV[2] .. '|' .. ARGV[5])
redis.call('PEXPIRE', KEYS[1], ttl)
if previous == '' then return {'taken', ''} end
return {'replaced', previous}
"""

_REFRESH_SCRIPT = _LUA_NOW + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 'missing' end
local owner = string.match(value, '^%d+|([^|]*)|')
if owner ~= ARGV[2] then return 'replaced' end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now) .. '|' .. ARGV[2] .. '|' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return 'refreshed'
"""

_RELEASE_SCRIPT = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local owner = string.match(value, '^%d+|([^|]*)|')
if owner ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

_PRESENCE_SCRIPT = _LUA_NOW + """
local ttl = tonumber(ARGV[1])
local fields = redis.call('HGETALL', KEYS[1])
local fresh = {}
for i = 1, #fields, 2 do
  local seen = tonumber(string.match(fields[i + 1], '^(%d+)|'))
  if seen and now - seen < ttl then table.insert(fresh, fields[i + 1]) end
end
return fresh
"""

_SWEEP_SCRIPT = _LUA_NOW + """
local ttl = tonumber(ARGV[1])
local fields = redis.call('HGETALL', KEYS[1])
local expired = {}
for i = 1, #fields, 2 do
  local seen = tonumber(string.match(fields[i + 1], '^(%d+)|'))
  if not seen or now - seen >= ttl then
    redis.call('HDEL', KEYS[1], fields[i])
    table.insert(expired, fields[i + 1])
  end
end
return expired
"""


def _decode_presence_value(value: bytes | str) -> PresenceEntry:
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    _seen, _connection, body = text.split("|", 2)
    return PresenceEntry.from_record(orjson.loads(body))


class RedisBroker(Broker):
    """Rooms shared by every worker connected to the same Redis.

    Keys: `<prefix><visit>:signals` (pub/sub channel) and `<prefix><visit>:presence` (hash of
    participant id -> entry, expiring when no heartbeat refreshes it).
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "jaejin:visits:",
        presence_ttl: float = DEFAULT_PRESENCE_TTL_SECONDS,
    ) -> None:
        self.presence_ttl = presence_ttl
        self._client = client
        self._prefix = prefix
        self._pubsub: PubSub | None = None
        self._handlers: dict[str, list[Deliver]] = {}
        self._confirmations: dict[str, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None
        self._claim = client.register_script(_CLAIM_SCRIPT)
        self._refresh = client.register_script(_REFRESH_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._presence = client.register_script(_PRESENCE_SCRIPT)
        self._sweep = client.register_script(_SWEEP_SCRIPT)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBroker:
        from redis.asyncio import Redis

        return cls(Redis.from_url(url), **options)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.presence_ttl * 1000))

    def channel(self, visit_id: str) -> str:
        return f"{self._prefix}{visit_id}:signals"

    def presence_key(self, visit_id: str) -> str:
        return f"{self._prefix}{visit_id}:presence"

    async def publish(self, visit_id: str, envelope: Envelope) -> None:
        await self._client.publish(self.channel(visit_id), orjson.dumps(envelope))

    async def subscribe(self, visit_id: str, deliver: Deliver) -> None:
        channel = self.channel(visit_id)
        handlers = self._handlers.setdefault(channel, [])
        handlers.append(deliver)
        if len(handlers) > 1:
            confirmation = self._confirmations.get(channel)
            if confirmation is not None:
                await confirmation.wait()
            return
        if self._pubsub is None:
            self._pubsub = self._client.pubsub()
        confirmation = asyncio.Event()
        self._confirmations[channel] = confirmation
        await self._pubsub.subscribe(channel)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(
                self._read_forever(self._pubsub), name="jaejin-signalling-redis-reader"
            )
        # Until Redis confirms, a message published by another worker could be missed.
        await confirmation.wait()

    async def unsubscribe(self, visit_id: str, deliver: Deliver) -> None:
        channel = self.channel(visit_id)
        handlers = self._handlers.get(channel, [])
        if deliver in handlers:
            handlers.remove(deliver)
        if handlers:
            return
        self._handlers.pop(channel, None)
        self._confirmations.pop(channel, None)
        if self._pubsub is not None:
            await self._pubsub.unsubscribe(channel)

    async def _read_forever(self, pubsub: PubSub) -> None:
        from redis.exceptions import RedisError

        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                log.warning("signalling: Redis subscription interrupted, retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            kind = message.get("type")
            channel = message.get("channel")
            if isinstance(channel, bytes):
                channel = channel.decode("utf-8")
            if kind == "subscribe":
                confirmation = self._confirmations.get(str(channel))
                if confirmation is not None:
                    confirmation.set()
            elif kind == "message":
                self._dispatch(str(channel), message.get("data"))

    def _dispatch(self, channel: str, data: object) -> None:
        if not isinstance(data, bytes | str):
            return
        try:
            envelope = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("signalling: undecodable envelope on %s dropped", channel)
            return
        for deliver in list(self._handlers.get(channel, ())):
            try:
                deliver(envelope)
            except Exception:
                log.exception("signalling: a subscriber failed to take an envelope on %s", channel)

    async def claim_seat(self, visit_id: str, entry: PresenceEntry, capacity: int) -> SeatClaim:
        outcome, previous = await self._claim(
            keys=[self.presence_key(visit_id)],
            args=[
                entry.participant_id,
                entry.connection_id,
                capacity,
                self._ttl_ms,
                orjson.dumps(entry.to_record()),
            ],
        )
        kind = SeatOutcome(outcome.decode("ascii") if isinstance(outcome, bytes) else outcome)
        return SeatClaim(kind, _decode_presence_value(previous) if previous else None)

    async def refresh_seat(self, visit_id: str, entry: PresenceEntry) -> SeatStatus:
        status = await self._refresh(
            keys=[self.presence_key(visit_id)],
            args=[
                entry.participant_id,
                entry.connection_id,
                orjson.dumps(entry.to_record()),
                self._ttl_ms,
            ],
        )
        return SeatStatus(status.decode("ascii") if isinstance(status, bytes) else status)

    async def release_seat(self, visit_id: str, participant_id: str, connection_id: str) -> bool:
        released = await self._release(
            keys=[self.presence_key(visit_id)], args=[participant_id, connection_id]
        )
        return bool(released)

    async def presence(self, visit_id: str) -> list[PresenceEntry]:
        values = await self._presence(keys=[self.presence_key(visit_id)], args=[self._ttl_ms])
        return [_decode_presence_value(value) for value in values]

    async def sweep(self, visit_id: str) -> list[PresenceEntry]:
        values = await self._sweep(keys=[self.presence_key(visit_id)], args=[self._ttl_ms])
        return [_decode_presence_value(value) for value in values]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        self._handlers.clear()
        self._confirmations.clear()
        await self._client.aclose()


def broker_from_settings(redis_url: str | None, **options: Any) -> Broker:
    """`RedisBroker` when JAEJIN_REDIS_URL is set (several workers), else `InProcessBroker`."""
    if redis_url:
        return RedisBroker.from_url(redis_url, **options)
    return InProcessBroker(**options)


# --------------------------------------------------------------------------- hub

Send = Callable[[dict[str, Any]], Awaitable[None]]
RosterLookup = Callable[[str], Awaitable[Mapping[str, ParticipantRole | str]]]


class _Room:
    """What one hub knows about one visit: its own connections and everyone's presence."""

    def __init__(self, visit_id: str) -> None:
        self.visit_id = visit_id
        self.connections: dict[str, Connection] = {}
        self.members: dict[str, PresenceEntry] = {}
        #: Connection ids that left recently, so a slow presence read cannot bring them back.
        self.departed: deque[str] = deque(maxlen=64)
        self.lock = asyncio.Lock()
        self.deliver: Deliver | None = None


class SignallingHub:
    """Rooms of up to four participants per visit, each permitted by `roster`.

    `roster(visit_id)` returns the participant ids allowed in that visit with their roles (from
    the database, in production); the hub trusts the caller to have authenticated the id.
    """

    def __init__(
        self,
        broker: Broker,
        roster: RosterLookup,
        *,
        capacity: int = MAX_PARTICIPANTS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.broker = broker
        self.hub_id = uuid.uuid4().hex
        self.capacity = capacity
        self.max_message_bytes = max_message_bytes
        self.heartbeat_interval = (
            heartbeat_interval if heartbeat_interval is not None else broker.presence_ttl / 3
        )
        self._roster = roster
        self._rooms: dict[str, _Room] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    async def connect(self, visit_id: str, participant_id: str, send: Send) -> Connection:
        """A connection for an authenticated participant; it must send `join` to enter the room.

        Raises `SignallingRefused` (after sending the `error` event) if the participant is not
        one of the visit's.
        """
        role: ParticipantRole | None = None
        if re.fullmatch(VISIT_ID_PATTERN, visit_id) and re.fullmatch(
            PARTICIPANT_ID_PATTERN, participant_id
        ):
            permitted = await self._roster(visit_id)
            raw_role = permitted.get(participant_id)
            role = ParticipantRole(raw_role) if raw_role is not None else None
        if role is None:
            log.warning(
                "visit %r: refused connection for non-participant %r", visit_id, participant_id
            )
            await send(error_event(SignallingErrorCode.NOT_PERMITTED))
            raise SignallingRefused(SignallingErrorCode.NOT_PERMITTED)
        return Connection(self, visit_id, participant_id, role, send)

    async def participants(self, visit_id: str) -> list[PresenceEntry]:
        """Everyone connected to the visit, on any worker (e.g. is the local physician here?)."""
        return await self.broker.presence(visit_id)

    async def roles_present(self, visit_id: str) -> frozenset[ParticipantRole]:
        return frozenset(entry.role for entry in await self.participants(visit_id))

    async def announce_file(self, visit_id: str, sender_id: str, shared: SharedFile) -> None:
        """Tell the room (sender included) that a file was shared and stored with the visit."""
        event = {
            "type": "file-shared",
            "from": sender_id,
            "attachment_id": shared.attachment_id,
            "filename": shared.filename,
            "size_bytes": shared.size_bytes,
            "content_type": shared.content_type,
            "url": shared.url,
        }
        await self._publish(visit_id, self._envelope(event, sender_id, None, echo=True))

    async def close(self) -> None:
        """Close every connection this hub serves (server shutdown).

        Seats are kept until they expire, so participants reconnecting to another worker
        rejoin their call instead of leaving it."""
        self._closed = True
        for room in list(self._rooms.values()):
            for connection in list(room.connections.values()):
                await connection.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task

    # ---------------------------------------------------------------- internals

    def _envelope(
        self,
        event: dict[str, Any],
        sender: str | None,
        connection_id: str | None,
        *,
        to: str | None = None,
        echo: bool = False,
        entry: PresenceEntry | None = None,
    ) -> Envelope:
        return {
            "origin": self.hub_id,
            "from": sender,
            "from_connection": connection_id,
            "to": to,
            "echo": echo,
            "event": event,
            "entry": entry.to_record() if entry is not None else None,
        }

    async def _publish(self, visit_id: str, envelope: Envelope) -> None:
        # Local recipients first, straight away; other workers through the broker.
        self._dispatch(visit_id, envelope)
        await self.broker.publish(visit_id, envelope)

    def _from_broker(self, visit_id: str) -> Deliver:
        def deliver(envelope: Envelope) -> None:
            if envelope.get("origin") != self.hub_id:
                self._dispatch(visit_id, envelope)

        return deliver

    def _dispatch(self, visit_id: str, envelope: Envelope) -> None:
        room = self._rooms.get(visit_id)
        if room is None:
            return
        event: dict[str, Any] = envelope["event"]
        sender: str | None = envelope.get("from")
        self._update_view(room, envelope)
        recipient: str | None = envelope.get("to")
        if recipient is not None:
            connection = room.connections.get(recipient)
            if connection is not None:
                connection._deliver(event, sender)
            return
        for participant_id, connection in list(room.connections.items()):
            if participant_id == sender and not envelope.get("echo"):
                continue
            connection._deliver(event, sender)

    def _update_view(self, room: _Room, envelope: Envelope) -> None:
        event = envelope["event"]
        kind = event.get("type")
        if kind == "presence":
            record = envelope.get("entry")
            if record is None:
                return
            entry = PresenceEntry.from_record(record)
            change = event.get("event")
            if change in ("joined", "rejoined"):
                room.members[entry.participant_id] = entry
                local = room.connections.get(entry.participant_id)
                if local is not None and local.connection_id != entry.connection_id:
                    room.connections.pop(entry.participant_id, None)
                    self._spawn(local._terminate(SignallingErrorCode.CONNECTION_REPLACED))
            elif change == "left":
                current = room.members.get(entry.participant_id)
                room.departed.append(entry.connection_id)
                if current is not None and current.connection_id == entry.connection_id:
                    del room.members[entry.participant_id]
        elif kind == "media-state":
            sender = envelope.get("from")
            current = room.members.get(sender) if sender else None
            if current is not None:
                room.members[current.participant_id] = replace(
                    current,
                    media=MediaState(
                        audio_muted=bool(event.get("audio_muted")),
                        camera_off=bool(event.get("camera_off")),
                        screen_sharing=bool(event.get("screen_sharing")),
                    ),
                )

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("signalling: background task failed")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _enter(self, connection: Connection, message: JoinMessage) -> None:
        visit_id = connection.visit_id
        while True:
            room = self._rooms.get(visit_id)
            if room is None:
                room = self._rooms[visit_id] = _Room(visit_id)
            async with room.lock:
                if self._rooms.get(visit_id) is not room:
                    # The room emptied and was dropped while this join waited for its lock.
                    continue
                seated = await self._take_seat(room, connection, message)
            break
        if seated is None:
            return
        entry, claim = seated
        self._ensure_heartbeat()
        if claim.outcome is SeatOutcome.REPLACED and claim.previous is not None:
            change = "rejoined"
            # Same page reconnecting: its peer connections survive and an ICE restart will do.
            restart = "ice" if claim.previous.session == entry.session else "new-connection"
        else:
            change, restart = "joined", None
        await self._announce(room, entry, change, restart)

    async def _take_seat(
        self, room: _Room, connection: Connection, message: JoinMessage
    ) -> tuple[PresenceEntry, SeatClaim] | None:
        visit_id = room.visit_id
        newly_subscribed = room.deliver is None
        if room.deliver is None:
            room.deliver = self._from_broker(visit_id)
            # Subscribe before claiming the seat and reading presence, so nobody who joins in
            # between is missed: they are either in the snapshot or arrive as an event.
            await self.broker.subscribe(visit_id, room.deliver)
        entry = PresenceEntry(
            participant_id=connection.participant_id,
            role=connection.role,
            session=message.session,
            connection_id=connection.connection_id,
            origin=self.hub_id,
            media=message.media,
            joined_at=datetime.now(UTC),
        )
        claim = await self.broker.claim_seat(visit_id, entry, self.capacity)
        if claim.outcome is SeatOutcome.FULL:
            connection._refuse(SignallingErrorCode.ROOM_FULL, "join", capacity=self.capacity)
            await self._forget_room_if_empty(room)
            return None
        if newly_subscribed:
            # While subscribed, events keep the view current; the stored presence only fills
            # in who was there before, and never overrides what an event already said.
            for member in await self.broker.presence(visit_id):
                if member.participant_id not in room.members and (
                    member.connection_id not in room.departed
                ):
                    room.members[member.participant_id] = member
        older = room.connections.get(connection.participant_id)
        if older is not None and older is not connection:
            await older._terminate(SignallingErrorCode.CONNECTION_REPLACED)
        connection.entry = entry
        room.members[entry.participant_id] = entry
        # No await between joining the room and the snapshot: it is the first event it gets.
        room.connections[connection.participant_id] = connection
        connection._deliver(
            {
                "type": "presence",
                "event": "snapshot",
                "participant": entry.public(),
                "participants": [member.public() for member in room.members.values()],
            },
            None,
        )
        return entry, claim

    async def _announce(
        self, room: _Room, entry: PresenceEntry, change: str, restart: str | None
    ) -> None:
        event: dict[str, Any] = {
            "type": "presence",
            "event": change,
            "participant": entry.public(),
            "participants": [
                member.public() for member in room.members.values()
                if change != "left" or member.participant_id != entry.participant_id
            ],
        }
        if restart is not None:
            event["restart"] = restart
        await self._publish(
            room.visit_id,
            self._envelope(event, entry.participant_id, entry.connection_id, entry=entry),
        )

    async def _leave(self, connection: Connection) -> None:
        """The participant left on purpose: free the seat and tell the room now."""
        entry = connection.entry
        if entry is None:
            return
        connection.entry = None
        room = self._rooms.get(connection.visit_id)
        if room is None:
            return
        async with room.lock:
            if room.connections.get(connection.participant_id) is connection:
                del room.connections[connection.participant_id]
            released = await self.broker.release_seat(
                connection.visit_id, entry.participant_id, entry.connection_id
            )
            if released:
                await self._announce(room, entry, "left", None)
            await self._forget_room_if_empty(room)

    async def _disconnect(self, connection: Connection) -> None:
        """The socket went away without a goodbye (network drop, worker shutdown).

        The seat is kept until its heartbeat expires, so a participant reconnecting within
        `presence_ttl` is a rejoin (the others restart ICE on their existing peer connections)
        rather than a departure; if nobody comes back, the sweep announces the departure.
        """
        entry = connection.entry
        if entry is None:
            return
        connection.entry = None
        room = self._rooms.get(connection.visit_id)
        if room is None:
            return
        async with room.lock:
            if room.connections.get(connection.participant_id) is connection:
                del room.connections[connection.participant_id]
            await self._forget_room_if_empty(room)

    async def _forget_room_if_empty(self, room: _Room) -> None:
        if room.connections:
            return
        if self._rooms.get(room.visit_id) is room:
            del self._rooms[room.visit_id]
        if room.deliver is not None:
            await self.broker.unsubscribe(room.visit_id, room.deliver)
            room.deliver = None

    async def _relay(self, connection: Connection, message: DirectedMessage) -> None:
        entry = connection.entry
        assert entry is not None
        room = self._rooms.get(connection.visit_id)
        if message.to == connection.participant_id or room is None or (
            message.to not in room.members
        ):
            connection._refuse(SignallingErrorCode.PEER_NOT_IN_ROOM, message.type)
            return
        if isinstance(message, AnswerMessage):
            if message.to not in connection.pending_offers:
                connection._refuse(SignallingErrorCode.UNEXPECTED_ANSWER, message.type)
                return
            connection.pending_offers.discard(message.to)
        event = message.model_dump(mode="json")
        event["from"] = connection.participant_id
        await self._publish(
            connection.visit_id,
            self._envelope(event, connection.participant_id, entry.connection_id, to=message.to),
        )

    async def _chat(self, connection: Connection, message: ChatMessage) -> None:
        entry = connection.entry
        assert entry is not None
        event = {
            "type": "chat",
            "id": uuid.uuid4().hex,
            "from": connection.participant_id,
            "role": connection.role.value,
            "text": message.text,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        await self._publish(
            connection.visit_id,
            self._envelope(event, connection.participant_id, entry.connection_id, echo=True),
        )

    async def _media(self, connection: Connection, message: MediaStateMessage) -> None:
        entry = connection.entry
        assert entry is not None
        if message.screen_sharing and connection.role not in SCREEN_SHARING_ROLES:
            connection._refuse(SignallingErrorCode.SCREEN_SHARE_NOT_PERMITTED, message.type)
            return
        media = MediaState(
            audio_muted=message.audio_muted,
            camera_off=message.camera_off,
            screen_sharing=message.screen_sharing,
        )
        connection.entry = entry = replace(entry, media=media)
        await self.broker.refresh_seat(connection.visit_id, entry)
        event = {"type": "media-state", "from": connection.participant_id, **media.model_dump()}
        await self._publish(
            connection.visit_id,
            self._envelope(event, connection.participant_id, entry.connection_id),
        )

    async def _snapshot(self, connection: Connection) -> None:
        members = await self.broker.presence(connection.visit_id)
        connection._deliver(
            {
                "type": "presence",
                "event": "snapshot",
                "participant": connection.entry.public() if connection.entry else None,
                "participants": [member.public() for member in members],
            },
            None,
        )

    def _ensure_heartbeat(self) -> None:
        if self._closed or (self._heartbeat is not None and not self._heartbeat.done()):
            return
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat_forever(), name="jaejin-signalling-heartbeat"
        )

    async def _beat_forever(self) -> None:
        while self._rooms:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.beat()
            except Exception:
                log.exception("signalling: heartbeat failed")

    async def beat(self) -> None:
        """Refresh this hub's seats and clear out participants whose worker stopped beating."""
        for room in list(self._rooms.values()):
            for connection in list(room.connections.values()):
                entry = connection.entry
                if entry is None:
                    continue
                status = await self.broker.refresh_seat(room.visit_id, entry)
                if status is SeatStatus.REPLACED:
                    room.connections.pop(connection.participant_id, None)
                    await connection._terminate(SignallingErrorCode.CONNECTION_REPLACED)
                elif status is SeatStatus.MISSING:
                    # Swept while this worker was stalled: take the seat again if there is room.
                    claim = await self.broker.claim_seat(room.visit_id, entry, self.capacity)
                    if claim.outcome is SeatOutcome.FULL:
                        room.connections.pop(connection.participant_id, None)
                        connection.entry = None
                        await connection._terminate(SignallingErrorCode.ROOM_FULL)
                    else:
                        await self._announce(room, entry, "joined", None)
            for stale in await self.broker.sweep(room.visit_id):
                log.info(
                    "visit %s: %s's heartbeat expired, removing from the room",
                    room.visit_id, stale.participant_id,
                )
                await self._announce(room, stale, "left", None)
            # Pub/sub delivers at most once: reconcile the view in case an event was lost.
            fresh = {member.participant_id: member for member in await self.broker.presence(
                room.visit_id
            )}
            for connection in room.connections.values():
                if connection.entry is not None:
                    fresh[connection.participant_id] = connection.entry
            room.members = fresh


_CLOSE_OUTBOX = object()


class Connection:
    """One participant's socket as the hub sees it."""

    def __init__(
        self,
        hub: SignallingHub,
        visit_id: str,
        participant_id: str,
        role: ParticipantRole,
        send: Send,
    ) -> None:
        self.hub = hub
        self.visit_id = visit_id
        self.participant_id = participant_id
        self.role = role
        self.connection_id = uuid.uuid4().hex
        self.entry: PresenceEntry | None = None
        #: Peers that sent this connection an offer it has not answered yet.
        self.pending_offers: set[str] = set()
        self._send = send
        self._outbox: asyncio.Queue[object] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self._closed = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(
            self._write_forever(), name=f"jaejin-signalling-writer-{self.connection_id}"
        )

    @property
    def joined(self) -> bool:
        return self.entry is not None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Returns once this connection is closed (e.g. replaced by a newer one) and its last
        events, such as the error saying why, have been handed to `send`."""
        await self._closed.wait()
        # asyncio.wait neither raises the writer's outcome nor cancels it if we are cancelled.
        await asyncio.wait({self._writer})

    async def receive(self, raw: str | bytes) -> None:
        """Handle one frame from the browser. Bad input is answered with an `error` event."""
        if self.closed:
            return
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        if len(data) > self.hub.max_message_bytes:
            self._refuse(
                SignallingErrorCode.MESSAGE_TOO_LARGE, None, limit=self.hub.max_message_bytes
            )
            return
        try:
            message = INBOUND_MESSAGE.validate_json(data)
        except ValidationError as error:
            self._refuse_invalid(error, data)
            return
        try:
            await self._handle(message)
        except Exception:
            log.exception(
                "visit %s: signalling failed handling %s from %s",
                self.visit_id, message.type, self.participant_id,
            )
            self._refuse(SignallingErrorCode.SIGNALLING_UNAVAILABLE, message.type)

    async def _handle(self, message: InboundMessage) -> None:
        if isinstance(message, JoinMessage):
            if self.joined:
                self._refuse(SignallingErrorCode.ALREADY_JOINED, message.type)
            else:
                await self.hub._enter(self, message)
            return
        if not self.joined:
            self._refuse(SignallingErrorCode.NOT_JOINED, message.type)
            return
        if isinstance(
            message,
            OfferMessage | AnswerMessage | IceCandidateMessage | IceRestartRequestMessage,
        ):
            await self.hub._relay(self, message)
        elif isinstance(message, ChatMessage):
            await self.hub._chat(self, message)
        elif isinstance(message, MediaStateMessage):
            await self.hub._media(self, message)
        elif isinstance(message, PresenceRequestMessage):
            await self.hub._snapshot(self)
        elif isinstance(message, LeaveMessage):
            await self.hub._leave(self)
            self.pending_offers.clear()

    async def close(self) -> None:
        """The socket is gone. The seat is held for `presence_ttl` in case the participant
        reconnects; an explicit `leave` message is what frees it at once."""
        if self.closed:
            return
        self._closed.set()
        try:
            await self.hub._disconnect(self)
        finally:
            self._stop_writer()

    def _refuse(
        self, code: SignallingErrorCode, refused_type: str | None, detail: str | None = None,
        **params: object,
    ) -> None:
        log.warning(
            "visit %s: refused %s from %s (%s)%s",
            self.visit_id, refused_type or "message", self.participant_id, code.value,
            f": {detail}" if detail else "",
        )
        self._enqueue(error_event(code, refused_type, detail, **params))

    def _refuse_invalid(self, error: ValidationError, data: bytes) -> None:
        problems = error.errors(include_input=False, include_url=False)
        kinds = {problem["type"] for problem in problems}
        refused_type = _peek_type(data)
        if "json_invalid" in kinds:
            self._refuse(SignallingErrorCode.MALFORMED_JSON, None)
        elif "union_tag_invalid" in kinds:
            self._refuse(SignallingErrorCode.UNKNOWN_MESSAGE_TYPE, refused_type)
        else:
            detail = "; ".join(
                ".".join(str(part) for part in problem["loc"]) + ": " + problem["msg"]
                for problem in problems[:5]
            )
            self._refuse(SignallingErrorCode.INVALID_MESSAGE, refused_type, detail)

    def _deliver(self, event: dict[str, Any], sender: str | None) -> None:
        if self.closed:
            return
        kind = event.get("type")
        if sender is not None:
            if kind == "offer":
                self.pending_offers.add(sender)
            elif kind == "presence" and event.get("event") in ("left", "rejoined"):
                self.pending_offers.discard(sender)
        self._enqueue(event)

    def _enqueue(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self._outbox.put_nowait(event)
        except asyncio.QueueFull:
            log.warning(
                "visit %s: %s is not reading its events; disconnecting it",
                self.visit_id, self.participant_id,
            )
            self.hub._spawn(self.close())

    async def _terminate(self, code: SignallingErrorCode) -> None:
        """Closed by the hub (replaced, room full after a stall): tell the browser, stop."""
        if self.closed:
            return
        self.entry = None
        self._enqueue(error_event(code))
        self._closed.set()
        self._stop_writer()

    def _stop_writer(self) -> None:
        try:
            self._outbox.put_nowait(_CLOSE_OUTBOX)
        except asyncio.QueueFull:
            self._writer.cancel()

    async def _write_forever(self) -> None:
        while True:
            event = await self._outbox.get()
            if event is _CLOSE_OUTBOX:
                return
            assert isinstance(event, dict)
            try:
                await self._send(event)
            except Exception:
                log.info(
                    "visit %s: sending to %s failed; closing its connection",
                    self.visit_id, self.participant_id, exc_info=True,
                )
                self._closed.set()
                self.hub._spawn(self.hub._disconnect(self))
                return


def _peek_type(data: bytes) -> str | None:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    kind = parsed.get("type") if isinstance(parsed, dict) else None
    # Only a plausible type name reaches the logs, never arbitrary text from the browser.
    return kind if isinstance(kind, str) and re.fullmatch(r"[a-z-]{1,40}", kind) else None
