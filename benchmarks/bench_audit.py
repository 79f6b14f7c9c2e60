"""Audited commits beside plain commits measured in the same run, and the sealer's throughput.

    .venv/bin/python -m benchmarks.bench_audit [--seconds 5] [--threads 16] [--backlog 20000]

On PostgreSQL (JAEJIN_BENCH_POSTGRES_URL, or the local server when it answers; a throw-away
database) and on SQLite (a temporary file), `--threads` threads each loop for `--seconds`:

* audited: one transaction = `core.audit.record` (one unsealed entry) + commit, while the sealer
  runs beside it every JAEJIN_AUDIT_SEAL_SECONDS as `jaejin worker` runs it;
* plain: one transaction = one INSERT of a row as wide as an audit entry + commit, through the
  same engine and pool.

Load-independent figures are printed beside the rates (the machine may be shared): SQL
statements per commit (transaction control left out), this process's CPU per commit, and on a
local PostgreSQL the CPU its server processes spent per commit (read from /proc for the
backends of this engine's connections: the sealer's included).

Then `--backlog` entries are written unsealed and sealed at once (`seal_pending`): entries
sealed per second and CPU per entry, and the whole trail is verified.

Before sealing, every audited write read and locked a chain head and updated it (3 statements,
the head held until commit): 485 (1 chain) and 777 (16 chains) against 1,218-1,562 plain
commits/s on PostgreSQL, 1,524 against 2,710 on SQLite, on the shared 2-CPU machine.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Column, Engine, Integer, MetaData, String, Table, event, insert, text
from sqlalchemy.orm import Session

from benchmarks.harness import (
    cpu_seconds,
    load_average,
    postgres_database,
    postgres_server,
    sqlite_database,
)
from jaejin.core.audit import (
    AuditActor,
    AuditEvent,
    record,
    record_many,
    seal_and_verify,
    seal_pending,
)
from jaejin.core.database import build_engine, session_factory
from jaejin.core.migrate import upgrade
from jaejin.jobs import start_audit_sealer

#: The figure every audited write route is bounded by (issue 6: 2,000 single readings/s).
GOAL_AUDITED_PER_SECOND = 2_000
TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|SAVEPOINT|RELEASE|ROLLBACK|COMMIT)\b", re.I)

_PLAIN = Table("bench_plain_rows", MetaData(), Column("id", Integer, primary_key=True),
               Column("actor_id", String(80)), Column("action", String(40)),
               Column("resource_type", String(60)), Column("resource_id", String(80)),
               Column("patient_id", Integer), Column("purpose", String(40)),
               Column("detail", JSON), Column("entry_hash", String(64)))
ACTOR = AuditActor("client", "bench-gateway", "Bench gateway", "127.0.0.1", "bench/1.0")


@dataclass
class ServerProcesses:
    """The PostgreSQL backends serving this engine's connections (empty on SQLite, or when the
    server is not on this machine)."""

    pids: set[int] = field(default_factory=set)

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)


def watch_backends(engine: Engine) -> ServerProcesses:
    backends = ServerProcesses()
    if engine.dialect.name != "postgresql":
        return backends

    @event.listens_for(engine, "connect")
    def _remember(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = int(cursor.fetchone()[0])
        dbapi_connection.commit()
        if os.path.exists(f"/proc/{pid}/stat"):
            backends.pids.add(pid)

    return backends


@contextmanager
def counted_statements(engine: Engine) -> Iterator[list[int]]:
    count = [0]

    def counter(_connection: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any,
                _many: bool) -> None:
        if not TRANSACTION_CONTROL.match(statement):
            count[0] += 1

    event.listen(engine, "before_cursor_execute", counter)
    try:
        yield count
    finally:
        event.remove(engine, "before_cursor_execute", counter)


@dataclass
class Result:
    commits: int
    seconds: float
    statements: int
    client_cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.commits / self.seconds

    def per_commit(self) -> str:
        commits = max(1, self.commits)
        server = (f", server {self.server_cpu / commits * 1e6:,.0f} us"
                  if self.server_cpu else "")
        return (f"{self.statements / commits:.2f} statements, CPU here "
                f"{self.client_cpu / commits * 1e6:,.0f} us{server} per commit")


def hammer(engine: Engine, backends: ServerProcesses, work: Callable[[Session, int], None],
           threads: int, seconds: float) -> Result:
    sessions = session_factory(engine)
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = 0.0

    def loop(index: int) -> None:
        start.wait()
        with sessions() as session:
            while time.perf_counter() < stop_at:
                work(session, index)
                session.commit()
                counts[index] += 1

    workers = [threading.Thread(target=loop, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    with counted_statements(engine) as statements:
        stop_at = time.perf_counter() + seconds
        started, client_before, server_before = (time.perf_counter(), time.process_time(),
                                                 backends.cpu())
        start.wait()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        client_cpu, server_cpu = (time.process_time() - client_before,
                                  backends.cpu() - server_before)
    return Result(sum(counts), elapsed, statements[0], client_cpu, server_cpu)


def audited(session: Session, index: int) -> None:
    record(session, ACTOR, AuditEvent("create", "monitoring_reading", str(index), 1, None,
                                      detail={"created": 1}))


def plain(session: Session, index: int) -> None:
    session.execute(insert(_PLAIN), {"actor_id": "bench-gateway", "action": "create",
                                     "resource_type": "monitoring_reading",
                                     "resource_id": str(index), "patient_id": 1,
                                     "purpose": "treatment", "detail": {"created": 1},
                                     "entry_hash": "0" * 64})


def write_backlog(engine: Engine, entries: int) -> None:
    events = [AuditEvent("read", "patient", str(number), number, None, detail={"n": number})
              for number in range(1000)]
    with session_factory(engine)() as session:
        for _ in range(entries // len(events)):
            record_many(session, ACTOR, events)
        session.commit()


def measure(url: str, label: str, threads: int, seconds: float, backlog: int) -> None:
    engine = build_engine(url, pool_size=threads + 1)
    backends = watch_backends(engine)
    _PLAIN.create(engine, checkfirst=True)
    hammer(engine, backends, audited, threads, min(1.0, seconds))  # warm the pool
    hammer(engine, backends, plain, threads, min(1.0, seconds))
    seal_pending(engine)
    stop_sealer = start_audit_sealer(engine)
    try:
        audited_result = hammer(engine, backends, audited, threads, seconds)
    finally:
        stop_sealer.set()
    plain_result = hammer(engine, backends, plain, threads, seconds)
    seal_pending(engine)

    write_backlog(engine, backlog)
    with counted_statements(engine) as statements:
        started, client_before, server_before = (time.perf_counter(), time.process_time(),
                                                 backends.cpu())
        sealed = seal_pending(engine).sealed
        seal_seconds = time.perf_counter() - started
        seal_client = time.process_time() - client_before
        seal_server = backends.cpu() - server_before
    started = time.perf_counter()
    report = seal_and_verify(engine)
    verify_seconds = time.perf_counter() - started
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            size = connection.execute(text(
                "SELECT pg_size_pretty(pg_relation_size('ix_audit_log_unsealed'))")).scalar()
        index = f"; unsealed index now {size}"
    else:
        index = ""
    engine.dispose()

    ratio = audited_result.rate / plain_result.rate
    goal = "meets" if audited_result.rate >= GOAL_AUDITED_PER_SECOND else "MISSES"
    print(f"  {label:<11} audited {audited_result.rate:>7,.0f} commits/s   plain "
          f"{plain_result.rate:>7,.0f} commits/s   ratio {ratio:.2f}x   ({load_average()})")
    print(f"  {'':<11} audited: {audited_result.per_commit()}")
    print(f"  {'':<11} plain:   {plain_result.per_commit()}")
    server = (f", server {seal_server / max(1, sealed) * 1e6:,.1f} us" if seal_server else "")
    print(f"  {'':<11} sealer: {sealed:,} entries in {seal_seconds:.2f} s = "
          f"{sealed / seal_seconds:,.0f} entries/s, {statements[0]} statements, CPU here "
          f"{seal_client / max(1, sealed) * 1e6:,.1f} us{server} per entry{index}")
    print(f"  {'':<11} verify: {report.entries_checked:,} entries in {report.chains_checked} "
          f"chain(s) in {verify_seconds:.2f} s, {'intact' if report.intact else 'BROKEN'}; "
          f"goal {GOAL_AUDITED_PER_SECOND:,} audited commits/s: {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--backlog", type=int, default=20_000,
                        help="entries sealed at once for the sealer's throughput")
    arguments = parser.parse_args()
    print(f"audited commits vs plain commits: {arguments.threads} threads, "
          f"{arguments.seconds:g} s runs, {os.cpu_count()} CPUs ({load_average()} at start)")
    if postgres_server() is not None:
        with postgres_database("jaejin_bench_audit") as url:
            upgrade(url)
            measure(url, "postgresql", arguments.threads, arguments.seconds, arguments.backlog)
    else:
        print("  postgresql: no server (set JAEJIN_BENCH_POSTGRES_URL)")
    with sqlite_database() as url:
        upgrade(url)
        measure(url, "sqlite", arguments.threads, arguments.seconds, arguments.backlog)


if __name__ == "__main__":
    main()
