"""Decisions from Jaejin's own records: what booking and starting a visit will be judged on.

Each test writes real rows (institutions, patients, encounters, consents) and asks
`decide_for_visit` / `request_for_visit` / `telemedicine_share`, on SQLite and PostgreSQL.
Visit times are fixed days of a given pack; a visit in the future is judged with the share the
institution has now, so those tests place their encounters relative to now.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from jaejin.core.database import session_factory, utcnow
from jaejin.directory.store import Consent, Encounter, Institution, Patient
from jaejin.policy import Code, DecisionKind, RequestError, evaluate
from jaejin.policy.korean_time import KST
from jaejin.policy.records import (
    MAX_HISTORY,
    bad_request_problem,
    daily_shares,
    decide_for_visit,
    policy_denied_problem,
    policy_registry,
    request_for_visit,
    telemedicine_counts,
    telemedicine_share,
)
from tests.core.helpers import empty_database
from tests.support import make_institution, make_patient

# Wednesday 10 June 2026, 10:00 in Seoul: kr-pilot-2025-10 (clinics: every patient; cap 30 %).
PILOT_2025 = datetime(2026, 6, 10, 10, 0, tzinfo=KST)
# Wednesday 13 September 2023, 10:00: kr-pilot-2023-06 (same disease, 30 days or 1 year).
PILOT_2023 = datetime(2023, 9, 13, 10, 0, tzinfo=KST)
# Wednesday 17 January 2024, 10:00: kr-pilot-2023-12 (shortage areas).
PILOT_2023_12 = datetime(2024, 1, 17, 10, 0, tzinfo=KST)


@pytest.fixture
def clean_database(engine: Engine) -> Iterator[Engine]:
    empty_database(engine)
    yield engine


@pytest.fixture
def clinic(db: Session) -> Institution:
    return make_institution(db, "CLINIC-SEOUL", kind="clinic", region="KR-11")


@pytest.fixture
def hospital(db: Session) -> Institution:
    return make_institution(db, "HOSPITAL-BUSAN", kind="tertiary_hospital", region="KR-26")


@pytest.fixture
def patient(db: Session, clinic: Institution) -> Patient:
    return make_patient(db, clinic, "P-1", birth_date=date(1970, 3, 2))


def seen(db: Session, patient: Patient, institution: Institution, at: datetime, *,
         mode: str = "in_person", kind: str = "visit",
         conditions: list[str] | None = None) -> Encounter:
    encounter = Encounter(institution_id=institution.id, patient_id=patient.id, mode=mode,
                          kind=kind, started_at=at, conditions=conditions or [])
    db.add(encounter)
    db.flush()
    return encounter


def busy_month(db: Session, institution: Institution, until: datetime, *, in_person: int,
               remote: int) -> None:
    """The institution's other patients over the 30 days before `until`."""
    other = make_patient(db, institution, f"OTHER-{institution.id}-{in_person}-{remote}")
    for index in range(in_person + remote):
        seen(db, other, institution, until - timedelta(days=1 + index % 28, hours=index % 7),
             mode="in_person" if index < in_person else "video", conditions=["J06"])


def decide(db: Session, patient: Patient, institution: Institution, at: datetime,
           **overrides: Any):  # type: ignore[no-untyped-def]
    arguments: dict[str, Any] = {"mode": "video", "condition": "J30", "lang": "en",
                                 "identity_verified": True}
    arguments.update(overrides)
    return decide_for_visit(db, patient=patient, institution=institution, at=at, **arguments)


def codes(decision) -> list[str]:  # type: ignore[no-untyped-def]
    return [reason.code.value for reason in decision.reasons]


def condition_codes(decision) -> list[str]:  # type: ignore[no-untyped-def]
    return [condition.code.value for condition in decision.conditions]


# -- the institution's share -------------------------------------------------------------------


def test_an_institution_without_encounters_has_share_zero(db: Session, clinic: Institution):
    assert telemedicine_share(db, clinic.id, PILOT_2025) == 0.0
    assert telemedicine_counts(db, clinic.id, PILOT_2025) == (0, 0)


def test_the_share_counts_video_audio_and_chat_over_the_30_days_before_the_visit(
    db: Session, clinic: Institution, hospital: Institution, patient: Patient
):
    window_start = PILOT_2025 - timedelta(days=30)
    seen(db, patient, clinic, window_start)  # the first instant of the window counts
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=2), mode="video")
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=3), mode="audio")
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=4), mode="chat")
    seen(db, patient, clinic, window_start - timedelta(seconds=1), mode="video")  # too early
    seen(db, patient, clinic, PILOT_2025, mode="video")  # the visit's own instant: not before
    other = make_patient(db, hospital, "H-1")
    seen(db, other, hospital, PILOT_2025 - timedelta(days=1), mode="video")  # elsewhere
    assert telemedicine_counts(db, clinic.id, PILOT_2025) == (4, 3)
    assert telemedicine_share(db, clinic.id, PILOT_2025) == 0.75


def test_the_daily_trend_ends_on_the_current_share(
    db: Session, clinic: Institution, patient: Patient
):
    now = utcnow()
    busy_month(db, clinic, now, in_person=14, remote=6)
    seen(db, patient, clinic, now - timedelta(days=45), mode="video")  # before any window shown
    days = daily_shares(db, clinic.id, days=30, until=now)
    assert len(days) == 30
    assert days[-1].day == now.astimezone(KST).date()
    assert [day.day for day in days] == sorted(day.day for day in days)
    assert days[-1].rolling_share == pytest.approx(telemedicine_share(db, clinic.id, now))
    assert sum(day.encounters for day in days) == 20
    assert sum(day.telemedicine for day in days) == 6


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["in_person", "video", "audio", "chat"]),
                          st.integers(min_value=-50 * 24 * 60, max_value=24 * 60)),
                max_size=25))
def test_the_share_is_the_telemedicine_fraction_of_the_window_whatever_the_encounters(
    db: Session, clinic: Institution, patient: Patient, encounters: list[tuple[str, int]]
):
    db.execute(delete(Encounter))
    for mode, minutes in encounters:
        seen(db, patient, clinic, PILOT_2025 + timedelta(minutes=minutes), mode=mode)
    inside = [mode for mode, minutes in encounters if -30 * 24 * 60 <= minutes < 0]
    expected = (sum(mode != "in_person" for mode in inside) / len(inside)) if inside else 0.0
    assert telemedicine_share(db, clinic.id, PILOT_2025) == pytest.approx(expected)
    trend = daily_shares(db, clinic.id, days=5, until=PILOT_2025)
    assert trend[-1].rolling_share == pytest.approx(expected)


# -- history from the records ------------------------------------------------------------------


def test_history_holds_only_this_institutions_encounters_up_to_the_visit(
    db: Session, clinic: Institution, hospital: Institution, patient: Patient
):
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=10), conditions=["J30", "I10"])
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=5), mode="audio", kind="procedure")
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=4), mode="chat", conditions=["J30"])
    seen(db, patient, clinic, PILOT_2025 + timedelta(days=1), conditions=["J30"])  # later
    # A row of this patient recorded by another institution of the deployment: not visible.
    seen(db, patient, hospital, PILOT_2025 - timedelta(days=3), conditions=["E11"])
    request = request_for_visit(db, patient=patient, institution=clinic, at=PILOT_2025,
                                mode="video", condition="J30", lang="en")
    history = [(entry.date, entry.mode.value, entry.kind.value, entry.condition,
                entry.same_institution) for entry in request.history]
    ten_days = (PILOT_2025 - timedelta(days=10)).date()
    five_days = (PILOT_2025 - timedelta(days=5)).date()
    assert sorted(history, key=str) == sorted([
        (ten_days, "in_person", "visit", "J30", True),
        (ten_days, "in_person", "visit", "I10", True),
        (five_days, "phone", "procedure", None, True),
    ], key=str)
    assert request.institution.id == clinic.code
    assert request.institution.kind.value == "clinic"


def test_the_newest_in_person_encounters_are_kept_when_the_history_is_long(
    db: Session, clinic: Institution, patient: Patient
):
    for index in range(MAX_HISTORY + 20):
        db.add(Encounter(institution_id=clinic.id, patient_id=patient.id, mode="video",
                         kind="visit", started_at=PILOT_2025 - timedelta(hours=index + 1),
                         conditions=["J30"]))
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=100), conditions=["J30"])
    request = request_for_visit(db, patient=patient, institution=clinic, at=PILOT_2025,
                                mode="video", condition="J30", lang="en")
    assert len(request.history) == MAX_HISTORY
    assert any(entry.mode.value == "in_person" for entry in request.history)
    assert Code.FOLLOW_UP_OK in codes(evaluate(request, policy_registry()))


def test_patient_facts_come_from_the_patient_row(db: Session, clinic: Institution):
    patient = make_patient(db, clinic, "P-LTC", birth_date=date(1950, 1, 5), flags=[],
                           long_term_care_grade=3, residence_district="강남구")
    request = request_for_visit(db, patient=patient, institution=clinic, at=PILOT_2025,
                                mode="video", condition="J30", lang="en")
    assert [flag.value for flag in request.patient.flags] == ["long_term_care"]
    assert request.patient.residence_district is not None
    assert request.patient.residence_district.district == "강남구"
    abroad = make_patient(db, clinic, "P-US", nationality="US", residence_country="US",
                          residence_region="KR-11", current_country="US", nhi_covered=False)
    request = request_for_visit(db, patient=abroad, institution=clinic, at=PILOT_2025,
                                mode="video", condition="J30", lang="en")
    # Someone living abroad has no Korean region, whatever an old row may still say.
    assert request.patient.residence_region is None
    assert request.patient.current_country == "US"


# -- follow-up -------------------------------------------------------------------------------


def test_a_follow_up_inside_the_window_is_allowed(db: Session, clinic: Institution,
                                                  patient: Patient):
    seen(db, patient, clinic, PILOT_2023 - timedelta(days=20), conditions=["J30.1"])
    decision = decide(db, patient, clinic, PILOT_2023, condition="J30")
    assert decision.decision is DecisionKind.ALLOWED
    assert decision.pack == "kr-pilot-2023-06"
    assert Code.FOLLOW_UP_OK in codes(decision)


def test_a_follow_up_outside_the_window_is_a_first_visit_and_denied(
    db: Session, clinic: Institution, patient: Patient
):
    seen(db, patient, clinic, PILOT_2023 - timedelta(days=40), conditions=["J30"])
    decision = decide(db, patient, clinic, PILOT_2023, condition="J30")
    assert decision.decision is DecisionKind.DENIED
    assert codes(decision)[:2] == [Code.FOLLOW_UP_EXPIRED, Code.FIRST_VISIT_NOT_ALLOWED]
    assert [alternative.code for alternative in decision.alternatives] == [Code.IN_PERSON_VISIT]


def test_a_chronic_disease_keeps_the_follow_up_for_a_year(db: Session, clinic: Institution,
                                                          patient: Patient):
    seen(db, patient, clinic, PILOT_2023 - timedelta(days=200), conditions=["I10"])
    assert decide(db, patient, clinic, PILOT_2023, condition="I10").decision is (
        DecisionKind.ALLOWED)
    # The same gap for a non-chronic condition is long past the 30 days.
    seen(db, patient, clinic, PILOT_2023 - timedelta(days=200), conditions=["J30"])
    assert decide(db, patient, clinic, PILOT_2023, condition="J30").decision is (
        DecisionKind.DENIED)


def test_a_telemedicine_encounter_never_makes_a_follow_up(db: Session, clinic: Institution,
                                                          patient: Patient):
    seen(db, patient, clinic, PILOT_2023 - timedelta(days=5), mode="video", conditions=["J30"])
    assert decide(db, patient, clinic, PILOT_2023).decision is DecisionKind.DENIED


def test_a_recorded_long_term_care_grade_is_a_first_visit_exception(db: Session,
                                                                    clinic: Institution):
    elderly = make_patient(db, clinic, "P-70", birth_date=date(1950, 1, 5),
                           long_term_care_grade=2)
    decision = decide(db, elderly, clinic, PILOT_2023)
    assert decision.decision is DecisionKind.ALLOWED
    assert Code.FIRST_VISIT_EXCEPTION in codes(decision)


def test_a_shortage_district_on_the_record_is_a_first_visit_exception(db: Session,
                                                                      clinic: Institution):
    islander = make_patient(db, clinic, "P-ULL", residence_region="KR-47",
                            residence_district="울릉군")
    decision = decide(db, islander, clinic, PILOT_2023_12)
    assert decision.decision is DecisionKind.ALLOWED
    assert Code.FIRST_VISIT_EXCEPTION in codes(decision)


# -- hospital or clinic -------------------------------------------------------------------------


def test_a_hospital_may_not_see_an_ordinary_patient_by_telemedicine(db: Session,
                                                                    hospital: Institution):
    patient = make_patient(db, hospital, "H-2", residence_region="KR-26")
    seen(db, patient, hospital, PILOT_2025 - timedelta(days=20), conditions=["J30"])
    decision = decide(db, patient, hospital, PILOT_2025)
    assert decision.decision is DecisionKind.DENIED
    assert Code.INSTITUTION_KIND_NOT_ALLOWED in codes(decision)
    assert Code.CLINIC_TELEMEDICINE in [item.code for item in decision.alternatives]


def test_a_hospital_may_follow_up_its_own_groups(db: Session, hospital: Institution):
    diabetic = make_patient(db, hospital, "H-T1D", flags=["type1_diabetes"])
    assert decide(db, diabetic, hospital, PILOT_2025).decision is DecisionKind.ALLOWED
    rare = make_patient(db, hospital, "H-RARE", flags=["rare_disease"])
    seen(db, rare, hospital, PILOT_2025 - timedelta(days=300), conditions=["E75"])
    assert decide(db, rare, hospital, PILOT_2025).decision is DecisionKind.ALLOWED
    operated = make_patient(db, hospital, "H-OP")
    seen(db, operated, hospital, PILOT_2025 - timedelta(days=10), kind="surgery",
         conditions=["K40"])
    decision = decide(db, operated, hospital, PILOT_2025, condition="K40")
    assert decision.decision is DecisionKind.ALLOWED
    assert Code.HOSPITAL_LEVEL_GROUP in codes(decision)


# -- the share cap -----------------------------------------------------------------------------


def test_the_share_cap_refuses_telemedicine_once_the_institution_is_over_it(
    db: Session, clinic: Institution, patient: Patient
):
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=20), conditions=["J30"])
    busy_month(db, clinic, PILOT_2025, in_person=6, remote=3)  # with the patient's: 3 of 10
    at_cap = decide(db, patient, clinic, PILOT_2025)
    assert at_cap.decision is DecisionKind.ALLOWED  # 30 % is at the cap, not above it
    busy_month(db, clinic, PILOT_2025, in_person=0, remote=1)  # 4 of 11
    over = decide(db, patient, clinic, PILOT_2025)
    assert over.decision is DecisionKind.DENIED
    assert Code.SHARE_CAP_EXCEEDED in codes(over)
    assert [item.code for item in over.alternatives] == [Code.IN_PERSON_VISIT]


def test_a_visit_in_the_future_is_judged_on_the_share_the_institution_has_now(
    db: Session, clinic: Institution, patient: Patient
):
    now = utcnow()
    busy_month(db, clinic, now, in_person=5, remote=5)
    later = now + timedelta(days=40)  # the window before it holds no encounter yet
    request = request_for_visit(db, patient=patient, institution=clinic, at=later,
                                mode="video", condition="J30", lang="en")
    assert request.institution.telemedicine_share == 0.5


# -- consent and patients abroad -----------------------------------------------------------------


def consent(db: Session, patient: Patient, institution: Institution, kind: str, *,
            granted_at: datetime, withdrawn_at: datetime | None = None) -> None:
    db.add(Consent(institution_id=institution.id, patient_id=patient.id, kind=kind,
                   text_version="2026-01", language="ko", granted_at=granted_at,
                   withdrawn_at=withdrawn_at))
    db.flush()


def test_a_withdrawn_consent_is_not_a_consent(db: Session, clinic: Institution,
                                              patient: Patient):
    statute = max(utcnow(), datetime(2027, 1, 4, tzinfo=UTC)) + timedelta(days=30)
    seen(db, patient, clinic, statute - timedelta(days=20), conditions=["J30"])
    granted = statute - timedelta(days=60)
    consent(db, patient, clinic, "telemedicine_limits", granted_at=granted,
            withdrawn_at=statute - timedelta(days=1))
    withdrawn = decide(db, patient, clinic, statute)
    assert withdrawn.pack == "kr-msa-2026"
    assert Code.CONSENT_REQUIRED in condition_codes(withdrawn)
    consent(db, patient, clinic, "telemedicine_limits", granted_at=granted)
    assert Code.CONSENT_REQUIRED not in condition_codes(decide(db, patient, clinic, statute))
    assert decide(db, patient, clinic, statute,
                  consent_recorded=False).decision is DecisionKind.CONDITIONAL


def test_a_consent_given_after_the_visit_or_to_another_institution_does_not_count(
    db: Session, clinic: Institution, hospital: Institution, patient: Patient
):
    statute = max(utcnow(), datetime(2027, 1, 4, tzinfo=UTC)) + timedelta(days=30)
    seen(db, patient, clinic, statute - timedelta(days=20), conditions=["J30"])
    consent(db, patient, clinic, "telemedicine_limits", granted_at=statute + timedelta(hours=1))
    consent(db, patient, hospital, "telemedicine_limits", granted_at=statute - timedelta(days=9))
    assert Code.CONSENT_REQUIRED in condition_codes(decide(db, patient, clinic, statute))


def test_a_patient_abroad_needs_a_tri_party_consultation(db: Session, clinic: Institution):
    traveller = make_patient(db, clinic, "P-LA", nationality="US", residence_country="US",
                             residence_region=None, current_country="US", nhi_covered=False,
                             time_zone="America/Los_Angeles")
    seen(db, traveller, clinic, PILOT_2025 - timedelta(days=20), conditions=["L20"])
    direct = decide(db, traveller, clinic, PILOT_2025, condition="L20",
                    prescriptions=[{"ingredient": "hydrocortisone", "days": 14}])
    assert direct.decision is DecisionKind.CONDITIONAL
    assert direct.country_pack == "country-us"
    assert Code.CROSS_BORDER_TRI_PARTY_REQUIRED in condition_codes(direct)
    assert Code.TRI_PARTY_CONSULTATION in [item.code for item in direct.alternatives]
    assert direct.prescriptions[0].code is Code.PRESCRIPTION_RECOMMENDATION_ONLY
    # Abroad, consent means PIPA's two: sensitive data and transfer abroad.
    consent(db, traveller, clinic, "pipa_sensitive", granted_at=PILOT_2025 - timedelta(days=30))
    half = decide(db, traveller, clinic, PILOT_2025, condition="L20", tri_party=True)
    assert condition_codes(half) == [Code.CONSENT_REQUIRED]
    consent(db, traveller, clinic, "cross_border_transfer",
            granted_at=PILOT_2025 - timedelta(days=30))
    assert decide(db, traveller, clinic, PILOT_2025, condition="L20",
                  tri_party=True).decision is DecisionKind.ALLOWED


# -- what callers get ----------------------------------------------------------------------------


def test_decide_for_visit_is_the_engine_on_the_request_built_from_the_records(
    db: Session, clinic: Institution, patient: Patient
):
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=20), conditions=["J30"])
    arguments: dict[str, Any] = {
        "patient": patient, "institution": clinic, "at": PILOT_2025, "mode": "video",
        "condition": "J30", "prescriptions": [{"ingredient": "zolpidem", "days": 7}],
        "documents": ["medical_opinion"], "lang": "ko",
    }
    request = request_for_visit(db, **arguments)
    decision = decide_for_visit(db, **arguments)
    assert decision == evaluate(request, policy_registry())
    assert decision.lang == "ko"
    assert decision.decision is DecisionKind.CONDITIONAL  # identity and the banned drug
    assert decision.prescriptions[0].code is Code.PRESCRIPTION_PROHIBITED


def test_a_denied_decision_becomes_the_one_422_policy_denied_with_reasons_and_alternatives(
    db: Session, clinic: Institution, patient: Patient
):
    decision = decide(db, patient, clinic, PILOT_2023)
    problem = policy_denied_problem(decision)
    assert (problem.status, problem.code) == (422, "POLICY_DENIED")
    body = problem.body("en")
    assert body["decision"]["decision"] == "denied"
    assert "first visit" in body["detail"].lower()
    assert body["reasons"] and all(reason.keys() == {"code", "source", "message"}
                                   for reason in body["reasons"])
    assert "FIRST_VISIT_NOT_ALLOWED" in {reason["code"] for reason in body["reasons"]}
    assert all(reason["source"] for reason in body["reasons"])
    assert {item["code"] for item in body["alternatives"]} == {"IN_PERSON_VISIT"}
    assert body["conditions"] == [
        {"code": str(item.code), "source": item.source, "message": item.message}
        for item in decision.conditions]
    allowed = decide(db, patient, clinic, PILOT_2025)
    with pytest.raises(ValueError, match="denied"):
        policy_denied_problem(allowed)


def test_a_refused_prescription_is_the_same_422_naming_the_item_and_its_rule(
    db: Session, clinic: Institution, patient: Patient
):
    seen(db, patient, clinic, PILOT_2025 - timedelta(days=10), conditions=["J30"])
    decision = decide_for_visit(
        db, patient=patient, institution=clinic, at=PILOT_2025, mode="video",
        condition="J30", lang="ko", identity_verified=True,
        prescriptions=[{"ingredient": "cetirizine", "days": 7},
                       {"ingredient": "zolpidem", "days": 7}])
    assert decision.decision is not DecisionKind.DENIED
    allowed, refused = decision.prescriptions
    problem = policy_denied_problem(decision, [refused])
    assert (problem.status, problem.code) == (422, "POLICY_DENIED")
    [reason] = problem.extra["reasons"]
    assert reason["code"] == "PRESCRIPTION_PROHIBITED" and reason["ingredient"] == "zolpidem"
    # The item's rule: the pack's prohibited groups, with its source.
    pack = policy_registry().korean_rules_on(decision.decided_on)
    assert pack is not None
    assert reason["source"] == pack.pack.parameters.prohibited_drug_groups.source
    assert reason["message"] == refused.message and "zolpidem" in reason["message"]
    assert problem.body("ko")["detail"] != problem.body("en")["detail"]
    with pytest.raises(ValueError, match="refused prescription"):
        policy_denied_problem(decision, [allowed])


def test_bad_records_are_named_never_guessed(db: Session, clinic: Institution):
    odd = make_patient(db, clinic, "P-ODD", flags=["vip"])
    with pytest.raises(ValidationError) as raised:
        decide(db, odd, clinic, PILOT_2025)
    problem = bad_request_problem(raised.value)
    assert (problem.status, problem.code) == (422, "VALIDATION_FAILED")
    assert [error.field for error in problem.errors] == ["patient.flags.0"]
    contradictory = make_patient(db, clinic, "P-GN", flags=["emergency_shortage_area"],
                                 residence_district="강남구")
    with pytest.raises(RequestError) as inconsistent:
        decide(db, contradictory, clinic, PILOT_2025)
    problem = bad_request_problem(inconsistent.value)
    assert (problem.status, problem.code) == (422, "POLICY_REQUEST_INCONSISTENT")
    assert problem.errors[0].field == "patient.flags"


def test_bad_arguments_are_refused(db: Session, clinic: Institution, hospital: Institution,
                                   patient: Patient):
    naive = datetime(2026, 6, 10, 10, 0)  # noqa: DTZ001 - the naive time under test
    with pytest.raises(ValueError, match="aware"):
        request_for_visit(db, patient=patient, institution=clinic, at=naive, mode="video",
                          condition="J30", lang="en")
    with pytest.raises(ValueError, match="belongs to institution"):
        request_for_visit(db, patient=patient, institution=hospital, at=PILOT_2025,
                          mode="video", condition="J30", lang="en")
    with pytest.raises(ValidationError) as raised:
        request_for_visit(db, patient=patient, institution=clinic, at=PILOT_2025,
                          mode="fax", condition="hello", lang="en",
                          prescriptions=[{"ingredient": "metformin", "days": 0}],
                          documents=["passport"])
    fields = {".".join(map(str, error["loc"])) for error in raised.value.errors()}
    assert fields == {"visit.mode", "visit.condition", "prescriptions.0.days",
                      "documents.0.kind"}


def test_records_are_read_in_their_own_session_without_writing(engine: Engine,
                                                               clinic: Institution,
                                                               patient: Patient,
                                                               db: Session):
    db.commit()
    with session_factory(engine)() as reader:
        decide(reader, reader.get(Patient, patient.id), reader.get(Institution, clinic.id),
               PILOT_2025)
        assert not reader.new and not reader.dirty and not reader.deleted
