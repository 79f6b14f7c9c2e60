"""The price every request pays before its own work: routing, middlewares, authentication.

    .venv/bin/python -m benchmarks.bench_request_floor [--seconds 3] [--rounds 1] [--postgres]
    .venv/bin/python -m benchmarks.bench_request_floor --in-process [--requests 20000]

Workloads, each a route that does next to nothing once reached:

* packs: `GET /api/v1/policy/packs?in_force_on=2016-01-01` with a system client's bearer token
  (cached after the first request), mounted first: the cheapest authenticated route;
* status: `GET /api/v1/status.json` (Nightscout uploaders' probe), no authentication, mounted
  with the monitoring API (the 70th of about 160 routes);
* healthz: `GET /healthz`, no authentication, the last route mounted;
* unknown: `GET /api/v1/no-such-thing`, which every route is tried against before the 404.

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
from typing import Any

from starlette.types import Message

from benchmarks.bench_policy_http import prepare
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
WORKLOADS: tuple[tuple[str, str, bool, int], ...] = (
    ("packs", "/api/v1/policy/packs?in_force_on=2016-01-01", True, 200),
    ("status", "/api/v1/status.json", False, 200),
    ("healthz", "/healthz", False, 200),
    ("unknown", "/api/v1/no-such-thing", False, 404),
)


def over_http(url: str, credentials: tuple[str, str], seconds: float, rounds: int) -> None:
    with serve(url, 1) as server:
        token = access_token(server.port, credentials)
        workloads = []
        for label, path, authenticated, expected in WORKLOADS:
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


def in_process(url: str, credentials: tuple[str, str], requests: int, rounds: int) -> None:
    import httpx

    os.environ |= {"JAEJIN_DATABASE_URL": url,
                   "JAEJIN_SECRET_KEY": "bench-secret-key-long-enough-for-hs256-0123456789ab",
                   "JAEJIN_ENVIRONMENT": "development"}
    os.environ.pop("JAEJIN_REDIS_URL", None)
    from jaejin.app import create_app

    app = create_app()

    async def token() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            answer = await http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                     auth=credentials)
            answer.raise_for_status()
            return str(answer.json()["access_token"])

    async def call(path: str, headers: list[tuple[bytes, bytes]]) -> int:
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

        await app(scope, receive, send)
        return status

    async def measure() -> None:
        bearer = await token()
        common = [(b"host", b"127.0.0.1"), (b"accept", b"application/json"),
                  (b"accept-encoding", b"gzip, deflate")]
        for label, path, authenticated, expected in WORKLOADS:
            headers = common + ([(b"authorization", f"Bearer {bearer}".encode())]
                                if authenticated else [])
            for _ in range(500):
                assert await call(path, headers) == expected, label
            figures = []
            for _ in range(rounds):
                started = time.process_time()
                for _ in range(requests):
                    await call(path, headers)
                figures.append((time.process_time() - started) / requests * 1e6)
            print(f"    {label:<8} GET {path:<48} {statistics.median(figures):6.0f} us CPU "
                  f"per request (rounds: {', '.join(f'{figure:.0f}' for figure in figures)})")

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
        credentials = prepare(url)
        database = "postgresql" if url.startswith("postgresql") else "sqlite"
        mode = "in process" if arguments.in_process else "over HTTP, 1 uvicorn worker"
        print(f"request floor {mode}, {database}, {os.cpu_count()} CPUs; {load_average()}")
        if arguments.in_process:
            in_process(url, credentials, arguments.requests, arguments.rounds)
        else:
            over_http(url, credentials, arguments.seconds, arguments.rounds)


if __name__ == "__main__":
    main()
