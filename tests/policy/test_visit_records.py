"""Records read by the caller's own statement (`visit_records_columns`: a booking reads them
with the patient, in its one read) decide a visit exactly as `decide_for_visit` reading them
itself, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from jaejin.core.database import utcnow
from jaejin.directory.store import Consent, Encounter, Institution, Patient
from jaejin.policy import DecisionKind
from jaejin.policy.records import (
    SHARE_CACHE,
    VisitRecords,
    decide_for_visit,
    visit_records_columns,
    visit_records_parameters,
)
from tests.policy.test_records import PILOT_2023, PILOT_2025, consent, seen
from tests.policy.test_share_cache import share_cache  # noqa: F401 (the cache, usable from 20)
from tests.support import make_institution, make_patient

_numbers = itertools.count()


@pytest.fixture
def clinic(db: Session) -> Institution:
    return make_institution(db, "CLINIC-READ", kind="clinic", region="KR-11")


def read(db: Session, patient: Patient, at: datetime) -> VisitRecords:
    """The records as a booking's read takes them: columns of a statement about the patient."""
    columns = visit_records_columns(Patient.id, Patient.institution_id)
    row = db.execute(select(*columns).where(Patient.id == bindparam("patient_id")),
                     {"patient_id": patient.id, **visit_records_parameters(db, at)}).one()
    return VisitRecords.of(at, *row)


def decide(db: Session, patient: Patient, institution: Institution, at: datetime,
           records: VisitRecords | None = None, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {"mode": "video", "condition": "J30", "lang": "en"}
    arguments.update(overrides)
    return decide_for_visit(db, patient=patient, institution=institution, at=at,
                            records=records, **arguments)


_MODES = st.sampled_from(["in_person", "video", "audio", "chat"])
_CONDITIONS = st.sampled_from([[], ["J30"], ["I10", "J30"], ["E11.9"]])
_CONSENT_KINDS = st.sampled_from(["telemedicine_limits", "pipa_sensitive",
                                  "cross_border_transfer", "photo_sharing"])


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encounters=st.lists(st.tuples(_MODES, st.integers(-400, 30), _CONDITIONS), max_size=6),
       consents=st.lists(st.tuples(_CONSENT_KINDS, st.integers(-60, 10),
                                   st.none() | st.integers(-30, 20)), max_size=4),
       abroad=st.booleans(), at=st.sampled_from([PILOT_2023, PILOT_2025]),
       condition=st.sampled_from(["J30", "I10"]))
def test_records_read_by_the_callers_statement_decide_as_records_read_by_the_engine(
        db: Session, clinic: Institution, encounters: list[tuple[str, int, list[str]]],
        consents: list[tuple[str, int, int | None]], abroad: bool, at: datetime,
        condition: str) -> None:
    where = {"current_country": "US", "residence_country": "US"} if abroad else {}
    patient = make_patient(db, clinic, f"P-READ-{next(_numbers)}",
                           birth_date=date(1970, 3, 2), **where)
    for mode, days, conditions in encounters:  # some after the visit: never its history
        seen(db, patient, clinic, at + timedelta(days=days), mode=mode, conditions=conditions)
    for kind, granted, withdrawn in consents:
        consent(db, patient, clinic, kind, granted_at=at + timedelta(days=granted),
                withdrawn_at=at + timedelta(days=withdrawn) if withdrawn is not None else None)
    exact = decide(db, patient, clinic, at, condition=condition, tri_party=abroad)
    records = read(db, patient, at)
    assert decide(db, patient, clinic, at, records, condition=condition,
                  tri_party=abroad) == exact


def test_the_latest_diagnosis_is_of_the_newest_encounter_that_has_one(
        db: Session, clinic: Institution) -> None:
    patient = make_patient(db, clinic, "P-LATEST")
    assert read(db, patient, PILOT_2025).latest_conditions() is None
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=40), conditions=["I10"])
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=20), conditions=["E11.9", "I10"])
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=10), conditions=[])
    assert read(db, patient, PILOT_2025).latest_conditions() == ["E11.9", "I10"]


def test_records_read_for_another_moment_are_not_used(db: Session,
                                                      clinic: Institution) -> None:
    patient = make_patient(db, clinic, "P-LATER", birth_date=date(1970, 3, 2))
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=20), conditions=["J30"])
    # The consent counts for the visit on the 10th, not for a read about the day before.
    consent(db, patient, clinic, "telemedicine_limits",
            granted_at=PILOT_2025 - timedelta(hours=12))
    day_before = read(db, patient, PILOT_2025 - timedelta(days=1))
    assert not day_before.consents
    exact = decide(db, patient, clinic, PILOT_2025, identity_verified=True)
    assert exact.decision is DecisionKind.ALLOWED
    assert decide(db, patient, clinic, PILOT_2025, day_before, identity_verified=True) == exact


@pytest.mark.usefixtures("share_cache")
def test_counts_left_to_the_cache_are_counted_when_the_cache_let_them_go(
        db: Session, clinic: Institution) -> None:
    now = utcnow()
    patient = make_patient(db, clinic, "P-CACHED", birth_date=date(1970, 3, 2))
    for number in range(30):  # enough for the cache, well below the cap
        seen(db, patient, clinic, now - timedelta(days=1 + number % 28, minutes=number),
             mode="in_person" if number < 27 else "video", conditions=["J30"])
    ahead = now + timedelta(days=2)
    assert read(db, patient, ahead).counts == (30, 3)
    exact = decide(db, patient, clinic, ahead)  # the counts are cached now
    cached = read(db, patient, ahead)
    assert cached.counts is None
    assert decide(db, patient, clinic, ahead, cached) == exact
    SHARE_CACHE.clear()
    assert decide(db, patient, clinic, ahead, cached) == exact
    # A visit in the past is never judged on cached counts: they are read.
    assert read(db, patient, now - timedelta(hours=1)).counts is not None


def test_another_institutions_records_are_not_read(db: Session, clinic: Institution) -> None:
    hospital = make_institution(db, "HOSPITAL-READ", kind="tertiary_hospital", region="KR-26")
    patient = make_patient(db, clinic, "P-HERE")
    db.add(Encounter(institution_id=hospital.id, patient_id=patient.id, mode="in_person",
                     kind="visit", started_at=PILOT_2025 - timedelta(days=3),
                     conditions=["J30"]))
    db.add(Consent(institution_id=hospital.id, patient_id=patient.id,
                   kind="telemedicine_limits", text_version="2026-01", language="ko",
                   granted_at=PILOT_2025 - timedelta(days=3)))
    db.flush()
    records = read(db, patient, PILOT_2025)
    assert (records.encounters, records.consents) == ([], frozenset())


def test_the_columns_are_compiled_once_per_process() -> None:
    """A statement holding them has a cache key: SQLAlchemy compiles it once, not per call."""
    columns = visit_records_columns(Patient.id, Patient.institution_id)
    assert select(*columns).where(Patient.id == bindparam("patient_id"))._generate_cache_key()
