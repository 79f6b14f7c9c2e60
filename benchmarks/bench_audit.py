"""Audited commits per second with many writers, beside plain inserts measured in the same run.

    .venv/bin/python -m benchmarks.bench_audit [--seconds 5] [--threads 16] [--chains 16]

On PostgreSQL (JAEJIN_BENCH_POSTGRES_URL, or the local server when it answers; a throw-away
database) and on SQLite (a temporary file), `--threads` threads each loop for `--seconds`:

* audited: one transaction = `core.audit.record` (one hash-chained entry) + commit;
* baseline: one transaction = one plain INSERT of a row as wide as an audit entry + commit,
  with no chain, through the same engine and pool.

The ratio is what the hash chain costs a writing route. Before several chains, every audited
commit locked the one chain head until commit, so audited commits queued behind each other
(80-155/s on PostgreSQL against 2,400 plain inserts/s). PostgreSQL runs twice: with one chain
(JAEJIN_AUDIT_CHAINS=1, the old behaviour) and with `--chains`. Afterwards the whole trail is
verified (`core.audit.verify_chain`) and the time it takes is printed.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, insert
from sqlalchemy.orm import Session

from benchmarks.harness import load_average, postgres_database, postgres_server, sqlite_database
from jaejin.core.audit import AuditActor, AuditEvent, record, verify_chain
from jaejin.core.config import get_settings
from jaejin.core.database import build_engine, session_factory
from jaejin.core.migrate import upgrade

#: The figure every audited write route is bounded by (issue 6: 2,000 single readings/s).
GOAL_AUDITED_PER_SECOND = 2_000

_PLAIN = Table("bench_plain_rows", MetaData(), Column("id", Integer, primary_key=True),
               Column("actor_id", String(80)), Column("action", String(40)),
               Column("resource_type", String(60)), Column("resource_id", String(80)),
               Column("patient_id", Integer), Column("purpose", String(40)),
               Column("detail", JSON), Column("entry_hash", String(64)))
ACTOR = AuditActor("client", "bench-gateway", "Bench gateway", "127.0.0.1", "bench/1.0")


@dataclass
class Result:
    commits: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.commits / self.seconds


def hammer(session_for: Callable[[], Session], work: Callable[[Session, int], None],
           threads: int, seconds: float) -> Result:
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = 0.0

    def loop(index: int) -> None:
        start.wait()
        with session_for() as session:
            while time.perf_counter() < stop_at:
                work(session, index)
                session.commit()
                counts[index] += 1

    workers = [threading.Thread(target=loop, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()
    start.wait()
    for worker in workers:
        worker.join()
    return Result(sum(counts), time.perf_counter() - started)


def audited(session: Session, index: int) -> None:
    record(session, ACTOR, AuditEvent("create", "monitoring_reading", str(index), 1, None,
                                      detail={"created": 1}))


def plain(session: Session, index: int) -> None:
    session.execute(insert(_PLAIN), {"actor_id": "bench-gateway", "action": "create",
                                     "resource_type": "monitoring_reading",
                                     "resource_id": str(index), "patient_id": 1,
                                     "purpose": "treatment", "detail": {"created": 1},
                                     "entry_hash": "0" * 64})


def measure(url: str, label: str, threads: int, seconds: float, chains: int) -> None:
    os.environ["JAEJIN_AUDIT_CHAINS"] = str(chains)
    get_settings.cache_clear()
    engine = build_engine(url, pool_size=threads)
    _PLAIN.create(engine, checkfirst=True)
    sessions = session_factory(engine)
    hammer(sessions, audited, threads, min(1.0, seconds))  # warm: pool, chain heads
    hammer(sessions, plain, threads, min(1.0, seconds))
    audited_result = hammer(sessions, audited, threads, seconds)
    plain_result = hammer(sessions, plain, threads, seconds)
    started = time.perf_counter()
    with sessions() as session:
        report = verify_chain(session)
    verify_seconds = time.perf_counter() - started
    engine.dispose()
    ratio = audited_result.rate / plain_result.rate
    goal = "meets" if audited_result.rate >= GOAL_AUDITED_PER_SECOND else "MISSES"
    print(f"  {label:<34} audited {audited_result.rate:>7,.0f} commits/s   "
          f"baseline plain insert {plain_result.rate:>7,.0f} commits/s   ratio {ratio:.2f}x   "
          f"({load_average()})")
    print(f"  {'':<34} verify: {report.entries_checked:,} entries in {report.chains_checked} "
          f"chains in {verify_seconds:.2f} s, {'intact' if report.intact else 'BROKEN'}; "
          f"goal {GOAL_AUDITED_PER_SECOND:,} audited commits/s: {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--chains", type=int, default=16, help="chains on PostgreSQL")
    arguments = parser.parse_args()
    print(f"audited commits vs plain inserts: {arguments.threads} threads, "
          f"{arguments.seconds:g} s runs, {os.cpu_count()} CPUs ({load_average()} at start)")
    if postgres_server() is not None:
        for chains in (1, arguments.chains):
            with postgres_database("jaejin_bench_audit") as url:
                upgrade(url)
                measure(url, f"postgresql, {chains} chain{'s' if chains > 1 else ''}",
                        arguments.threads, arguments.seconds, chains)
    else:
        print("  postgresql: no server (set JAEJIN_BENCH_POSTGRES_URL)")
    with sqlite_database() as url:
        upgrade(url)
        measure(url, "sqlite, 1 chain", arguments.threads, arguments.seconds, 1)


if __name__ == "__main__":
    main()
