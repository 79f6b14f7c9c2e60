"""Statements and CPU per `decide_for_visit` call (a video booking's policy check).

    .venv/bin/python -m benchmarks.bench_policy_records [--encounters 2000 20000] [--calls 200]
        [--rounds 5]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

For each size, a fresh database (a SQLite file, or a new database on the named PostgreSQL
server, dropped afterwards) gets one clinic with that many encounters in the last 30 days
(20 % video; three times as many in the 11 months before), two of them the booking
patient's in-person visits, then decides a video booking two days ahead, `--rounds` rounds
of `--calls` calls in each configuration (the quickest round is printed):

* no index, exact: the share counted without `ix_encounters_institution_started_mode` (how it
  was before revision policy_0001), no cache;
* index, exact: counted on every call (what every decision near the cap, and every replay, is);
* index, cached: the process cache (JAEJIN_POLICY_SHARE_CACHE_SECONDS) after the first call.

Printed per call: SQL statements, this process's CPU (user + system; on PostgreSQL the server's
work is not in it, so wall time is printed too), and the load average. CPU per call, unlike
wall time, hardly depends on what else runs on the machine. Goal (issue 4, item 10): the
policy's part of a booking must not grow with the institution's size.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sqlalchemy import create_engine, event, insert, make_url, text

from jaejin.core.database import build_engine, session_factory, utcnow
from jaejin.core.migrate import upgrade
from jaejin.directory.store import Encounter, Institution, Patient
from jaejin.policy.records import SHARE_CACHE, SHARE_INDEX, decide_for_visit

CONFIGURATIONS = ("no index, exact", "index, exact", "index, cached")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _populate(url: str, encounters: int) -> None:
    engine = build_engine(url)
    now = utcnow()
    with session_factory(engine)() as db:
        clinic = Institution(code="BENCH-CLINIC", name_ko="벤치 의원", name_en="Bench Clinic",
                             kind="clinic", region="KR-11", designations=[])
        db.add(clinic)
        db.flush()
        people = []
        for index in range(200):
            person = Patient(
                institution_id=clinic.id, mrn=f"B-{index}", family_name_native="홍",
                given_name_native="길동", family_name_latin="Hong", given_name_latin="Gil-dong",
                birth_date=date(1960, 5, 1), sex="male", nationality="KR",
                residence_country="KR", residence_region="KR-11", current_country="KR",
                languages=["ko"], preferred_language="ko", time_zone="Asia/Seoul",
                nhi_covered=True, flags=[])
            db.add(person)
            people.append(person)
        db.flush()
        # The booking's patient has the same short history at every size (two in-person
        # visits); the institution's other patients hold the rest.
        rows: list[dict[str, Any]] = [
            {"institution_id": clinic.id, "patient_id": people[0].id, "mode": "in_person",
             "kind": "visit", "started_at": now - timedelta(days=days), "conditions": ["I10"]}
            for days in (3, 40)
        ]
        rows += [
            {"institution_id": clinic.id, "patient_id": people[1 + index % (len(people) - 1)].id,
             "mode": "video" if index % 5 == 0 else "in_person", "kind": "visit",
             "started_at": now - timedelta(minutes=1 + (index * 2_113) % (29 * 24 * 60)),
             "conditions": ["I10"]}
            for index in range(encounters - len(rows))
        ]
        # And the 11 months before, three times as many: the window is a part of the history.
        rows += [
            {"institution_id": clinic.id, "patient_id": people[1 + index % (len(people) - 1)].id,
             "mode": "video" if index % 5 == 0 else "in_person", "kind": "visit",
             "started_at": now - timedelta(days=31, minutes=(index * 2_113) % (334 * 24 * 60)),
             "conditions": ["I10"]}
            for index in range(3 * encounters)
        ]
        for start in range(0, len(rows), 5_000):
            db.execute(insert(Encounter), rows[start:start + 5_000])
        db.commit()
    engine.dispose()


def _measure(url: str, calls: int, rounds: int, configuration: str) -> tuple[float, float, float]:
    engine = build_engine(url)
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    with engine.begin() as connection:
        if configuration == "no index, exact":
            connection.execute(text(f"DROP INDEX IF EXISTS {SHARE_INDEX.name}"))
        else:
            SHARE_INDEX.create(connection, checkfirst=True)
    if engine.dialect.name == "postgresql":
        # What autovacuum does to a table this size: statistics, and the visibility map that
        # lets the count read the index alone. SQLite has no statistics unless someone runs
        # ANALYZE, and the bench measures it without.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE encounters"))
    SHARE_CACHE.clear()
    SHARE_CACHE.seconds = 60 if configuration == "index, cached" else 0
    try:
        with session_factory(engine)() as db:
            clinic = db.query(Institution).one()
            patient = db.query(Patient).filter_by(mrn="B-0").one()
            at = utcnow() + timedelta(days=2)

            def decide() -> None:
                decide_for_visit(db, patient=patient, institution=clinic, at=at, mode="video",
                                 condition="I10", lang="ko")

            for _ in range(5):  # warm caches (statement compilation, packs, the share cache)
                decide()
            event.listen(engine, "before_cursor_execute", count)
            cpu = wall = float("inf")
            # The quickest of several rounds: what other processes add to a round only slows it.
            for _ in range(rounds):
                cpu_before, wall_before = _cpu(), time.perf_counter()
                for _ in range(calls):
                    decide()
                cpu = min(cpu, _cpu() - cpu_before)
                wall = min(wall, time.perf_counter() - wall_before)
            event.remove(engine, "before_cursor_execute", count)
    finally:
        SHARE_CACHE.seconds = None
        SHARE_CACHE.clear()
        engine.dispose()
    return statements[0] / (calls * rounds), cpu / calls * 1000, wall / calls * 1000


def _run(url: str, encounters: int, calls: int, rounds: int) -> None:
    upgrade(url)
    _populate(url, encounters)
    for configuration in CONFIGURATIONS:
        per_call, cpu_ms, wall_ms = _measure(url, calls, rounds, configuration)
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"{encounters:>6} encounters  {configuration:<16} {per_call:4.1f} statements  "
              f"{cpu_ms:6.3f} ms CPU  {wall_ms:6.3f} ms wall  (load {load})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encounters", type=int, nargs="+", default=[2_000, 20_000])
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="the quickest round is printed")
    parser.add_argument("--database-url", help="a PostgreSQL server (default: SQLite files)")
    arguments = parser.parse_args()
    print("decide_for_visit, a video booking two days ahead, per call "
          "(goal: flat in the institution's size)")
    for encounters in arguments.encounters:
        if arguments.database_url:
            server = make_url(arguments.database_url).set(drivername="postgresql+psycopg")
            name = f"jaejin_bench_policy_{uuid.uuid4().hex[:8]}"
            admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                _run(server.set(database=name).render_as_string(hide_password=False),
                     encounters, arguments.calls, arguments.rounds)
            finally:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        else:
            with TemporaryDirectory() as directory:
                _run(f"sqlite:///{Path(directory) / 'bench.db'}", encounters, arguments.calls,
                     arguments.rounds)


if __name__ == "__main__":
    main()
