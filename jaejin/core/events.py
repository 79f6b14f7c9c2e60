"""Side effects after commit: live events to open pages, and the durable outbox.

A rolled-back change must never notify anyone, so nothing here runs inside the transaction:
`publish_after_commit` queues on the session and the bus publishes once the commit succeeded;
`enqueue` writes an outbox row in the same transaction, delivered later by `deliver_due`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Engine, Index, String, Text, event, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from jaejin.core.database import Base, session_factory, utcnow

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- live event bus


class EventBus:
    """Fan-out of small JSON events to subscribers in this process, or across workers by Redis."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._redis_url = redis_url
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._loops: dict[int, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        self._redis_sync: Any = None
        if redis_url:
            import redis

            self._redis_sync = redis.Redis.from_url(redis_url)

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        if self._redis_sync is not None:
            self._redis_sync.publish(f"jaejin:events:{channel}", json.dumps(message))
            return
        self._deliver_locally(channel, message)

    def _deliver_locally(self, channel: str, message: dict[str, Any]) -> None:
        with self._lock:
            queues = list(self._subscribers.get(channel, ()))
        for queue in queues:
            loop = self._loops.get(id(queue))
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, message)

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        if self._redis_url:
            async for message in self._subscribe_redis(channel):
                yield message
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        with self._lock:
            self._subscribers[channel].add(queue)
            self._loops[id(queue)] = asyncio.get_running_loop()
        try:
            while True:
                yield await queue.get()
        finally:
            with self._lock:
                self._subscribers[channel].discard(queue)
                self._loops.pop(id(queue), None)

    async def _subscribe_redis(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self._redis_url or "")
        pubsub = client.pubsub()
        await pubsub.subscribe(f"jaejin:events:{channel}")
        try:
            async for raw in pubsub.listen():
                if raw.get("type") == "message":
                    yield json.loads(raw["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
                await client.aclose()


_PENDING_KEY = "jaejin_pending_events"


def publish_after_commit(session: Session, channel: str, message: dict[str, Any]) -> None:
    session.info.setdefault(_PENDING_KEY, []).append((channel, message))


_current_bus: EventBus | None = None


def attach_bus(bus: EventBus) -> None:
    """Make `bus` the one that committed sessions publish to (the newest app wins)."""
    global _current_bus
    _current_bus = bus


def current_bus() -> EventBus | None:
    return _current_bus


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, [])
    if _current_bus is None:
        return
    for channel, message in pending:
        try:
            _current_bus.publish(channel, message)
        except Exception:  # a live nicety must never fail the request that committed
            log.exception("could not publish event on %s", channel)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


# --------------------------------------------------------------------------- durable outbox


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_due", "delivered_at", "failed_at", "available_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=8)
    locked_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


OutboxHandler = Callable[[dict[str, Any]], None]
_handlers: dict[str, OutboxHandler] = {}


def register_handler(topic: str, handler: OutboxHandler) -> None:
    _handlers[topic] = handler


def enqueue(
    session: Session,
    topic: str,
    payload: dict[str, Any],
    *,
    available_at: datetime | None = None,
    dedupe_key: str | None = None,
) -> OutboxMessage:
    message = OutboxMessage(
        topic=topic, payload=payload, available_at=available_at or utcnow(), dedupe_key=dedupe_key
    )
    session.add(message)
    return message


def retry_delay(attempts: int) -> timedelta:
    """Exponential back-off: 30 s, 1 min, 2 min ... capped at 1 hour."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def _claim(engine: Engine, limit: int, lease: timedelta) -> list[int]:
    now = utcnow()
    with session_factory(engine)() as session, session.begin():
        query = (
            select(OutboxMessage.id)
            .where(
                OutboxMessage.delivered_at.is_(None),
                OutboxMessage.failed_at.is_(None),
                OutboxMessage.available_at <= now,
                or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until < now),
            )
            .order_by(OutboxMessage.available_at, OutboxMessage.id)
            .limit(limit)
        )
        if engine.dialect.name == "postgresql":
            # Several workers share the queue: each takes rows nobody else holds.
            query = query.with_for_update(skip_locked=True)
        ids = list(session.execute(query).scalars())
        for message in session.execute(
            select(OutboxMessage).where(OutboxMessage.id.in_(ids))
        ).scalars():
            message.locked_until = now + lease
            message.attempts += 1
    return ids


def deliver_due(engine: Engine, limit: int = 50, lease: timedelta = timedelta(minutes=5)) -> int:
    """Deliver what is due once; returns how many were delivered."""
    delivered = 0
    for message_id in _claim(engine, limit, lease):
        with session_factory(engine)() as session, session.begin():
            message = session.get(OutboxMessage, message_id)
            if message is None or message.delivered_at is not None:
                continue
            handler = _handlers.get(message.topic)
            try:
                if handler is None:
                    raise LookupError(f"no handler registered for topic {message.topic!r}")
                handler(message.payload)
            except Exception as error:
                message.last_error = f"{type(error).__name__}: {error}"[:2000]
                message.locked_until = None
                if message.attempts >= message.max_attempts:
                    message.failed_at = utcnow()
                    log.error("outbox %s gave up after %s attempts", message.id, message.attempts)
                else:
                    message.available_at = utcnow() + retry_delay(message.attempts)
                continue
            message.delivered_at = utcnow()
            message.locked_until = None
            delivered += 1
    return delivered
