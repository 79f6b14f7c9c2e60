"""Joining a video visit: from the patient's 'join' to the first decoded frame of the clinician's
video, through the real application, in real browsers.

    .venv/bin/python -m benchmarks.bench_visit_join [--joins 8] [--redis-url URL] [--messages N]

Set-up: a fresh SQLite file (migrated), one clinic with a clinician and a patient, and one visit
per join already in its waiting room. The real app runs under uvicorn in separate processes:
  single worker   one process, in-process signalling;
  two workers     two processes sharing Redis pub/sub (a unique key prefix), the patient on the
                  first and the clinician on the second, so every signal crosses Redis.
Browsers: headless Chromium with fake camera and microphone, each person in their own context.

For each join the clinician's call page is opened first and waits in the room; then the patient
opens theirs. In the patient's page, an init script notes when the 'join' message leaves the
socket and polls `RTCPeerConnection.getStats()` every 10 ms for the first decoded inbound video
frame. Figures, per scenario, p50 and p95 over the joins:
  join -> first decoded frame     (goal < 2 s on loopback)
  baseline: page start -> join    (navigation, the page, the script, the camera, the socket),
                                  measured in the same page, and the ratio of the two.
Then the signalling relay latency (benchmarks.bench_signalling, goal p99 < 20 ms), in-process
and across two Redis-connected hubs, against its own baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import redis

from benchmarks import bench_signalling, harness
from jaejin.accounts.service import create_user
from jaejin.core.accounts import Role, WebSession
from jaejin.core.audit import AuditActor
from jaejin.core.database import build_engine, session_scope, utcnow
from jaejin.core.migrate import upgrade
from jaejin.core.security import new_token, token_digest
from jaejin.directory.store import (
    Consent,
    Patient,
    Practitioner,
    PractitionerRole,
)
from jaejin.scheduling.store import Appointment
from jaejin.visits import service
from jaejin.visits.lifecycle import VisitState

GOAL_JOIN_SECONDS = 2.0
CHROMIUM = os.environ.get("JAEJIN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

#: Runs in the patient's page before its scripts: timestamps on the page's own clock
#: (performance.now(), 0 = start of navigation).
PROBE = """
window.__join = { joinAt: null, frameAt: null };
const originalSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (window.__join.joinAt === null && typeof data === 'string'
      && data.includes('"type":"join"')) {
    window.__join.joinAt = performance.now();
  }
  return originalSend.call(this, data);
};
const timer = setInterval(async () => {
  if (window.__join.frameAt !== null || !window.jaejinVisit) return;
  const stats = await window.jaejinVisit.stats();
  if (Object.values(stats).some((peer) => peer.framesDecoded > 0)) {
    window.__join.frameAt = performance.now();
    clearInterval(timer);
  }
}, 10);
"""


@dataclass
class World:
    database_url: str
    visits: list[int]
    patient_cookie: str
    clinician_cookie: str


def build_world(database_url: str, joins: int) -> World:
    """One clinic, its clinician and patient, and `joins` visits waiting in their rooms."""
    upgrade(database_url)
    engine = build_engine(database_url)
    with session_scope(engine) as db:
        clinic = harness.bench_institution(db)
        doctor = create_user(db, email="doctor@bench.example", password="bench-password-1",
                             display_name="Doctor", language="en",
                             memberships=[(clinic.id, Role.CLINICIAN)])
        practitioner = Practitioner(user_id=doctor.id, licence_number="BENCH-1",
                                    profession="physician", name_native="의사",
                                    name_latin="Doctor", languages=["ko", "en"])
        practitioner.roles.append(PractitionerRole(institution_id=clinic.id))
        db.add(practitioner)
        patient_user = create_user(db, email="patient@bench.example",
                                   password="bench-password-2", display_name="Patient",
                                   language="en", memberships=[(clinic.id, Role.PATIENT)])
        patient = Patient(institution_id=clinic.id, mrn="BENCH-P", user_id=patient_user.id,
                          family_name_native="홍", given_name_native="길동",
                          family_name_latin="Hong", given_name_latin="Gil-dong",
                          birth_date=date(1960, 5, 1), sex="male", nationality="KR",
                          residence_country="KR", residence_region="KR-11",
                          current_country="KR", languages=["ko"])
        db.add(patient)
        db.flush()
        visits = []
        for index in range(joins):
            start = (utcnow() + timedelta(minutes=5 + index)).replace(microsecond=0)
            appointment = Appointment(
                institution_id=clinic.id, patient_id=patient.id,
                practitioner_id=practitioner.id, visit_type="follow_up", mode="video",
                start_at=start, end_at=start + timedelta(minutes=15),
                occupied_until=start + timedelta(minutes=15), status="booked",
                booked_by="benchmark", condition_code="I10")
            db.add(appointment)
            db.flush()
            visit = service.open_visit(db, appointment, AuditActor.system("benchmark"))
            consent = Consent(institution_id=clinic.id, patient_id=patient.id,
                              kind="telemedicine_limits",
                              text_version=service.CONSENT_TEXT_VERSION, language="en",
                              granted_at=utcnow())
            db.add(consent)
            db.flush()
            visit.state, visit.consent_id = VisitState.WAITING_ROOM.value, consent.id
            visits.append(visit.id)
        cookies = []
        for user in (patient_user, doctor):
            token = new_token()
            db.add(WebSession(token_hash=token_digest(token), user_id=user.id,
                              csrf_token=new_token(24), two_factor_passed=True,
                              expires_at=utcnow() + timedelta(hours=2)))
            cookies.append(token)
    engine.dispose()
    return World(database_url, visits, cookies[0], cookies[1])


@contextmanager
def workers(database_url: str, count: int, redis_url: str | None) -> Iterator[list[str]]:
    """`count` uvicorn processes of the real app; with Redis when there are several."""
    prefix = f"jaejin-bench:{uuid.uuid4().hex}:"
    environment = {"JAEJIN_ENVIRONMENT": "test", "JAEJIN_VISITS_REDIS_PREFIX": prefix}
    if count > 1:
        assert redis_url, "two workers need Redis"
        environment["JAEJIN_REDIS_URL"] = redis_url
    try:
        with ExitStack() as stack:
            servers = [stack.enter_context(harness.serve(
                database_url, 1, environment=environment, fast=False, quiet=True,
                startup_seconds=30)) for _ in range(count)]
            yield [server.origin for server in servers]
    finally:
        if redis_url and count > 1:
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


def wait_for(page: Any, expression: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"{expression} stayed false for {timeout} s")


@dataclass
class Join:
    page_to_join_ms: float
    join_to_frame_ms: float


def one_join(browser: Any, world: World, visit_id: int, patient_origin: str,
             clinician_origin: str) -> Join:
    clinician = browser.new_context(base_url=clinician_origin)
    patient = browser.new_context(base_url=patient_origin)
    try:
        clinician.add_cookies([{"name": "jaejin_session", "value": world.clinician_cookie,
                                "url": clinician_origin}])
        patient.add_cookies([{"name": "jaejin_session", "value": world.patient_cookie,
                              "url": patient_origin}])
        patient.add_init_script(PROBE)
        doctor_page = clinician.new_page()
        doctor_page.goto(f"/visits/{visit_id}/call")
        wait_for(doctor_page, "window.jaejinVisit && window.jaejinVisit.socketOpens >= 1")
        patient_page = patient.new_page()
        patient_page.goto(f"/visits/{visit_id}/call", wait_until="commit")
        timings = wait_for(patient_page, "window.__join && window.__join.frameAt !== null "
                                         "&& window.__join")
        return Join(page_to_join_ms=timings["joinAt"],
                    join_to_frame_ms=timings["frameAt"] - timings["joinAt"])
    finally:
        patient.close()
        clinician.close()


def report(name: str, joins: list[Join]) -> None:
    frames = [join.join_to_frame_ms for join in joins]
    pages = [join.page_to_join_ms for join in joins]
    p50, p95 = statistics.median(frames), harness.percentile(frames, 0.95)
    base50, base95 = statistics.median(pages), harness.percentile(pages, 0.95)
    verdict = "meets" if p95 < GOAL_JOIN_SECONDS * 1000 else "MISSES"
    print(f"{name:<16} join -> first decoded frame  p50 {p50:7.0f} ms  p95 {p95:7.0f} ms  "
          f"({verdict} the {GOAL_JOIN_SECONDS:g} s goal)")
    print(f"{'':<16} baseline page start -> join p50 {base50:7.0f} ms  p95 {base95:7.0f} ms  "
          f"ratio p50 {p50 / base50:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=8, help="joins per scenario")
    parser.add_argument("--redis-url", default=os.environ.get("JAEJIN_BENCH_REDIS_URL",
                                                              "redis://127.0.0.1:6379/15"))
    parser.add_argument("--messages", type=int, default=1000,
                        help="relay latency samples per scenario")
    arguments = parser.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with harness.sqlite_database() as url:
        world = build_world(url, arguments.joins * 2 + 2)
        remaining = list(world.visits)
        print(f"Joining video visits: {arguments.joins} joins per scenario, Chromium with fake "
              f"media, real app under uvicorn, SQLite ({harness.load_average()})")
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for name, count in (("single worker", 1), ("two workers", 2)):
                    with workers(world.database_url, count, arguments.redis_url) as origins:
                        patient_origin, clinician_origin = origins[0], origins[-1]
                        one_join(browser, world, remaining.pop(), patient_origin,
                                 clinician_origin)  # warm-up: imports, caches, codecs
                        joins = [one_join(browser, world, remaining.pop(), patient_origin,
                                          clinician_origin) for _ in range(arguments.joins)]
                    report(name, joins)
                    print(f"{'':<16} ({harness.load_average()})")
            finally:
                browser.close()
    print()
    print("Signalling relay latency (benchmarks.bench_signalling):")
    asyncio.run(bench_signalling.run(arguments.messages, max(50, arguments.messages // 20),
                                     arguments.redis_url))


if __name__ == "__main__":
    main()
