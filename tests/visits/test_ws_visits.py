"""The room's WebSocket in the real app: who is let in (session or guest link, this visit's
participants only, from this site), what the others are told, and how tri-party visits wait for
the local physician. Refusals happen before the handshake and are audited."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.websockets import WebSocketDisconnect

from jaejin.accounts.service import create_user
from jaejin.core.accounts import Role
from jaejin.core.database import utcnow
from jaejin.core.security import token_digest
from jaejin.visits.lifecycle import VisitState
from jaejin.visits.store import GuestLink
from tests.support import make_patient, problem

from .conftest import Cast, add_local_physician, audit_entries, make_visit, start_session


def receive(socket: Any, kind: str, limit: int = 20) -> dict[str, Any]:
    """The next event of `kind` (others, such as presence updates, are skipped)."""
    for _ in range(limit):
        event: dict[str, Any] = json.loads(socket.receive_text())
        if event.get("type") == kind:
            return event
    raise AssertionError(f"no {kind} event")


def join(socket: Any, session: str) -> dict[str, Any]:
    socket.send_text(json.dumps({"type": "join", "session": session}))
    return receive(socket, "presence")


def refused_code(client: Any, url: str, headers: dict[str, str]) -> int:
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(
            url, headers=headers):
        pass
    return int(refused.value.code)


def test_the_patient_and_clinician_meet_in_their_visits_room_and_relay_signals(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True)
    db.commit()
    patient_user = cast.actors.person("a", Role.PATIENT).user.id
    doctor_user = cast.actors.person("a", Role.CLINICIAN).user.id
    url = f"/visits/{visit.id}/ws"

    with client.websocket_connect(url, headers=start_session(db, doctor_user)) as doctor, \
            client.websocket_connect(url, headers=start_session(db, patient_user)) as patient:
        snapshot = join(doctor, "doctor-session-1")
        assert [member["id"] for member in snapshot["participants"]] == [f"user-{doctor_user}"]
        join(patient, "patient-session-1")
        joined = receive(doctor, "presence")
        assert joined["event"] == "joined"
        assert joined["participant"] == {**joined["participant"], "id": f"user-{patient_user}",
                                         "role": "patient"}
        patient.send_text(json.dumps({"type": "offer", "to": f"user-{doctor_user}",
                                      "sdp": "v=0 fake offer"}))
        offer = receive(doctor, "offer")
        assert offer["from"] == f"user-{patient_user}" and offer["sdp"] == "v=0 fake offer"
        # Out of order: an answer nobody asked for is refused to its sender only.
        doctor.send_text(json.dumps({"type": "answer", "to": f"user-{patient_user}",
                                     "sdp": "v=0"}))
        doctor.send_text(json.dumps({"type": "answer", "to": f"user-{patient_user}",
                                     "sdp": "v=0"}))
        assert receive(patient, "answer")["from"] == f"user-{doctor_user}"
        assert receive(doctor, "error")["code"] == "UNEXPECTED_ANSWER"
        patient.send_text("{not json")
        assert receive(patient, "error")["code"] == "MALFORMED_JSON"
    joins = audit_entries(db, resource_type="visit_room", resource_id=str(visit.id),
                          outcome="success")
    assert {entry.detail["role"] for entry in joins} == {"patient", "clinician"}


def test_people_who_are_not_this_visits_participants_are_refused_before_the_handshake(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True)
    other = make_patient(db, cast.actors.a, "MRN-A-OTHER")
    stranger = create_user(db, email="stranger@test.example", password="x" * 12,
                           display_name="stranger", language="en",
                           memberships=[(cast.actors.a.id, Role.PATIENT)])
    other.user_id = stranger.id
    db.commit()
    url = f"/visits/{visit.id}/ws"

    assert refused_code(client, url, start_session(db, stranger.id)) == 4403
    coordinator = cast.actors.person("a", Role.COORDINATOR).user.id
    assert refused_code(client, url, start_session(db, coordinator)) == 4403
    elsewhere = cast.actors.person("b", Role.CLINICIAN).user.id
    assert refused_code(client, url, start_session(db, elsewhere)) == 4404
    assert refused_code(client, url, {}) == 4401
    patient = start_session(db, cast.actors.person("a", Role.PATIENT).user.id)
    assert refused_code(client, url, {**patient, "origin": "https://evil.example"}) == 4403
    assert refused_code(client, "/visits/999999/ws", patient) == 4404
    # An id beyond any record is a malformed path (as in the API), refused before any look-up.
    for beyond_any_record in ("0", "2147483648", "99999999999999999999999", "9" * 100):
        assert refused_code(client, f"/visits/{beyond_any_record}/ws",
                            patient) == WS_1008_POLICY_VIOLATION

    refusals = audit_entries(db, resource_type="visit_room", outcome="refused")
    assert {entry.detail["reason"] for entry in refusals} >= {
        "not_a_participant", "origin_not_allowed", "not_signed_in", "no_such_visit"}
    assert audit_entries(db, resource_type="visit_room", outcome="success") == []


def test_a_patient_who_has_not_checked_in_is_told_the_room_is_not_open(
        client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a")
    db.commit()
    patient = start_session(db, cast.actors.person("a", Role.PATIENT).user.id)

    with client.websocket_connect(f"/visits/{visit.id}/ws", headers=patient) as socket:
        event = json.loads(socket.receive_text())
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_text()

    assert event["type"] == "error" and event["code"] == "ROOM_NOT_OPEN"
    assert closed.value.code == 4409


def test_a_tri_party_visit_starts_only_once_the_local_physician_is_connected(
        client: Any, db: Session, cast: Cast) -> None:
    physician = add_local_physician(db, cast.actors, "a", languages=("en",))
    visit = make_visit(db, cast.actors, "a", state=VisitState.WAITING_ROOM, consent=True,
                       identity=True, tri_party=True)
    db.add(GuestLink(visit_id=visit.id, local_physician_id=physician.id,
                     token_hash=token_digest("guest-token-of-the-visit"), language="en",
                     expires_at=utcnow() + timedelta(hours=3)))
    db.commit()
    doctor = start_session(db, cast.actors.person("a", Role.CLINICIAN).user.id)
    start = f"/api/v1/visits/{visit.id}/call/start"

    early = client.post(start, headers=doctor)
    assert early.status_code == 409
    assert problem(early)["code"] == "LOCAL_PHYSICIAN_REQUIRED"

    guest = {"cookie": "jaejin_guest=guest-token-of-the-visit"}
    with client.websocket_connect(f"/visits/{visit.id}/ws", headers=guest) as socket:
        snapshot = join(socket, "guest-session-1")
        assert snapshot["participant"]["role"] == "local_physician"
        started = client.post(start, headers=doctor)
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "in_call"
    assert started.json()["decision_at_start"]["decision"] == "allowed"


def test_a_closed_visits_room_takes_nobody(client: Any, db: Session, cast: Cast) -> None:
    visit = make_visit(db, cast.actors, "a", state=VisitState.CLOSED, consent=True)
    db.commit()
    doctor = start_session(db, cast.actors.person("a", Role.CLINICIAN).user.id)

    with client.websocket_connect(f"/visits/{visit.id}/ws", headers=doctor) as socket:
        assert json.loads(socket.receive_text())["code"] == "ROOM_NOT_OPEN"
