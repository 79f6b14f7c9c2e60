"""Nothing acknowledged is lost: the real server under uvicorn is killed (SIGKILL) in the middle of
a stream of uploads, restarted, and every unanswered request retried with the same idempotency
keys. Every reading answered 2xx must be stored, and none twice."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from jaejin.core.config import Settings
from jaejin.core.database import build_engine, session_factory
from jaejin.monitoring.store import ReadingRow
from tests.core.helpers import fast_password_hashing
from tests.live_server import free_port, uvicorn_process


@pytest.fixture(autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """People of `actors` sign in for real, with argon2 parameters cheap enough for tests."""
    with fast_password_hashing():
        yield

pytestmark = pytest.mark.xdist_group("durability")

REQUESTS = 120
READINGS_PER_REQUEST = 5
#: Every few requests is a large batch (a body above `api.GROUP_COMMIT_MAX_BYTES`): those go in
#: a transaction of their own by the bulk path (a plain insert tried first, the careful one when
#: a retry clashes with what the killed server stored). The small ones are written by the group
#: commit, several senders' requests in one transaction.
LARGE_EVERY = 4
READINGS_PER_LARGE_REQUEST = 80
SENDERS = 3
KILL_AFTER_ACKNOWLEDGED = 25


@contextmanager
def uvicorn_server(settings: Settings, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`uvicorn jaejin.asgi:app` in a process of its own, on the test database; the block
    starts once it answers (tests.live_server waits on /healthz, however loaded the machine)."""
    environment = {
        "JAEJIN_DATABASE_URL": settings.database_url,
        "JAEJIN_SECRET_KEY": settings.secret_key,
        "JAEJIN_ENVIRONMENT": "test",
        "JAEJIN_REDIS_URL": None,
    }
    with uvicorn_process(environment, port=port) as server:
        yield server.process


@dataclass
class Stream:
    """The uploads to send and what the server answered to each."""

    bodies: list[dict[str, Any]]
    answered: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def unanswered(self) -> list[int]:
        with self.lock:
            return [index for index in range(len(self.bodies)) if index not in self.answered]


def _size(request: int) -> int:
    return READINGS_PER_LARGE_REQUEST if request % LARGE_EVERY == 0 else READINGS_PER_REQUEST


def _bodies() -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(days=2)
    bodies = []
    serial = 0
    for request in range(REQUESTS):
        readings = []
        for _position in range(_size(request)):
            serial += 1
            readings.append({
                "idempotency_key": f"durable-{serial}", "metric": "heart_rate",
                "value": 50 + serial % 70, "unit": "bpm",
                "effective_at": (start + timedelta(minutes=serial)).isoformat(),
            })
        bodies.append({"readings": readings})
    return bodies


def _send(url: str, token: str, stream: Stream, indexes: list[int], stop: threading.Event,
          ) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        for index in indexes:
            if stop.is_set():
                return
            try:
                response = client.post(url, json=stream.bodies[index])
            except httpx.HTTPError:
                continue  # no answer: this request will be retried after the restart
            if 200 <= response.status_code < 300:
                with stream.lock:
                    stream.answered[index] = response.json()


def _token(base: str, credentials: tuple[str, str]) -> str:
    basic = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    response = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {basic}"}, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_a_server_killed_mid_stream_loses_no_acknowledged_reading_and_stores_none_twice(
    actors, settings
):
    patient_id = actors.patients["a"].id
    stream = Stream(_bodies())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/api/v1/monitoring/patients/{patient_id}/readings"
    with uvicorn_server(settings, port) as process:
        token = _token(base, actors.clients["a"])
        stop = threading.Event()
        shares = [list(range(sender, REQUESTS, SENDERS)) for sender in range(SENDERS)]
        senders = [threading.Thread(target=_send, args=(url, token, stream, share, stop))
                   for share in shares]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 60
        while len(stream.answered) < KILL_AFTER_ACKNOWLEDGED and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        stop.set()
        for sender in senders:
            sender.join(30)
    acknowledged_before_kill = dict(stream.answered)
    assert KILL_AFTER_ACKNOWLEDGED <= len(acknowledged_before_kill) < REQUESTS

    with uvicorn_server(settings, port):
        for _attempt in range(3):
            missing = stream.unanswered()
            if not missing:
                break
            _send(url, token, stream, missing, threading.Event())
    assert stream.unanswered() == []

    engine = build_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            keys = list(session.scalars(
                select(ReadingRow.idempotency_key).where(ReadingRow.patient_id == patient_id)
            ))
            distinct_moments = session.scalar(
                select(func.count(func.distinct(ReadingRow.effective_at)))
                .where(ReadingRow.patient_id == patient_id)
            )
    finally:
        engine.dispose()
    acknowledged_keys = {
        f"json:{item['idempotency_key']}"
        for answer in acknowledged_before_kill.values()
        for item in answer["items"]
        if item["status"] in ("created", "duplicate")
    }
    assert len(acknowledged_keys) == sum(_size(index) for index in acknowledged_before_kill)
    assert acknowledged_keys <= set(keys), "an acknowledged reading was lost"
    assert len(keys) == len(set(keys)) == sum(_size(index) for index in range(REQUESTS))
    assert distinct_moments == len(keys), "a reading was stored twice"
    retried = [stream.answered[index] for index in stream.answered
               if index not in acknowledged_before_kill]
    assert all(item["status"] in ("created", "duplicate")
               for answer in retried for item in answer["items"])
