"""Readings in through the real HTTP API on PostgreSQL, each figure beside a baseline of the run.

    .venv/bin/python -m benchmarks.bench_monitoring_ingest [--batches 200] [--seconds 8]
        [--rounds 3] [--trend-rows 10000000] [--trend-budget 900] [--workers 2]
    # a quick check that it works: --batches 24 --seconds 2 --rounds 1 --trend-rows 100000
    # the ingest figures only (no trend query): --trend-rows 0

A throw-away database is created on the server named by JAEJIN_BENCH_POSTGRES_URL (default the
local one) and dropped at the end. The application runs under uvicorn (`--workers 2`, uvloop,
httptools, no access log) on a free port (`benchmarks.harness`); a system client with
`monitoring.write` gets a bearer token from /oauth2/token; requests say they accept gzip, as
HTTP clients do. Besides each rate the load-independent figures are printed: the server's CPU
time per reading (its process tree), PostgreSQL's (the bench database's backends, when the server
is local), the load generator's share of a core, and the load average.

1. Baseline: `GET /api/v1/policy/packs?in_force_on=2016-01-01` (answer `[]`) with 16
   connections: the same bearer-token authentication and nothing else (as bench_scheduling's
   baseline), in the same rounds as (3).
2. Batch ingest: `POST /api/v1/monitoring/patients/{id}/readings` with 1,000-item JSON batches
   (blood pressure panels, glucose, heart rate, SpO2, weight; one item in 250 critical, so
   alerts are raised and stored) from 4 connections, spread over 64 patients. Baseline: a raw
   psycopg `COPY ... FROM STDIN (FORMAT BINARY)` of exactly the rows the API stored, into a
   copy of the readings table with the same indexes and constraints.
3. Single readings: the same route, one reading per request, 16 connections; p50/p99 latency,
   and how many readings each PostgreSQL commit carried (the route's group commit writes the
   small requests arriving together in one transaction).
   A second reference: audited commits/s with nothing else in them (16 threads, no HTTP), the
   ceiling the platform's hash-chained audit log sets for any route that writes one audit
   entry per request.
   Goals (issue 6): >= 20,000 readings/s in batches, >= 2,000 single readings/s with p99 < 25 ms.
4. Trend query: rows generated with `INSERT ... SELECT FROM generate_series` (secondary indexes
   dropped during the load and rebuilt, foreign-key triggers skipped, then VACUUM ANALYZE),
   up to --trend-rows or until --trend-budget seconds are spent (the count reached is printed);
   then `store.trend_points` (one patient, one metric, 90 days) for random patients, against a
   primary-key lookup of one reading in the same session. Goal: p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import itertools
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks.harness import (
    CONCURRENCY,
    BadResponse,
    Round,
    Server,
    access_token,
    bench_institution,
    format_line,
    http_request,
    install_uvloop,
    load_average,
    percentile,
    postgres_database,
    run_load,
    serve,
    summarise,
    verdict,
)
from jaejin.accounts.service import create_client
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.database import build_engine, session_factory, session_scope
from jaejin.core.migrate import upgrade
from jaejin.directory.store import Patient
from jaejin.monitoring.readings import Metric
from jaejin.monitoring.store import CarePlanRow, ReadingRow, trend_points

PATIENTS = 64
BATCH_ITEMS = 1000
BATCH_CONNECTIONS = 4
CRITICAL_EVERY = 250
BASELINE_PATH = "/api/v1/policy/packs?in_force_on=2016-01-01"
GOAL_BATCH_PER_SECOND = 20_000
GOAL_SINGLE_PER_SECOND = 2_000
GOAL_SINGLE_P99_MS = 25.0
GOAL_TREND_P99_MS = 20.0
TREND_READINGS_PER_PATIENT = 5_000
TREND_PATIENTS_PER_CHUNK = 200
TREND_QUERIES = 400


# -- database --------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    url: str
    credentials: tuple[str, str]
    institution_id: int
    patient_ids: list[int]


def prepare(url: str) -> World:
    """Migrate; an institution, 64 patients (half with a care plan) and a system client."""
    upgrade(url)
    engine = build_engine(url)
    with session_scope(engine) as db:
        institution = bench_institution(db)
        patients = [_patient(institution.id, f"BENCH-{index}") for index in range(PATIENTS)]
        db.add_all(patients)
        db.flush()
        for patient in patients[::2]:
            db.add(CarePlanRow(patient_id=patient.id, institution_id=institution.id,
                               template="hypertension", overrides={"high_risk": True},
                               created_by="user:0"))
        # policy.evaluate: the baseline's route, which reads nothing but the token.
        client, secret = create_client(db, institution, "bench-gateway",
                                       ["monitoring.write", "monitoring.read",
                                        "policy.evaluate"])
        world = World(url, (client.client_id, secret), institution.id,
                      [patient.id for patient in patients])
    engine.dispose()
    return world


def _patient(institution_id: int, mrn: str) -> Patient:
    return Patient(
        institution_id=institution_id, mrn=mrn, family_name_native="김",
        given_name_native="환자", family_name_latin="Kim", given_name_latin="Patient",
        birth_date=datetime(1960, 1, 1, tzinfo=UTC).date(), sex="female", nationality="KR",
        residence_country="KR", current_country="KR", languages=["ko"],
        preferred_language="ko", time_zone="Asia/Seoul", flags=[],
    )


# -- PostgreSQL's share ------------------------------------------------------------------------


class DatabaseCpu:
    """CPU seconds of the PostgreSQL backends serving the bench database (Linux /proc, local
    server only; NaN otherwise): the database's part of each reading, whatever else runs."""

    def __init__(self, url: str) -> None:
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        self._local = make_url(url).host in (None, "127.0.0.1", "localhost")

    def seconds(self) -> float:
        if not self._local:
            return float("nan")
        with psycopg.connect(self._dsn, autocommit=True) as connection:
            backends = [int(pid) for (pid,) in connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")]
        ticks = 0
        for pid in backends:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, PermissionError):
                return float("nan")
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


def commits(url: str) -> int:
    """Transactions committed in the bench database so far (pg_stat_database, which the
    statistics collector updates within a second or so)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute("SELECT pg_stat_clear_snapshot(), xact_commit FROM "
                                 "pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[1]) if row else 0


def timed(server: Server, database: DatabaseCpu, requests: list[bytes], *, concurrency: int,
          seconds: float | None = None, keep_bodies: bool = False) -> tuple[Round, float]:
    """A round of `requests` (each once, or cycled for `seconds`) and PostgreSQL's CPU seconds
    over it (the backends persist in the server's pool)."""
    before = database.seconds()
    supply = itertools.cycle(requests) if seconds is not None else requests
    round_ = asyncio.run(run_load(server.port, supply, seconds=seconds, concurrency=concurrency,
                                  server_pid=server.pid, keep_bodies=keep_bodies))
    return round_.require_success(), database.seconds() - before


def _answer(body: bytes) -> Any:
    return orjson.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)


# -- payloads --------------------------------------------------------------------------------


def _item(serial: int, moment: datetime, critical: bool) -> dict[str, Any]:
    kind = serial % 5
    base: dict[str, Any] = {"idempotency_key": f"bench-{serial}",
                            "effective_at": moment.isoformat(), "device": "bench-device"}
    if kind == 0:
        systolic = 190 if critical else 110 + serial % 40
        return {**base, "metric": "blood_pressure", "systolic": systolic,
                "diastolic": 70 + serial % 20, "unit": "mmHg"}
    if kind == 1:
        return {**base, "metric": "glucose", "value": 45 if critical else 90 + serial % 90,
                "unit": "mg/dL"}
    if kind == 2:
        return {**base, "metric": "heart_rate", "value": 55 + serial % 40, "unit": "bpm"}
    if kind == 3:
        return {**base, "metric": "spo2", "value": 94 + serial % 6, "unit": "%"}
    return {**base, "metric": "body_weight", "value": 60 + serial % 30 / 10, "unit": "kg"}


def batch_requests(world: World, token: str, batches: int) -> tuple[list[bytes], int]:
    """`batches` bodies of 1,000 items, each for one patient, in recent hours; and the number
    of readings they hold."""
    now = datetime.now(UTC)
    requests = []
    readings = 0
    serial = 0
    for batch in range(batches):
        patient_id = world.patient_ids[batch % len(world.patient_ids)]
        items = []
        for position in range(BATCH_ITEMS):
            moment = now - timedelta(hours=20, seconds=batch * BATCH_ITEMS + position)
            items.append(_item(serial, moment, serial % CRITICAL_EVERY == 0))
            readings += 2 if serial % 5 == 0 else 1
            serial += 1
        path = f"/api/v1/monitoring/patients/{patient_id}/readings"
        requests.append(http_request("POST", path, token, orjson.dumps({"readings": items})))
    return requests, readings


def single_requests(world: World, token: str, count: int, offset: int) -> list[bytes]:
    now = datetime.now(UTC)
    requests = []
    for index in range(count):
        serial = offset + index
        patient_id = world.patient_ids[serial % len(world.patient_ids)]
        item = {"idempotency_key": f"single-{serial}", "metric": "heart_rate",
                "value": 55 + serial % 40, "unit": "bpm",
                "effective_at": (now - timedelta(hours=2, milliseconds=serial)).isoformat()}
        path = f"/api/v1/monitoring/patients/{patient_id}/readings"
        requests.append(http_request("POST", path, token, orjson.dumps({"readings": [item]})))
    return requests


# -- measurements ----------------------------------------------------------------------------


COPY_COLUMNS = ("patient_id", "institution_id", "metric", "loinc", "value", "unit",
                "effective_at", "effective_offset_minutes", "source_device", "received_at",
                "channel", "panel_id", "fingerprint", "idempotency_key", "attachment_ref")


def raw_copy_rate(url: str) -> tuple[float, int]:
    """Readings/s of a binary COPY of the rows the API stored, into a table like it."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    columns = ", ".join(COPY_COLUMNS)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_copy_readings")
        connection.execute("CREATE TABLE bench_copy_readings (LIKE monitoring_readings "
                           "INCLUDING ALL)")
        buffer = io.BytesIO()
        with connection.cursor() as cursor, cursor.copy(
            f"COPY (SELECT {columns} FROM monitoring_readings WHERE channel = 'json') "  # noqa: S608
            "TO STDOUT (FORMAT BINARY)"
        ) as copy:
            for chunk in copy:
                buffer.write(chunk)
        rows = connection.execute(
            "SELECT count(*) FROM monitoring_readings WHERE channel = 'json'"
        ).fetchone()
        count = int(rows[0]) if rows else 0
        data = buffer.getvalue()
        started = time.perf_counter()
        with connection.transaction(), connection.cursor() as cursor, cursor.copy(
            f"COPY bench_copy_readings ({columns}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            for offset in range(0, len(data), 1 << 20):
                copy.write(data[offset:offset + (1 << 20)])
        elapsed = time.perf_counter() - started
        connection.execute("DROP TABLE bench_copy_readings")
    return count / elapsed, count


def measure_batches(world: World, server: Server, database: DatabaseCpu, token: str,
                    batches: int) -> None:
    requests, readings = batch_requests(world, token, batches)
    warm_up = max(1, min(8, len(requests) // 4))  # a short run keeps most batches to measure
    warm, measured = requests[:warm_up], requests[warm_up:]
    timed(server, database, warm, concurrency=BATCH_CONNECTIONS)
    expected = readings - readings * len(warm) // len(requests)
    result, database_seconds = timed(server, database, measured,
                                     concurrency=BATCH_CONNECTIONS, keep_bodies=True)
    created = alerts = 0
    for body in result.bodies:
        answer = _answer(body)
        created += answer["counts"]["readings_created"]
        alerts += answer["counts"]["alerts"]
    if created != expected:
        raise BadResponse(f"stored {created} readings of {expected} sent")
    rate = created / result.seconds
    copy_rate, copied = raw_copy_rate(world.url)
    print(f"\n  batch ingest: {len(measured)} batches of {BATCH_ITEMS} items ({created:,} "
          f"readings, {alerts} alerts raised or joined), {BATCH_CONNECTIONS} connections; "
          f"{load_average()}")
    print(f"    {'POST .../readings (batches of 1,000)':<44} {rate:>9,.0f} readings/s"
          f"  p50 {percentile(result.latencies_ms, 0.5):7.1f} ms/batch"
          f"  p99 {percentile(result.latencies_ms, 0.99):7.1f} ms/batch"
          f"  load generator {result.load_cpu_seconds / result.seconds:.0%} of a core")
    server_us = result.server_cpu_seconds / created * 1e6
    database_us = database_seconds / created * 1e6
    print(f"    {'CPU per reading':<44} server {server_us:5.1f} us"
          f"  PostgreSQL {database_us:5.1f} us  (two cores' worth: "
          f"{2e6 / (server_us + database_us):,.0f} readings/s)")
    print(f"    {'baseline: raw binary COPY of the same rows':<44} {copy_rate:>9,.0f} readings/s"
          f"  ({copied:,} rows)")
    print(f"    API / COPY: {rate / copy_rate:.2f}x;  goal {GOAL_BATCH_PER_SECOND:,}/s: "
          f"{verdict(rate >= GOAL_BATCH_PER_SECOND)} ({rate / GOAL_BATCH_PER_SECOND:.2f}x)")


def audit_ceiling(world: World, seconds: float, threads: int = CONCURRENCY) -> float:
    """Audited commits per second with nothing else in the transaction, no HTTP.

    Every audited write appends to one hash chain whose head row it locks until commit: this is
    the most any route writing one audit entry per request can reach on this machine.
    """
    engine = build_engine(world.url, pool_size=threads)
    counts = [0] * threads
    stop_at = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < stop_at:
            with session_scope(engine) as db:
                record(db, AuditActor("client", "0", "bench"),
                       AuditEvent("create", "monitoring_reading", None, world.patient_ids[0],
                                  world.institution_id, detail={"created": 1}))
            counts[index] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return sum(counts) / elapsed


def measure_singles(world: World, server: Server, database: DatabaseCpu, token: str,
                    seconds: float, rounds: int) -> None:
    trivial = [http_request("GET", BASELINE_PATH, token)]
    offset = 0
    single_rounds: list[Round] = []
    baseline_rounds: list[Round] = []
    database_per_reading: list[float] = []
    commits_per_reading: list[float] = []
    warm = single_requests(world, token, 2000, offset)
    offset += len(warm)
    timed(server, database, warm, concurrency=CONCURRENCY, seconds=2.0)
    timed(server, database, trivial, concurrency=CONCURRENCY, seconds=2.0)
    for _ in range(rounds):
        requests = single_requests(world, token, int(seconds * 5000), offset)
        offset += len(requests)
        committed = commits(world.url)
        result, database_seconds = timed(server, database, requests, concurrency=CONCURRENCY,
                                         seconds=seconds)
        time.sleep(1.0)  # the statistics collector's delay
        commits_per_reading.append((commits(world.url) - committed) / max(1, result.succeeded))
        single_rounds.append(result)
        database_per_reading.append(database_seconds / max(1, result.succeeded) * 1e6)
        baseline_rounds.append(timed(server, database, trivial, concurrency=CONCURRENCY,
                                     seconds=seconds)[0])
    singles = summarise("POST .../readings", single_rounds)
    baseline = summarise("baseline: GET .../policy/packs (token only)", baseline_rounds)
    print(f"\n  single readings: {CONCURRENCY} connections, {rounds} x {seconds:g} s rounds "
          f"(median round); {load_average()}")
    print(format_line(baseline, unit="request", width=44))
    print(format_line(singles, "(one reading)", unit="reading", width=44))
    print(f"    {'PostgreSQL CPU per reading':<44} "
          f"{sorted(database_per_reading)[len(database_per_reading) // 2]:8.0f} us")
    per_commit = 1 / max(1e-9, sorted(commits_per_reading)[len(commits_per_reading) // 2])
    print(f"    {'readings per commit (group commit)':<44} {per_commit:8.1f}"
          "      (all transactions of the bench database, token look-ups included)")
    ceiling = audit_ceiling(world, seconds)
    print(f"    {'ceiling: audit entry + commit alone, no HTTP':<44} {ceiling:>8,.0f} commit/s"
          "   (the platform's hash-chained audit log)")
    print(f"    single / ceiling: {singles.rate / ceiling:.2f}x;  single / baseline: "
          f"{singles.rate / baseline.rate:.2f}x")
    met = singles.rate >= GOAL_SINGLE_PER_SECOND
    print(f"    goal {GOAL_SINGLE_PER_SECOND:,}/s: {verdict(met)}"
          f" ({singles.rate / GOAL_SINGLE_PER_SECOND:.2f}x);  goal p99 < "
          f"{GOAL_SINGLE_P99_MS:g} ms: {verdict(singles.p99 < GOAL_SINGLE_P99_MS)}")


# -- trend query -----------------------------------------------------------------------------

_SECONDARY = (
    ("DROP INDEX IF EXISTS ix_monitoring_readings_trend",
     "CREATE INDEX ix_monitoring_readings_trend ON monitoring_readings "
     "(patient_id, metric, effective_at) INCLUDE (value)"),
    ("ALTER TABLE monitoring_readings DROP CONSTRAINT uq_monitoring_readings_fingerprint",
     "ALTER TABLE monitoring_readings ADD CONSTRAINT uq_monitoring_readings_fingerprint "
     "UNIQUE (patient_id, fingerprint)"),
    ("ALTER TABLE monitoring_readings DROP CONSTRAINT uq_monitoring_readings_idempotency_key",
     "ALTER TABLE monitoring_readings ADD CONSTRAINT uq_monitoring_readings_idempotency_key "
     "UNIQUE (patient_id, idempotency_key)"),
)

_PATIENTS_SQL = """
INSERT INTO patients (institution_id, mrn, family_name_native, given_name_native,
  family_name_latin, given_name_latin, birth_date, sex, nationality, residence_country,
  current_country, languages, preferred_language, time_zone, nhi_covered, flags,
  photo_on_file, created_at, updated_at)
SELECT %(institution)s, 'TREND-' || n, '김', '환자', 'Kim', 'Patient', DATE '1960-01-01',
  'female', 'KR', 'KR', 'KR', '["ko"]', 'ko', 'Asia/Seoul', true, '[]', false, now(), now()
FROM generate_series(%(first)s::integer, %(last)s::integer) AS n
RETURNING id
"""

#: Five readings a day per patient over 1,000 days: systolic, diastolic, heart rate, glucose.
_READINGS_SQL = """
INSERT INTO monitoring_readings (patient_id, institution_id, metric, loinc, value, unit,
  effective_at, effective_offset_minutes, source_device, received_at, channel, panel_id,
  fingerprint, idempotency_key, attachment_ref)
SELECT p.id, %(institution)s,
  (ARRAY['systolic','diastolic','heart_rate','glucose','systolic'])[g %% 5 + 1],
  (ARRAY['8480-6','8462-4','8867-4','2339-0','8480-6'])[g %% 5 + 1],
  (ARRAY[125,80,70,110,130])[g %% 5 + 1] + (g * 7 + p.id) %% 20,
  (ARRAY['mm[Hg]','mm[Hg]','/min','mg/dL','mm[Hg]'])[g %% 5 + 1],
  %(end)s - g * interval '288 minutes', 540, 'generated', %(end)s, 'generated', NULL,
  sha256(int8send(p.id::bigint * 1000000 + g)), NULL, NULL
FROM unnest(%(patients)s::integer[]) AS p(id), generate_series(0, %(per_patient)s - 1) AS g
"""


def generate_trend_rows(url: str, institution_id: int, target: int,
                        budget: float) -> tuple[list[int], float, float]:
    """Load up to `target` readings within `budget` seconds; their patients, load and index
    seconds."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    end = datetime.now(UTC)
    patients: list[int] = []
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as connection:
        for drop, _create in _SECONDARY:
            connection.execute(drop)
        # The patients exist; per-row foreign-key triggers would double the load time.
        connection.execute("SET session_replication_role = replica")
        first = 0
        while (len(patients) * TREND_READINGS_PER_PATIENT < target
               and time.perf_counter() - started < budget):
            count = min(TREND_PATIENTS_PER_CHUNK,
                        -(-(target - len(patients) * TREND_READINGS_PER_PATIENT)
                          // TREND_READINGS_PER_PATIENT))
            rows = connection.execute(_PATIENTS_SQL, {"institution": institution_id,
                                                      "first": first,
                                                      "last": first + count - 1}).fetchall()
            chunk = [int(row[0]) for row in rows]
            first += count
            connection.execute(_READINGS_SQL, {"institution": institution_id, "end": end,
                                               "patients": chunk,
                                               "per_patient": TREND_READINGS_PER_PATIENT})
            patients.extend(chunk)
            loaded = len(patients) * TREND_READINGS_PER_PATIENT
            print(f"    ... {loaded:,} rows generated "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
        connection.execute("SET session_replication_role = DEFAULT")
        load_seconds = time.perf_counter() - started
        indexed = time.perf_counter()
        connection.execute("SET maintenance_work_mem = '512MB'")
        for _drop, create in _SECONDARY:
            connection.execute(create)
        connection.execute("VACUUM ANALYZE monitoring_readings")
        index_seconds = time.perf_counter() - indexed
    return patients, load_seconds, index_seconds


def measure_trend(world: World, target: int, budget: float) -> None:
    print(f"\n  trend query: generating up to {target:,} readings "
          f"(budget {budget:.0f} s) ...", flush=True)
    patients, load_seconds, index_seconds = generate_trend_rows(
        world.url, world.institution_id, target, budget)
    engine = build_engine(world.url)
    rng = random.Random(7)
    with session_factory(engine)() as db:
        total = int(db.execute(text("SELECT count(*) FROM monitoring_readings")).scalar_one())
        ids = [int(one) for one in db.execute(text(
            "SELECT id FROM monitoring_readings TABLESAMPLE SYSTEM (0.1) LIMIT 2000")).scalars()]
        if len(ids) < 100:  # a small table: a page sample may hold nothing
            ids = [int(one) for one in db.execute(text(
                "SELECT id FROM monitoring_readings ORDER BY random() LIMIT 2000")).scalars()]
        now = datetime.now(UTC)
        since = now - timedelta(days=90)
        plan = db.execute(text(
            "EXPLAIN SELECT effective_at, value FROM monitoring_readings WHERE patient_id = :p "
            "AND metric = 'systolic' AND effective_at >= :s AND effective_at < :u "
            "ORDER BY effective_at"), {"p": patients[0], "s": since, "u": now}).scalars().all()
        trend_ms: list[float] = []
        lookup_ms: list[float] = []
        points = 0
        for _ in range(TREND_QUERIES):
            patient_id = rng.choice(patients)
            started = time.perf_counter()
            found = trend_points(db, patient_id, Metric.SYSTOLIC, since, now)
            trend_ms.append((time.perf_counter() - started) * 1000)
            points += len(found)
            started = time.perf_counter()
            db.get(ReadingRow, rng.choice(ids))
            lookup_ms.append((time.perf_counter() - started) * 1000)
            db.expunge_all()
            db.rollback()
    engine.dispose()
    p99 = percentile(trend_ms, 0.99)
    baseline_p99 = percentile(lookup_ms, 0.99)
    print(f"    {total:,} readings stored ({len(patients):,} patients x "
          f"{TREND_READINGS_PER_PATIENT:,}, plus the ingest runs); generated in "
          f"{load_seconds:.0f} s, indexes and VACUUM ANALYZE {index_seconds:.0f} s")
    print(f"    plan: {' / '.join(line.strip() for line in plan[:2])}")
    print(f"    {'trend_points (90 days, one metric)':<44} p50 {percentile(trend_ms, 0.5):6.2f} ms"
          f"  p99 {p99:6.2f} ms  ({points / TREND_QUERIES:.0f} points per query)")
    print(f"    {'baseline: primary-key lookup of a reading':<44} p50 "
          f"{percentile(lookup_ms, 0.5):6.2f} ms  p99 {baseline_p99:6.2f} ms")
    print(f"    trend / lookup p99: {p99 / baseline_p99:.1f}x;  goal p99 < "
          f"{GOAL_TREND_P99_MS:g} ms: {verdict(p99 < GOAL_TREND_P99_MS)}"
          + ("" if total >= 10_000_000 else f"  (with {total:,} rows, not 10,000,000)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200,
                        help="1,000-item batches to send (at least 2: one warms up)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of a single round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trend-rows", type=int, default=10_000_000)
    parser.add_argument("--trend-budget", type=float, default=900.0, help="seconds")
    arguments = parser.parse_args()
    if arguments.batches < 2:
        parser.error("--batches must be at least 2")
    install_uvloop()
    with postgres_database("jaejin_bench_ingest") as url:
        world = prepare(url)
        database = DatabaseCpu(url)
        print(f"monitoring ingest over HTTP on PostgreSQL: uvicorn --workers {arguments.workers},"
              f" {os.cpu_count()} CPUs shared by server, database and load generator "
              f"({load_average()} at start)")
        with serve(url, arguments.workers, quiet=True) as server:
            token = access_token(server.port, world.credentials)
            measure_singles(world, server, database, token, arguments.seconds, arguments.rounds)
            measure_batches(world, server, database, token, arguments.batches)
        if arguments.trend_rows > 0:  # 0: the ingest figures only (a quick run)
            measure_trend(world, arguments.trend_rows, arguments.trend_budget)


if __name__ == "__main__":
    main()
