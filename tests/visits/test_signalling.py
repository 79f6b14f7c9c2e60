"""The signalling hub relays WebRTC negotiation between a visit's participants, and nobody else.

Every test runs twice: with the in-process broker (one worker) and with Redis, where the two hubs
have separate Redis clients and subscriptions exactly as two server processes would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaejin.visits.signalling import (
    DEFAULT_MAX_MESSAGE_BYTES,
    InProcessBroker,
    ParticipantRole,
    RedisBroker,
    SharedFile,
    SignallingHub,
    SignallingRefused,
    broker_from_settings,
)

from .conftest import REDIS_TEST_URL, Inbox, roster_of, workers

pytestmark = pytest.mark.anyio

VISIT = "visit-0001"
CLINICIAN, PATIENT, INTERPRETER, LOCAL_DOCTOR, OBSERVER = (
    "dr-kim", "patient-lee", "interp-park", "dr-smith", "nurse-choi",
)
ROSTER = {
    CLINICIAN: ParticipantRole.CLINICIAN,
    PATIENT: ParticipantRole.PATIENT,
    INTERPRETER: ParticipantRole.INTERPRETER,
    LOCAL_DOCTOR: ParticipantRole.LOCAL_PHYSICIAN,
}
# An offer the size a browser really sends with audio, video and data (about 10 KB).
OFFER_SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" + (
    "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\n" * 220
)


def frame(**message: Any) -> str:
    return json.dumps(message)


async def join(
    hub: SignallingHub, participant: str, session: str | None = None, visit: str = VISIT
) -> tuple[Any, Inbox]:
    inbox = Inbox(participant)
    connection = await hub.connect(visit, participant, inbox.send)
    await connection.receive(frame(type="join", session=session or uuid.uuid4().hex))
    await inbox.next("presence", event="snapshot")
    return connection, inbox


async def test_participants_on_two_workers_meet_and_exchange_offer_answer_and_candidates(
    broker_kind: str,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN)
        patient_inbox = Inbox(PATIENT)
        patient = await second.connect(VISIT, PATIENT, patient_inbox.send)
        await patient.receive(frame(type="join", session="patient-session-1"))

        snapshot = await patient_inbox.next("presence", event="snapshot")
        assert {p["id"]: p["role"] for p in snapshot["participants"]} == {
            CLINICIAN: "clinician", PATIENT: "patient",
        }
        joined = await doctor_inbox.next("presence", event="joined")
        assert joined["participant"]["id"] == PATIENT

        await doctor.receive(frame(type="offer", to=PATIENT, sdp=OFFER_SDP))
        offer = await patient_inbox.next("offer")
        assert offer == {"type": "offer", "to": PATIENT, "sdp": OFFER_SDP, "from": CLINICIAN}

        await patient.receive(frame(type="answer", to=CLINICIAN, sdp="v=0\r\nanswer"))
        answer = await doctor_inbox.next("answer")
        assert answer["from"] == PATIENT and answer["sdp"] == "v=0\r\nanswer"

        candidate = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
                     "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}
        await patient.receive(frame(type="ice-candidate", to=CLINICIAN, candidate=candidate))
        relayed = await doctor_inbox.next("ice-candidate")
        assert relayed["candidate"] == candidate and relayed["from"] == PATIENT
        await patient.receive(frame(type="ice-candidate", to=CLINICIAN, candidate=None))
        assert (await doctor_inbox.next("ice-candidate"))["candidate"] is None

        await doctor.receive(frame(type="ice-restart-request", to=PATIENT))
        assert (await patient_inbox.next("ice-restart-request"))["from"] == CLINICIAN
        assert doctor_inbox.of_type("error") == [] and patient_inbox.of_type("error") == []


async def test_directed_messages_reach_only_the_addressed_participant(broker_kind: str) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN)
        _patient, patient_inbox = await join(second, PATIENT)
        _interpreter, interpreter_inbox = await join(second, INTERPRETER)
        _local, local_inbox = await join(first, LOCAL_DOCTOR)

        await doctor.receive(frame(type="offer", to=PATIENT, sdp=OFFER_SDP))
        # A chat sent afterwards by the same sender arrives after the offer would have.
        await doctor.receive(frame(type="chat", text="barrier"))
        await patient_inbox.next("offer")
        for inbox in (interpreter_inbox, local_inbox, doctor_inbox):
            await inbox.next("chat", text="barrier")
            assert inbox.of_type("offer") == []


async def test_presence_appears_on_every_worker_and_disappears_when_a_participant_leaves(
    broker_kind: str,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        _doctor, doctor_inbox = await join(first, CLINICIAN)
        patient, _patient_inbox = await join(second, PATIENT)
        for hub in (first, second):
            assert {entry.participant_id for entry in await hub.participants(VISIT)} == {
                CLINICIAN, PATIENT,
            }
        assert await first.roles_present(VISIT) == {
            ParticipantRole.CLINICIAN, ParticipantRole.PATIENT,
        }

        await patient.receive(frame(type="leave"))
        left = await doctor_inbox.next("presence", event="left")
        assert left["participant"]["id"] == PATIENT
        assert [p["id"] for p in left["participants"]] == [CLINICIAN]
        for hub in (first, second):
            assert [entry.participant_id for entry in await hub.participants(VISIT)] == [
                CLINICIAN
            ]


async def test_a_dropped_socket_keeps_the_seat_for_a_while_then_the_room_is_told(
    broker_kind: str,
) -> None:
    async with workers(
        broker_kind, ROSTER, presence_ttl=0.5, heartbeat_intervals=(0.05, 0.05)
    ) as (first, second):
        _doctor, doctor_inbox = await join(first, CLINICIAN)
        patient, _ = await join(second, PATIENT)
        await patient.close()
        # Still seated right after the drop: a quick reconnection is a rejoin, not a new peer.
        assert PATIENT in {entry.participant_id for entry in await first.participants(VISIT)}
        assert doctor_inbox.of_type("presence")[-1]["event"] == "joined"
        left = await doctor_inbox.next("presence", event="left", timeout=5)
        assert left["participant"]["id"] == PATIENT
        assert [entry.participant_id for entry in await second.participants(VISIT)] == [
            CLINICIAN
        ]


async def test_a_participant_reconnecting_after_a_drop_rejoins_and_peers_restart_ice(
    broker_kind: str,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        _doctor, doctor_inbox = await join(first, CLINICIAN)
        patient, _ = await join(second, PATIENT, session="patient-page-1")
        await patient.close()
        await join(second, PATIENT, session="patient-page-1")
        rejoined = await doctor_inbox.next("presence", event="rejoined")
        assert rejoined["restart"] == "ice"
        assert doctor_inbox.of_type("presence")[-1]["event"] == "rejoined"


async def test_a_leave_message_frees_the_seat_and_the_participant_can_join_again(
    broker_kind: str,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        _doctor, doctor_inbox = await join(first, CLINICIAN)
        patient, patient_inbox = await join(second, PATIENT)
        await patient.receive(frame(type="leave"))
        await doctor_inbox.next("presence", event="left")
        await patient.receive(frame(type="chat", text="still there?"))
        assert (await patient_inbox.next("error"))["code"] == "NOT_JOINED"
        await patient.receive(frame(type="join", session="patient-session-2"))
        await doctor_inbox.next("presence", event="joined")


async def test_an_answer_before_any_offer_is_refused_to_the_sender_only(broker_kind: str) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN)
        patient, patient_inbox = await join(second, PATIENT)

        await patient.receive(frame(type="answer", to=CLINICIAN, sdp="v=0\r\nearly"))
        error = await patient_inbox.next("error")
        assert error["code"] == "UNEXPECTED_ANSWER" and error["refused_type"] == "answer"

        # The room still negotiates normally afterwards, and the doctor never saw the stray one.
        await doctor.receive(frame(type="offer", to=PATIENT, sdp=OFFER_SDP))
        await patient_inbox.next("offer")
        await patient.receive(frame(type="answer", to=CLINICIAN, sdp="v=0\r\nanswer"))
        assert (await doctor_inbox.next("answer"))["sdp"] == "v=0\r\nanswer"
        assert doctor_inbox.of_type("error") == []

        # One answer per offer: a second answer to the same offer is out of order.
        await patient.receive(frame(type="answer", to=CLINICIAN, sdp="v=0\r\nagain"))
        assert (await patient_inbox.next("error"))["code"] == "UNEXPECTED_ANSWER"


async def test_messages_before_join_and_a_second_join_are_refused(broker_kind: str) -> None:
    async with workers(broker_kind, ROSTER) as (first, _second):
        inbox = Inbox()
        connection = await first.connect(VISIT, CLINICIAN, inbox.send)
        await connection.receive(frame(type="offer", to=PATIENT, sdp=OFFER_SDP))
        assert (await inbox.next("error"))["code"] == "NOT_JOINED"
        assert await first.participants(VISIT) == []

        await connection.receive(frame(type="join", session="doctor-session-1"))
        await inbox.next("presence", event="snapshot")
        await connection.receive(frame(type="join", session="doctor-session-1"))
        assert (await inbox.next("error"))["code"] == "ALREADY_JOINED"


async def test_oversized_messages_are_refused_without_disturbing_the_room(
    broker_kind: str,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN)
        _patient, patient_inbox = await join(second, PATIENT)
        padding = "x" * DEFAULT_MAX_MESSAGE_BYTES
        await doctor.receive(frame(type="offer", to=PATIENT, sdp=padding))
        error = await doctor_inbox.next("error")
        assert error["code"] == "MESSAGE_TOO_LARGE" and "65536" in error["message"]

        await doctor.receive(frame(type="offer", to=PATIENT, sdp=OFFER_SDP))
        assert (await patient_inbox.next("offer"))["sdp"] == OFFER_SDP
        assert patient_inbox.of_type("error") == []


async def test_malformed_unknown_forged_and_misaddressed_messages_are_refused_clearly(
    broker_kind: str, caplog: pytest.LogCaptureFixture,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN)
        _patient, patient_inbox = await join(second, PATIENT)
        cases = [
            ("{not json", "MALFORMED_JSON"),
            ("[1, 2]", "INVALID_MESSAGE"),
            (frame(type="teleport", to=PATIENT), "UNKNOWN_MESSAGE_TYPE"),
            (frame(sdp="v=0"), "INVALID_MESSAGE"),
            # A browser may not claim to be someone else.
            (frame(type="offer", to=PATIENT, sdp="v=0", **{"from": INTERPRETER}),
             "INVALID_MESSAGE"),
            (frame(type="offer", to="../../etc", sdp="v=0"), "INVALID_MESSAGE"),
            (frame(type="offer", to=INTERPRETER, sdp="v=0"), "PEER_NOT_IN_ROOM"),
            (frame(type="offer", to=CLINICIAN, sdp="v=0"), "PEER_NOT_IN_ROOM"),
            (frame(type="chat", text=""), "INVALID_MESSAGE"),
        ]
        for raw, code in cases:
            await doctor.receive(raw)
            assert (await doctor_inbox.next("error"))["code"] == code, raw
        assert any("refused" in record.getMessage() for record in caplog.records)

        await doctor.receive(frame(type="chat", text="barrier"))
        await patient_inbox.next("chat", text="barrier")
        assert patient_inbox.of_type("error") == [] and patient_inbox.of_type("offer") == []


async def test_a_fifth_participant_is_refused_until_a_seat_frees(broker_kind: str) -> None:
    roster = {**ROSTER, OBSERVER: ParticipantRole.PATIENT}
    async with workers(broker_kind, roster) as (first, second):
        _doctor, doctor_inbox = await join(first, CLINICIAN)
        patient, _ = await join(second, PATIENT)
        await join(first, INTERPRETER)
        await join(second, LOCAL_DOCTOR)

        fifth_inbox = Inbox(OBSERVER)
        fifth = await first.connect(VISIT, OBSERVER, fifth_inbox.send)
        await fifth.receive(frame(type="join", session="observer-session"))
        error = await fifth_inbox.next("error")
        assert error["code"] == "ROOM_FULL" and "4" in error["message"]
        assert len(await second.participants(VISIT)) == 4
        assert OBSERVER not in {p.participant_id for p in await second.participants(VISIT)}

        await patient.receive(frame(type="leave"))
        await doctor_inbox.next("presence", event="left")
        await fifth.receive(frame(type="join", session="observer-session"))
        snapshot = await fifth_inbox.next("presence", event="snapshot")
        assert len(snapshot["participants"]) == 4


async def test_someone_not_on_the_visit_roster_cannot_connect(broker_kind: str) -> None:
    async with workers(broker_kind, ROSTER) as (first, _second):
        inbox = Inbox()
        with pytest.raises(SignallingRefused) as refused:
            await first.connect(VISIT, "stranger", inbox.send)
        assert refused.value.code == "NOT_PERMITTED"
        assert inbox.events[0]["code"] == "NOT_PERMITTED"
        for visit, participant in (("visit:*", CLINICIAN), (VISIT, "dr kim\n")):
            with pytest.raises(SignallingRefused):
                await first.connect(visit, participant, inbox.send)
        assert await first.participants(VISIT) == []


async def test_a_reconnecting_participant_replaces_its_old_connection_and_peers_restart_ice(
    broker_kind: str,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        _doctor, doctor_inbox = await join(first, CLINICIAN)
        old_patient, old_inbox = await join(second, PATIENT, session="patient-page-1")

        # The network dropped and the page reconnected, landing on the other worker.
        _new_patient, new_inbox = await join(first, PATIENT, session="patient-page-1")
        rejoined = await doctor_inbox.next("presence", event="rejoined")
        assert rejoined["participant"]["id"] == PATIENT and rejoined["restart"] == "ice"
        assert (await old_inbox.next("error"))["code"] == "CONNECTION_REPLACED"
        await asyncio.wait_for(old_patient.wait_closed(), 5)

        # The old socket finally closing must not take the new connection's seat away.
        await old_patient.close()
        assert PATIENT in {p.participant_id for p in await first.participants(VISIT)}
        assert doctor_inbox.of_type("presence")[-1]["event"] == "rejoined"

        # A reload is a new page: the peers need a fresh connection, not just an ICE restart.
        _newest, _ = await join(second, PATIENT, session="patient-page-2")
        assert (await doctor_inbox.next("presence", event="rejoined"))["restart"] == (
            "new-connection"
        )
        assert (await new_inbox.next("error"))["code"] == "CONNECTION_REPLACED"


async def test_only_the_clinician_can_share_a_screen_and_media_state_reaches_the_room(
    broker_kind: str,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN)
        patient, patient_inbox = await join(second, PATIENT)

        await patient.receive(
            frame(type="media-state", audio_muted=False, camera_off=False, screen_sharing=True)
        )
        assert (await patient_inbox.next("error"))["code"] == "SCREEN_SHARE_NOT_PERMITTED"

        await patient.receive(
            frame(type="media-state", audio_muted=True, camera_off=True, screen_sharing=False)
        )
        state = await doctor_inbox.next("media-state")
        assert state == {"type": "media-state", "from": PATIENT, "audio_muted": True,
                         "camera_off": True, "screen_sharing": False}

        await doctor.receive(
            frame(type="media-state", audio_muted=False, camera_off=False, screen_sharing=True)
        )
        assert (await patient_inbox.next("media-state"))["screen_sharing"] is True

        await doctor.receive(frame(type="presence"))
        snapshot = await doctor_inbox.next("presence", event="snapshot")
        media = {p["id"]: p["media"] for p in snapshot["participants"]}
        assert media[PATIENT]["audio_muted"] is True and media[CLINICIAN]["screen_sharing"]


async def test_chat_is_stamped_by_the_server_and_reaches_everyone_including_the_sender(
    broker_kind: str,
) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN)
        _patient, patient_inbox = await join(second, PATIENT)
        await doctor.receive(frame(type="chat", text="혈압은 어떠세요? <b>"))
        received = await patient_inbox.next("chat")
        echoed = await doctor_inbox.next("chat")
        assert received == echoed
        assert received["from"] == CLINICIAN and received["role"] == "clinician"
        assert received["text"] == "혈압은 어떠세요? <b>"
        assert received["sent_at"].endswith("+00:00") and len(received["id"]) == 32


async def test_a_shared_file_is_announced_to_the_whole_room(broker_kind: str) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        _doctor, doctor_inbox = await join(first, CLINICIAN)
        _patient, patient_inbox = await join(second, PATIENT)
        shared = SharedFile("att-1", "bp-log.pdf", 2048, "application/pdf", "/attachments/att-1")
        await second.announce_file(VISIT, PATIENT, shared)
        for inbox in (doctor_inbox, patient_inbox):
            event = await inbox.next("file-shared")
            assert event["filename"] == "bp-log.pdf" and event["from"] == PATIENT


async def test_participants_of_a_worker_that_stopped_beating_are_removed(
    broker_kind: str,
) -> None:
    # The second worker never beats (as if its process froze or died); the first sweeps.
    async with workers(
        broker_kind, ROSTER, presence_ttl=0.4, heartbeat_intervals=(0.05, 3600.0)
    ) as (first, second):
        _doctor, doctor_inbox = await join(first, CLINICIAN)
        await join(second, PATIENT)
        left = await doctor_inbox.next("presence", event="left", timeout=5)
        assert left["participant"]["id"] == PATIENT
        assert [p.participant_id for p in await first.participants(VISIT)] == [CLINICIAN]


async def test_a_participant_whose_socket_fails_is_removed_and_the_room_carries_on(
    broker_kind: str,
) -> None:
    async with workers(
        broker_kind, ROSTER, presence_ttl=0.5, heartbeat_intervals=(0.05, 0.05)
    ) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN)
        _patient, patient_inbox = await join(second, PATIENT)
        broken_sends = 0

        async def broken_send(event: dict[str, Any]) -> None:
            nonlocal broken_sends
            broken_sends += 1
            if broken_sends > 1:
                raise ConnectionResetError("socket gone")

        interpreter = await first.connect(VISIT, INTERPRETER, broken_send)
        await interpreter.receive(frame(type="join", session="interp-session"))
        await doctor_inbox.next("presence", event="joined")
        await doctor.receive(frame(type="chat", text="hello"))
        await doctor_inbox.next("presence", event="left", timeout=5)
        await asyncio.wait_for(interpreter.wait_closed(), 5)
        await doctor.receive(frame(type="offer", to=PATIENT, sdp=OFFER_SDP))
        await patient_inbox.next("offer")


async def test_rooms_of_different_visits_do_not_see_each_other(broker_kind: str) -> None:
    async with workers(broker_kind, ROSTER) as (first, second):
        doctor, doctor_inbox = await join(first, CLINICIAN, visit="visit-a")
        _patient, patient_inbox = await join(second, PATIENT, visit="visit-b")
        await doctor.receive(frame(type="offer", to=PATIENT, sdp=OFFER_SDP))
        assert (await doctor_inbox.next("error"))["code"] == "PEER_NOT_IN_ROOM"
        await doctor.receive(frame(type="chat", text="only visit a"))
        await doctor_inbox.next("chat")
        assert patient_inbox.of_type("chat") == [] and patient_inbox.of_type("offer") == []
        assert [p.participant_id for p in await first.participants("visit-b")] == [PATIENT]


async def test_several_workers_share_rooms_through_redis_only_when_a_redis_url_is_set() -> None:
    assert isinstance(broker_from_settings(None), InProcessBroker)
    assert isinstance(broker_from_settings(""), InProcessBroker)
    broker = broker_from_settings(REDIS_TEST_URL, presence_ttl=12.0)
    try:
        assert isinstance(broker, RedisBroker) and broker.presence_ttl == 12.0
        assert await broker.presence("visit-without-anyone") == []
    finally:
        await broker.close()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(["type", "to", "sdp", "candidate", "text", "session", "from"]),
            st.one_of(
                st.none(), st.booleans(), st.integers(), st.text(max_size=40),
                st.sampled_from(["join", "offer", "answer", "ice-candidate", "chat", "leave",
                                 "media-state", "presence", "ice-restart-request", PATIENT]),
            ),
        ).map(json.dumps),
    )
)
def test_no_input_breaks_the_room(raw: str | bytes) -> None:
    """Whatever a browser sends, it gets at most an error, and the room still works."""

    async def scenario() -> None:
        hub = SignallingHub(InProcessBroker(), roster_of(ROSTER))
        try:
            fuzzer, fuzzer_inbox = await join(hub, CLINICIAN)
            patient, patient_inbox = await join(hub, PATIENT)
            await fuzzer.receive(raw)
            await patient.receive(frame(type="chat", text="still working"))
            await patient_inbox.next("chat", text="still working", timeout=2)
            for event in fuzzer_inbox.events:
                assert event["type"] in {"presence", "error", "chat", "offer", "ice-candidate",
                                         "ice-restart-request", "media-state"}
        finally:
            await hub.close()

    asyncio.run(scenario())
