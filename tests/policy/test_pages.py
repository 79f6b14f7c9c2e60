"""The policy pages: the rules in force with every parameter and source, each institution's
telemedicine share against the cap (admins, auditors), and the visit check (clinicians); the
decision partial other pages include."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry
from jaejin.core.database import utcnow
from jaejin.core.i18n import translate
from jaejin.directory.store import Encounter, Patient
from jaejin.policy import Decision, default_registry, evaluate, parse_request
from jaejin.policy.korean_time import KST
from jaejin.policy.packs import KoreanRules, OverseasRules
from jaejin.policy.pages import VisitProposal
from jaejin.web.templating import environment
from tests.core.helpers import HANGUL, empty_database, fast_password_hashing
from tests.policy.builders import build
from tests.support import make_patient, sign_in


@pytest.fixture(scope="module", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    with fast_password_hashing():
        yield


@pytest.fixture
def clean_database(engine: Engine) -> Iterator[Engine]:
    empty_database(engine)
    yield engine


def audit_rows(engine: Engine) -> list[AuditEntry]:
    with Session(engine) as db:
        return list(db.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())


def audit_count(engine: Engine) -> int:
    with Session(engine) as db:
        return int(db.execute(select(func.count(AuditEntry.id))).scalar_one())


def encounters(db: Session, patient: Patient, *, in_person: int, remote: int) -> None:
    now = utcnow()
    for index in range(in_person + remote):
        db.add(Encounter(institution_id=patient.institution_id, patient_id=patient.id,
                         mode="in_person" if index < in_person else "video", kind="visit",
                         started_at=now - timedelta(days=index % 25, hours=2),
                         conditions=["J30"]))
    db.commit()


def section(html: str, attribute: str) -> str:
    """The <section> carrying `attribute` (e.g. data-institution="INST-A")."""
    start = html.index(attribute)
    return html[html.rindex("<section", 0, start):html.index("</section>", start)]


# -- /policy ---------------------------------------------------------------------------------


def test_the_rules_in_force_today_are_shown_with_every_parameter_and_source(client, actors):
    sign_in(client, actors.person("a", Role.INSTITUTION_ADMIN))
    response = client.get("/policy")
    assert response.status_code == 200
    html = response.text
    today = utcnow().astimezone(KST).date()
    registry = default_registry()
    korean = registry.korean_rules_on(today)
    assert korean is not None
    pack = section(html, f'data-pack="{korean.pack.id}"')
    shown = re.findall(r'data-parameter="([a-z0-9_]+)"', pack)
    assert shown == list(KoreanRules.model_fields)
    provisional = re.findall(r'data-parameter="([a-z0-9_]+)" data-provisional="true"', pack)
    assert provisional == [name for name in KoreanRules.model_fields
                           if getattr(korean.pack.parameters, name).provisional]
    assert str(escape(korean.pack.parameters.share_cap.source)) in pack
    overseas = section(html, 'data-pack="kr-overseas-2016"')
    assert re.findall(r'data-parameter="([a-z0-9_]+)"', overseas) == list(
        OverseasRules.model_fields)


def test_any_day_can_be_looked_up(client, actors):
    sign_in(client, actors.person("a", Role.AUDITOR))
    html = client.get("/policy", params={"day": "2024-03-01"}).text
    pack = section(html, 'data-pack="kr-pilot-2024-02"')
    share_cap = pack[pack.index('data-parameter="share_cap"'):]
    assert translate("en", "— (no such rule in this version)") in share_cap.split("</tr>")[0]
    statute = section(client.get("/policy", params={"day": "2027-01-04"}).text,
                      'data-pack="kr-msa-2026"')
    assert "30%" in statute and "provisional" in statute
    before = client.get("/policy", params={"day": "2020-05-01"}).text
    assert "No Korean telemedicine rules were in force on 2020-05-01" in before


def test_every_pack_is_listed_with_its_dates(client, actors):
    sign_in(client, actors.person("a", Role.INSTITUTION_ADMIN))
    html = client.get("/policy").text
    listing = html[html.index('id="all-packs-title"'):]
    listed = re.findall(r'<tr data-pack="([a-z0-9-]+)">', listing)
    assert sorted(listed) == sorted(pack.id for pack in default_registry().packs)
    row = listing[listing.index('<tr data-pack="kr-pilot-2023-12">'):]
    assert "2023-12-15 – 2024-02-22" in row.split("</tr>")[0]


def test_an_impossible_day_is_a_422_naming_it(client, actors, engine):
    sign_in(client, actors.person("a", Role.INSTITUTION_ADMIN))
    before = audit_count(engine)
    response = client.get("/policy", params={"day": "2027-02-30"})
    assert response.status_code == 422
    assert "query.day" in response.text
    assert audit_count(engine) == before


def test_each_institutions_share_is_charted_against_the_cap(client, actors, db):
    encounters(db, actors.patients["a"], in_person=6, remote=4)  # + the actors' own visit
    sign_in(client, actors.person("a", Role.INSTITUTION_ADMIN))
    html = client.get("/policy").text
    chart = section(html, f'data-institution="{actors.a.code}"')
    assert 'data-share="0.3636"' in chart  # 4 of 11
    assert "4 of 11 encounters" in chart
    today_rules = default_registry().korean_rules_on(utcnow().astimezone(KST).date())
    assert today_rules is not None
    if today_rules.pack.parameters.share_cap.value is not None:
        assert 'data-over-cap="true"' in chart
        assert "Over the cap of 30%" in chart
    for svg in re.findall(r"<svg.*?</svg>", chart, flags=re.S):
        assert 'role="img"' in svg
        assert "<title id=" in svg and "<desc id=" in svg
    assert chart.count("<circle") == 30
    assert f"data-institution=\"{actors.b.code}\"" not in html


def test_another_institutions_share_is_not_shown(client, actors, db):
    encounters(db, actors.patients["a"], in_person=1, remote=9)
    sign_in(client, actors.person("b", Role.INSTITUTION_ADMIN))
    html = client.get("/policy").text
    assert f'data-institution="{actors.a.code}"' not in html
    assert 'data-share="0.8182"' not in html  # A's: 9 of 11
    assert 'data-share="0.0000"' in section(html, f'data-institution="{actors.b.code}"')


def test_the_rules_page_speaks_korean(client, actors):
    sign_in(client, actors.person("a", Role.INSTITUTION_ADMIN))
    html = client.get("/policy", params={"lang": "ko"}).text
    assert "비대면진료 규칙" in html
    assert "기관의 비대면진료 비율 상한(30일)" in html
    assert "잠정" in html


# -- /policy/check ----------------------------------------------------------------------------


def proposed(patient: int, **overrides: str) -> dict[str, str]:
    form = {"patient_id": str(patient),
            "at": (utcnow() + timedelta(days=7)).astimezone(KST).strftime("%Y-%m-%dT10:00"),
            "time_zone": "Asia/Seoul", "mode": "video", "condition": "I10"}
    form.update(overrides)
    return form


def test_a_clinician_chooses_among_their_own_patients(client, actors):
    sign_in(client, actors.person("a", Role.CLINICIAN))
    html = client.get("/policy/check").text
    assert actors.patients["a"].mrn in html
    assert actors.patients["b"].mrn not in html


def test_the_check_explains_the_decision_from_the_records(client, actors, engine):
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    before = len(audit_rows(engine))
    response = client.post("/policy/check", data=proposed(actors.patients["a"].id,
                                                           csrf_token=csrf))
    assert response.status_code == 200, response.text
    html = response.text
    assert re.search(r'data-decision="(allowed|conditional)"', html)
    assert 'data-code="FOLLOW_UP_OK"' in html  # the actors' in-person I10 visit 20 days ago
    assert 'data-code="IDENTITY_CHECK_REQUIRED"' in html
    entries = audit_rows(engine)[before:]
    evaluated = [entry for entry in entries if entry.action == "evaluate_policy"]
    assert len(evaluated) == 1
    assert evaluated[0].patient_id == actors.patients["a"].id
    assert evaluated[0].purpose == "treatment"


def test_a_denied_visit_shows_why_and_what_is_allowed_instead(client, actors, db):
    stranger = make_patient(db, actors.a, "MRN-A-NEW", residence_region="KR-26")
    db.commit()
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    at = max(utcnow(), datetime(2027, 1, 4, tzinfo=UTC)) + timedelta(days=3)
    response = client.post("/policy/check", data=proposed(
        stranger.id, csrf_token=csrf, at=at.astimezone(KST).strftime("%Y-%m-%dT10:00")))
    html = response.text
    assert 'data-decision="denied"' in html
    assert 'data-code="FIRST_VISIT_OUTSIDE_REGION"' in html
    alternatives = html[html.index('class="policy-alternatives"'):].split("</ul>")[0]
    assert 'data-code="IN_PERSON_VISIT"' in alternatives
    assert 'data-code="REGIONAL_TELEMEDICINE"' in alternatives
    assert 'role="alert"' in html


def test_a_patient_abroad_is_offered_a_tri_party_consultation(client, actors, db):
    traveller = make_patient(db, actors.a, "MRN-A-US", nationality="US", residence_country="US",
                             residence_region=None, current_country="US", nhi_covered=False)
    db.commit()
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    html = client.post("/policy/check", data=proposed(traveller.id, csrf_token=csrf)).text
    assert 'data-code="CROSS_BORDER_TRI_PARTY_REQUIRED"' in html
    assert 'data-code="TRI_PARTY_CONSULTATION"' in html


@pytest.mark.parametrize(("overrides", "field"), [
    ({"at": "2027-02-30T10:00"}, "at"),
    ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
    ({"mode": "fax"}, "mode"),
    ({"condition": "flu"}, "condition"),
    ({"patient_id": "someone"}, "patient_id"),
    ({"prescription_1_ingredient": "metformin", "prescription_1_days": "999"},
     "prescription_1_days"),
    ({"prescription_2_days": "7"}, "prescription_2_ingredient"),
    ({"documents": "passport"}, "documents"),
    ({"at": "2027-03-14T02:30", "time_zone": "America/New_York"}, "at"),
    ({"at": "2027-11-07T01:30", "time_zone": "America/New_York"}, "at"),
])
def test_bad_input_on_the_check_is_a_422_naming_the_field_and_reads_nothing(
    client, actors, engine, overrides, field
):
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    before = audit_count(engine)
    response = client.post("/policy/check", data=proposed(actors.patients["a"].id,
                                                           csrf_token=csrf, **overrides))
    assert response.status_code == 422, response.text
    html = response.text
    assert f'aria-describedby="{field}-error"' in html
    assert f'href="#{field}"' in html
    assert actors.patients["a"].mrn not in html
    assert audit_count(engine) == before


def test_a_time_the_clocks_skip_is_explained(client, actors):
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    html = client.post("/policy/check", data=proposed(
        actors.patients["a"].id, csrf_token=csrf, at="2027-03-14T02:30",
        time_zone="America/New_York")).text
    assert "does not exist in America/New_York" in html


def test_another_institutions_patient_is_not_found(client, actors, engine):
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    before = audit_count(engine)
    response = client.post("/policy/check", data=proposed(actors.patients["b"].id,
                                                           csrf_token=csrf))
    assert response.status_code == 404
    assert actors.patients["b"].mrn not in response.text
    assert audit_count(engine) == before


def test_records_the_rules_cannot_read_are_named_and_the_read_is_audited(client, actors, db,
                                                                         engine):
    odd = make_patient(db, actors.a, "MRN-A-ODD", flags=["vip"])
    db.commit()
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    response = client.post("/policy/check", data=proposed(odd.id, csrf_token=csrf))
    assert response.status_code == 422
    assert "patient.flags.0" in response.text
    assert "data-decision" not in response.text
    failures = [entry for entry in audit_rows(engine) if entry.action == "evaluate_policy"]
    assert [(entry.patient_id, entry.outcome) for entry in failures] == [(odd.id, "failure")]


def test_the_check_page_speaks_korean(client, actors):
    csrf = sign_in(client, actors.person("a", Role.CLINICIAN))
    html = client.post("/policy/check?lang=ko", data=proposed(actors.patients["a"].id,
                                                              csrf_token=csrf)).text
    assert "비대면진료 가능 여부 확인" in html
    decision = html[html.index('class="policy-decision"'):]
    assert HANGUL.search(decision.split('data-code="FOLLOW_UP_OK"')[1][:400])


# -- the time of the proposed visit --------------------------------------------------------------

ZONES = ["Asia/Seoul", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe",
         "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Chatham", "UTC"]


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2030, 12, 31)),  # noqa: DTZ001
       st.sampled_from(ZONES))
def test_a_local_time_is_read_in_its_zone_or_refused_when_it_is_not_one_instant(
    local: datetime, zone_name: str
):
    local = local.replace(second=0, microsecond=0)
    zone = ZoneInfo(zone_name)
    offsets = {local.replace(tzinfo=zone, fold=fold).utcoffset() for fold in (0, 1)}
    exists = local.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(
        tzinfo=None) == local
    form = {"patient_id": 1, "at": local.isoformat(), "time_zone": zone_name, "mode": "video",
            "condition": "I10"}
    if exists and len(offsets) == 1:
        moment = VisitProposal.model_validate(form).moment
        assert moment.tzinfo is UTC
        assert moment.astimezone(zone).replace(tzinfo=None) == local
    else:
        with pytest.raises(ValidationError):
            VisitProposal.model_validate(form)


# -- the partial other pages include --------------------------------------------------------------


def render_partial(decision: Decision, **context: object) -> str:
    return environment.get_template("policy/_decision.html").render(
        decision=decision, t=lambda message, **params: translate("en", message, **params),
        lang="en", **context)


def test_the_decision_partial_renders_from_its_documented_context():
    registry = default_registry()
    denied = evaluate(parse_request(build({"history": [], "patient.residence_region": "KR-26"})),
                      registry)
    html = render_partial(denied, decision_heading_level=3, decision_id="booking")
    assert '<h3 id="booking-title">' in html and "<h4>" in html
    assert 'data-decision="denied"' in html
    assert 'data-code="REGIONAL_TELEMEDICINE"' in html
    stored = Decision.model_validate(denied.model_dump(mode="json"))
    assert render_partial(stored, decision_heading_level=3, decision_id="booking") == html
    allowed = evaluate(parse_request(build({
        "prescriptions": [{"ingredient": "zolpidem", "days": 7}],
        "documents": [{"kind": "diagnosis_certificate"}]})), registry)
    html = render_partial(allowed)
    assert '<h2 id="policy-decision-title">' in html
    assert 'data-code="PRESCRIPTION_PROHIBITED"' in html
    assert 'data-code="CERTIFICATE_NOT_ALLOWED"' in html
    assert "policy-alternatives" not in html


def test_dates_in_the_partial_are_the_korean_decision_day():
    decision = evaluate(parse_request(build({"at": "2027-03-09T23:30:00+00:00"})),
                        default_registry())
    assert decision.decided_on == date(2027, 3, 10)
    assert "2027-03-10" in render_partial(decision)
