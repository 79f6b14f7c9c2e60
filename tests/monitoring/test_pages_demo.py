"""The demo's monitoring story: what a demo clinician finds on the triage list after `jaejin
demo`, raised by the real ingest and scheduled checks."""

from __future__ import annotations

from sqlalchemy import select

from jaejin.core.database import session_factory, utcnow
from jaejin.demo import load_demo
from jaejin.directory.store import Institution, Patient
from jaejin.monitoring.store import AlertRow, ReadingRow
from jaejin.monitoring.workflow_api import triage_entries
from tests.monitoring.test_workflow_builders import (  # noqa: F401 - autouse fixture
    cheap_password_hashing,
)


def test_the_demo_gives_each_clinic_a_meaningful_triage_list(clean_database):
    load_demo(clean_database)
    with session_factory(clean_database)() as db:
        kinds = {
            (mrn, kind, severity)
            for mrn, kind, severity in db.execute(
                select(Patient.mrn, AlertRow.kind, AlertRow.severity)
                .join(AlertRow, AlertRow.patient_id == Patient.id))
        }
        assert {("BIM-20431", "BP_CRISIS", "critical"),
                ("BIM-20431", "BP_ABOVE_TARGET", "moderate"),
                ("BIM-18872", "GLUCOSE_HIGH_PATTERN", "moderate"),
                ("HUH-210877", "CGM_OUT_OF_TARGET", "high"),
                ("HUH-300219", "FEVER", "high"),
                ("HUH-300122", "MISSING_DATA", "moderate")} <= kinds
        cgm_rows = db.execute(
            select(ReadingRow.id).join(Patient, Patient.id == ReadingRow.patient_id)
            .where(Patient.mrn == "HUH-210877")).all()
        assert len(cgm_rows) > 3900  # 14 days every 5 minutes, less a sensor change
        institutions = {code: id_ for id_, code in db.execute(
            select(Institution.id, Institution.code))}
        busan = triage_entries(db, {institutions["BUSAN-IM"]}, utcnow())
        assert [entry.patient.mrn for entry in busan] == ["BIM-20431", "BIM-18872"]
        explanation = busan[0].item.explain("en")
        assert "reached the crisis threshold" in explanation
        assert "from the previous 4 weeks" in explanation
        hangang = triage_entries(db, {institutions["HANGANG-UH"]}, utcnow())
        assert {entry.patient.mrn for entry in hangang} == {
            "HUH-210877", "HUH-300219", "HUH-300122"}
    # Loading again changes nothing.
    load_demo(clean_database)
    with session_factory(clean_database)() as db:
        assert len(db.execute(select(AlertRow.id)).all()) == len(kinds)
