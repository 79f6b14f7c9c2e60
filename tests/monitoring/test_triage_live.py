"""The triage list follows normal readings too: a reading that ends a missing-data alert, or
moves a 7-day mean, refreshes the open list, at most once per patient per second."""

from __future__ import annotations

import queue
import threading
import time
from datetime import timedelta
from itertools import pairwise

from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.core.database import session_factory
from jaejin.monitoring.alerts import AlertKind
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.jobs import run_jobs
from jaejin.monitoring.live import REFRESH_EVENT, RefreshCoalescer
from jaejin.monitoring.triage import missing_data_ended
from tests.monitoring.photo_files import phone_jpeg
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    add_plan,
    alerts_of,
    cheap_password_hashing,
    now_utc,
)
from tests.support import sign_in

# ------------------------------------------------------------------------------- the rule


def test_a_reading_younger_than_the_plans_delay_ends_missing_data():
    now = now_utc()
    delay = timedelta(days=3)
    assert missing_data_ended(now - timedelta(hours=2), delay, now)
    assert not missing_data_ended(now - timedelta(days=3), delay, now)
    assert not missing_data_ended(now - timedelta(days=5), delay, now)
    # The plan no longer expects the metric: nothing is missing.
    assert missing_data_ended(now - timedelta(days=50), None, now)


# ------------------------------------------------------------------------------ coalescing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_refresh_at_once_then_the_rest_of_the_second_folded_into_one():
    clock = Clock()
    sent: list[tuple[float, str, dict]] = []
    refreshes = RefreshCoalescer(lambda channel, message: sent.append((clock.now, channel,
                                                                        message)),
                                 interval=1.0, clock=clock, start_thread=False)
    refreshes.request(("i", 1), "triage:1", {"n": 1})
    assert [entry[2] for entry in sent] == [{"n": 1}]
    for step in range(1, 5):
        clock.now += 0.2
        refreshes.request(("i", 1), "triage:1", {"n": 1 + step})
    # Another patient is not held back by the first one.
    refreshes.request(("i", 2), "triage:1", {"other": True})
    assert [entry[2] for entry in sent] == [{"n": 1}, {"other": True}]
    clock.now = 1000.99
    assert refreshes.send_due() is not None and len(sent) == 2
    clock.now = 1001.0
    assert refreshes.send_due() is None
    assert sent[-1] == (1001.0, "triage:1", {"n": 5})
    clock.now = 1003.0
    refreshes.request(("i", 1), "triage:1", {"n": 6})
    assert sent[-1] == (1003.0, "triage:1", {"n": 6})


@settings(max_examples=80, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0.0, max_value=2.5), min_size=1, max_size=40))
def test_at_most_one_refresh_per_second_and_none_later_than_a_second(gaps):
    clock = Clock()
    sent: list[float] = []
    refreshes = RefreshCoalescer(lambda channel, message: sent.append(clock.now),
                                 interval=1.0, clock=clock, start_thread=False)
    requested: list[float] = []

    def advance_to(moment: float) -> None:
        # The background thread's part: send what is due, at the moment it is due.
        while True:
            wait = refreshes.send_due()
            if wait is None or clock.now + wait > moment:
                break
            clock.now += wait
        clock.now = moment

    for gap in gaps:
        advance_to(clock.now + gap)
        requested.append(clock.now)
        refreshes.request("patient", "triage:1", {})
    advance_to(clock.now + 10)
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in pairwise(sent))
    for moment in requested:
        assert any(moment <= at <= moment + 1.0 + 1e-9 for at in sent), (moment, sent)


# ---------------------------------------------------------------------- the open triage page


def _listen(app, cookies, found: queue.Queue, ready: threading.Event, wanted: str) -> None:
    with TestClient(app, base_url="http://testserver") as listener:
        listener.cookies.update(cookies)
        with listener.stream("GET", "/monitoring/triage/events") as stream:
            for line in stream.iter_lines():
                if line.startswith(": connected"):
                    ready.set()
                if line.startswith("data:") and wanted in line:
                    found.put((time.monotonic(), line[5:].strip()))
                    return


def _missing_data_patient(db, engine, patient, template: PlanTemplate):
    """A patient enrolled 5 days ago who sent nothing: the scheduled checks raised the
    missing-data alerts."""
    now = now_utc()
    add_plan(db, patient, template, created_at=now - timedelta(days=5))
    run_jobs(engine, now)
    missing = [row for row in alerts_of(engine, patient)
               if row.kind == AlertKind.MISSING_DATA.value and row.status == "open"]
    assert missing
    return missing


def test_a_normal_reading_ending_missing_data_refreshes_the_open_list(app, client, actors, db,
                                                                      engine):
    patient = actors.patients["a"]
    (missing,) = _missing_data_patient(db, engine, patient, PlanTemplate.HYPERTENSION)
    assert missing.metric == "systolic"
    sign_in(client, actors.person("a", Role.CLINICIAN))
    before = client.get("/monitoring/triage/list").text
    assert "reading for" in before

    found: queue.Queue = queue.Queue()
    ready = threading.Event()
    threading.Thread(target=_listen, args=(app, dict(client.cookies), found, ready,
                                           REFRESH_EVENT), daemon=True).start()
    assert ready.wait(15), "the stream did not open"
    with TestClient(app, base_url="http://testserver") as device:
        token = sign_in(device, actors.person("a", Role.PATIENT))
        posted = device.post(
            f"/api/v1/monitoring/patients/{patient.id}/readings",
            headers={"X-CSRF-Token": token},
            json={"readings": [{"idempotency_key": "normal-1", "metric": "blood_pressure",
                                "systolic": 128, "diastolic": 82, "unit": "mmHg",
                                "effective_at": now_utc().isoformat()}]})
        answered = time.monotonic()
    assert posted.status_code == 200, posted.text
    assert posted.json()["alerts"] == []  # a normal reading: no alert of its own
    received, data = found.get(timeout=15)
    assert f'"patient_id":{patient.id}' in data
    # Published when the reading committed, not on some later tick.
    assert received <= answered + 1.0

    after = client.get("/monitoring/triage/list").text
    assert after != before and "reading for" not in after
    (row,) = [one for one in alerts_of(engine, patient) if one.id == missing.id]
    assert row.status == "resolved" and row.resolved_by is None
    with session_factory(engine)() as session:
        steps = list(session.execute(select(AuditEntry).where(
            AuditEntry.resource_type == "monitoring_alert",
            AuditEntry.resource_id == str(missing.id))).scalars())
    assert [entry.detail["step"] for entry in steps] == ["data_arrived"]
    assert steps[0].actor_type == "system"


def test_an_old_reading_sent_late_does_not_end_missing_data(client, actors, db, engine):
    patient = actors.patients["a"]
    (missing,) = _missing_data_patient(db, engine, patient, PlanTemplate.HYPERTENSION)
    token = sign_in(client, actors.person("a", Role.PATIENT))
    stale = (now_utc() - timedelta(days=4)).isoformat()
    posted = client.post(f"/api/v1/monitoring/patients/{patient.id}/readings",
                         headers={"X-CSRF-Token": token},
                         json={"readings": [{"idempotency_key": "late-1",
                                             "metric": "blood_pressure", "systolic": 126,
                                             "diastolic": 80, "unit": "mmHg",
                                             "effective_at": stale}]})
    assert posted.status_code == 200
    (row,) = [one for one in alerts_of(engine, patient) if one.id == missing.id]
    assert row.status == "open"


def test_a_wound_photo_ends_the_no_wound_photo_alert_and_opens_a_review(client, actors, db,
                                                                       engine):
    patient = actors.patients["a"]
    missing = _missing_data_patient(db, engine, patient, PlanTemplate.POST_OPERATIVE)
    photo_alert = next(row for row in missing if row.metric == "wound_photo")
    token = sign_in(client, actors.person("a", Role.PATIENT))
    sent = client.post(f"/api/v1/patients/{patient.id}/wound-photos",
                       files={"file": ("w.jpg", phone_jpeg(taken=None), "image/jpeg")},
                       headers={"X-CSRF-Token": token})
    assert sent.status_code == 201, sent.text
    rows = {row.id: row for row in alerts_of(engine, patient)}
    assert rows[photo_alert.id].status == "resolved"
    # The temperature is still missing: only the photo's own alert ended.
    assert any(row.metric == "body_temperature" and row.status == "open"
               for row in rows.values())
    assert any(row.kind == AlertKind.WOUND_PHOTO_REVIEW.value and row.status == "open"
               for row in rows.values())
