"""CPU per booking in process: POST /api/v1/appointments driven straight into the ASGI app.

    .venv/bin/python -m benchmarks.bench_booking_cpu [--database postgresql] [--mode video]
                                                     [--bookings 1600] [--concurrency 8]
                                                     [--callgrind]

A dedicated database (`harness.bench_database`) holds `bench_scheduling`'s world (50
practitioners, 2,000 patients seen for hypertension 20 days ago, a system client). The real
application (`create_app`, lean lane included) is called with raw ASGI messages by
`--concurrency` tasks on one event loop, as uvicorn would call it, each booking a free slot
(`bench_scheduling.booking_body`); the bookings run in the application's worker threads. After
100 bookings to warm caches, this process's CPU time (`time.process_time()`: the event loop,
the worker threads, the driver; not the database server) is divided by the bookings made. Every
answer must be 201. On SQLite it also prints how long each measured booking held the write
turn: from its BEGIN IMMEDIATE (sent once the process's writer lock is taken) to its COMMIT
(SQLAlchemy's commit event, just before the driver's), median and 99th percentile, and the
bookings per second of wall time (this process only: one writer at a time, no other process).

It does not depend on the network or on uvicorn, but still on the machine's load: to compare
two versions, run them alternately in the same minutes (`PYTHONPATH=<other tree>`), or count
instructions, which no load changes: `--callgrind` under
`valgrind --tool=callgrind --instr-atstart=no`, which counts the measured bookings only
(`callgrind_control -i on/off` around them; the total is on valgrind's "Collected" line).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import math
import os
import statistics
import subprocess
import time
from collections import Counter
from typing import Any

import orjson
import uvloop
from sqlalchemy import Engine, event

from benchmarks.bench_scheduling import World, booking_body, prepare
from benchmarks.harness import SECRET_KEY, bench_database, load_average

WARM_BOOKINGS = 100
Message = dict[str, Any]


async def asgi_call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]],
                    body: bytes) -> tuple[int, bytes]:
    """One request through the application; (status, body)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    received = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # nobody disconnects
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def _callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True,
                   capture_output=True)


class WriteTurns:
    """How long each write transaction of an engine lasts, BEGIN IMMEDIATE to COMMIT/ROLLBACK
    (SQLite: the write turn is held that long, and a little longer, for the driver's commit)."""

    def __init__(self, engine: Engine) -> None:
        self.held: list[float] = []
        self.measuring = False
        event.listen(engine, "before_cursor_execute", self._begun)
        event.listen(engine, "commit", self._ended)
        event.listen(engine, "rollback", self._ended)

    def _begun(self, connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement == "BEGIN IMMEDIATE":
            connection.info[_BEGUN] = time.perf_counter()

    def _ended(self, connection: Any) -> None:
        begun = connection.info.pop(_BEGUN, None)
        if begun is not None and self.measuring:
            self.held.append(time.perf_counter() - begun)

    def summary(self) -> str:
        if not self.held:
            return "no write transaction"
        held = sorted(self.held)
        p99 = held[min(len(held) - 1, math.ceil(len(held) * 0.99) - 1)]
        return (f"write turn held {statistics.median(held) * 1e6:,.0f} us median, "
                f"p99 {p99 * 1e6:,.0f} us ({len(held)} write transactions)")


_BEGUN = "bench_write_begun"


async def measure(world: World, mode: str, bookings: int, concurrency: int,
                  callgrind: bool) -> tuple[float, Counter[int], float, str]:
    """CPU seconds per booking, the statuses answered, bookings per second of wall time, and
    (SQLite) how long the write turn was held."""
    from jaejin.app import create_app

    app = create_app()
    engine: Engine = app.state.engine
    turns = WriteTurns(engine) if engine.dialect.name == "sqlite" else None
    gc.freeze()  # as jaejin.asgi does
    basic = base64.b64encode(":".join(world.credentials).encode())
    status, answer = await asgi_call(app, "POST", "/oauth2/token", [
        (b"authorization", b"Basic " + basic),
        (b"content-type", b"application/x-www-form-urlencoded")],
        b"grant_type=client_credentials")
    if status != 200:
        raise RuntimeError(f"no token: {status} {answer[:200]!r}")
    token = orjson.loads(answer)["access_token"].encode()
    headers = [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer " + token),
               (b"content-type", b"application/json"), (b"accept", b"application/json")]
    numbers = iter(range(10**9))
    statuses: Counter[int] = Counter()

    async def client(count: int) -> None:
        for _ in range(count):
            status, answer = await asgi_call(app, "POST", "/api/v1/appointments", headers,
                                             booking_body(world, next(numbers), mode, 0))
            statuses[status] += 1
            if status != 201:
                raise RuntimeError(f"booking answered {status}: {answer[:300]!r}")

    await asyncio.gather(*(client(WARM_BOOKINGS // concurrency) for _ in range(concurrency)))
    statuses.clear()
    if turns is not None:
        turns.measuring = True
    if callgrind:
        _callgrind("on")
    started = time.process_time()
    wall_started = time.perf_counter()
    await asyncio.gather(*(client(bookings // concurrency) for _ in range(concurrency)))
    spent = time.process_time() - started
    wall = time.perf_counter() - wall_started
    if callgrind:
        _callgrind("off")
    if turns is not None:
        turns.measuring = False
    made = sum(statuses.values())
    return spent / made, statuses, made / wall, turns.summary() if turns is not None else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--mode", choices=("video", "in_person"), default="video")
    parser.add_argument("--bookings", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--callgrind", action="store_true",
                        help="switch callgrind's instrumentation on for the measured bookings")
    arguments = parser.parse_args()
    with bench_database("jaejin_booking_cpu", postgres=arguments.database == "postgresql"
                        ) as url:
        # Before anything reads the settings (they are read once per process).
        os.environ.pop("JAEJIN_REDIS_URL", None)
        os.environ |= {"JAEJIN_DATABASE_URL": url, "JAEJIN_SECRET_KEY": SECRET_KEY,
                       "JAEJIN_ENVIRONMENT": "development",
                       "JAEJIN_PUBLIC_BASE_URL": "http://127.0.0.1:8000"}
        world = prepare(url)
        # uvloop, as the server runs under it.
        per_booking, statuses, per_second, turns = uvloop.run(measure(
            world, arguments.mode, arguments.bookings, arguments.concurrency,
            arguments.callgrind))
    print(f"{arguments.database} {arguments.mode}: {sum(statuses.values())} bookings "
          f"{dict(statuses)}, {per_booking * 1e6:,.0f} us of this process's CPU each, "
          f"{per_second:,.0f}/s ({arguments.concurrency} concurrent; {load_average()})"
          + (f"; {turns}" if turns else ""))


if __name__ == "__main__":
    main()
