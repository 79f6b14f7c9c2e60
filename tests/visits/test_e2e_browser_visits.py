"""Video visits end to end: the real app under uvicorn, real sessions, real pages, headless
Chromium with fake camera and microphone.

Video is proven by each receiving browser's own RTCPeerConnection statistics (inbound-rtp
framesDecoded), never by what the page claims. Signing in is done by giving each browser the
session cookie the sign-in pages would have set (the sign-in flow has its own browser tests).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.orm import Session

from jaejin.accounts.service import create_user
from jaejin.core.accounts import Role
from jaejin.core.config import Settings
from jaejin.core.database import utcnow
from jaejin.core.i18n import translate
from jaejin.core.security import new_token, token_digest
from jaejin.visits.lifecycle import VisitState
from jaejin.visits.pages import page_texts
from jaejin.visits.store import GuestLink
from tests.live_server import LiveServer, running_server, uvicorn_process
from tests.support import make_patient

from .conftest import REDIS_TEST_URL, Cast, add_local_physician, make_visit, start_session

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

CHROMIUM = os.environ.get("JAEJIN_CHROMIUM", "/usr/bin/chromium")
FAKE_MEDIA_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
# A deadline, not a delay: video normally flows within seconds, but four browsers encoding and
# decoding on a loaded two-core machine can take far longer.
FRAMES_TIMEOUT_SECONDS = 120


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (run `make system-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FAKE_MEDIA_ARGS,
                                         headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live(app: Any) -> Iterator[LiveServer]:
    with running_server(app) as server:
        yield server


class Person:
    """One participant's browser (own cookies) on one server."""

    def __init__(self, chromium: Any, origin: str, name: str) -> None:
        self.name = name
        self.origin = origin
        self.context = chromium.new_context(base_url=origin)
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(message.text))
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def sign_in_as(self, session_headers: dict[str, str]) -> Person:
        token = session_headers["cookie"].split("=", 1)[1]
        self.context.add_cookies([{"name": "jaejin_session", "value": token,
                                   "url": self.origin}])
        return self

    def stats(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = self.page.evaluate(
            "window.jaejinVisit ? window.jaejinVisit.stats() : {}")
        return result

    def frames_from(self, peer: str) -> int:
        return self.stats().get(peer, {}).get("framesDecoded", 0)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def people(chromium: Any) -> Iterator[Callable[[str, str], Person]]:
    opened: list[Person] = []

    def open_browser(origin: str, name: str) -> Person:
        person = Person(chromium, origin, name)
        opened.append(person)
        return person

    yield open_browser
    for person in opened:
        person.close()


def eventually(check: Callable[[], bool], what: str, people: list[Person],
               timeout: float = FRAMES_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    logs = {person.name: person.console[-12:] for person in people}
    raise AssertionError(f"timed out waiting until {what}; browser consoles: {logs}")


def decodes_from(receiver: Person, senders: list[str], above: dict[str, int] | None = None,
                 ) -> bool:
    floor = above or {}
    stats = receiver.stats()
    return all(stats.get(sender, {}).get("framesDecoded", 0) > floor.get(sender, 0)
               for sender in senders)


def user_id(cast: Cast, role: Role) -> str:
    return f"user-{cast.actors.person('a', role).user.id}"


def test_patient_and_clinician_join_through_the_pages_see_each_other_and_survive_a_drop(
        live: LiveServer, people: Callable[[str, str], Person], db: Session,
        cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    patient = people(live.url, "patient").sign_in_as(
        start_session(db, cast.actors.person("a", Role.PATIENT).user.id))
    doctor = people(live.url, "doctor").sign_in_as(
        start_session(db, cast.actors.person("a", Role.CLINICIAN).user.id))
    everyone = [patient, doctor]

    # The patient: pre-call page, the limits of telemedicine, consent, into the call.
    patient.page.goto(f"/visits/{visit.id}/waiting")
    patient.page.check("#consent-agree")
    patient.page.locator(".visit-consent-form button[type=submit]").click()
    patient.page.wait_for_url(f"**/visits/{visit.id}/call")
    # The clinician: the call page with the panel; identity on video, then start.
    doctor.page.goto(f"/visits/{visit.id}/call")
    eventually(lambda: decodes_from(doctor, [user_id(cast, Role.PATIENT)])
               and decodes_from(patient, [user_id(cast, Role.CLINICIAN)]),
               "both browsers decode the other's video", everyone)
    doctor.page.click("[data-identity-method=id_document_on_video]")
    doctor.page.wait_for_selector("[data-identity=id_document_on_video]")
    doctor.page.click("[data-action=start-call]")
    doctor.page.wait_for_selector("[data-action=end-call]")
    patient.page.wait_for_selector(".visit-state[data-state=in_call]", timeout=30_000)

    # The patient's network drops, then comes back: signalling reconnects, ICE restarts.
    reconnecting = translate("en", page_texts()["visit"]["status_reconnecting"])
    patient.context.set_offline(True)
    eventually(lambda: patient.page.locator(".visit-status").text_content() == reconnecting,
               "the patient's page says it is reconnecting", everyone)
    patient.context.set_offline(False)
    eventually(lambda: patient.page.evaluate("window.jaejinVisit.socketOpens") >= 2,
               "the patient's page reconnected its socket", everyone)
    floor = {user_id(cast, Role.PATIENT): doctor.frames_from(user_id(cast, Role.PATIENT))}
    eventually(lambda: decodes_from(doctor, [user_id(cast, Role.PATIENT)], floor),
               "video from the patient flows again after the drop", everyone)


def test_four_participants_with_interpreter_and_guest_local_physician_see_the_three_others(
        live: LiveServer, people: Callable[[str, str], Person], db: Session,
        cast: Cast) -> None:
    physician = add_local_physician(db, cast.actors, "a", languages=("en",))
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True,
                       identity=True, tri_party=True, interpreter=cast.interpreters["a"])
    token = new_token()
    link = GuestLink(visit_id=visit.id, local_physician_id=physician.id,
                     token_hash=token_digest(token), language="en",
                     expires_at=utcnow() + timedelta(hours=3))
    db.add(link)
    db.commit()
    browsers = {
        user_id(cast, role): people(live.url, role.value).sign_in_as(
            start_session(db, cast.actors.person("a", role).user.id))
        for role in (Role.CLINICIAN, Role.PATIENT, Role.INTERPRETER)
    }
    guest = people(live.url, "local physician")
    browsers[f"guest-{link.id}"] = guest
    everyone = list(browsers.values())

    guest.page.goto(f"/visits/{visit.id}/guest?token={token}")
    guest.page.wait_for_url(f"**/visits/{visit.id}/waiting")
    for person in everyone:
        person.page.goto(f"/visits/{visit.id}/call", wait_until="commit")

    def everyone_sees_the_three_others() -> bool:
        return all(decodes_from(person, [other for other in browsers if other != me])
                   for me, person in browsers.items())

    eventually(everyone_sees_the_three_others, "each browser decodes the three others' video",
               everyone, timeout=1.5 * FRAMES_TIMEOUT_SECONDS)
    for person in everyone:
        assert person.page.locator(".tile").count() == 4
    doctor = browsers[user_id(cast, Role.CLINICIAN)]
    doctor.page.click("[data-action=start-call]")
    doctor.page.wait_for_selector("[data-action=end-call]")


def test_another_patient_is_refused_at_the_rooms_websocket(
        live: LiveServer, people: Callable[[str, str], Person], db: Session,
        cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True)
    other = make_patient(db, cast.actors.a, "MRN-A-OTHER")
    stranger = create_user(db, email="stranger@test.example", password="x" * 12,
                           display_name="stranger", language="en",
                           memberships=[(cast.actors.a.id, Role.PATIENT)])
    other.user_id = stranger.id
    db.commit()
    intruder = people(live.url, "another patient").sign_in_as(start_session(db, stranger.id))

    intruder.page.goto("/visits/mine")
    outcome = intruder.page.evaluate("""(url) => new Promise((resolve) => {
        const socket = new WebSocket(url);
        let opened = false;
        socket.onopen = () => { opened = true; };
        socket.onclose = (event) => resolve({opened, code: event.code});
    })""", f"{live.url.replace('http', 'ws', 1)}/visits/{visit.id}/ws")
    page = intruder.page.goto(f"/visits/{visit.id}/call")

    assert outcome["opened"] is False
    assert page is not None and page.status == 403


@pytest.fixture
def two_workers(settings: Settings) -> Iterator[tuple[str, str]]:
    """Two uvicorn processes of the real app, sharing the database and a Redis (own prefix)."""
    prefix = f"jaejin-test:{uuid.uuid4().hex}:"
    environment = {
        "JAEJIN_DATABASE_URL": settings.database_url, "JAEJIN_REDIS_URL": REDIS_TEST_URL,
        "JAEJIN_VISITS_REDIS_PREFIX": prefix, "JAEJIN_SECRET_KEY": settings.secret_key,
        "JAEJIN_ENVIRONMENT": "test",
    }
    try:
        with uvicorn_process(environment) as first, uvicorn_process(environment) as second:
            yield first.url, second.url
    finally:
        client = redis.Redis.from_url(REDIS_TEST_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_two_server_processes_through_redis_one_participant_on_each_still_connect(
        two_workers: tuple[str, str], people: Callable[[str, str], Person], db: Session,
        cast: Cast) -> None:
    first, second = two_workers
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True)
    db.commit()
    patient = people(first, "patient on worker 1").sign_in_as(
        start_session(db, cast.actors.person("a", Role.PATIENT).user.id))
    doctor = people(second, "doctor on worker 2").sign_in_as(
        start_session(db, cast.actors.person("a", Role.CLINICIAN).user.id))

    patient.page.goto(f"/visits/{visit.id}/call", wait_until="commit")
    doctor.page.goto(f"/visits/{visit.id}/call", wait_until="commit")

    eventually(lambda: decodes_from(doctor, [user_id(cast, Role.PATIENT)])
               and decodes_from(patient, [user_id(cast, Role.CLINICIAN)]),
               "video flows between browsers signalled by two processes", [patient, doctor])
    assert patient.page.evaluate("location.port") != doctor.page.evaluate("location.port")


def test_the_clinician_checks_a_prescription_sees_why_not_and_adds_an_allowed_one(
        live: LiveServer, people: Callable[[str, str], Person], db: Session,
        cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.IN_CALL, consent=True,
                       identity=True)
    db.commit()
    doctor = people(live.url, "doctor").sign_in_as(
        start_session(db, cast.actors.person("a", Role.CLINICIAN).user.id))
    page = doctor.page

    page.goto(f"/visits/{visit.id}")
    page.fill("#rx-ingredient", "zolpidem")
    page.fill("#rx-days_supply", "7")
    page.click("[data-action=check-prescription]")
    # The rules' refusal is swapped in (htmx), each reason with its rule's source.
    page.wait_for_selector("[data-verdict=refused] [data-code=PRESCRIPTION_PROHIBITED]")
    assert "zolpidem" in page.inner_text("[data-verdict=refused]")
    page.click("[data-action=add-prescription]")
    page.wait_for_selector("[data-problem=POLICY_DENIED] [data-code=PRESCRIPTION_PROHIBITED]")
    assert page.locator("[data-prescription]").count() == 0

    page.fill("#rx-ingredient", "amlodipine")
    page.fill("#rx-atc", "C08CA01")
    page.fill("#rx-days_supply", "30")
    page.click("[data-action=add-prescription]")
    page.wait_for_selector("[data-prescription][data-policy-code=PRESCRIPTION_OK]")
    assert page.locator("[data-verdict=allowed]").count() == 1
    assert not [line for line in doctor.console if "pageerror" in line]
