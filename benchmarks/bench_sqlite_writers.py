"""SQLite writers of several processes: the writer lock file against SQLite's busy handler.

    .venv/bin/python -m benchmarks.bench_sqlite_writers [--seconds 3] [--rounds 2]
        [--processes 2] [--threads 8] [--outside-ms 0]

`--processes` processes (started fresh, as `jaejin serve --workers N` starts them) each run
`--threads` threads on one temporary file database through `core.database.build_engine`; every
thread loops on booking-like write transactions for `--seconds`: read whether the slot is taken,
insert the booking, insert an audit-like row, commit (with `--outside-ms`, each thread also
spends that much CPU between its transactions, as a request does outside its transaction).
Two ways of waiting for another process's writer, alternated round by round in the same minutes:

* busy handler: `build_engine(url, sqlite_writer_lock_file=False)`, the waiting before the
  writer lock file (SQLite's busy handler sleeps 1, 2, 5 ... 100 ms between tries); the threads
  of one process still take turns on their own lock, released once SQLite has committed;
* lock file: `build_engine(url)`, writers of every process take turns on `<database>.writer-lock`.

Printed per way: transactions/s, p50 / p99 / max of a transaction including its wait, each
process's share of the commits (fairness: does one process starve the other?), and the CPU the
processes spent per transaction (the lock file's waiters poll; the figure shows what it costs,
whatever else runs on the machine). Then the lock file's figures as ratios to the busy handler's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.harness import load_average
from jaejin.core.database import build_engine

WAYS: dict[str, dict[str, Any]] = {
    "busy handler": {"sqlite_writer_lock_file": False},
    "lock file": {},
}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_bookings (id INTEGER PRIMARY KEY, practitioner_id INTEGER,"
    " starts_at INTEGER, patient_id INTEGER, status TEXT, UNIQUE (practitioner_id, starts_at))",
    "CREATE TABLE IF NOT EXISTS bench_audit (id INTEGER PRIMARY KEY, action TEXT,"
    " resource_id INTEGER, detail TEXT)",
)


@dataclass
class ProcessResult:
    latencies: list[float]
    cpu_seconds: float


def _work(seconds: float) -> None:
    """CPU spent outside the transaction, as a request spends it parsing and answering."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _writer_process(url: str, way: str, threads: int, seconds: float, outside: float,
                    process_number: int, start: BarrierType, results: Any) -> None:
    engine = build_engine(url, pool_size=threads, **WAYS[way])
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def book(thread_number: int, until: float) -> None:
        practitioner = process_number * 1_000 + thread_number
        slot = 0
        own = latencies[thread_number]
        while time.perf_counter() < until:
            if outside:
                _work(outside)
            began = time.perf_counter()
            slot += 1
            with engine.begin() as connection:
                taken = connection.execute(
                    text("SELECT 1 FROM bench_bookings WHERE practitioner_id = :p"
                         " AND starts_at = :s"), {"p": practitioner, "s": slot}).first()
                if taken is None:
                    booking_id = connection.execute(
                        text("INSERT INTO bench_bookings (practitioner_id, starts_at, patient_id,"
                             " status) VALUES (:p, :s, :patient, 'booked') RETURNING id"),
                        {"p": practitioner, "s": slot, "patient": slot % 97}).scalar_one()
                    connection.execute(
                        text("INSERT INTO bench_audit (action, resource_id, detail)"
                             " VALUES ('booking.create', :id, :detail)"),
                        {"id": booking_id, "detail": '{"purpose": "treatment"}'})
            own.append(time.perf_counter() - began)

    # Every pooled connection opened (and its PRAGMAs run) before the clock starts.
    connections = [engine.connect() for _ in range(threads)]
    for connection in connections:
        connection.close()
    start.wait()
    cpu_before = time.process_time()
    until = time.perf_counter() + seconds
    workers = [threading.Thread(target=book, args=(number, until)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu = time.process_time() - cpu_before
    engine.dispose()
    results.put((process_number, [value for own in latencies for value in own], cpu))


@dataclass
class RoundFigures:
    transactions: int
    per_second: float
    latencies: list[float]
    shares: list[int]
    cpu_per_transaction: float


def _round(way: str, processes: int, threads: int, seconds: float,
           outside: float) -> RoundFigures:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="jaejin-bench-sqlite-writers-") as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        engine = build_engine(url)
        with engine.begin() as connection:
            for statement in _SCHEMA:
                connection.exec_driver_sql(statement)
        engine.dispose()
        start = context.Barrier(processes)
        results = context.Queue()
        children = [context.Process(target=_writer_process,
                                    args=(url, way, threads, seconds, outside, number, start,
                                          results))
                    for number in range(processes)]
        for child in children:
            child.start()
        gathered = [results.get(timeout=seconds + 120) for _ in children]
        for child in children:
            child.join()
    gathered.sort(key=lambda result: int(result[0]))
    latencies = sorted(value for _, own, _ in gathered for value in own)
    cpu = sum(float(spent) for _, _, spent in gathered)
    return RoundFigures(len(latencies), len(latencies) / seconds, latencies,
                        [len(own) for _, own, _ in gathered], cpu / max(len(latencies), 1))


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


def _summary(rounds: list[RoundFigures]) -> dict[str, float]:
    latencies = sorted(value for figures in rounds for value in figures.latencies)
    return {
        "per_second": statistics.mean(figures.per_second for figures in rounds),
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "max_ms": latencies[-1] * 1e3,
        "cpu_us": statistics.mean(figures.cpu_per_transaction for figures in rounds) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--outside-ms", type=float, default=0.0,
                        help="CPU each thread spends between its transactions (request work)")
    arguments = parser.parse_args()
    print(f"{arguments.processes} processes x {arguments.threads} threads, "
          f"{arguments.seconds:g} s per round, {arguments.rounds} round(s) per way, alternating, "
          f"{arguments.outside_ms:g} ms of CPU between transactions; "
          f"{os.cpu_count()} CPUs, {load_average()}")
    by_way: dict[str, list[RoundFigures]] = {way: [] for way in WAYS}
    for round_number in range(arguments.rounds):
        for way in WAYS:
            figures = _round(way, arguments.processes, arguments.threads, arguments.seconds,
                             arguments.outside_ms / 1e3)
            by_way[way].append(figures)
            shares = " / ".join(f"{100 * count / max(figures.transactions, 1):.0f}%"
                                for count in figures.shares)
            print(f"  round {round_number + 1} {way:>12}: {figures.per_second:7,.0f} tx/s, "
                  f"p50 {_percentile(figures.latencies, 0.5) * 1e3:6.1f} ms, "
                  f"p99 {_percentile(figures.latencies, 0.99) * 1e3:7.1f} ms, "
                  f"max {figures.latencies[-1] * 1e3:7.1f} ms, per process {shares}, "
                  f"CPU {figures.cpu_per_transaction * 1e6:,.0f} us/tx", flush=True)
    summaries = {way: _summary(rounds) for way, rounds in by_way.items()}
    print(f"{load_average()}")
    for way, summary in summaries.items():
        print(f"{way:>12}: {summary['per_second']:7,.0f} tx/s, p50 {summary['p50_ms']:6.1f} ms, "
              f"p99 {summary['p99_ms']:7.1f} ms, max {summary['max_ms']:7.1f} ms, "
              f"CPU {summary['cpu_us']:,.0f} us/tx")
    baseline, candidate = summaries["busy handler"], summaries["lock file"]
    print("lock file / busy handler: "
          + ", ".join(f"{name} x{candidate[name] / baseline[name]:.2f}"
                      for name in ("per_second", "p50_ms", "p99_ms", "max_ms", "cpu_us")))


if __name__ == "__main__":
    main()
