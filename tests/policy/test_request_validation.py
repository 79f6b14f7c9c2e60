"""Bad input is refused with the field named; never guessed at."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jaejin.policy import (
    PackRegistry,
    RequestError,
    describe_validation_error,
    evaluate,
    parse_request,
)
from tests.policy.builders import EXAMPLE, build


def _fields(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        parse_request(data)
    return [problem["field"] for problem in describe_validation_error(caught.value)]


def test_the_example_request_of_the_contract_validates_as_is() -> None:
    request = parse_request(EXAMPLE)
    assert request.patient.flags[0].value == "long_term_care"
    assert request.at.utcoffset() is not None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"patient.flags": ["island_remote", "islander"]}, "patient.flags.1"),
        ({"history": [{"date": "2027-02-30", "mode": "in_person", "same_institution": True}]},
         "history.0.date"),
        ({"at": "2027-03-10T10:00:00"}, "at"),
        ({"at": "yesterday"}, "at"),
        ({"institution.region": "KR-99"}, "institution.region"),
        ({"patient.residence_region": "JP-13"}, "patient.residence_region"),
        ({"patient.current_country": "XX"}, "patient.current_country"),
        ({"patient.nationality": "Korea"}, "patient.nationality"),
        ({"patient.birth_date": "2027-03-11"}, "patient.birth_date"),
        ({"patient.birth_date": "1850-01-01"}, "patient.birth_date"),
        ({"history": [{"date": "2027-03-11", "mode": "in_person", "same_institution": True}]},
         "history.0.date"),
        ({"history": [{"date": "1970-01-01", "mode": "in_person", "same_institution": True}]},
         "history.0.date"),
        ({"history": [{"date": "2027-03-01", "mode": "in_person"}]},
         "history.0.same_institution"),
        ({"institution.kind": "pharmacy"}, "institution.kind"),
        ({"institution.telemedicine_share": 1.5}, "institution.telemedicine_share"),
        ({"visit.mode": "chat"}, "visit.mode"),
        ({"visit.condition": "hypertension"}, "visit.condition"),
        ({"prescriptions": [{"ingredient": "amlodipine", "days": 0}]}, "prescriptions.0.days"),
        ({"prescriptions": [{"ingredient": "amlodipine", "days": 7, "atc": "amlo"}]},
         "prescriptions.0.atc"),
        ({"documents": [{"kind": "sick_note"}]}, "documents.0.kind"),
        ({"lang": "tlh"}, "lang"),
        ({"surprise": True}, "surprise"),
        ({"patient.residence_district": {"province": "KR-47", "district": "울릉군"}},
         "patient.residence_district.province"),
    ],
)
def test_bad_input_names_the_field(overrides: dict[str, Any], field: str) -> None:
    assert field in _fields(build(overrides))


def test_a_missing_required_field_is_named() -> None:
    data = build()
    del data["patient"]["residence_region"]
    assert _fields(data) == ["patient.residence_region"]


def test_codes_are_case_insensitive_but_nothing_else_is_guessed() -> None:
    request = parse_request(build({"institution.region": "kr-11", "visit.condition": "i10"}))
    assert request.institution.region == "KR-11"
    assert request.visit.condition == "I10"


def test_a_declared_shortage_flag_contradicting_the_district_is_bad_input(
    registry: PackRegistry,
) -> None:
    data = build({
        "at": "2024-01-17T10:00:00+09:00", "history": [],
        "patient.flags": ["emergency_shortage_area"],
        "patient.residence_district": {"province": "KR-11", "district": "강남구"},
    })
    with pytest.raises(RequestError) as caught:
        evaluate(parse_request(data), registry)
    assert caught.value.field == "patient.flags"
    assert "강남구" in str(caught.value)


def test_the_visit_day_is_korean_for_date_checks() -> None:
    # 23:00 UTC on 9 March is 08:00 on 10 March in Korea: a visit recorded on 10 March is past.
    data = build({"at": "2027-03-09T23:00:00+00:00",
                  "history": [{"date": "2027-03-10", "mode": "in_person",
                               "same_institution": True}]})
    assert parse_request(data).history[0].date.isoformat() == "2027-03-10"
