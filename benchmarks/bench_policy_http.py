"""Policy decisions through the real HTTP API, against the same server's cheapest authenticated
request measured in the same run.

    .venv/bin/python -m benchmarks.bench_policy_http [--seconds 8] [--rounds 3] [--workers 1 2]

For each worker count, the real application runs under uvicorn (uvloop, httptools, no access
log) on a free port, against a fresh SQLite file (or a fresh database on the PostgreSQL server
named by JAEJIN_BENCH_POSTGRES_URL; `--postgres` for the local one). A system client is
created, gets a bearer token from /oauth2/token, and then 16 concurrent keep-alive connections
send, back to back:

* decisions: `POST /api/v1/policy/evaluate` with the realistic mix of `bench_policy` (follow-ups
  and first visits under every pack, hospitals, banned drugs, patients abroad, ko and en);
* baseline: `GET /api/v1/policy/packs?in_force_on=2016-01-01` (answer: `[]`), the cheapest
  authenticated route: the same bearer-token authentication (a database look-up of the client)
  with no work after it, so the ratio is the price of the decision itself;
* directory: `GET /api/v1/institutions`, the platform's ordinary authenticated route reading
  the database through the request's session.

Rounds alternate the three; each figure is the median round (min-max shown). The
load generator is a minimal HTTP/1.1 client on asyncio streams (httpx would spend more CPU than
the server on a 2-core machine); it shares the machine's cores with the server, and its own CPU
use is printed so the reader can judge. The server's own CPU time per request (its processes'
user + system time from /proc, over the round) is printed too: unlike throughput, it does not
depend on what else the machine is running. Every response is checked for status 200.
Goals (issue 3): >= 2,000 decisions/s and p99 < 15 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os

import httpx
import orjson

from benchmarks.bench_policy import realistic_mix
from benchmarks.harness import (  # noqa: F401  (re-exported: bench_scheduling imports them)
    BadResponse,
    Round,
    Summary,
    access_token,
    bench_database,
    bench_institution,
    encoded_requests,
    format_line,
    load_average,
    percentile,
    run_load,
    serve,
    server_cpu_seconds,
    summarise,
)
from jaejin.accounts.service import create_client
from jaejin.core.database import build_engine, session_scope
from jaejin.core.migrate import upgrade

GOAL_DECISIONS_PER_SECOND = 2_000
GOAL_P99_MS = 15.0
CONCURRENCY = 16


def prepare(url: str) -> tuple[str, str]:
    """Migrate, create an institution and a system client; returns its credentials."""
    upgrade(url)
    engine = build_engine(url)
    with session_scope(engine) as db:
        institution = bench_institution(db)
        client, secret = create_client(db, institution, "bench", ["policy.evaluate"])
        credentials = (client.client_id, secret)
    engine.dispose()
    return credentials


def check_decisions(port: int, token: str, bodies: list[bytes]) -> dict[str, int]:
    """Every payload of the mix answers 200 with a decision (and what the mix decides)."""
    outcomes: dict[str, int] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                      headers={"Authorization": f"Bearer {token}"}) as client:
        for body in bodies:
            response = client.post("/api/v1/policy/evaluate", content=body,
                                   headers={"Content-Type": "application/json"})
            if response.status_code != 200:
                raise BadResponse(f"{response.status_code}: {response.text[:300]}")
            kind = response.json()["decision"]
            outcomes[kind] = outcomes.get(kind, 0) + 1
    return outcomes


#: (label, method, path): the decisions, then the baselines, measured in alternating rounds.
DECISIONS = ("decisions", "POST", "/api/v1/policy/evaluate")
BASELINE = ("baseline", "GET", "/api/v1/policy/packs?in_force_on=2016-01-01")
DIRECTORY = ("directory", "GET", "/api/v1/institutions")


def measure(url: str, credentials: tuple[str, str], workers: int, seconds: float,
            rounds: int) -> tuple[list[Summary], dict[str, int]]:
    bodies = [orjson.dumps(payload) for payload in realistic_mix()]
    with serve(url, workers) as server:
        port = server.port
        token = access_token(port, credentials)
        outcomes = check_decisions(port, token, bodies)
        workloads = [
            (label, encoded_requests(method, path, token, bodies if method == "POST" else None))
            for label, method, path in (DECISIONS, BASELINE, DIRECTORY)
        ]
        # Warm every path (catalogues, holiday calendars, connection pools) before timing.
        for _label, requests in workloads:
            asyncio.run(run_load(port, itertools.cycle(requests), seconds=min(2.0, seconds),
                                 concurrency=CONCURRENCY))
        measured: dict[str, list[Round]] = {label: [] for label, _requests in workloads}
        for _ in range(rounds):
            for label, requests in workloads:
                measured[label].append(asyncio.run(run_load(
                    port, itertools.cycle(requests), seconds=seconds, concurrency=CONCURRENCY,
                    server_pid=server.pid)))
    return [summarise(label, measured[label]) for label, _requests in workloads], outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--postgres", action="store_true",
                        help="on the local PostgreSQL server when JAEJIN_BENCH_POSTGRES_URL is "
                             "not set")
    arguments = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    with bench_database("jaejin_bench_policy", postgres=arguments.postgres or None) as url:
        credentials = prepare(url)
        database = "postgresql" if url.startswith("postgresql") else "sqlite"
        print(f"policy API over HTTP: {CONCURRENCY} concurrent keep-alive clients, {database}, "
              f"{os.cpu_count()} CPUs shared by server and load generator, "
              f"{arguments.rounds} x {arguments.seconds:g} s rounds (median round shown); "
              f"{load_average()} at start")
        paths = {label: f"{method} {path}" for label, method, path in
                 (DECISIONS, BASELINE, DIRECTORY)}
        for workers in arguments.workers:
            summaries, outcomes = measure(url, credentials, workers, arguments.seconds,
                                          arguments.rounds)
            mix = ", ".join(f"{count} {kind}" for kind, count in sorted(outcomes.items()))
            print(f"\n  uvicorn workers={workers}   (mix of {sum(outcomes.values())}: {mix}; "
                  f"{load_average()})")
            for summary in summaries:
                print(format_line(summary, paths[summary.label]))
            decisions, baseline, *directory = summaries
            print(f"    decisions / baseline: {decisions.rate / baseline.rate:.2f}x throughput, "
                  f"{baseline.server_cpu_us / decisions.server_cpu_us:.2f}x requests per "
                  "server CPU-second")
            if directory and not directory[0].failed:
                print(f"    decisions / directory: {decisions.rate / directory[0].rate:.2f}x "
                      "throughput")
            rate_verdict = "meets" if decisions.rate >= GOAL_DECISIONS_PER_SECOND else "MISSES"
            p99_verdict = "meets" if decisions.p99 < GOAL_P99_MS else "MISSES"
            print(f"    goal {GOAL_DECISIONS_PER_SECOND:,}/s: {rate_verdict} "
                  f"({decisions.rate / GOAL_DECISIONS_PER_SECOND:.2f}x); "
                  f"goal p99 < {GOAL_P99_MS:g} ms: {p99_verdict}")


if __name__ == "__main__":
    main()
