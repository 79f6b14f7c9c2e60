"""What every HTTP benchmark needs once: a throw-away database, the real app under uvicorn with
its CPU time measured, a bearer token, a minimal keep-alive load generator, rounds and summaries.

Typical use::

    from benchmarks import harness

    with harness.bench_database("jaejin_bench_mine", postgres=True) as url:
        credentials = prepare(url)                      # the benchmark's own world
        with harness.serve(url, workers=2) as server:
            token = harness.access_token(server.port, credentials)
            requests = [harness.http_request("GET", "/api/v1/institutions", token)]
            round_ = asyncio.run(harness.run_load(server.port, itertools.cycle(requests),
                                                  seconds=8, server_pid=server.pid))
            summary = harness.summarise("directory", [round_])
            print(harness.format_line(summary))

The load generator is a minimal HTTP/1.1 client on asyncio streams: httpx would spend more CPU
than the server on a 2-core machine. It shares the machine with the server, so every figure is
printed with the load generator's CPU share and the server's CPU time per request (its process
tree's user + system time from /proc, over the round), which does not depend on what else the
machine is running. Print `load_average()` beside every measured figure.

The API of this module is shared by every benchmark: add to it, do not change what exists.
"""

from __future__ import annotations

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
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from jaejin.directory.store import Institution

#: Used when JAEJIN_BENCH_POSTGRES_URL is not set and a benchmark needs PostgreSQL.
DEFAULT_POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Concurrent keep-alive connections of the issues' goals.
CONCURRENCY = 16
SECRET_KEY = "bench-secret-key-long-enough-for-hs256-0123456789abcdef"
REPOSITORY = Path(__file__).resolve().parents[1]


# -- figures ---------------------------------------------------------------------------------


def percentile(samples: Collection[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def load_average() -> str:
    """The 1-minute load average, to print beside measured figures."""
    return f"load average {os.getloadavg()[0]:.1f}"


def verdict(met: bool) -> str:
    return "meets" if met else "MISSES"


def install_uvloop() -> None:
    """The load generator on uvloop when available (less of its CPU taken from the server)."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


# -- database --------------------------------------------------------------------------------


def postgres_server(required: bool = False) -> str | None:
    """The PostgreSQL server benchmarks create their databases on.

    JAEJIN_BENCH_POSTGRES_URL (or JAEJIN_BENCH_DATABASE_URL) when set; otherwise the local
    server if it answers; None when there is none and it is not `required`.
    """
    named = os.environ.get("JAEJIN_BENCH_POSTGRES_URL") or os.environ.get(
        "JAEJIN_BENCH_DATABASE_URL")
    if named:
        return named
    if required or _answers(DEFAULT_POSTGRES_SERVER):
        return DEFAULT_POSTGRES_SERVER
    return None


def _answers(server: str) -> bool:
    url = make_url(server)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def postgres_database(prefix: str = "jaejin_bench", server: str | None = None) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server, dropped afterwards; yields its URL."""
    base = make_url(server or postgres_server(required=True) or DEFAULT_POSTGRES_SERVER)
    base = base.set(drivername="postgresql+psycopg")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    """A fresh SQLite file in a temporary folder, removed afterwards; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="jaejin-bench-") as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"


@contextlib.contextmanager
def bench_database(prefix: str = "jaejin_bench", *, postgres: bool | None = None
                   ) -> Iterator[str]:
    """A fresh database: PostgreSQL when `postgres` is True; SQLite when False; when None,
    PostgreSQL only if JAEJIN_BENCH_POSTGRES_URL (or JAEJIN_BENCH_DATABASE_URL) names one."""
    if postgres is None:
        postgres = bool(os.environ.get("JAEJIN_BENCH_POSTGRES_URL")
                        or os.environ.get("JAEJIN_BENCH_DATABASE_URL"))
    if postgres:
        with postgres_database(prefix) as url:
            yield url
    else:
        with sqlite_database() as url:
            yield url


def database_kind(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


# -- server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for child in task.read_text().split():
                found.extend(_descendants(int(child)))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children, e.g. uvicorn's workers (Linux /proc);
    0 elsewhere."""
    total = 0
    try:
        for process in _descendants(pid):
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return total / os.sysconf("SC_CLK_TCK")


#: The name the first benchmarks used.
server_cpu_seconds = cpu_seconds


def connection_spread(server_pid: int, port: int) -> tuple[int, ...]:
    """Established connections to `port` held by each worker process of the server (its
    spawned children; the server itself when it has none), most first: e.g. (8, 8), or
    (16, 0) when one worker took them all. Linux /proc; () elsewhere."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                        inodes.add(f"socket:[{fields[9]}]")
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
        workers = [int(pid) for pid in children
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()] or [server_pid]
        held = []
        for pid in workers:
            count = 0
            for descriptor in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    count += os.readlink(descriptor) in inodes
            held.append(count)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ()
    return tuple(sorted(held, reverse=True))


def format_spread(spreads: Iterable[tuple[int, ...]]) -> str:
    """'conns/worker 8/8, 9/7' for the rounds' spreads over several workers; '' otherwise."""
    shown = ["/".join(map(str, spread)) for spread in spreads if len(spread) > 1]
    return f"conns/worker {', '.join(shown)}" if shown else ""


@dataclass
class Server:
    port: int
    pid: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serve(url: str, workers: int = 1, *, environment: Mapping[str, str] | None = None,
          port: int | None = None, fast: bool = True, quiet: bool = False,
          startup_seconds: float = 90.0, app: str = "jaejin.asgi:app") -> Iterator[Server]:
    """The real application (or `app`, any ASGI app's import string, which must answer GET
    /healthz) under `jaejin serve` on a free port, until the block ends.

    `fast`: uvloop and httptools, as in production (otherwise uvicorn's automatic choice);
    never an access log. `environment` adds to or overrides the JAEJIN_* settings
    (JAEJIN_REDIS_URL is dropped unless given there).
    """
    port = port or free_port()
    settings = dict(os.environ)
    settings.pop("JAEJIN_REDIS_URL", None)
    settings |= {
        "JAEJIN_DATABASE_URL": url,
        "JAEJIN_SECRET_KEY": SECRET_KEY,
        "JAEJIN_ENVIRONMENT": "development",
        "JAEJIN_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    settings |= dict(environment or {})
    # `jaejin serve`, as in production: with several workers its supervisor hands each
    # connection to the worker holding the fewest (jaejin/core/serving.py). The benchmarks
    # migrate their databases themselves.
    command = [sys.executable, "-m", "jaejin", "serve", "--app", app, "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--log-level", "warning",
               "--no-access-log", "--no-migrate"]
    if fast:
        command += ["--loop", "uvloop", "--http", "httptools"]
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(command, env=settings, cwd=REPOSITORY, stdout=output,
                               stderr=output)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jaejin serve exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jaejin serve did not answer /healthz within {startup_seconds} s")
            time.sleep(0.1)
        yield Server(port, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def access_token(port: int, credentials: tuple[str, str]) -> str:
    """A bearer token for a system client (client id, secret) from /oauth2/token."""
    basic = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    response = httpx.post(f"http://127.0.0.1:{port}/oauth2/token",
                          data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {basic}"}, timeout=10)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


# -- load ------------------------------------------------------------------------------------


def http_request(method: str, path: str, token: str | None = None, body: bytes | None = None,
                 *, headers: Mapping[str, str] | None = None, gzip: bool = True) -> bytes:
    """One encoded HTTP/1.1 keep-alive request; a JSON body when `body` is given.

    `gzip`: Accept-Encoding as common HTTP clients send it (larger answers come back gzipped).
    """
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    if gzip:
        head += "Accept-Encoding: gzip, deflate\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    return (head + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def encoded_requests(method: str, path: str, token: str, bodies: list[bytes] | None
                     ) -> list[bytes]:
    """One request per body (or one body-less request)."""
    if bodies is None:
        return [http_request(method, path, token)]
    return [http_request(method, path, token, body) for body in bodies]


class BadResponse(RuntimeError):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one response with a Content-Length (all the app sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            return status, b""
        raise BadResponse(f"status {status} without Content-Length")
    return status, await reader.readexactly(length)


async def open_connections(port: int, count: int
                           ) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


@dataclass
class Round:
    """One timed run of a workload."""

    statuses: Counter[int]
    expected: frozenset[int]
    seconds: float
    latencies_ms: list[float]
    load_cpu_seconds: float
    server_cpu_seconds: float
    first_failure: str | None = None
    bodies: list[bytes] = field(default_factory=list)
    #: Connections per server worker at the round's end (see `connection_spread`).
    spread: tuple[int, ...] = ()

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def succeeded(self) -> int:
        return sum(count for status, count in self.statuses.items() if status in self.expected)

    @property
    def failed(self) -> int:
        return self.answered - self.succeeded

    @property
    def rate(self) -> float:
        """Expected answers per second."""
        return self.succeeded / self.seconds if self.seconds else 0.0

    def require_success(self) -> Round:
        """This round, or BadResponse naming the first unexpected answer."""
        if self.failed:
            raise BadResponse(f"{self.failed} unexpected answers; first: {self.first_failure}")
        return self


async def run_load(port: int, requests: Iterable[bytes], *, seconds: float | None = None,
                   concurrency: int = CONCURRENCY, server_pid: int | None = None,
                   expected: int | Collection[int] = 200, keep_bodies: bool = False) -> Round:
    """`concurrency` keep-alive connections sending `requests` back to back, each taken once,
    until they run out or `seconds` have passed (pass `itertools.cycle(list)` to repeat a list;
    then `seconds` is required)."""
    wanted = frozenset((expected,) if isinstance(expected, int) else expected)
    supply = iter(requests)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    bodies: list[bytes] = []
    connections = await open_connections(port, concurrency)
    stop_at = math.inf

    async def client(index: int) -> None:
        reader, writer = connections[index]
        while time.perf_counter() < stop_at:
            payload = next(supply, None)
            if payload is None:
                return
            started = time.perf_counter()
            writer.write(payload)
            status, body = await read_response(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] += 1
            if status not in wanted and not failures:
                failures.append(f"{status} {body[:300].decode(errors='replace')}")
            if keep_bodies:
                bodies.append(body)

    cpu_before = time.process_time()
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    if seconds is not None:
        stop_at = started + seconds
    spread: tuple[int, ...] = ()
    try:
        await asyncio.gather(*(client(index) for index in range(concurrency)))
    finally:
        elapsed = time.perf_counter() - started
        load_cpu = time.process_time() - cpu_before
        server_cpu = cpu_seconds(server_pid) - server_before if server_pid else 0.0
        if server_pid:  # while the connections are still open
            spread = connection_spread(server_pid, port)
        for _reader, writer in connections:
            writer.close()
    return Round(statuses, wanted, elapsed, latencies, load_cpu, server_cpu,
                 failures[0] if failures else None, bodies, spread)


@dataclass
class Summary:
    """The median round of a workload (by rate), with the spread of all rounds."""

    label: str
    rate: float
    rates: list[float]
    p50: float
    p99: float
    load_cpu_share: float
    server_cpu_us: float
    failed: int
    first_failure: str | None
    statuses: Counter[int]
    #: Each round's connections per server worker (see `connection_spread`).
    spreads: list[tuple[int, ...]] = field(default_factory=list)


def summarise(label: str, rounds: list[Round], per: int = 1) -> Summary:
    """`per`: items per request (e.g. readings per batch), so rates and CPU are per item."""
    rates = [round_.rate * per for round_ in rounds]
    median = sorted(rounds, key=lambda round_: round_.rate)[len(rounds) // 2]
    answered = median.answered
    return Summary(
        label=label,
        rate=statistics.median(rates),
        rates=rates,
        p50=percentile(median.latencies_ms, 0.50),
        p99=percentile(median.latencies_ms, 0.99),
        load_cpu_share=median.load_cpu_seconds / median.seconds if median.seconds else 0.0,
        server_cpu_us=median.server_cpu_seconds / max(1, answered * per) * 1e6,
        failed=sum(round_.failed for round_ in rounds),
        first_failure=next((round_.first_failure for round_ in rounds if round_.first_failure),
                           None),
        statuses=sum((round_.statuses for round_ in rounds), Counter()),
        spreads=[round_.spread for round_ in rounds],
    )


def format_line(summary: Summary, description: str = "", *, unit: str = "req",
                width: int = 56) -> str:
    """One line: rate (spread), p50, p99, server CPU per item, load generator's share."""
    name = f"{summary.label} {description}".strip()
    spread = f"{min(summary.rates, default=0):,.0f}-{max(summary.rates, default=0):,.0f}"
    line = (f"    {name:<{width}} {summary.rate:>8,.0f} /s ({spread})  "
            f"p50 {summary.p50:6.2f} ms  p99 {summary.p99:6.2f} ms  "
            f"server CPU {summary.server_cpu_us:5.0f} us/{unit}  "
            f"load gen. {summary.load_cpu_share:.0%} of a core")
    if spread := format_spread(summary.spreads):
        line += f"  {spread}"
    if summary.failed:
        line += f"\n      FAILED {summary.failed} requests, first: {summary.first_failure}"
    return line


def bench_institution(db: Session) -> Institution:
    """The benchmarks' clinic (Seoul, no designations), flushed so its id is known."""
    institution = Institution(code="BENCH", name_ko="벤치 의원", name_en="Bench Clinic",
                              kind="clinic", region="KR-11", designations=[])
    db.add(institution)
    db.flush()
    return institution
