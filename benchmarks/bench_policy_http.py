"""Policy decisions through the real HTTP API, against the same server's cheapest authenticated
request measured in the same run.

    .venv/bin/python -m benchmarks.bench_policy_http [--seconds 8] [--rounds 3] [--workers 1 2]

For each worker count, the real application runs under uvicorn (uvloop, httptools, no access
log) on a free port, against a fresh SQLite file (or a fresh database on the PostgreSQL server
named by JAEJIN_BENCH_POSTGRES_URL). A system client is created, gets a bearer token from
/oauth2/token, and then 16 concurrent keep-alive connections send, back to back:

* decisions: `POST /api/v1/policy/evaluate` with the realistic mix of `bench_policy` (follow-ups
  and first visits under every pack, hospitals, banned drugs, patients abroad, ko and en);
* baseline: `GET /api/v1/policy/packs?in_force_on=2016-01-01` (answer: `[]`), the cheapest
  authenticated route: the same bearer-token authentication (a database look-up of the client)
  with no work after it, so the ratio is the price of the decision itself;
* directory: `GET /api/v1/institutions`, the platform's ordinary authenticated route reading
  the database. On SQLite it currently fails under concurrent load ("database is locked" after
  the 15 s busy timeout: every SQLite transaction takes the write lock; the route's read
  transaction, begun in a worker thread, lasts until the request's session is closed after the
  response, while the next request's caller look-up runs BEGIN IMMEDIATE on the event loop and
  blocks it), so it is loaded on PostgreSQL only unless asked; failures are counted and shown.

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
import base64
import contextlib
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.bench_policy import realistic_mix
from jaejin.accounts.service import create_client
from jaejin.core.database import build_engine, session_scope
from jaejin.core.migrate import upgrade
from jaejin.directory.store import Institution

GOAL_DECISIONS_PER_SECOND = 2_000
GOAL_P99_MS = 15.0
CONCURRENCY = 16
SECRET_KEY = "bench-secret-key-long-enough-for-hs256-0123456789abcdef"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- database --------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    server = os.environ.get("JAEJIN_BENCH_POSTGRES_URL")
    if not server:
        with tempfile.TemporaryDirectory(prefix="jaejin-bench-") as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    base = make_url(server).set(drivername="postgresql+psycopg")
    name = f"jaejin_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def prepare(url: str) -> tuple[str, str]:
    """Migrate, create an institution and a system client; returns its credentials."""
    upgrade(url)
    engine = build_engine(url)
    with session_scope(engine) as db:
        institution = Institution(code="BENCH", name_ko="벤치 의원", name_en="Bench Clinic",
                                  kind="clinic", region="KR-11", designations=[])
        db.add(institution)
        db.flush()
        client, secret = create_client(db, institution, "bench", ["policy.evaluate"])
        credentials = (client.client_id, secret)
    engine.dispose()
    return credentials


# -- server ----------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found.extend(_descendants(int(child)))
    return found


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU of the server process and its workers (Linux /proc); 0 elsewhere."""
    total = 0
    try:
        for process in _descendants(pid):
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    port: int
    pid: int


@contextlib.contextmanager
def serve(url: str, workers: int) -> Iterator[Server]:
    port = free_port()
    environment = os.environ | {
        "JAEJIN_DATABASE_URL": url,
        "JAEJIN_SECRET_KEY": SECRET_KEY,
        "JAEJIN_ENVIRONMENT": "development",
        "JAEJIN_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    environment.pop("JAEJIN_REDIS_URL", None)
    command = [
        sys.executable, "-m", "uvicorn", "jaejin.asgi:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]
    process = subprocess.Popen(command, env=environment)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield Server(port, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def access_token(port: int, credentials: tuple[str, str]) -> str:
    basic = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    response = httpx.post(f"http://127.0.0.1:{port}/oauth2/token",
                          data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {basic}"}, timeout=10)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


# -- load ------------------------------------------------------------------------------------


def encoded_requests(method: str, path: str, token: str, bodies: list[bytes] | None) -> list[bytes]:
    # Accept-Encoding as common HTTP clients send it: larger answers come back gzipped.
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\nAccept-Encoding: gzip, deflate\r\n")
    if bodies is None:
        return [(head + "\r\n").encode()]
    return [
        (head + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        + body
        for body in bodies
    ]


class BadResponse(RuntimeError):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise BadResponse("response without Content-Length")
    return status, await reader.readexactly(length)


@dataclass
class Round:
    succeeded: int
    failed: int
    first_failure: str | None
    seconds: float
    latencies_ms: list[float]
    load_cpu_seconds: float
    server_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.succeeded / self.seconds


async def run_load(port: int, requests: list[bytes], seconds: float,
                   concurrency: int = CONCURRENCY, server_pid: int | None = None) -> Round:
    """`concurrency` keep-alive connections sending back to back for `seconds`."""
    latencies: list[float] = []
    failures: list[str] = []
    stop_at = 0.0
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]

    async def client(index: int) -> int:
        reader, writer = connections[index]
        done = 0
        position = index
        while time.perf_counter() < stop_at:
            payload = requests[position % len(requests)]
            position += concurrency
            started = time.perf_counter()
            writer.write(payload)
            status, body = await _read_response(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            if status == 200:
                done += 1
            else:
                failures.append(f"{status} {body[:200].decode(errors='replace')}")
        return done

    cpu_before = time.process_time()
    server_before = server_cpu_seconds(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    stop_at = started + seconds
    counts = await asyncio.gather(*(client(index) for index in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    server = server_cpu_seconds(server_pid) - server_before if server_pid else 0.0
    for _reader, writer in connections:
        writer.close()
    return Round(sum(counts), len(failures), failures[0] if failures else None, elapsed,
                 latencies, cpu, server)


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


@dataclass
class Summary:
    label: str
    rate: float
    rates: list[float]
    p50: float
    p99: float
    load_cpu_share: float
    server_cpu_us: float
    failed: int
    first_failure: str | None


def summarise(label: str, rounds: list[Round]) -> Summary:
    rates = [round_.rate for round_ in rounds]
    median_round = sorted(rounds, key=lambda round_: round_.rate)[len(rounds) // 2]
    answered = median_round.succeeded + median_round.failed
    return Summary(
        label=label,
        rate=statistics.median(rates),
        rates=rates,
        p50=percentile(median_round.latencies_ms, 0.50) if answered else math.nan,
        p99=percentile(median_round.latencies_ms, 0.99) if answered else math.nan,
        load_cpu_share=median_round.load_cpu_seconds / median_round.seconds,
        server_cpu_us=median_round.server_cpu_seconds / max(1, answered) * 1e6,
        failed=sum(round_.failed for round_ in rounds),
        first_failure=next((round_.first_failure for round_ in rounds if round_.first_failure),
                           None),
    )


#: (label, method, path): the decisions, then the baselines, measured in alternating rounds.
DECISIONS = ("decisions", "POST", "/api/v1/policy/evaluate")
BASELINE = ("baseline", "GET", "/api/v1/policy/packs?in_force_on=2016-01-01")
DIRECTORY = ("directory", "GET", "/api/v1/institutions")


def measure(url: str, credentials: tuple[str, str], workers: int, seconds: float,
            rounds: int, with_directory: bool) -> tuple[list[Summary], dict[str, int]]:
    bodies = [orjson.dumps(payload) for payload in realistic_mix()]
    with serve(url, workers) as server:
        port = server.port
        token = access_token(port, credentials)
        outcomes = check_decisions(port, token, bodies)
        workloads = [
            (label, encoded_requests(method, path, token, bodies if method == "POST" else None))
            for label, method, path in (DECISIONS, BASELINE, DIRECTORY)
            if with_directory or label != "directory"
        ]
        # Warm every path (catalogues, holiday calendars, connection pools) before timing.
        for _label, requests in workloads:
            asyncio.run(run_load(port, requests, min(2.0, seconds)))
        measured: dict[str, list[Round]] = {label: [] for label, _requests in workloads}
        for _ in range(rounds):
            for label, requests in workloads:
                measured[label].append(asyncio.run(run_load(port, requests, seconds,
                                                            server_pid=server.pid)))
    return [summarise(label, measured[label]) for label, _requests in workloads], outcomes


def _line(summary: Summary, path: str) -> str:
    spread = f"{min(summary.rates):,.0f}-{max(summary.rates):,.0f}"
    line = (f"    {summary.label:<10} {path:<46} {summary.rate:>7,.0f} /s ({spread})  "
            f"p50 {summary.p50:6.2f} ms  p99 {summary.p99:6.2f} ms  "
            f"server CPU {summary.server_cpu_us:5.0f} us/req  "
            f"load gen. {summary.load_cpu_share:.0%} of a core")
    if summary.failed:
        line += f"\n      FAILED {summary.failed} requests, first: {summary.first_failure}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--directory-on-sqlite", action="store_true",
                        help="also load GET /api/v1/institutions on SQLite (each refused "
                             "request waits out the 15 s busy timeout: slow)")
    arguments = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    with bench_database() as url:
        credentials = prepare(url)
        database = "postgresql" if url.startswith("postgresql") else "sqlite"
        with_directory = database == "postgresql" or arguments.directory_on_sqlite
        print(f"policy API over HTTP: {CONCURRENCY} concurrent keep-alive clients, {database}, "
              f"{os.cpu_count()} CPUs shared by server and load generator, "
              f"{arguments.rounds} x {arguments.seconds:g} s rounds (median round shown); "
              f"load average at start {os.getloadavg()[0]:.1f}")
        paths = {label: f"{method} {path}" for label, method, path in
                 (DECISIONS, BASELINE, DIRECTORY)}
        for workers in arguments.workers:
            summaries, outcomes = measure(url, credentials, workers, arguments.seconds,
                                          arguments.rounds, with_directory)
            mix = ", ".join(f"{count} {kind}" for kind, count in sorted(outcomes.items()))
            print(f"\n  uvicorn workers={workers}   (mix of {sum(outcomes.values())}: {mix}; "
                  f"load average {os.getloadavg()[0]:.1f})")
            for summary in summaries:
                print(_line(summary, paths[summary.label]))
            decisions, baseline, *directory = summaries
            print(f"    decisions / baseline: {decisions.rate / baseline.rate:.2f}x throughput, "
                  f"{baseline.server_cpu_us / decisions.server_cpu_us:.2f}x requests per "
                  "server CPU-second")
            if directory and not directory[0].failed:
                print(f"    decisions / directory: {decisions.rate / directory[0].rate:.2f}x "
                      "throughput")
            elif not directory:
                print("    directory route not loaded on SQLite (see the module docstring; "
                      "--directory-on-sqlite to try)")
            rate_verdict = "meets" if decisions.rate >= GOAL_DECISIONS_PER_SECOND else "MISSES"
            p99_verdict = "meets" if decisions.p99 < GOAL_P99_MS else "MISSES"
            print(f"    goal {GOAL_DECISIONS_PER_SECOND:,}/s: {rate_verdict} "
                  f"({decisions.rate / GOAL_DECISIONS_PER_SECOND:.2f}x); "
                  f"goal p99 < {GOAL_P99_MS:g} ms: {p99_verdict}")


if __name__ == "__main__":
    main()
