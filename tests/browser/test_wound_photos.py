"""Wound photos and the live triage list in a real browser: a patient sends a photo from their
page (progress, then the thumbnail), the clinician opens it full size, and a normal reading
clears a missing-data item from the open triage list without a reload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Page, expect

from jaejin.core.accounts import Role
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.jobs import run_jobs
from tests.browser.conftest import ContextFactory
from tests.browser.helpers import client_token, sign_in, unlabelled_controls
from tests.live_server import LiveServer
from tests.monitoring.photo_files import phone_jpeg
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    add_plan,
    cheap_password_hashing,
    now_utc,
)
from tests.support import Actors

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def test_a_patient_sends_a_wound_photo_and_the_clinician_opens_it(
        page: Page, new_context: ContextFactory, actors: Actors, db, screenshot) -> None:
    patient = actors.patients["a"]
    add_plan(db, patient, PlanTemplate.POST_OPERATIVE)
    sign_in(page, actors.person("a", Role.PATIENT))
    page.goto("/monitoring/me")
    section = page.locator("#wound-photos")
    expect(section).to_contain_text("No wound photo yet.")
    page.set_input_files("#photo-file", files=[{
        "name": "knee.jpg", "mimeType": "image/jpeg", "buffer": phone_jpeg(640, 480)}])
    page.fill("#photo-site", "left knee")
    section.locator("button[type=submit]").click()
    # The section comes back from the server in place, with the thumbnail (no page load).
    thumbnail = page.locator("#wound-photos .wound-photo img")
    expect(thumbnail).to_have_count(1)
    expect(page.locator("#wound-photos [role=status]").first).to_contain_text("Photo saved")
    page.wait_for_function("document.querySelector('#wound-photos .wound-photo img').complete"
                           " && document.querySelector('#wound-photos .wound-photo img')"
                           ".naturalWidth > 0")
    expect(page.locator("#wound-photos")).to_contain_text("left knee")
    assert unlabelled_controls(page) == []
    screenshot(page, "monitoring-wound-photo-patient")

    clinician = new_context().new_page()
    sign_in(clinician, actors.person("a", Role.CLINICIAN))
    clinician.goto(f"/monitoring/patients/{patient.id}")
    item = clinician.locator("#wound-photos .wound-photo")
    expect(item).to_have_count(1)
    clinician.wait_for_function("document.querySelector('#wound-photos .wound-photo img')"
                                ".naturalWidth > 0")
    with clinician.context.expect_page() as opened:
        item.locator("a").click()
    full = opened.value
    full.wait_for_load_state()
    assert full.url.endswith("/image")
    # Full size: the phone's 640x480, turned upright (orientation 6) to 480x640.
    size = full.evaluate("[document.images[0].naturalWidth, document.images[0].naturalHeight]")
    assert size == [480, 640]
    screenshot(clinician, "monitoring-wound-photo-clinician")


def test_a_normal_reading_clears_a_missing_data_item_from_the_open_triage_list(
        page: Page, actors: Actors, db, engine, live_server: LiveServer) -> None:
    patient = actors.patients["a"]
    now = now_utc()
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=5))
    run_jobs(engine, now)
    sign_in(page, actors.person("a", Role.CLINICIAN))
    page.goto("/monitoring/triage")
    item = page.locator(f'.triage-item[data-patient-id="{patient.id}"]')
    expect(item).to_contain_text("reading for")
    expect(page.locator("#triage-live-status")).to_have_attribute("data-state", "live")
    version = page.locator("#triage-list").get_attribute("data-version")

    token = client_token(live_server, actors.clients["a"])
    response = httpx.post(
        live_server.path(f"/api/v1/monitoring/patients/{patient.id}/readings"),
        headers={"Authorization": f"Bearer {token}"}, timeout=10,
        json={"readings": [{"idempotency_key": "browser-normal", "metric": "blood_pressure",
                            "systolic": 124, "diastolic": 78, "unit": "mmHg",
                            "effective_at": datetime.now(UTC).isoformat()}]})
    assert response.status_code == 200 and response.json()["alerts"] == []
    # Told by the server, not by a reload: the missing-data explanation is gone.
    expect(item).not_to_contain_text("reading for", timeout=10_000)
    assert page.locator("#triage-list").get_attribute("data-version") != version
