"""Scheduling through the real HTTP API on PostgreSQL and SQLite, beside the cheapest
authenticated request measured in the same run.

    .venv/bin/python -m benchmarks.bench_scheduling [--seconds 8] [--rounds 3] [--workers 2]
                                                    [--database postgresql sqlite]
                                                    [--workloads burst bookings search]

For each database a dedicated one is made (on the server named by JAEJIN_BENCH_POSTGRES_URL,
default postgresql://postgres@127.0.0.1:5432/postgres; a temporary SQLite file) and dropped at
the end. It holds one clinic with
50 practitioners (every day 08:00-20:00 in Seoul, any mode), 2,000 patients each seen in person
20 days ago for hypertension (so video follow-ups are allowed), and a system client. The real
application runs under uvicorn (2 workers, uvloop, httptools, no access log) on a free port.

1. burst: 200 simultaneous booking attempts (one connection each, opened beforehand, sent
   together) on 20 slots of one practitioner, 10 patients per slot. Goal: exactly 20 answered
   201, every other one 409 SLOT_TAKEN with next free slots, all answered within 1 s.
2. throughput: 16 concurrent keep-alive clients booking free slots back to back (every request
   a different practitioner/time, so each one succeeds), video follow-ups (the policy engine
   runs for each) and in-person follow-ups (it does not). Goal: >= 500 bookings/s, p99 < 50 ms.
3. slot search: 16 concurrent clients asking for one practitioner's free video slots over 60
   days in New York time, rotating over the 50 practitioners. Goal: p99 < 20 ms.
Baseline: `GET /api/v1/policy/packs?in_force_on=2016-01-01` (answer `[]`): the same bearer-token
authentication and nothing else, at the same concurrency, in the same rounds.

Rounds alternate the workloads; each figure is the median round (min-max shown). The load
generator is a minimal HTTP/1.1 client on asyncio streams (benchmarks.bench_policy_http) sharing
the machine's cores with the server; its CPU share and the server's CPU time per request are
printed so the reader can judge. Every response's status is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import insert

from benchmarks import harness
from benchmarks.harness import (
    Round,
    access_token,
    bench_institution,
    encoded_requests,
    percentile,
    read_response,
    serve,
)
from jaejin.accounts.service import create_client
from jaejin.core.database import build_engine, session_scope
from jaejin.core.migrate import upgrade
from jaejin.directory.store import (
    Encounter,
    Patient,
    Practitioner,
    PractitionerRole,
)
from jaejin.scheduling.schemas import AvailabilityIn
from jaejin.scheduling.store import OwnerKind, save_availability

PRACTITIONERS = 50
PATIENTS = 2_000
CONCURRENCY = 16
BURST_ATTEMPTS = 200
BURST_SLOTS = 20
SEARCH_DAYS = 60
SEOUL = ZoneInfo("Asia/Seoul")
GOAL_BURST_SECONDS = 1.0
GOAL_BOOKINGS_PER_SECOND = 500
GOAL_BOOKING_P99_MS = 50.0
GOAL_SEARCH_P99_MS = 20.0
BASELINE_PATH = "/api/v1/policy/packs?in_force_on=2016-01-01"
WORKLOADS = ("burst", "bookings", "search")


# -- database --------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    credentials: tuple[str, str]
    practitioners: list[int]
    patients: list[int]
    first_day: date


def prepare(url: str) -> World:
    upgrade(url)
    engine = build_engine(url)
    hours = AvailabilityIn.model_validate({"weekly": [
        {"weekday": day, "start": "08:00", "end": "20:00"} for day in range(1, 8)]})
    seen = datetime.now(UTC) - timedelta(days=20)
    with session_scope(engine) as db:
        institution = bench_institution(db)
        client, secret = create_client(db, institution, "bench",
                                       ["scheduling.read", "scheduling.write",
                                        "policy.evaluate"])
        practitioners = []
        for number in range(PRACTITIONERS):
            practitioner = Practitioner(
                licence_number=f"BENCH-{number}", profession="physician",
                name_native=f"의사 {number}", name_latin=f"Doctor {number}", languages=["ko"])
            practitioner.roles.append(PractitionerRole(institution_id=institution.id))
            db.add(practitioner)
            db.flush()
            save_availability(db, OwnerKind.PRACTITIONER, practitioner.id, institution.id,
                              hours, updated_by="bench")
            practitioners.append(practitioner.id)
        patient_rows = [
            {"institution_id": institution.id, "mrn": f"BENCH-{number}",
             "family_name_native": "김", "given_name_native": "민수",
             "family_name_latin": "Kim", "given_name_latin": "Min-su",
             "birth_date": date(1960, 1, 1), "sex": "male", "nationality": "KR",
             "residence_country": "KR", "residence_region": "KR-11", "current_country": "KR",
             "languages": ["ko"], "preferred_language": "ko", "time_zone": "Asia/Seoul",
             "nhi_covered": True, "flags": [], "email": f"patient{number}@bench.example",
             "phone": None}
            for number in range(PATIENTS)]
        patients = list(db.execute(insert(Patient).returning(Patient.id), patient_rows)
                        .scalars())
        db.execute(insert(Encounter), [
            {"institution_id": institution.id, "patient_id": patient, "mode": "in_person",
             "kind": "visit", "started_at": seen, "conditions": ["I10"]}
            for patient in patients])
        credentials = (client.client_id, secret)
    engine.dispose()
    return World(credentials, practitioners, sorted(patients),
                 datetime.now(SEOUL).date() + timedelta(days=2))


# -- load ------------------------------------------------------------------------------------


class Requests:
    """An endless supply of encoded requests (bookings take a new slot each)."""

    def __init__(self, make: list[bytes] | None = None, generator: Iterator[bytes] | None = None
                 ) -> None:
        self.fixed = make
        self.generator = generator
        self.position = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.generator is not None:
            return next(self.generator)
        assert self.fixed is not None
        self.position += 1
        return self.fixed[self.position % len(self.fixed)]


def load(port: int, supply: Requests, seconds: float, expected: int, server_pid: int
         ) -> Round:
    return asyncio.run(harness.run_load(port, supply, seconds=seconds, server_pid=server_pid,
                                        expected=expected))


def booking_body(world: World, number: int, mode: str, day_offset: int) -> bytes:
    """The `number`-th free booking: each practitioner in turn, then the next quarter hour."""
    practitioner = world.practitioners[number % PRACTITIONERS]
    slot = number // PRACTITIONERS
    day = world.first_day + timedelta(days=day_offset + slot // 48)
    minutes = 8 * 60 + (slot % 48) * 15
    start = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60, tzinfo=SEOUL)
    visit_type = "follow_up" if mode == "video" else "in_person_follow_up"
    if mode == "in_person":
        # The in-person grid steps 20 minutes (15 + 5 pause): 36 starts a day.
        day = world.first_day + timedelta(days=day_offset + slot // 36)
        minutes = 8 * 60 + (slot % 36) * 20
        start = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60,
                         tzinfo=SEOUL)
    return orjson.dumps({"patient_id": world.patients[number % PATIENTS],
                         "practitioner_id": practitioner, "start": start.isoformat(),
                         "visit_type": visit_type, "mode": mode})


def booking_supply(world: World, token: str, mode: str, day_offset: int) -> Requests:
    def generate() -> Iterator[bytes]:
        number = 0
        while True:
            yield encoded_requests("POST", "/api/v1/appointments", token,
                                   [booking_body(world, number, mode, day_offset)])[0]
            number += 1

    return Requests(generator=generate())


def search_supply(world: World, token: str) -> Requests:
    first = world.first_day
    last = first + timedelta(days=SEARCH_DAYS - 1)
    return Requests(make=[
        encoded_requests("GET", f"/api/v1/practitioners/{practitioner}/slots?start={first}"
                         f"&end={last}&tz=America/New_York&visit_type=follow_up&mode=video",
                         token, None)[0]
        for practitioner in world.practitioners])


async def burst(port: int, world: World, token: str) -> tuple[Counter[str], float, int]:
    """200 attempts at once on 20 slots of one practitioner; (outcomes, seconds, with alts)."""
    day = world.first_day + timedelta(days=SEARCH_DAYS + 5)
    practitioner = world.practitioners[0]
    bodies = []
    for number in range(BURST_ATTEMPTS):
        slot = number % BURST_SLOTS
        minutes = 9 * 60 + slot * 15
        start = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60, tzinfo=SEOUL)
        bodies.append(orjson.dumps({
            "patient_id": world.patients[number], "practitioner_id": practitioner,
            "start": start.isoformat(), "visit_type": "follow_up", "mode": "video"}))
    payloads = encoded_requests("POST", "/api/v1/appointments", token, bodies)
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in payloads]
    outcomes: Counter[str] = Counter()
    with_alternatives = 0

    async def attempt(index: int) -> None:
        nonlocal with_alternatives
        reader, writer = connections[index]
        writer.write(payloads[index])
        status, body = await read_response(reader)
        if status == 201:
            outcomes["201"] += 1
        else:
            answer = orjson.loads(body)
            outcomes[f"{status} {answer.get('code')}"] += 1
            if answer.get("next_free_slots"):
                with_alternatives += 1

    started = time.perf_counter()
    await asyncio.gather(*(attempt(index) for index in range(len(payloads))))
    elapsed = time.perf_counter() - started
    for _reader, writer in connections:
        writer.close()
    return outcomes, elapsed, with_alternatives


# -- report ----------------------------------------------------------------------------------


def _summary(label: str, rounds: list[Round], goal: str) -> str:
    rates = [round_.rate for round_ in rounds]
    median = sorted(rounds, key=lambda round_: round_.rate)[len(rounds) // 2]
    statuses = sum((round_.statuses for round_ in rounds), Counter())
    line = (f"    {label:<26} {statistics.median(rates):>7,.0f} /s "
            f"({min(rates):,.0f}-{max(rates):,.0f})  "
            f"p50 {percentile(median.latencies_ms, 0.5):6.2f} ms  "
            f"p99 {percentile(median.latencies_ms, 0.99):6.2f} ms  "
            f"server CPU {median.server_cpu_seconds / max(1, median.answered) * 1e6:6.0f} us/req  "
            f"load gen. {median.load_cpu_seconds / median.seconds:.0%}  "
            f"statuses {dict(statuses)}")
    failure = next((round_.first_failure for round_ in rounds if round_.first_failure), None)
    if spread := harness.format_spread(round_.spread for round_ in rounds):
        line += f"\n      {spread}"
    if failure:
        line += f"\n      unexpected answer: {failure}"
    return line + (f"\n      goal: {goal}" if goal else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each workload")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--database", nargs="+", choices=("postgresql", "sqlite"),
                        default=["postgresql", "sqlite"], help="databases to run on, in turn")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS),
                        help="what to run beside the baseline (searches alone: no booking "
                             "changes a calendar between rounds, so nearly every search is "
                             "answered from the cache)")
    arguments = parser.parse_args()
    harness.install_uvloop()
    for kind in arguments.database:
        with harness.bench_database("jaejin_bench_scheduling",
                                    postgres=kind == "postgresql") as url:
            run(url, kind, arguments)


def run(url: str, kind: str, arguments: argparse.Namespace) -> None:
    world = prepare(url)
    print(f"\nscheduling API over HTTP on {kind}: uvicorn workers={arguments.workers}, "
          f"{os.cpu_count()} CPUs shared by server and load generator, {PRACTITIONERS} "
          f"practitioners, {PATIENTS} patients; {arguments.rounds} x "
          f"{arguments.seconds:g} s rounds at {CONCURRENCY} clients (median round shown); "
          f"{harness.load_average()} at start")
    with serve(url, arguments.workers) as server:
        token = access_token(server.port, world.credentials)
        baseline = Requests(make=encoded_requests("GET", BASELINE_PATH, token, None))
        searches = search_supply(world, token)
        # Bookings for the throughput rounds start after the burst's and warm-up's days.
        video = booking_supply(world, token, "video", 0)
        in_person = booking_supply(world, token, "in_person", SEARCH_DAYS + 30)
        warm = booking_supply(world, token, "video", SEARCH_DAYS + 200)
        chosen = set(arguments.workloads)
        for supply, expected, workload in ((baseline, 200, None), (searches, 200, "search"),
                                           (warm, 201, "bookings")):
            if workload is None or workload in chosen:
                load(server.port, supply, 2.0, expected, server.pid)
        if "burst" in chosen:
            report_burst(server.port, world, token)

        measured: dict[str, list[Round]] = {"baseline": []}
        workloads: list[tuple[str, Requests, int]] = [("baseline", baseline, 200)]
        if "bookings" in chosen:
            workloads += [("bookings (video)", video, 201),
                          ("bookings (in person)", in_person, 201)]
        if "search" in chosen:
            workloads.append(("slot search (60 days)", searches, 200))
        for label, _supply, _expected in workloads:
            measured[label] = []
        for _ in range(arguments.rounds):
            for label, supply, expected in workloads:
                measured[label].append(load(server.port, supply, arguments.seconds,
                                            expected, server.pid))
    report(kind, measured)


def report_burst(port: int, world: World, token: str) -> None:
    outcomes, seconds, alternatives = asyncio.run(burst(port, world, token))
    print(f"\n  burst: {BURST_ATTEMPTS} simultaneous attempts on {BURST_SLOTS} slots: "
          f"{dict(outcomes)}; all answered in {seconds * 1000:.0f} ms; "
          f"{alternatives} refusals offered next free slots")
    print(f"      ({harness.load_average()})")
    print(f"      goal: exactly {BURST_SLOTS} x 201, the rest 409, within "
          f"{GOAL_BURST_SECONDS * 1000:.0f} ms: "
          f"{'met' if outcomes['201'] == BURST_SLOTS and seconds <= GOAL_BURST_SECONDS and outcomes['409 SLOT_TAKEN'] == BURST_ATTEMPTS - BURST_SLOTS else 'NOT met'}")  # noqa: E501


def report(kind: str, measured: dict[str, list[Round]]) -> None:
    goals = {
        "baseline": f"(GET {BASELINE_PATH})",
        "bookings (video)": f">= {GOAL_BOOKINGS_PER_SECOND} bookings/s, p99 < "
                            f"{GOAL_BOOKING_P99_MS:g} ms",
        "bookings (in person)": f">= {GOAL_BOOKINGS_PER_SECOND} bookings/s, p99 < "
                                f"{GOAL_BOOKING_P99_MS:g} ms",
        "slot search (60 days)": f"p99 < {GOAL_SEARCH_P99_MS:g} ms",
    }
    print(f"\n  {kind}, {harness.load_average()} after the rounds")
    for label, rounds in measured.items():
        print(_summary(label, rounds, goals[label]))
    base_rate = statistics.median(round_.rate for round_ in measured["baseline"])
    for label in [label for label in measured if label != "baseline"]:
        rate = statistics.median(round_.rate for round_ in measured[label])
        print(f"    {label}: {rate / base_rate:.2f} x the baseline's rate")


if __name__ == "__main__":
    main()
