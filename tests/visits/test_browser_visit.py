"""Real browsers in a real visit: headless Chromium with fake camera and microphone, the real
visit.js and device-check.js, and the real signalling hub behind a WebSocket.

Video is proven by the receiving browser's own statistics (inbound-rtp framesDecoded), not by
anything the page claims.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from jaejin.core.i18n import translate
from jaejin.visits.signalling import InProcessBroker, ParticipantRole, RedisBroker

from .conftest import REDIS_TEST_URL
from .harness import PAGE_TEXTS, VisitServer

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
PARTICIPANTS = {
    "dr-kim": ParticipantRole.CLINICIAN,
    "patient-lee": ParticipantRole.PATIENT,
    "interp-park": ParticipantRole.INTERPRETER,
    "dr-smith": ParticipantRole.LOCAL_PHYSICIAN,
}
VISIT = "visit-1"
#: Every test gets a visit of its own (see `visit`), so one server can serve the whole module.
ROSTER: dict[str, dict[str, ParticipantRole]] = {VISIT: PARTICIPANTS}
# A deadline, not a delay: video normally flows within seconds, but four browsers encoding and
# decoding on a loaded two-core machine can take far longer.
FRAMES_TIMEOUT_SECONDS = 120


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    deadline = time.monotonic() + 120
    while not os.path.exists(CHROMIUM):
        if time.monotonic() > deadline:
            pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium)")
        time.sleep(2)
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def single_worker() -> Iterator[VisitServer]:
    server = VisitServer(ROSTER, InProcessBroker).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def visit() -> str:
    visit_id = f"visit-{uuid.uuid4().hex[:12]}"
    ROSTER[visit_id] = PARTICIPANTS
    return visit_id


@pytest.fixture
def redis_workers() -> Iterator[tuple[VisitServer, VisitServer]]:
    """Two server processes' worth of hubs, each with its own Redis connection."""
    prefix = f"jaejin-test:{uuid.uuid4().hex}:"

    def broker() -> RedisBroker:
        return RedisBroker.from_url(REDIS_TEST_URL, prefix=prefix)

    first = VisitServer(ROSTER, broker).start()
    second = VisitServer(ROSTER, broker).start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()
        client = redis.Redis.from_url(REDIS_TEST_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


class Participant:
    def __init__(self, browser: Any, server: VisitServer, visit_id: str, participant_id: str,
                 init_script: str | None = None, **query: str):
        self.id = participant_id
        self.context = browser.new_context()
        if init_script:
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.messages: list[str] = []
        self.page.on("console", lambda message: self.messages.append(message.text))
        self.page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))
        suffix = "&".join(f"{key}={value}" for key, value in query.items())
        # Not waiting for the load event lets several participants' pages start together.
        self.page.goto(f"{server.origin}/visits/{visit_id}/as/{participant_id}?{suffix}",
                       wait_until="commit")

    def stats(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = self.page.evaluate(
            "window.jaejinVisit ? window.jaejinVisit.stats() : {}"
        )
        return result

    def evaluate(self, expression: str, argument: Any = None) -> Any:
        return self.page.evaluate(expression, argument)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def participants(browser: Any) -> Iterator[Callable[..., Participant]]:
    opened: list[Participant] = []

    def open_page(server: VisitServer, visit_id: str, participant_id: str,
                  init_script: str | None = None, **query: str) -> Participant:
        participant = Participant(browser, server, visit_id, participant_id, init_script,
                                  **query)
        opened.append(participant)
        return participant

    yield open_page
    for participant in opened:
        participant.close()


def eventually(check: Callable[[], bool], what: str, pages: list[Participant],
               timeout: float = FRAMES_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.4)
    logs = {page.id: page.messages[-15:] for page in pages}
    raise AssertionError(f"timed out waiting until {what}; browser console: {logs}")


def receives_video_from(receiver: Participant, senders: list[str], above: dict[str, int] | None
                        = None) -> bool:
    stats = receiver.stats()
    floor = above or {}
    return all(
        stats.get(sender, {}).get("framesDecoded", 0) > floor.get(sender, 0)
        for sender in senders
    )


def test_two_participants_on_one_worker_see_each_others_video(
    single_worker: VisitServer, visit: str, participants: Callable[..., Participant]
) -> None:
    doctor = participants(single_worker, visit, "dr-kim")
    patient = participants(single_worker, visit, "patient-lee")
    eventually(lambda: receives_video_from(doctor, ["patient-lee"])
               and receives_video_from(patient, ["dr-kim"]),
               "both browsers decode the other's video", [doctor, patient])
    assert set(doctor.stats()) == {"patient-lee"}
    assert doctor.page.locator('[data-peer-id="patient-lee"]').count() == 1
    status = translate("en", PAGE_TEXTS["visit"]["status_in_call"]).format(count=2)
    assert doctor.page.locator(".visit-status").text_content() == status


def test_two_participants_on_different_workers_meet_through_redis(
    redis_workers: tuple[VisitServer, VisitServer], participants: Callable[..., Participant]
) -> None:
    first, second = redis_workers
    doctor = participants(first, VISIT, "dr-kim")
    patient = participants(second, VISIT, "patient-lee")
    eventually(lambda: receives_video_from(doctor, ["patient-lee"])
               and receives_video_from(patient, ["dr-kim"]),
               "video flows between browsers signalled by two workers", [doctor, patient])
    assert "dr-kim" in first.sockets and "patient-lee" in second.sockets
    assert "patient-lee" not in first.sockets


def test_four_participants_each_receive_the_three_others(
    single_worker: VisitServer, visit: str, participants: Callable[..., Participant]
) -> None:
    ids = list(PARTICIPANTS)
    pages = [participants(single_worker, visit, participant_id) for participant_id in ids]
    def everyone_receives_the_others() -> bool:
        return all(
            receives_video_from(page, [other for other in ids if other != page.id])
            for page in pages
        )

    eventually(everyone_receives_the_others, "each browser decodes the three others' video",
               pages)
    counts = {page.id: page.page.locator(".tile").count() for page in pages}
    assert counts == dict.fromkeys(ids, 4)


def remote_ice_ufrag(page: Participant, peer: str) -> str:
    value: str = page.evaluate(
        """(peer) => {
            const pc = window.jaejinVisit.peers.get(peer);
            const match = pc && pc.remoteDescription
                && pc.remoteDescription.sdp.match(/a=ice-ufrag:(\\S+)/);
            return match ? match[1] : '';
        }""",
        peer,
    )
    return value


def frames_from(page: Participant, peer: str) -> int:
    return page.stats().get(peer, {}).get("framesDecoded", 0)


def test_a_participant_whose_connection_drops_reconnects_and_video_flows_again(
    single_worker: VisitServer, visit: str, participants: Callable[..., Participant]
) -> None:
    doctor = participants(single_worker, visit, "dr-kim")
    patient = participants(single_worker, visit, "patient-lee")
    pages = [doctor, patient]
    eventually(lambda: receives_video_from(doctor, ["patient-lee"])
               and receives_video_from(patient, ["dr-kim"]), "the call is up", pages)
    reconnecting = translate("en", PAGE_TEXTS["visit"]["status_reconnecting"])

    # The browser goes offline (Wi-Fi lost), then comes back.
    ufrag_before = remote_ice_ufrag(doctor, "patient-lee")
    assert ufrag_before
    patient.context.set_offline(True)
    eventually(lambda: patient.page.locator(".visit-status").text_content() == reconnecting,
               "the patient's page says it is reconnecting", pages)
    patient.context.set_offline(False)
    eventually(lambda: patient.evaluate("window.jaejinVisit.socketOpens") >= 2,
               "the patient's page reconnected its signalling socket", pages)
    # The doctor was told the patient rejoined and restarted ICE: new credentials negotiated.
    eventually(lambda: remote_ice_ufrag(doctor, "patient-lee") not in ("", ufrag_before),
               "an ICE restart renegotiated the doctor's connection", pages)
    doctor_floor = {"patient-lee": frames_from(doctor, "patient-lee")}
    patient_floor = {"dr-kim": frames_from(patient, "dr-kim")}
    eventually(lambda: receives_video_from(doctor, ["patient-lee"], doctor_floor)
               and receives_video_from(patient, ["dr-kim"], patient_floor),
               "video flows again both ways after going offline", pages)

    # The signalling socket is cut by the network on the server's side.
    single_worker.drop_socket("patient-lee")
    eventually(lambda: patient.evaluate("window.jaejinVisit.socketOpens") >= 3
               and "patient-lee" in single_worker.sockets,
               "the patient's page reconnected after the cut", pages)
    doctor_floor = {"patient-lee": frames_from(doctor, "patient-lee")}
    eventually(lambda: receives_video_from(doctor, ["patient-lee"], doctor_floor),
               "video keeps flowing after the cut", pages)
    assert single_worker.hub is not None
    seated = single_worker.call(single_worker.hub.participants(visit))
    assert sorted(entry.participant_id for entry in seated) == ["dr-kim", "patient-lee"]
    assert set(doctor.stats()) == {"patient-lee"}


DENY_CAMERA = """
const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = (constraints) => constraints && constraints.video
    ? Promise.reject(new DOMException('camera blocked by the user', 'NotAllowedError'))
    : original(constraints);
"""


def test_a_patient_who_denies_the_camera_joins_with_audio_and_still_sees_the_doctor(
    single_worker: VisitServer, visit: str, participants: Callable[..., Participant]
) -> None:
    doctor = participants(single_worker, visit, "dr-kim")
    # The user pressing "Block" on the camera prompt (the microphone is allowed).
    patient = participants(single_worker, visit, "patient-lee", init_script=DENY_CAMERA)
    pages = [doctor, patient]
    eventually(lambda: receives_video_from(patient, ["dr-kim"]),
               "the audio-only patient decodes the doctor's video", pages)
    eventually(lambda: doctor.stats().get("patient-lee", {}).get("bytesReceived", 0) > 0,
               "the doctor receives the patient's audio", pages)
    notice = translate("en", PAGE_TEXTS["visit"]["notice_audio_only_camera"])
    assert patient.page.locator(".visit-notice").text_content() == notice
    assert patient.page.locator('[data-action="camera"]').is_disabled()
    assert patient.evaluate("window.jaejinVisit.media")["camera_off"] is True
    assert frames_from(doctor, "patient-lee") == 0
    camera_off = translate("en", PAGE_TEXTS["visit"]["camera_off_indicator"])
    eventually(lambda: camera_off in (doctor.page.locator(
        '[data-peer-id="patient-lee"] .tile-state').text_content() or ""),
        "the doctor's tile shows the patient's camera is off", pages)


def test_a_slow_connection_measured_before_the_visit_starts_it_audio_only(
    single_worker: VisitServer, visit: str, participants: Callable[..., Participant]
) -> None:
    doctor = participants(single_worker, visit, "dr-kim")
    patient = participants(single_worker, visit, "patient-lee", measured_mbps="0.4")
    pages = [doctor, patient]
    eventually(lambda: receives_video_from(patient, ["dr-kim"])
               and doctor.stats().get("patient-lee", {}).get("bytesReceived", 0) > 0,
               "the patient sees the doctor, and the doctor hears the patient", pages)
    notice = translate("en", PAGE_TEXTS["visit"]["notice_audio_only_bandwidth"])
    assert patient.page.locator(".visit-notice").text_content() == notice
    assert patient.page.locator('[data-action="camera"]').get_attribute("aria-pressed") == "true"
    assert frames_from(doctor, "patient-lee") == 0

    # The patient chooses video anyway: it starts flowing.
    patient.page.locator('[data-action="camera"]').click()
    eventually(lambda: receives_video_from(doctor, ["patient-lee"]),
               "the doctor decodes the patient's video once turned back on", pages)


def test_mute_chat_and_file_sharing_reach_the_other_participant(
    single_worker: VisitServer, visit: str, participants: Callable[..., Participant],
    tmp_path: Any,
) -> None:
    doctor = participants(single_worker, visit, "dr-kim")
    patient = participants(single_worker, visit, "patient-lee")
    pages = [doctor, patient]
    eventually(lambda: doctor.page.locator('[data-peer-id="patient-lee"]').count() == 1
               and patient.page.locator('[data-peer-id="dr-kim"]').count() == 1,
               "both are in the room", pages)

    mute = patient.page.locator('[data-action="mute"]')
    mute.click()
    assert mute.get_attribute("aria-pressed") == "true"
    eventually(lambda: "Muted" in (doctor.page.locator(
        '[data-peer-id="patient-lee"] .tile-state').text_content() or ""),
        "the doctor sees the patient is muted", pages)

    patient.page.get_by_label("Message").fill("가슴이 조금 답답해요 <script>alert(1)</script>")
    patient.page.get_by_role("button", name="Send").click()
    eventually(lambda: "가슴이 조금 답답해요 <script>alert(1)</script>"
               in (doctor.page.locator(".visit-chat-log").text_content() or ""),
               "the doctor reads the chat message as text", pages)
    assert doctor.page.locator(".visit-chat-log script").count() == 0

    readings = tmp_path / "bp-readings.csv"
    readings.write_text("date,systolic,diastolic\n2026-03-01,142,91\n", encoding="utf-8")
    doctor.page.get_by_label("Share a file").set_input_files(str(readings))
    doctor.page.get_by_role("button", name="Upload").click()
    link = patient.page.locator(".visit-chat-log a")
    eventually(lambda: link.count() == 1, "the patient sees the shared file", pages)
    assert link.text_content() == "Shared a file: bp-readings.csv"
    href = link.get_attribute("href") or ""
    attachment_id = href.rsplit("/", 1)[-1]
    filename, _type, content = single_worker.attachments[attachment_id]
    assert filename == "bp-readings.csv" and content.startswith(b"date,systolic")


def test_the_clinician_shares_a_screen_and_the_patient_cannot(
    single_worker: VisitServer, visit: str, participants: Callable[..., Participant]
) -> None:
    doctor = participants(single_worker, visit, "dr-kim")
    patient = participants(single_worker, visit, "patient-lee")
    pages = [doctor, patient]

    def picture_shape() -> float:
        video = patient.stats().get("dr-kim", {})
        return video.get("frameWidth", 0) / max(1, video.get("frameHeight", 0))

    eventually(lambda: receives_video_from(patient, ["dr-kim"]) and 1.2 < picture_shape() < 1.4,
               "the patient sees the doctor's 4:3 camera", pages)
    assert patient.page.locator('[data-action="screen"]').count() == 0

    share = doctor.page.locator('[data-action="screen"]')
    share.click()
    eventually(lambda: share.get_attribute("aria-pressed") == "true", "sharing starts", pages)
    # The same video sender now carries the 16:9 screen, without a new connection.
    eventually(lambda: 1.7 < picture_shape() < 1.85, "the patient sees the 16:9 screen", pages)
    sharing = translate("en", PAGE_TEXTS["visit"]["sharing_screen_indicator"])
    eventually(lambda: sharing in (patient.page.locator(
        '[data-peer-id="dr-kim"] .tile-state').text_content() or ""),
        "the patient's tile says the doctor is sharing", pages)

    share.click()
    eventually(lambda: 1.2 < picture_shape() < 1.4, "back to the camera", pages)
    assert share.get_attribute("aria-pressed") == "false"


def test_someone_not_on_the_visit_sees_a_plain_refusal(
    single_worker: VisitServer, visit: str, participants: Callable[..., Participant]
) -> None:
    stranger = participants(single_worker, visit, "stranger", lang="ko")
    notice = translate("ko", PAGE_TEXTS["visit"]["error_not_permitted"])
    assert notice != PAGE_TEXTS["visit"]["error_not_permitted"]
    eventually(lambda: stranger.page.locator(".visit-notice").text_content() == notice,
               "the page says in Korean that they are not a participant", [stranger])
    assert stranger.evaluate("window.jaejinVisit.socketOpens") == 1


def test_the_device_check_finds_camera_microphone_and_measures_the_connection(
    single_worker: VisitServer, browser: Any
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{single_worker.origin}/device-check?lang=ko")
        results = page.evaluate("window.jaejinDeviceCheck.finished")
        assert results["camera"] == "ok" and results["microphone"] == "ok"
        assert results["downloadMbps"] > 0 and results["uploadMbps"] > 0
        assert results["enoughForVideo"] is True and results["ready"] is True
        camera = page.locator('[data-check="camera"]')
        assert camera.get_attribute("data-result") == "ok"
        assert camera.locator(".device-check-message").text_content() == translate(
            "ko", PAGE_TEXTS["device_check"]["camera_ok"])
        assert page.locator(".device-check-summary").text_content() == translate(
            "ko", PAGE_TEXTS["device_check"]["summary_ready"])
        stored = page.evaluate("sessionStorage.getItem('jaejin.throughputMbps')")
        assert float(stored) == min(results["downloadMbps"], results["uploadMbps"])
        page.evaluate("window.jaejinDeviceCheck.playTone()")
    finally:
        context.close()


def test_the_device_check_says_what_to_do_when_the_connection_is_too_slow(
    single_worker: VisitServer, browser: Any
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        # Nobody's loopback reaches a million megabits per second.
        page.goto(f"{single_worker.origin}/device-check?required=1000000")
        results = page.evaluate("window.jaejinDeviceCheck.finished")
        assert results["enoughForVideo"] is False and results["ready"] is False
        connection = page.locator('[data-check="connection"]')
        assert connection.get_attribute("data-result") == "problem"
        message = connection.locator(".device-check-message").text_content() or ""
        assert "A video visit needs 1000000 Mbps both ways. Move closer to your Wi-Fi router" in (
            message
        )
    finally:
        context.close()
