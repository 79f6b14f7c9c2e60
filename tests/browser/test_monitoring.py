"""Remote monitoring in a real browser: the triage page follows readings live, steps taken
from its buttons, and the chart pages a patient and a clinician read (screenshots kept)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Page, expect

from jaejin.core.accounts import Role
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.readings import Metric
from tests.browser.conftest import PHONE, ContextFactory
from tests.browser.helpers import client_token, low_contrast_text, sign_in, unlabelled_controls
from tests.live_server import LiveServer
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    add_plan,
    blood_pressure,
    cgm,
    cheap_password_hashing,
    now_utc,
    reading,
    store_readings,
)
from tests.support import Actors

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def _history(db, patient, now: datetime) -> None:
    """Four calm weeks, then a week about 14/8 mmHg higher."""
    items = []
    for day in range(35, 0, -1):
        systolic, diastolic = (151, 95) if day <= 7 else (137, 87)
        items.append(blood_pressure(patient, systolic + day % 3, diastolic,
                                    now - timedelta(days=day, hours=2)))
    store_readings(db, patient, items)


def test_the_triage_page_shows_a_critical_reading_posted_elsewhere_within_a_second(
        page: Page, actors: Actors, db, live_server: LiveServer, screenshot) -> None:
    patient = actors.patients["a"]
    now = now_utc()
    add_plan(db, patient, PlanTemplate.HYPERTENSION, created_at=now - timedelta(days=40))
    _history(db, patient, now)
    sign_in(page, actors.person("a", Role.CLINICIAN))
    page.goto("/monitoring/triage")
    item = page.locator(f'.triage-item[data-patient-id="{patient.id}"]')
    expect(item).to_contain_text("7-day mean")
    expect(item.locator(".severity-critical")).to_have_count(0)
    expect(page.locator("#triage-live-status")).to_have_attribute("data-state", "live")

    token = client_token(live_server, actors.clients["a"])
    response = httpx.post(
        live_server.path(f"/api/v1/monitoring/patients/{patient.id}/readings"),
        headers={"Authorization": f"Bearer {token}"}, timeout=10,
        json={"readings": [{"idempotency_key": "browser-crisis", "metric": "blood_pressure",
                            "systolic": 193, "diastolic": 112, "unit": "mmHg",
                            "effective_at": datetime.now(UTC).isoformat()}]})
    assert response.status_code == 200, response.text
    # The page is told by the server (no reload, no polling) and shows the alert at once.
    # Speed is a benchmark's business; here the point is that it arrives without a reload.
    expect(item.locator(".badge.severity-critical").first).to_be_visible(timeout=10_000)
    expect(item).to_contain_text("Blood pressure 193/112 mmHg reached the crisis threshold")
    assert page.locator("#triage-list").get_attribute("data-version") != "0"
    screenshot(page, "monitoring-triage-live")

    item.locator('button[data-action="acknowledge"]').first.click()
    expect(item.locator('.alert-line[data-state="acknowledged"]')).to_have_count(1)
    expect(item.locator('button[data-action="snooze"]').first).to_be_visible()
    assert unlabelled_controls(page) == []
    assert low_contrast_text(page) == []


def _chart_patient(db, actors: Actors):
    patient = actors.patients["a"]
    now = now_utc()
    add_plan(db, patient, PlanTemplate.HEART_FAILURE, created_at=now - timedelta(days=40))
    _history(db, patient, now)
    store_readings(db, patient, [
        [reading(patient, Metric.BODY_WEIGHT, 68.2 + (1.9 if day < 3 else 0) + (day % 4) / 10,
                 now - timedelta(days=day, hours=1))]
        for day in range(29, 0, -1)])
    return patient


def test_a_patient_reads_their_charts_and_guidance_on_their_own_page(
        new_context: ContextFactory, actors: Actors, db, screenshot) -> None:
    patient = _chart_patient(db, actors)
    page = new_context(locale="ko-KR").new_page()
    sign_in(page, actors.person("a", Role.PATIENT))
    page.goto("/monitoring/me")
    bp_chart = page.locator("svg.jaejin-chart-blood-pressure")
    weight_chart = page.locator("svg.jaejin-chart-weight")
    expect(bp_chart).to_be_visible()
    expect(weight_chart).to_be_visible()
    box = bp_chart.bounding_box()
    assert box and box["width"] >= 700, "a chart is wide enough to read its labels"
    assert unlabelled_controls(page) == []
    assert low_contrast_text(page) == []
    screenshot(page, "monitoring-me-charts")

    # A CSV export from the patient's device app, sent with its progress shown.
    stamp = datetime.now(UTC) - timedelta(hours=3)
    csv_rows = "\n".join(
        f"{(stamp - timedelta(days=day)).isoformat()},heart_rate,{64 + day % 5},bpm"
        for day in range(40))
    page.set_input_files("#upload-file", files=[{
        "name": "pulse.csv", "mimeType": "text/csv",
        "buffer": f"effective_at,metric,value,unit\n{csv_rows}\n".encode()}])
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-form")).to_have_attribute("data-finished", "done",
                                                           timeout=20_000)
    expect(page.locator("#upload-bar")).to_have_attribute("value", "100")
    expect(page.locator("#upload-status")).to_contain_text("Done: 40 readings added")
    page.click("#upload-show")
    expect(page.locator("table.readings")).to_contain_text("Heart rate")

    page.select_option("#entry-metric", "blood_pressure")
    page.fill("#entry-systolic", "187")
    page.fill("#entry-diastolic", "109")
    page.click("#manual-entry button[type=submit]")
    expect(page.locator(".emergency")).to_be_visible()
    expect(page.locator(".emergency-number a")).to_have_attribute("href", "tel:119")
    assert patient.id
    screenshot(page, "monitoring-me-critical")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "monitoring-me-phone")


def test_a_clinician_reads_the_cgm_profile_and_time_in_range(
        page: Page, actors: Actors, db, screenshot) -> None:
    patient = actors.patients["a"]
    now = now_utc().replace(second=0)
    add_plan(db, patient, PlanTemplate.TYPE1_DIABETES_CGM, created_at=now - timedelta(days=20))
    values = []
    for step in range(1, 14 * 288):
        at = now - timedelta(minutes=5 * step)
        local_hour = at.astimezone().hour
        value = 120 + 70 * ((step // 12) % 5 == 0) + (35 if 6 <= local_hour <= 8 else 0)
        values.append([cgm(patient, value - (60 if step % 97 < 6 else 0), at)])
    store_readings(db, patient, values)
    sign_in(page, actors.person("a", Role.CLINICIAN))
    page.goto(f"/monitoring/patients/{patient.id}")
    expect(page.locator("svg.jaejin-chart-agp")).to_be_visible()
    expect(page.locator("svg.jaejin-chart-time-in-range")).to_be_visible()
    expect(page.locator("#care-plan select#template")).to_have_value("type1_diabetes_cgm")
    assert unlabelled_controls(page) == []
    assert low_contrast_text(page) == []
    screenshot(page, "monitoring-patient-cgm")
