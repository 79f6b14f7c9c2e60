"""The price every request pays before its own work: routing, middlewares, authentication.

    .venv/bin/python -m benchmarks.bench_request_floor [--seconds 3] [--rounds 1] [--postgres]
    .venv/bin/python -m benchmarks.bench_request_floor --in-process [--requests 20000]

Workloads, each a route that does next to nothing once reached:

* packs: `GET /api/v1/policy/packs?in_force_on=2016-01-01` with a system client's bearer token
  (cached after the first request), mounted first: the cheapest authenticated route;
* status: `GET /api/v1/status.json` (Nightscout uploaders' probe), no authentication, mounted
  with the monitoring API (the 70th of about 160 routes);
* healthz: `GET /healthz`, no authentication, the last route mounted;
* unknown: `GET /api/v1/no-such-thing`, which every route is tried against before the 404;
* slots: `GET /api/v1/practitioners/{id}/slots` for one day, a cached search answered by the
  lean lane (`jaejin.core.lean`) with a system client's token.

Over HTTP the floor under all of them is printed too: a bare ASGI handler (`bare_asgi`, no
framework) under the same uvicorn. In process, each lean workload is measured twice in the same
minutes, through the lane and through the stack it skips (`.../stack`), and so is a trivial
route registered in the lane by the benchmark (`lean`: the lane's own floor).

Over HTTP (default) the real application runs under uvicorn (one worker) as in
`bench_policy_http`, and the server's CPU time per request is printed (it does not depend on
the machine's load, unlike the rate). `--in-process` calls the ASGI application directly in a
loop (no server, no sockets) and prints this process's CPU time per request: it isolates the
application's own share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import time
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from benchmarks.bench_scheduling import World, prepare
from benchmarks.harness import (
    access_token,
    bench_database,
    encoded_requests,
    format_line,
    http_request,
    load_average,
    run_load,
    serve,
    summarise,
)

CONCURRENCY = 16

#: (label, path, authenticated, expected status)
Workload = tuple[str, str, bool, int]
WORKLOADS: tuple[Workload, ...] = (
    ("packs", "/api/v1/policy/packs?in_force_on=2016-01-01", True, 200),
    ("status", "/api/v1/status.json", False, 200),
    ("healthz", "/healthz", False, 200),
    ("unknown", "/api/v1/no-such-thing", False, 404),
)
#: The trivial route the in-process run adds to the lean lane.
LEAN_FLOOR_PATH = "/api/v1/bench/lean-floor"


def workloads_of(world: World) -> list[Workload]:
    day = (world.first_day + timedelta(days=1)).isoformat()
    slots = (f"/api/v1/practitioners/{world.practitioners[0]}/slots?start={day}&end={day}"
             "&tz=Asia/Seoul&visit_type=follow_up&mode=video")
    return [*WORKLOADS, ("slots", slots, True, 200)]


async def bare_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """The floor: an answer without any framework (`uvicorn benchmarks.bench_request_floor:
    bare_asgi`)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")]})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})


def over_http(url: str, world: World, seconds: float, rounds: int) -> None:
    with serve(url, 1) as server:
        token = access_token(server.port, world.credentials)
        workloads = []
        for label, path, authenticated, expected in workloads_of(world):
            requests = (encoded_requests("GET", path, token, None) if authenticated
                        else [http_request("GET", path)])
            workloads.append((label, path, requests, expected))
        for _label, _path, requests, expected in workloads:
            asyncio.run(run_load(server.port, itertools.cycle(requests), seconds=1.0,
                                 concurrency=CONCURRENCY, expected=expected))
        measured: dict[str, list[Any]] = {label: [] for label, *_ in workloads}
        for _ in range(rounds):
            for label, _path, requests, expected in workloads:
                measured[label].append(asyncio.run(run_load(
                    server.port, itertools.cycle(requests), seconds=seconds,
                    concurrency=CONCURRENCY, server_pid=server.pid, expected=expected)))
        for label, path, _requests, _expected in workloads:
            print(format_line(summarise(label, measured[label]), f"GET {path}"))
    with serve(url, 1, app="benchmarks.bench_request_floor:bare_asgi") as server:
        requests = [http_request("GET", "/healthz")]
        asyncio.run(run_load(server.port, itertools.cycle(requests), seconds=1.0,
                             concurrency=CONCURRENCY, expected=200))
        bare = [asyncio.run(run_load(server.port, itertools.cycle(requests), seconds=seconds,
                                     concurrency=CONCURRENCY, server_pid=server.pid,
                                     expected=200))
                for _ in range(rounds)]
        print(format_line(summarise("bare", bare), "a bare ASGI handler, no framework"))


async def lean_floor(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def in_process(url: str, world: World, requests: int, rounds: int) -> None:
    import httpx

    os.environ |= {"JAEJIN_DATABASE_URL": url,
                   "JAEJIN_SECRET_KEY": "bench-secret-key-long-enough-for-hs256-0123456789ab",
                   "JAEJIN_ENVIRONMENT": "development"}
    os.environ.pop("JAEJIN_REDIS_URL", None)
    from jaejin.app import create_app
    from jaejin.core.lean import LeanLane, install_lean_lane

    app = create_app()
    app.get(LEAN_FLOOR_PATH, include_in_schema=False)(lean_floor)
    install_lean_lane(app, [lean_floor])
    credentials = world.credentials

    async def token() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            answer = await http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                     auth=credentials)
            answer.raise_for_status()
            return str(answer.json()["access_token"])

    async def call(path: str, headers: list[tuple[bytes, bytes]], lane: bool = True) -> int:
        raw_path, _, query = path.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": raw_path,
            "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000), "state": {},
        }
        status = 0

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        if lane:
            await app(scope, receive, send)
        else:  # the stack the lane skips, as Starlette calls it
            scope["app"] = app
            assert isinstance(app.middleware_stack, LeanLane)
            await app.middleware_stack.stack(scope, receive, send)
        return status

    async def measure() -> None:
        bearer = await token()
        common = [(b"host", b"127.0.0.1"), (b"accept", b"application/json"),
                  (b"accept-encoding", b"gzip, deflate")]
        for label, path, authenticated, expected in [*workloads_of(world),
                                                     ("lean", LEAN_FLOOR_PATH, False, 200)]:
            headers = common + ([(b"authorization", f"Bearer {bearer}".encode())]
                                if authenticated else [])
            lean = label in ("slots", "lean")
            assert not lean or app.middleware_stack.match(  # type: ignore[union-attr]
                {"method": "GET", "path": path.partition("?")[0], "root_path": ""}), label
            ways = [(label, True), (f"{label}/stack", False)] if lean else [(label, True)]
            for _way, lane in ways:
                for _ in range(500):
                    assert await call(path, headers, lane) == expected, label
            # The two ways alternate round by round: the same minutes for both.
            figures: dict[str, list[float]] = {way: [] for way, _lane in ways}
            for _ in range(rounds):
                for way, lane in ways:
                    started = time.process_time()
                    for _ in range(requests):
                        await call(path, headers, lane)
                    figures[way].append((time.process_time() - started) / requests * 1e6)
            for way, measured in figures.items():
                print(f"    {way:<12} GET {path[:60]:<60} {statistics.median(measured):6.0f} "
                      f"us CPU per request (rounds: "
                      f"{', '.join(f'{figure:.0f}' for figure in measured)})")

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each HTTP round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each workload")
    parser.add_argument("--in-process", action="store_true",
                        help="call the ASGI application in a loop instead of over HTTP")
    parser.add_argument("--requests", type=int, default=10_000,
                        help="requests per in-process round")
    parser.add_argument("--postgres", action="store_true",
                        help="on the local PostgreSQL server when JAEJIN_BENCH_POSTGRES_URL is "
                             "not set")
    arguments = parser.parse_args()
    with bench_database("jaejin_bench_floor", postgres=arguments.postgres or None) as url:
        world = prepare(url)
        database = "postgresql" if url.startswith("postgresql") else "sqlite"
        mode = "in process" if arguments.in_process else "over HTTP, 1 uvicorn worker"
        print(f"request floor {mode}, {database}, {os.cpu_count()} CPUs; {load_average()}")
        if arguments.in_process:
            in_process(url, world, arguments.requests, arguments.rounds)
        else:
            over_http(url, world, arguments.seconds, arguments.rounds)


if __name__ == "__main__":
    main()
